"""Export step 5b: fit the encoder's whitening and pick its power on held-out images.

Whitening (:class:`edgerec.sdk.Whitening`) evens out the few directions a label-trained student
spends most of its embedding variance on. Two kinds, both fitted on training images only:

- **within-label** (used whenever the training images have labels): the variances are those
  *within* each trained label. Shrinking what still varies inside a label raises same-label
  retrieval, so :func:`choose_whitening` keeps the power with the **highest** same-label mAP@10
  on the epoch-selection images (held-out training images), or none when no power beats the
  unwhitened embedding (README "Encoder whitening" has what it did to seen and unseen labels);
- **total** (the fallback for unlabelled training data): PCA whitening of all training images.
  It trades retrieval on the trained labels for retrieval of what was never labelled, so the
  power is raised step by step only while the selection score stays within ``keep`` (99%) of
  the unwhitened embedding's.

The selection score is same-label mAP@10 when the selection images have labels, else the
teacher-neighbour agreement@10 (:func:`~edgerec.export.artifacts.parity.neighbour_overlap` of
the student's top-10 with the teacher's, among the selection images). Unseen labels never
steer either choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from edgerec.export.artifacts.parity import neighbour_overlap
from edgerec.sdk import Whitening, l2_normalize
from edgerec.sdk.evaluation.retrieval import label_retrieval

__all__ = ["DEFAULT_POWERS", "WhiteningChoice", "choose_whitening"]

DEFAULT_POWERS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class WhiteningChoice:
    """What :func:`choose_whitening` measured and kept.

    Attributes:
        whitening: the fitted transform, or None when no power was good enough.
        power: its power (None when off).
        covariance: ``"within-label"`` or ``"total"``.
        measure: the selection score: ``"map@10"`` (same-label) or ``"agree@10"`` (top-10
            agreement with the teacher).
        baseline: the selection score of the unwhitened embedding.
        scores: the selection score per tried power.
        fitted_on: number of training embeddings the transform was fitted on.
    """

    whitening: Optional[Whitening]
    power: Optional[float]
    covariance: str
    baseline: float
    scores: dict[float, float] = field(default_factory=dict)
    fitted_on: int = 0
    measure: str = "map@10"

    def to_dict(self) -> dict:
        """JSON-ready record for the manifest's ``metrics`` (keys name the measure, e.g.
        ``selection_map@10`` or ``selection_agree@10``)."""
        return {"power": self.power, "covariance": self.covariance, "measure": self.measure,
                f"baseline_selection_{self.measure}": self.baseline,
                f"selection_{self.measure}": {f"{p:g}": m for p, m in self.scores.items()},
                "fitted_on": self.fitted_on}


def _usable_labels(labels: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
    """``labels`` (N,) ints when some label has two rows, else None (use the total kind)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"train_labels must be ({n},), got {labels.shape}")
    counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    return labels if (counts >= 2).any() else None


def _scorer(select_labels: Optional[np.ndarray], teacher: Optional[np.ndarray],
            n: int) -> tuple[str, Callable[[np.ndarray], float]]:
    if (select_labels is None) == (teacher is None):
        raise ValueError("choose_whitening needs either select_labels or teacher (the teacher's "
                         "vectors of the selection images), not both")
    if select_labels is not None:
        return "map@10", lambda v: label_retrieval(v, select_labels).map_at_k
    teacher = np.asarray(teacher, np.float32)
    if len(teacher) != n:
        raise ValueError(f"teacher has {len(teacher)} rows for {n} selection embeddings")
    return "agree@10", lambda v: neighbour_overlap(teacher, v, k=10)


def choose_whitening(
    train: np.ndarray,
    select: np.ndarray,
    select_labels: Optional[np.ndarray] = None,
    *,
    teacher: Optional[np.ndarray] = None,
    train_labels: Optional[np.ndarray] = None,
    powers: Sequence[float] = DEFAULT_POWERS,
    keep: Optional[float] = None,
) -> WhiteningChoice:
    """Fit whitening on ``train`` and pick its power on ``select``.

    Args:
        train: (N, D) float32 embeddings of training images (any norm; rows are normalised).
        select: (M, D) float32 embeddings of held-out images, scored by same-label mAP@10 with
            ``select_labels`` (M,), or, for images without labels, by top-10 agreement with
            ``teacher`` (M, Dt), the teacher's vectors of the same images. Give one of the two.
        train_labels: optional (N,) int label index of each training row, -1 for unlabelled.
            When some label has two rows the whitening is within-label and the power with the
            best selection score is kept; otherwise it is total (PCA) whitening, raised while
            it holds ``keep`` of the unwhitened score.
        powers: candidate powers in [0, 1].
        keep: the share of the unwhitened selection score the kept power must reach; by
            default 1.0 (within-label: it must not be worse) or 0.99 (total). ``keep=0`` with
            a single power forces that power.

    Raises:
        ValueError: both or neither of ``select_labels`` and ``teacher``, or mismatched rows.
    """
    measure, score = _scorer(select_labels, teacher, len(select))
    labels = _usable_labels(train_labels, len(train))
    covariance = "total" if labels is None else "within-label"
    keep = (1.0 if labels is not None else 0.99) if keep is None else keep
    baseline = score(l2_normalize(select))
    scores: dict[float, float] = {}
    best: Optional[Whitening] = None
    for power in sorted(powers):
        candidate = Whitening.fit(train, power, labels)
        scores[power] = score(candidate.apply(select))
        if labels is not None:  # keep the best power
            if scores[power] >= keep * baseline and (
                    best is None or scores[power] > scores[best.power]):
                best = candidate
        elif scores[power] < keep * baseline:
            break  # powers are tried in increasing order; stop at the first that costs too much
        else:
            best = candidate
    return WhiteningChoice(whitening=best, power=best.power if best else None,
                           covariance=covariance, baseline=baseline, scores=scores,
                           fitted_on=len(train), measure=measure)
