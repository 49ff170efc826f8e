"""The rankers the device's feed is measured against, behind one small protocol.

A :class:`Ranker` scores every catalog item for an evaluated user (for the AUC) and gives its
top-k, never one of the user's training items. Adding a baseline: write a class with ``name``,
``description``, ``scores(user)`` and ``top(user, exclude, k)`` (subclass :class:`ScoreRanker`
to get ``top`` from the scores), train it in its constructor from the :class:`EvalTask` and
:class:`CatalogData`, and add it to :data:`BASELINES`.

- ``visual_knn``: ``u . v`` (the device's ranking without a scorer);
- ``popularity``: the item's number of positive training events;
- ``label_popularity``: the positive training events on the item's ``label`` (catalog
  metadata): non-personal, treats cold and warm items alike;
- ``bpr``: BPR matrix factorisation on item ids (:func:`~.bpr.train_bpr`): items without a
  training event get zero factors and the mean bias, so it cannot rank them;
- ``vbpr``: BPR on the visual vectors, ``theta_u . (E v) + beta . v``
  (:func:`~.bpr.train_vbpr`): no per-item parameter, so it scores cold items too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable, Protocol

import numpy as np
from edgerec.sdk.evaluation.bpr import train_bpr, train_vbpr
from edgerec.sdk.evaluation.task import CatalogData, EvalTask
from edgerec.sdk.ranking import top_rows

__all__ = [
    "BASELINES",
    "Bpr",
    "LabelPopularity",
    "Popularity",
    "Ranker",
    "ScoreRanker",
    "Vbpr",
    "VisualKnn",
    "make_baselines",
]


class Ranker(Protocol):
    """A model :func:`~edgerec.sdk.evaluation.evaluate` ranks with.

    ``user`` is a position in :attr:`EvalTask.users`; ``scores`` returns ``(N,)`` float64 over
    the catalog rows; ``top`` returns its best ``k`` rows (int64), none of ``exclude``.
    ``fit_seconds`` is its training time; ``extras`` goes into the results (e.g. losses).
    """

    name: str
    description: str
    fit_seconds: float
    extras: dict[str, Any]

    def scores(self, user: int) -> np.ndarray: ...

    def top(self, user: int, exclude: np.ndarray, k: int) -> np.ndarray: ...


class ScoreRanker:
    """A ranker whose top-k is the top-k of its scores, ties broken by ``tiebreak`` (N,)."""

    name = ""
    description = ""

    def __init__(self, tiebreak: np.ndarray) -> None:
        self.tiebreak = tiebreak
        self.fit_seconds = 0.0
        self.extras: dict[str, Any] = {}

    def scores(self, user: int) -> np.ndarray:
        raise NotImplementedError

    def top(self, user: int, exclude: np.ndarray, k: int) -> np.ndarray:
        return top_rows(self.scores(user), k, exclude=exclude, tiebreak=self.tiebreak)


class VisualKnn(ScoreRanker):
    name = "visual_knn"
    description = "u.v, u = recency-weighted mean of the history's vectors (no scorer)"

    def __init__(self, task: EvalTask, data: CatalogData, tiebreak: np.ndarray,
                 **_: Any) -> None:
        super().__init__(tiebreak)
        self._u, self._v = task.u, data.vectors

    def scores(self, user: int) -> np.ndarray:
        return (self._v @ self._u[user]).astype(np.float64)


class Popularity(ScoreRanker):
    name = "popularity"
    description = "number of positive training events of the item"

    def __init__(self, task: EvalTask, data: CatalogData, tiebreak: np.ndarray,
                 **_: Any) -> None:
        super().__init__(tiebreak)
        self._counts = np.asarray(task.item_counts, np.float64)

    def scores(self, user: int) -> np.ndarray:
        return self._counts


class LabelPopularity(ScoreRanker):
    name = "label_popularity"
    description = "number of positive training events of the item's label"

    def __init__(self, task: EvalTask, data: CatalogData, tiebreak: np.ndarray,
                 **_: Any) -> None:
        super().__init__(tiebreak)
        label_ids = {lab: i for i, lab in enumerate(sorted(set(data.labels)))}
        item_label = np.array([label_ids[lab] for lab in data.labels], np.int64)
        per_label = np.bincount(item_label, weights=task.item_counts, minlength=len(label_ids))
        if "" in label_ids:  # items without a label share no label's popularity
            per_label[label_ids[""]] = 0.0
        self._scores = per_label[item_label]  # ties (within a label): the seeded order

    def scores(self, user: int) -> np.ndarray:
        return self._scores


def _timed(make: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = make()
    return value, time.perf_counter() - start


class Bpr(ScoreRanker):
    name = "bpr"
    description = "BPR matrix factorisation on item ids (cannot rank cold items)"

    def __init__(self, task: EvalTask, data: CatalogData, tiebreak: np.ndarray, *,
                 seed: int, hyper: Mapping[str, Any], **_: Any) -> None:
        super().__init__(tiebreak)
        self._model, self.fit_seconds = _timed(lambda: train_bpr(
            task.train_users, task.train_items, len(task.pair_users), len(data.ids),
            seed=seed + 2, **hyper))
        self._users = task.user_pairs_index
        self.extras = {"losses": list(self._model.losses), "fit_seconds": self.fit_seconds}

    def scores(self, user: int) -> np.ndarray:
        return self._model.scores(self._users[user])


class Vbpr(ScoreRanker):
    name = "vbpr"
    description = "BPR on visual vectors: theta_u.(E v) + beta.v (scores cold items)"

    def __init__(self, task: EvalTask, data: CatalogData, tiebreak: np.ndarray, *,
                 seed: int, hyper: Mapping[str, Any], **_: Any) -> None:
        super().__init__(tiebreak)
        self._v = data.vectors
        self._model, self.fit_seconds = _timed(lambda: train_vbpr(
            task.train_users, task.train_items, data.vectors, len(task.pair_users),
            seed=seed + 3, **hyper))
        self._users = task.user_pairs_index
        self.extras = {"losses": list(self._model.losses), "fit_seconds": self.fit_seconds}

    def scores(self, user: int) -> np.ndarray:
        return self._model.scores(self._users[user], self._v)


BASELINES: tuple[type[ScoreRanker], ...] = (VisualKnn, Popularity, LabelPopularity, Bpr, Vbpr)
"""Every baseline, in the order results are reported."""


def make_baselines(task: EvalTask, data: CatalogData, tiebreak: np.ndarray, *, seed: int,
                   hyper: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> list[Ranker]:
    """Train every baseline of :data:`BASELINES` not named in ``skip``.

    ``hyper``: BPR/VBPR training (``factors``, ``epochs``, ``lr``, ``reg``)."""
    return [cls(task, data, tiebreak, seed=seed, hyper=hyper)
            for cls in BASELINES if cls.name not in skip]
