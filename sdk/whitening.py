"""Whitening of embeddings: the encoder's last, numpy-only step on the device.

A student trained with labels spends most of its embedding variance on the few directions that
separate those labels; what it knows beyond its labels lives in the weaker directions, which
cosine similarity then barely hears. Whitening
``y = normalize((z - mean) @ V diag(eig ** (-power / 2)))``, with the principal directions ``V``
and variances ``eig`` of training embeddings ``z``, equalises them: ``power`` 0 only centres
and rotates, 1 makes the training covariance the identity, and values between trade retrieval
on the trained labels (which falls as power grows) for retrieval of what was never labelled
(which rises); see README "Distillation recipe".

Fitted with ``labels``, the variances are those *within* each label (pooled over labels:
within-class covariance normalisation, WCCN, Hatch et al. 2006, long used in speaker
verification). That shrinks the directions in which images of one label still differ and
keeps those that tell labels apart, so it raises retrieval on the trained labels and, because
it still evens out the dominant directions, on unseen ones too (README "Encoder whitening").

It is fitted by the export on training images only and shipped in the bundle as a plain-array
weights file (manifest ``weights``, role ``encoder``, format :data:`WHITENING_FORMAT`: an
``.npz`` with ``mean`` (D,), ``projection`` (D, D) and ``power`` (), float32, read with
``allow_pickle=False``). The engine's output is L2-normalised, whitened, and normalised again
(:class:`~edgerec.sdk.Encoder` does it), because whitening un-normalised outputs lets their
norm (which varies several-fold between images) dominate the first direction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from edgerec.sdk.bundle.manifest import read_numeric_npz
from edgerec.sdk.errors import ModelError
from edgerec.sdk.vectors import l2_normalize

__all__ = ["Whitening"]

EIGEN_FLOOR = 1e-3  # variances below this share of the mean variance are raised to it


def _within_label_covariance(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(D, D) covariance of rows ``z`` (N, D) around their own label's mean, pooled."""
    if labels.shape != (len(z),) or labels.dtype.kind not in "iu":
        raise ValueError(f"whitening labels must be (N,) = ({len(z)},) ints, got "
                         f"{labels.dtype} {labels.shape}")
    cov, rows = np.zeros((z.shape[1], z.shape[1])), 0
    for label in np.unique(labels[labels >= 0]):
        members = z[labels == label]
        if len(members) >= 2:
            deviation = members - members.mean(0)
            cov += deviation.T @ deviation
            rows += len(members)
    if rows == 0:
        raise ValueError("within-label whitening needs a label with at least 2 rows")
    return cov / rows


@dataclass(frozen=True)
class Whitening:
    """``y = normalize((z - mean) @ projection)`` for unit rows ``z`` (N, D).

    Attributes:
        mean: (D,) float32 mean of the training embeddings.
        projection: (D, D) float32, principal directions scaled by ``variance ** (-power/2)``.
        power: 0 (centre and rotate) .. 1 (full whitening).
        within_labels: the variances were those within labels (only recorded in memory; the
            device applies any projection alike).
    """

    mean: np.ndarray
    projection: np.ndarray
    power: float
    within_labels: bool = False

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, vectors: np.ndarray, power: float,
            labels: Optional[np.ndarray] = None) -> Whitening:
        """Fit on training embeddings ``vectors`` (N, D), rows normalised first.

        Args:
            vectors: (N, D) embeddings.
            power: 0 .. 1, how far the variances are equalised.
            labels: optional (N,) int label per row, negative for unlabelled: then the variances
                are pooled within labels (labels with one row add nothing); the mean is still
                that of all rows.

        Raises:
            ValueError: fewer than 2 rows, non-finite values, ``power`` outside [0, 1], labels
                of another length, or no label with 2 rows.
        """
        if not 0.0 <= power <= 1.0:
            raise ValueError(f"whitening power must be in [0, 1], got {power}")
        z = l2_normalize(vectors).astype(np.float64)
        if z.ndim != 2 or len(z) < 2 or not np.isfinite(z).all():
            raise ValueError(f"whitening needs >= 2 finite (N, D) rows, got shape {z.shape}")
        mean = z.mean(0)
        if labels is None:
            cov = np.cov((z - mean).T)
        else:
            cov = _within_label_covariance(z, np.asarray(labels))
        eig, vecs = np.linalg.eigh(cov)
        eig, vecs = eig[::-1], vecs[:, ::-1]
        eig = np.maximum(eig, EIGEN_FLOOR * max(float(eig.mean()), 1e-12))
        return cls(mean.astype(np.float32), (vecs * eig ** (-power / 2)).astype(np.float32),
                   float(power), labels is not None)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Unit rows (N, D) -> whitened unit rows (N, D) float32."""
        z = l2_normalize(vectors)
        return l2_normalize((z - self.mean) @ self.projection)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Whitening:
        """Validate named arrays (as in the ``.npz``); raises :class:`ModelError`."""
        try:
            mean = np.asarray(arrays["mean"])
            projection = np.asarray(arrays["projection"])
            power = np.asarray(arrays["power"])
        except KeyError as exc:
            raise ModelError(f"encoder whitening lacks the array {exc}; export the bundle "
                             "again") from None
        for name, a in (("mean", mean), ("projection", projection), ("power", power)):
            if a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ModelError(f"encoder whitening {name!r} is not finite floats; export the "
                                 "bundle again")
        d = mean.shape[0] if mean.ndim == 1 else -1
        if d < 1 or projection.shape != (d, d) or power.shape != ():
            raise ModelError(f"encoder whitening has shapes mean {mean.shape}, projection "
                             f"{projection.shape}, power {power.shape}; expected (D,), (D, D), "
                             "(): export the bundle again")
        return cls(mean.astype(np.float32), projection.astype(np.float32), float(power))

    @classmethod
    def from_npz(cls, data: bytes) -> Whitening:
        """Parse ``.npz`` bytes (``allow_pickle=False``: object arrays are refused)."""
        arrays = read_numeric_npz(data, "encoder whitening", "export the bundle again")
        return cls.from_arrays(arrays)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the ``.npz`` (uncompressed, float32, numeric arrays only)."""
        with open(path, "wb") as f:
            np.savez(f, mean=self.mean.astype(np.float32),
                     projection=self.projection.astype(np.float32),
                     power=np.float32(self.power))
