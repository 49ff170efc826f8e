"""The item-item behaviour baselines (numpy): a user's score for item ``j`` is
``sum_{h in history} W[h, j]`` for an item-item matrix ``W`` made from the training events.

- ``cooccurrence``: ``W = X^T X`` off the diagonal, the number of training users with both
  items;
- ``item_knn``: ``W`` = cosine similarity of the item columns, each item's ``k`` nearest kept
  (:func:`~.item_item.cosine_neighbours`; ``k`` chosen on the validation cut);
- ``ease``: EASE's closed form (:func:`~.item_item.ease_weights`; lambda chosen on the
  validation cut): on the logs the feed issue measured, the strongest behaviour baseline.

``X`` is binary (distinct positive (user, item) training pairs of every training user). Items
without a column (no training event, or beyond ``item_item_max``) score 0, as they would in the
full models. None of these can rank an item nobody trained on above 0: cold items are the
visual models' ground.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

import numpy as np
from edgerec.sdk.evaluation.interactions import Interactions
from edgerec.sdk.evaluation.item_item import cosine_neighbours, ease_weights
from edgerec.sdk.evaluation.ranker import BaselineContext, ScoreRanker
from edgerec.sdk.evaluation.tuning import ScoreFn, edge_warning, grid, grid_search

__all__ = ["Cooccurrence", "Ease", "ItemItemScores", "ItemKnn"]


class ItemItemScores:
    """``score(user, history)``: ``(N,)`` float64 ``sum_{h in history} W[h, :]`` over the
    catalog, ``W`` (n, n) given on catalog rows ``columns`` (n,); ``self_weight`` (n,), when
    given, is taken off each history item's own score (the diagonal of a count matrix)."""

    def __init__(self, columns: np.ndarray, weights: np.ndarray, n_items: int,
                 self_weight: Optional[np.ndarray] = None) -> None:
        self.columns, self.weights, self.n_items = columns, weights, n_items
        self.position = np.full(n_items, -1, np.int64)
        self.position[columns] = np.arange(len(columns))
        self.self_weight = self_weight

    def __call__(self, user: int, history: np.ndarray) -> np.ndarray:
        rows = self.position[np.asarray(history, np.int64)]
        rows = rows[rows >= 0]
        out = np.zeros(self.n_items)
        out[self.columns] = self.weights[rows].sum(0, dtype=np.float64)
        if self.self_weight is not None:
            out[self.columns[rows]] -= self.self_weight[rows]
        return out


class _ItemItemRanker(ScoreRanker):
    """Fits ``make(context, interactions, point)`` for every point of ``points`` on the
    validation cut, keeps the best, refits it on all training events."""

    def __init__(self, context: BaselineContext, points: list[dict[str, Any]],
                 make: Callable[[BaselineContext, Interactions, Mapping[str, Any]], ScoreFn],
                 ) -> None:
        super().__init__(context.tiebreak)
        start = time.perf_counter()
        self._context = context
        cut = context.validation_cut() if len(points) > 1 else None
        best, table = (grid_search(cut, points, lambda i, p: make(context, i, p))
                       if cut is not None else (points[0], []))
        self._score = make(context, context.interactions, best)
        self.fit_seconds = time.perf_counter() - start
        columns = context.gram(context.interactions)[0]
        self.extras = {**best, "columns": len(columns), "validation": table,
                       "fit_seconds": round(self.fit_seconds, 3)}
        warning = edge_warning(self.name, best, points, table)
        if warning:
            self.extras["warning"] = warning

    def scores(self, user: int) -> np.ndarray:
        return self._score(int(self._context.users[user]), self._context.history(user))


def _cooccurrence(context: BaselineContext, interactions: Interactions,
                  point: Mapping[str, Any]) -> ScoreFn:
    columns, gram = context.gram(interactions)
    return ItemItemScores(columns, gram, interactions.n_items, np.diag(gram).copy())


def _item_knn(context: BaselineContext, interactions: Interactions,
              point: Mapping[str, Any]) -> ScoreFn:
    columns, gram = context.gram(interactions)
    return ItemItemScores(columns, cosine_neighbours(gram, point["k"]), interactions.n_items)


def _ease(context: BaselineContext, interactions: Interactions,
          point: Mapping[str, Any]) -> ScoreFn:
    columns, gram = context.gram(interactions)
    return ItemItemScores(columns, ease_weights(gram, point["lam"]), interactions.n_items)


class Cooccurrence(_ItemItemRanker):
    name = "cooccurrence"
    description = "sum over the history of co-occurrence counts (users with both items)"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context, [{}], _cooccurrence)


class ItemKnn(_ItemItemRanker):
    name = "item_knn"
    description = "item-kNN: sum over the history of cosine similarities (k nearest, tuned)"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context, grid(k=context.options.knn_neighbours), _item_knn)


class Ease(_ItemItemRanker):
    name = "ease"
    description = "EASE (Steck 2019), closed form, lambda tuned on a validation cut"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context, grid(lam=context.options.ease_lambdas), _ease)
