"""Hyperparameters chosen on a validation cut of the training data, never on held-out events.

:meth:`ValidationCut.make` holds out the newest training item of (up to ``max_users``, seeded)
training users with at least two; a baseline is fitted on the rest for every point of its
grid, ranks the catalog minus the user's remaining items, and the point with the best mean
NDCG@k of the held-out item wins (the first on ties). :func:`grid_search` returns the winner
and the whole table, which the results keep.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from edgerec.sdk.evaluation.interactions import Interactions
from edgerec.sdk.evaluation.metrics import NDCG, item_ranks

__all__ = ["ScoreFn", "ValidationCut", "edge_warning", "grid", "grid_search"]

ScoreFn = Callable[[int, np.ndarray], np.ndarray]
"""``score(user, history) -> (N,)`` float scores of every catalog row for a user index of the
interactions the model was fitted on and that user's history rows."""


@dataclass(frozen=True)
class ValidationCut:
    """``train``: the training interactions without the newest item of each of ``users``
    (int64); ``held``: those items (catalog rows); ``tiebreak``: the order of equal scores."""

    train: Interactions
    users: np.ndarray
    held: np.ndarray
    tiebreak: np.ndarray
    k: int = 20

    @classmethod
    def make(cls, interactions: Interactions, *, max_users: int, seed: int,
             tiebreak: np.ndarray, k: int = 20) -> Optional[ValidationCut]:
        """None when no training user has two items."""
        eligible = np.array([u for u, h in enumerate(interactions.histories) if len(h) >= 2],
                            np.int64)
        if not len(eligible):
            return None
        if len(eligible) > max_users:
            rng = np.random.default_rng([seed, 6])
            eligible = np.sort(rng.choice(eligible, max_users, replace=False))
        train, held = interactions.leave_last_out(eligible.tolist())
        return cls(train, eligible, held, tiebreak, k)

    def score(self, score: ScoreFn) -> float:
        """Mean NDCG@k of the held-out items under ``score``."""
        ranks = [item_ranks(score(int(u), self.train.histories[u]),
                            exclude=self.train.histories[u], items=np.array([item]),
                            tiebreak=self.tiebreak)
                 for u, item in zip(self.users, self.held)]
        return float(NDCG(self.k).per_user(ranks).mean())


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in order (the last axis varies fastest)."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


def grid_search(cut: ValidationCut, points: Sequence[Mapping[str, Any]],
                fit: Callable[[Interactions, Mapping[str, Any]], ScoreFn]
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The point of ``points`` whose model (``fit(cut.train, point)``) scores best on ``cut``,
    and the table of every point with its ``validation_ndcg``. One point: no fit needed."""
    if len(points) == 1:
        return dict(points[0]), []
    table = []
    for point in points:
        table.append({**point, "validation_ndcg": round(cut.score(fit(cut.train, point)), 6)})
    best = max(range(len(table)), key=lambda i: (table[i]["validation_ndcg"], -i))
    return dict(points[best]), table


def edge_warning(model: str, best: Mapping[str, Any], points: Sequence[Mapping[str, Any]],
                 table: Sequence[Mapping[str, Any]] = ()) -> Optional[str]:
    """A sentence when the validation cut could not tell the points apart (every one of
    ``table`` scored the same: the first is kept), or when a chosen value is the smallest or
    largest of its axis (of three or more values; 0 counts as the largest, "all", and is no
    edge); else None."""
    scores = {row["validation_ndcg"] for row in table}
    if len(table) > 1 and len(scores) == 1:
        return (f"{model}: every point of its grid scored the same on the validation cut "
                f"(NDCG@20 {scores.pop()}), so the first was kept")
    for name, value in best.items():
        values = sorted({p[name] for p in points}, key=lambda v: math.inf if v == 0 else v)
        if len(values) > 2 and value != 0 and value in (values[0], values[-1]):
            return (f"{model}: the chosen {name} ({value}) is at the edge of the grid "
                    f"{values}: the best value may lie beyond it")
    return None
