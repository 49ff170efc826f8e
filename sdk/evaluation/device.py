"""The device's ranking as a model of ``edgerec evaluate``: :class:`DeviceRanker`."""

from __future__ import annotations

from typing import Any

import numpy as np
from edgerec.sdk.evaluation.metrics import item_ranks
from edgerec.sdk.evaluation.task import CatalogData, EvalTask
from edgerec.sdk.ranking import MatrixCandidates, rank_for_user
from edgerec.sdk.scorer import Scorer

__all__ = ["DeviceRanker"]


class DeviceRanker:
    """The device's ranking as a :class:`~.ranker.Ranker`: :func:`rank_for_user` over the
    catalog's vectors with the bundle's scorer and C; past the top C the ranking continues by
    ``u . v`` (what MRR sees); its scores, for the AUC, are the scorer's logits over the whole
    catalog."""

    name = "scorer"
    description = "the bundle's scorer re-ranking the top-C by u.v (the device's for_user)"

    def __init__(self, scorer: Scorer, task: EvalTask, data: CatalogData, candidates: int,
                 tiebreak: np.ndarray) -> None:
        self._scorer, self._task, self._v = scorer, task, data.vectors
        self._candidates, self._tiebreak = candidates, tiebreak
        self.fit_seconds = 0.0
        self.extras: dict[str, Any] = {"scorer": scorer.key, "candidates": candidates}

    def scores(self, user: int) -> np.ndarray:
        return self._scorer.score(self._task.u[user], self._v).astype(np.float64)

    def top(self, user: int, exclude: np.ndarray, k: int) -> np.ndarray:
        source = MatrixCandidates(self._v, exclude=exclude, tiebreak=self._tiebreak)
        ranking = rank_for_user(self._task.u[user], source, self._scorer.score, k=k,
                                candidates=self._candidates)
        return np.asarray(ranking.keys, dtype=np.int64)

    def ranks(self, user: int, exclude: np.ndarray, items: np.ndarray,
              scores: np.ndarray) -> np.ndarray:
        head = self.top(user, exclude, self._candidates)
        where = {int(row): i + 1 for i, row in enumerate(head)}
        out = np.array([where.get(int(i), 0) for i in items], np.int64)
        rest = out == 0
        if rest.any():
            ip = self._v @ self._task.u[user]
            out[rest] = len(head) + item_ranks(
                ip, exclude=np.concatenate([np.asarray(exclude, np.int64), head]),
                items=np.asarray(items)[rest], tiebreak=self._tiebreak)
        return out
