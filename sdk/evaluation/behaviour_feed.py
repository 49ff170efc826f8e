"""The device's behaviour feed as a model of ``edgerec evaluate``: :class:`BehaviourFeedRanker`.

It runs the device's own code (:func:`edgerec.sdk.behaviour.feed_candidates` and
:func:`~edgerec.sdk.behaviour.rank_feed`, what :meth:`Recommender.for_user` runs with a bundle
that has behaviour signals) over the catalog in memory, with the bundle's signals (learned at
export on the training side of the bundle's recorded split) and its fusion. Past the C
candidates the ranking continues by the fused score of every other item (with no source flag),
which is also what the AUC scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
from edgerec.sdk.behaviour.feed import (
    DEFAULT_FUSION,
    FeedCandidates,
    FeedOptions,
    UserHistory,
    feature_rows,
    feed_candidates,
    fuse,
    rank_feed,
    user_history,
)
from edgerec.sdk.behaviour.index import BehaviourIndex
from edgerec.sdk.behaviour.model import BehaviourModel
from edgerec.sdk.bundle.manifest import BehaviourRecord, UserVectorRecipe
from edgerec.sdk.evaluation.events import Interaction
from edgerec.sdk.evaluation.metrics import item_ranks
from edgerec.sdk.evaluation.task import CatalogData, EvalTask
from edgerec.sdk.ranking import MatrixCandidates

__all__ = ["BehaviourFeedRanker"]


class BehaviourFeedRanker:
    """The behaviour feed as a :class:`~.ranker.Ranker` (see the module docstring)."""

    name = "behaviour_feed"
    description = ("the device's behaviour feed: visual, co-occurrence, collaborative and "
                   "popular candidates, fused (for_user with the bundle's behaviour signals)")

    def __init__(self, model: BehaviourModel, record: BehaviourRecord, task: EvalTask,
                 data: CatalogData, train: Mapping[str, Sequence[Interaction]],
                 recipe: UserVectorRecipe, candidates: int, tiebreak: np.ndarray,
                 feed: Optional[FeedOptions] = None) -> None:
        self._v, self._task, self._tiebreak = data.vectors, task, tiebreak
        self._index = BehaviourIndex.build(
            model, data.ids, lambda ids: data.vectors[[data.index[i] for i in ids]])
        self._fusion = record.fusion or DEFAULT_FUSION
        self._feed = FeedOptions(candidates=candidates) if feed is None else feed
        self._histories = [
            user_history([e.to_event() for e in train.get(user, ())], data.index,
                         half_life_days=recipe.half_life_days, weights=recipe.event_weights)
            for user in task.users]
        self._cache: Optional[tuple[int, FeedCandidates]] = None
        self.fit_seconds = 0.0
        self.extras: dict[str, Any] = {
            "candidates": self._feed.candidates, "fusion_fitted": self._fusion.fitted,
            "behaviour_items": len(model), "mapped_items": int((~self._index.learned).sum())}

    def _candidates(self, user: int, exclude: np.ndarray) -> FeedCandidates:
        if self._cache is not None and self._cache[0] == user:
            return self._cache[1]
        banned = np.zeros(len(self._v), bool)
        banned[np.asarray(exclude, np.int64)] = True
        source = MatrixCandidates(self._v, exclude=exclude, tiebreak=self._tiebreak)
        cands = feed_candidates(self._histories[user], self._task.u[user], self._index, source,
                                lambda rows: self._v[rows], banned, self._feed)
        self._cache = (user, cands)
        return cands

    def scores(self, user: int) -> np.ndarray:
        """Fused scores (N,) float64 of every catalog row (source flags from the user's
        candidates; the history's rows get theirs too, the evaluation leaves them out)."""
        cands = self._candidates(user, self._task.banned[user])
        history: UserHistory = self._histories[user]
        n = len(self._v)
        sources = np.zeros(n, np.uint8)
        sources[cands.rows] = cands.sources
        rows = np.arange(n)
        collab = self._index.collab @ cands.user_factors
        features, _ = feature_rows(rows, sources, self._v @ self._task.u[user], collab, history,
                                   self._index, self._feed.recent)
        return fuse(features, self._fusion).astype(np.float64)

    def top(self, user: int, exclude: np.ndarray, k: int) -> np.ndarray:
        cands = self._candidates(user, exclude)
        return rank_feed(cands, self._fusion, k, self._tiebreak).rows.astype(np.int64)

    def ranks(self, user: int, exclude: np.ndarray, items: np.ndarray,
              scores: np.ndarray) -> np.ndarray:
        head = self.top(user, exclude, self._feed.candidates)
        where = {int(row): i + 1 for i, row in enumerate(head)}
        out = np.array([where.get(int(i), 0) for i in items], np.int64)
        rest = out == 0
        if rest.any():
            out[rest] = len(head) + item_ranks(
                scores, exclude=np.concatenate([np.asarray(exclude, np.int64), head]),
                items=np.asarray(items)[rest], tiebreak=self._tiebreak)
        return out
