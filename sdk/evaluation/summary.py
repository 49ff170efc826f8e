"""From per-user ranks and AUCs to the reported numbers: each slice's metric means with
percentile-bootstrap CIs over users, and the paired margins of the reference model.

Every bootstrap draws with the same seed, so for a given slice and number of users every model
and metric is resampled over the same users (the margins are paired by construction too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from edgerec.sdk.evaluation.metrics import Metric
from edgerec.sdk.evaluation.ranking_metrics import (
    ConfidenceInterval,
    bootstrap_ci,
    paired_bootstrap_ci,
)
from edgerec.sdk.evaluation.results import SliceResult

__all__ = ["Bootstrap", "PerUser", "auc_by_slice", "margins", "slice_result"]

AUC = "AUC"


@dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap over users: ``resamples``, ``level``, ``seed``."""

    resamples: int
    level: float
    seed: int

    def ci(self, values: np.ndarray) -> ConfidenceInterval:
        return bootstrap_ci(values, resamples=self.resamples, level=self.level, seed=self.seed)

    def paired(self, a: np.ndarray, b: np.ndarray) -> ConfidenceInterval:
        return paired_bootstrap_ci(a, b, resamples=self.resamples, level=self.level,
                                   seed=self.seed)


@dataclass(frozen=True)
class PerUser:
    """One model's per-user values on a slice: ``users`` (positions in the task) and, per
    metric name, values aligned with them (AUC: ``auc_users`` and ``auc``)."""

    users: np.ndarray
    values: Mapping[str, np.ndarray]
    auc_users: np.ndarray
    auc: np.ndarray


def auc_by_slice(scores: np.ndarray, banned: np.ndarray,
                 slices: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per slice (name -> catalog rows of its held-out items): the full-catalog AUC of those
    items against every other item that is not a training item (the user's other held-out
    items included), ties counting 1/2. One sort serves every slice; a slice without items
    or without negatives is left out."""
    available = np.ones(len(scores), bool)
    available[banned] = False
    position = np.cumsum(available) - 1
    s = np.asarray(scores, np.float64)[available]
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    twice_rank = (2 * np.cumsum(counts) - counts + 1)[inverse.reshape(-1)]
    out = {}
    for name, rows in slices.items():
        n_pos, n_neg = len(rows), len(s) - len(rows)
        if n_pos and n_neg:
            twice_u = int(twice_rank[position[rows]].sum()) - n_pos * (n_pos + 1)
            out[name] = twice_u / (2 * n_pos * n_neg)
    return out


def slice_result(ranks: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 metrics: Sequence[Metric], aucs: Optional[Mapping[int, float]],
                 bootstrap: Bootstrap) -> Optional[tuple[SliceResult, PerUser]]:
    """The slice of the held-out items selected by ``masks`` (per user, aligned with
    ``ranks``, the ranks of the user's held-out items): users with at least one such item,
    each metric of ``metrics`` on the ranks of those items, the ``aucs`` (user -> AUC) of
    those users; None when no user has an item in the slice."""
    users = np.array([p for p, m in enumerate(masks) if m.any()], np.int64)
    if not len(users):
        return None
    picked = [ranks[p][masks[p]] for p in users]
    values = {m.name: m.per_user(picked) for m in metrics}
    cis = {name: bootstrap.ci(v) for name, v in values.items()}
    auc_users = np.array([p for p in users if aucs and p in aucs], np.int64)
    auc = np.array([aucs[p] for p in auc_users]) if aucs else np.zeros(0)
    if len(auc):
        cis[AUC] = bootstrap.ci(auc)
    return SliceResult(len(users), cis), PerUser(users, values, auc_users, auc)


def margins(per_user: Mapping[str, PerUser], reference: str, names: Sequence[str],
            bootstrap: Bootstrap) -> dict[str, dict[str, ConfidenceInterval]]:
    """metric -> baseline -> paired CI of ``metric(reference) - metric(baseline)`` over the
    users both have a value for (every evaluated user, for the ``all`` slice)."""
    ref = per_user[reference]
    out: dict[str, dict[str, ConfidenceInterval]] = {}
    for name in names:
        per: dict[str, ConfidenceInterval] = {}
        for model, other in per_user.items():
            if model == reference:
                continue
            if name == AUC:
                common, a, b = np.intersect1d(ref.auc_users, other.auc_users,
                                              return_indices=True)
                if len(common):
                    per[model] = bootstrap.paired(ref.auc[a], other.auc[b])
            else:
                per[model] = bootstrap.paired(ref.values[name], other.values[name])
        out[name] = per
    return out
