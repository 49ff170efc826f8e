"""The rankers the device's feed is measured against, all in the same run (:data:`BASELINES`,
in the order results are reported). Each is a :class:`~.ranker.Ranker`; adding one: a class
with ``name``, ``description`` and ``scores(user)`` (subclass :class:`~.ranker.ScoreRanker`),
trained in its constructor from a :class:`~.ranker.BaselineContext`, added to
:data:`BASELINES`.

- ``visual_knn``: ``u . v`` with the device's recency-weighted user vector (the feed without a
  scorer, what ``for_user`` ranks by today);
- ``visual_knn_mean``: ``u . v`` with ``u`` the plain mean of the history's vectors (no decay);
- ``random``: seeded uniform scores (the floor);
- ``popularity``: the item's number of training users;
- ``label_popularity``: the training users of the item's ``label`` (catalog metadata):
  non-personal, treats cold and warm items alike;
- ``cooccurrence``, ``item_knn``, ``ease``: item-item models (:mod:`.cf_baselines`);
- ``bpr``, ``als``: ``implicit``'s matrix factorisation (:mod:`.implicit_baselines`,
  optional); they replace the numpy BPR this module had, which added nothing beside them;
- ``vbpr``: BPR on the visual vectors, ``theta_u . (E v) + beta . v``
  (:func:`~.bpr.train_vbpr`, numpy): no per-item parameter, so it scores cold items too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from edgerec.sdk.evaluation.bpr import train_vbpr
from edgerec.sdk.evaluation.cf_baselines import Cooccurrence, Ease, ItemKnn
from edgerec.sdk.evaluation.implicit_baselines import ImplicitAls, ImplicitBpr
from edgerec.sdk.evaluation.ranker import (
    BaselineContext,
    BaselineUnavailableError,
    Ranker,
    ScoreRanker,
    one_blas_thread,
)

__all__ = [
    "BASELINES",
    "LabelPopularity",
    "Popularity",
    "RandomScores",
    "Vbpr",
    "VisualKnn",
    "VisualKnnMean",
    "make_baselines",
]


class VisualKnn(ScoreRanker):
    name = "visual_knn"
    description = "u.v, u = the device's recency-weighted mean of the history (no scorer)"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context.tiebreak)
        self._u, self._v = context.task.u, context.data.vectors

    def scores(self, user: int) -> np.ndarray:
        return (self._v @ self._u[user]).astype(np.float64)


class VisualKnnMean(ScoreRanker):
    name = "visual_knn_mean"
    description = "u.v, u = the plain mean of the history's vectors (no recency decay)"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context.tiebreak)
        v = context.data.vectors
        u = np.stack([v[context.history(p)].mean(0) for p in range(len(context.task.users))])
        u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        self._u, self._v = u.astype(np.float32), v

    def scores(self, user: int) -> np.ndarray:
        return (self._v @ self._u[user]).astype(np.float64)


class RandomScores(ScoreRanker):
    name = "random"
    description = "uniform random scores, seeded per user"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context.tiebreak)
        self._seed, self._n = context.seed, len(context.data.ids)

    def scores(self, user: int) -> np.ndarray:
        return np.random.default_rng([self._seed, 5, user]).random(self._n)


class Popularity(ScoreRanker):
    name = "popularity"
    description = "number of training users of the item"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context.tiebreak)
        self._counts = context.interactions.item_counts()

    def scores(self, user: int) -> np.ndarray:
        return self._counts


class LabelPopularity(ScoreRanker):
    name = "label_popularity"
    description = "number of training users of the item's label"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context.tiebreak)
        labels = context.data.labels
        label_ids = {lab: i for i, lab in enumerate(sorted(set(labels)))}
        item_label = np.array([label_ids[lab] for lab in labels], np.int64)
        per_label = np.bincount(item_label, weights=context.interactions.item_counts(),
                                minlength=len(label_ids))
        if "" in label_ids:  # items without a label share no label's popularity
            per_label[label_ids[""]] = 0.0
        self._scores = per_label[item_label]  # ties (within a label): the seeded order

    def scores(self, user: int) -> np.ndarray:
        return self._scores


class Vbpr(ScoreRanker):
    name = "vbpr"
    description = "BPR on visual vectors: theta_u.(E v) + beta.v (numpy; scores cold items)"

    def __init__(self, context: BaselineContext) -> None:
        super().__init__(context.tiebreak)
        o = context.options
        self._v, self._users = context.data.vectors, context.users
        users, items = context.interactions.pairs()
        start = time.perf_counter()
        with one_blas_thread()[0]:
            self._model = train_vbpr(users, items, self._v, context.interactions.n_users,
                                     factors=o.vbpr_factors, epochs=o.vbpr_epochs,
                                     lr=o.vbpr_lr, reg=o.vbpr_reg, seed=context.seed + 3)
        self.fit_seconds = time.perf_counter() - start
        self.extras = {"losses": list(self._model.losses),
                       "fit_seconds": round(self.fit_seconds, 3)}

    def scores(self, user: int) -> np.ndarray:
        return self._model.scores(int(self._users[user]), self._v)


BASELINES: tuple[type[Any], ...] = (
    VisualKnn, VisualKnnMean, RandomScores, Popularity, LabelPopularity, Cooccurrence, ItemKnn,
    Ease, ImplicitBpr, ImplicitAls, Vbpr,
)
"""Every baseline, in the order results are reported."""


def make_baselines(context: BaselineContext) -> tuple[list[Ranker], dict[str, str]]:
    """Train every baseline of :data:`BASELINES` not in ``context.options.skip``: the rankers,
    and ``{name: reason}`` for those that could not run here. The context's Gram matrices are
    released afterwards."""
    rankers: list[Ranker] = []
    skipped: dict[str, str] = {}
    try:
        for cls in BASELINES:
            if cls.name in context.options.skip:
                continue
            try:
                rankers.append(cls(context))
            except BaselineUnavailableError as exc:
                skipped[cls.name] = str(exc)
    finally:
        context.release()
    return rankers, skipped
