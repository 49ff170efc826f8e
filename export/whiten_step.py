"""Export step 5b: fit the encoder's whitening and pick its power on held-out labelled images.

Whitening (:class:`edgerec.sdk.Whitening`) trades retrieval on the trained labels for retrieval
of what was never labelled as its power grows (README "Distillation recipe": on the clothing
data, the auto-picked power 0.5-0.7 moved unseen-label mAP@10 by +0.012 to +0.031 and
seen-label mAP@10 by -0.013 to +0.002 over five runs). The export cannot measure the unseen
side (nothing unseen may steer it), so
:func:`choose_whitening` raises the power step by step while same-label mAP@10 on the
epoch selection images stays within ``keep`` (default 99%) of the unwhitened embedding's: as much
label-free structure as the trained labels can afford, decided on training data only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..sdk import Whitening, l2_normalize, label_retrieval

__all__ = ["DEFAULT_POWERS", "WhiteningChoice", "choose_whitening"]

DEFAULT_POWERS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class WhiteningChoice:
    """What :func:`choose_whitening` measured and kept.

    Attributes:
        whitening: the fitted transform, or None when no power kept ``keep`` of the mAP.
        power: its power (None when off).
        baseline_map: selection mAP@10 of the unwhitened embedding.
        maps: selection mAP@10 per tried power.
        fitted_on: number of training embeddings the transform was fitted on.
    """

    whitening: Optional[Whitening]
    power: Optional[float]
    baseline_map: float
    maps: dict[float, float] = field(default_factory=dict)
    fitted_on: int = 0

    def to_dict(self) -> dict:
        """JSON-ready record for the manifest's ``metrics``."""
        return {"power": self.power, "baseline_selection_map@10": self.baseline_map,
                "selection_map@10": {f"{p:g}": m for p, m in self.maps.items()},
                "fitted_on": self.fitted_on}


def choose_whitening(
    train: np.ndarray,
    select: np.ndarray,
    select_labels: np.ndarray,
    *,
    powers: Sequence[float] = DEFAULT_POWERS,
    keep: float = 0.99,
) -> WhiteningChoice:
    """Fit whitening on ``train``; raise the power while it holds ``keep`` of the mAP.

    Args:
        train: (N, D) float32 embeddings of training images (any norm; rows are normalised).
        select: (M, D) float32 embeddings of held-out labelled images; ``select_labels`` (M,).
        powers: candidate powers in [0, 1]; a single one (e.g. ``(0.5,)``) with ``keep=0``
            forces it.
        keep: the share of the unwhitened selection mAP@10 a power must keep.
    """
    baseline = label_retrieval(l2_normalize(select), select_labels).map_at_k
    maps: dict[float, float] = {}
    best: Optional[Whitening] = None
    for power in sorted(powers):
        candidate = Whitening.fit(train, power)
        maps[power] = label_retrieval(candidate.apply(select), select_labels).map_at_k
        if maps[power] < keep * baseline:
            break  # powers are tried in increasing order; stop at the first that costs too much
        best = candidate
    return WhiteningChoice(whitening=best, power=best.power if best else None,
                           baseline_map=baseline, maps=maps, fitted_on=len(train))
