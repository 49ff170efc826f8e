"""The behaviour signals as the device holds them: :class:`BehaviourModel`, keyed by item id,
read from and written to one ``.npz`` of numeric arrays (:data:`BEHAVIOUR_FORMAT`; never
unpickled). The export learns it (:mod:`edgerec.export.behaviour`), the device reads it
(:func:`load_behaviour`); both go through :meth:`BehaviourModel.to_arrays` /
:meth:`BehaviourModel.from_arrays`, so writer and reader cannot drift.

What is stored per item (N items; ``4 + 6 K + d`` bytes each plus a bit, and the id):

- ``popularity`` float16: events weighted by kind and by ``0.5 ** (age / half_life_days)``,
  age from the newest training event; ``count`` float16: users with a positive event;
- ``neighbours`` int32 (N, K) rows of the items most often in the same histories
  (-1: none) and ``neighbour_scores`` float16 (co-occurrences over ``sqrt(n_i n_j)`` + shrink);
- ``collab`` int8 (N, d) with one float32 scale per dimension: the item's collaborative vector
  (ALS item factors for items with events, the image mapping's output for the others).

And once (the model): ``gram`` (d, d) = ``Y^T Y`` over the item factors, ``regularization`` and
``alpha`` (the ALS fold-in of a user: :meth:`BehaviourModel.user_factors`), and the image ->
collaborative mapping ``mapping_w`` (D, d), ``mapping_b`` (d,) (ridge regression fitted on
warm items), which gives any item, also one added on the device, a collaborative vector.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import BEHAVIOUR_FORMAT, BehaviourRecord, read_numeric_npz
from edgerec.sdk.errors import ModelError

__all__ = ["BehaviourModel", "load_behaviour"]

_REMEDY = "export the bundle again (`edgerec scorer train` or `edgerec export --events`)"
_PER_ITEM = ("popularity", "count", "neighbours", "neighbour_scores", "collab", "learned")


@dataclass(frozen=True, eq=False)
class BehaviourModel:
    """Behaviour signals for ``ids`` (N,) (see the module docstring for each array).

    Arrays: ``popularity``, ``count`` (N,) float32 >= 0; ``neighbours`` (N, K) int64 rows into
    ``ids`` (-1: none), ``neighbour_scores`` (N, K) float32; ``collab`` (N, d) float32;
    ``learned`` (N,) bool (True: ``collab`` came from events, False: from the mapping);
    ``gram`` (d, d) float32; ``mapping_w`` (D, d), ``mapping_b`` (d,) float32;
    ``regularization``, ``alpha``: the ALS fold-in's.
    """

    ids: tuple[str, ...]
    popularity: np.ndarray
    count: np.ndarray
    neighbours: np.ndarray
    neighbour_scores: np.ndarray
    collab: np.ndarray
    learned: np.ndarray
    gram: np.ndarray
    mapping_w: np.ndarray
    mapping_b: np.ndarray
    regularization: float
    alpha: float

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """d, the collaborative vectors' dimension."""
        return int(self.collab.shape[1])

    @property
    def image_dim(self) -> int:
        """D, the image vectors' dimension the mapping takes."""
        return int(self.mapping_w.shape[0])

    def map_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Collaborative vectors ``(n, d)`` float32 for image vectors ``(n, D)`` (the mapping)."""
        v = np.asarray(vectors, dtype=np.float32).reshape(-1, self.image_dim)
        return v @ self.mapping_w + self.mapping_b

    def user_factors(self, collab: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The ALS fold-in of a user whose history has collaborative vectors ``collab`` (H, d)
        with positive ``weights`` (H,) (event weight x recency): the least-squares user
        factors ``(Y^T Y + Y_h^T (C - I) Y_h + lambda I)^-1 Y_h^T C 1`` with confidences
        ``C = 1 + alpha * weights``. Returns ``(d,)`` float64 (zeros for an empty history)."""
        y = np.asarray(collab, dtype=np.float64).reshape(-1, self.dim)
        if not len(y):
            return np.zeros(self.dim)
        c = 1.0 + self.alpha * np.asarray(weights, dtype=np.float64)
        a = self.gram.astype(np.float64) + (y.T * (c - 1.0)) @ y
        a[np.diag_indices_from(a)] += self.regularization
        return np.linalg.solve(a, y.T @ c)

    # ------------------------------------------------------------------ file format

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The ``.npz`` arrays (:data:`BEHAVIOUR_FORMAT`): per-item arrays in float16 / int8 /
        int32, the model in float32."""
        peak = np.abs(self.collab).max(axis=0) if len(self.collab) else np.zeros(self.dim)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        codes = np.clip(np.rint(self.collab / scale), -127, 127).astype(np.int8)
        return {
            "ids": np.array([i.encode("utf-8") for i in self.ids], dtype=np.bytes_),
            "popularity": self.popularity.astype(np.float16),
            "count": np.minimum(self.count, 65000).astype(np.float16),
            "neighbours": self.neighbours.astype(np.int32),
            "neighbour_scores": self.neighbour_scores.astype(np.float16),
            "collab": codes, "collab_scale": scale,
            "learned": np.packbits(self.learned.astype(bool)),
            "gram": self.gram.astype(np.float32),
            "mapping_w": self.mapping_w.astype(np.float32),
            "mapping_b": self.mapping_b.astype(np.float32),
            "regularization": np.float32(self.regularization),
            "alpha": np.float32(self.alpha),
        }

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **self.to_arrays())
        return buf.getvalue()

    @staticmethod
    def sizes(arrays: dict[str, np.ndarray]) -> tuple[float, int]:
        """Bytes per item of the per-item signals (the ids, the keys the catalog holds too,
        not counted: ``arrays["ids"].itemsize`` more each), and bytes of the model (gram,
        mapping, collab scales)."""
        n = max(1, len(arrays["ids"]))
        per_item = sum(a.nbytes for k, a in arrays.items() if k in _PER_ITEM)
        model = sum(a.nbytes for k, a in arrays.items() if k not in (*_PER_ITEM, "ids"))
        return per_item / n, model

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> BehaviourModel:
        """Inverse of :meth:`to_arrays`; :class:`ModelError` when arrays are missing or their
        shapes disagree."""
        try:
            ids = tuple(x.decode("utf-8") for x in np.asarray(a["ids"]).tolist())
            n = len(ids)
            codes = np.asarray(a["collab"])
            d = codes.shape[1]
            collab = codes.astype(np.float32) * np.asarray(a["collab_scale"], np.float32)
            neighbours = np.asarray(a["neighbours"]).astype(np.int64)
            model = cls(
                ids=ids,
                popularity=np.asarray(a["popularity"], np.float32).reshape(n),
                count=np.asarray(a["count"], np.float32).reshape(n),
                neighbours=neighbours,
                neighbour_scores=np.asarray(a["neighbour_scores"], np.float32).reshape(
                    neighbours.shape),
                collab=collab.reshape(n, d),
                learned=np.unpackbits(np.asarray(a["learned"], np.uint8))[:n].astype(bool),
                gram=np.asarray(a["gram"], np.float32).reshape(d, d),
                mapping_w=np.asarray(a["mapping_w"], np.float32).reshape(-1, d),
                mapping_b=np.asarray(a["mapping_b"], np.float32).reshape(d),
                regularization=float(a["regularization"]), alpha=float(a["alpha"]),
            )
        except (KeyError, ValueError, IndexError, UnicodeDecodeError, AttributeError) as exc:
            raise ModelError(f"the behaviour file is not {BEHAVIOUR_FORMAT} ({exc!r}); "
                             f"{_REMEDY}") from None
        if neighbours.ndim != 2 or len(neighbours) != n or (neighbours >= n).any() or (
                neighbours < -1).any():
            raise ModelError(f"the behaviour file's neighbours do not index its {n} items; "
                             f"{_REMEDY}")
        return model


def load_behaviour(bundle: Bundle) -> tuple[Optional[BehaviourModel], Optional[BehaviourRecord],
                                            str]:
    """The bundle's behaviour signals, their record, and what is lacking ("" when nothing).

    Returns ``(None, record_or_None, why)`` when the bundle has none (made before behaviour
    signals existed, or the export found nothing to learn from).

    Raises:
        BundleIntegrityError: the file does not match its sha256.
        ModelError: the file is not in a format this edgerec reads.
    """
    record = bundle.manifest.behaviour
    if record is None:
        return None, None, ("the bundle has no behaviour signals (made before they existed, or "
                            "without events): candidates from visual kNN only; train with "
                            "`edgerec scorer train --events` to add them")
    if not record.shipped:
        return None, record, (f"the export learned no behaviour signals ({record.reason}): "
                              "candidates from visual kNN only")
    if record.format != BEHAVIOUR_FORMAT:
        raise ModelError(f"the behaviour file is in format {record.format!r}, not "
                         f"{BEHAVIOUR_FORMAT!r}; upgrade edgerec or {_REMEDY}")
    arrays = read_numeric_npz(bundle.read_weights(record.weights_spec()), "behaviour file",
                              _REMEDY)
    model = BehaviourModel.from_arrays(arrays)
    if model.image_dim != bundle.embedding_dim:
        raise ModelError(f"the behaviour mapping takes {model.image_dim}-d vectors but the "
                         f"bundle's encoder makes {bundle.embedding_dim}-d ones; {_REMEDY}")
    return model, record, ""
