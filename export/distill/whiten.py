"""Export step 5b: fit the encoder's whitening and pick its power on held-out labelled images.

Whitening (:class:`edgerec.sdk.Whitening`) evens out the few directions a label-trained student
spends most of its embedding variance on. Two kinds, both fitted on training images only:

- **within-label** (used whenever the training images have labels): the variances are those
  *within* each trained label. Shrinking what still varies inside a label raises same-label
  retrieval, so :func:`choose_whitening` keeps the power with the **highest** same-label mAP@10
  on the epoch-selection images (held-out training images), or none when no power beats the
  unwhitened embedding (README "Encoder whitening" has what it did to seen and unseen labels);
- **total** (the fallback for unlabelled training data): PCA whitening of all training images.
  It trades retrieval on the trained labels for retrieval of what was never labelled, so the
  power is raised step by step only while the selection mAP@10 stays within ``keep`` (99%) of
  the unwhitened embedding's.

Unseen labels never steer either choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
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
        baseline_map: selection mAP@10 of the unwhitened embedding.
        maps: selection mAP@10 per tried power.
        fitted_on: number of training embeddings the transform was fitted on.
    """

    whitening: Optional[Whitening]
    power: Optional[float]
    covariance: str
    baseline_map: float
    maps: dict[float, float] = field(default_factory=dict)
    fitted_on: int = 0

    def to_dict(self) -> dict:
        """JSON-ready record for the manifest's ``metrics``."""
        return {"power": self.power, "covariance": self.covariance,
                "baseline_selection_map@10": self.baseline_map,
                "selection_map@10": {f"{p:g}": m for p, m in self.maps.items()},
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


def choose_whitening(
    train: np.ndarray,
    select: np.ndarray,
    select_labels: np.ndarray,
    *,
    train_labels: Optional[np.ndarray] = None,
    powers: Sequence[float] = DEFAULT_POWERS,
    keep: Optional[float] = None,
) -> WhiteningChoice:
    """Fit whitening on ``train`` and pick its power on ``select``.

    Args:
        train: (N, D) float32 embeddings of training images (any norm; rows are normalised).
        select: (M, D) float32 embeddings of held-out labelled images; ``select_labels`` (M,).
        train_labels: optional (N,) int label index of each training row, -1 for unlabelled.
            When some label has two rows the whitening is within-label and the power with the
            best selection mAP@10 is kept; otherwise it is total (PCA) whitening, raised while
            it holds ``keep`` of the unwhitened mAP.
        powers: candidate powers in [0, 1].
        keep: the share of the unwhitened selection mAP@10 the kept power must reach; by
            default 1.0 (within-label: it must not be worse) or 0.99 (total). ``keep=0`` with
            a single power forces that power.
    """
    labels = _usable_labels(train_labels, len(train))
    covariance = "total" if labels is None else "within-label"
    keep = (1.0 if labels is not None else 0.99) if keep is None else keep
    baseline = label_retrieval(l2_normalize(select), select_labels).map_at_k
    maps: dict[float, float] = {}
    best: Optional[Whitening] = None
    for power in sorted(powers):
        candidate = Whitening.fit(train, power, labels)
        maps[power] = label_retrieval(candidate.apply(select), select_labels).map_at_k
        if labels is not None:  # keep the best power
            if maps[power] >= keep * baseline and (best is None or maps[power] > maps[best.power]):
                best = candidate
        elif maps[power] < keep * baseline:
            break  # powers are tried in increasing order; stop at the first that costs too much
        else:
            best = candidate
    return WhiteningChoice(whitening=best, power=best.power if best else None,
                           covariance=covariance, baseline_map=baseline, maps=maps,
                           fitted_on=len(train))
