"""What an evaluation ranks: the catalog in memory and, per evaluated user, the training items,
the held-out items and the device's user vector (:func:`build_task`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np
from edgerec.sdk.bundle.manifest import UserVectorRecipe
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.evaluation.events import Holdout
from edgerec.sdk.profile import user_vector

__all__ = ["CatalogData", "EvalTask", "build_task"]


@dataclass(frozen=True)
class CatalogData:
    """The catalog in memory: ``ids`` (N,), float32 ``vectors`` (N, D), ``labels`` (N,) (''
    when an item has none), ``index`` id -> row."""

    ids: tuple[str, ...]
    index: Mapping[str, int]
    vectors: np.ndarray
    labels: tuple[str, ...]

    @classmethod
    def load(cls, catalog: Catalog) -> CatalogData:
        ids = tuple(catalog)
        found, vectors = catalog.vectors(list(ids)) if ids else ((), np.zeros((0, catalog.dim)))
        labels = []
        for item in found:
            label = catalog.get(item).metadata.get("label")
            labels.append("" if label is None else str(label))
        return cls(tuple(found), {x: i for i, x in enumerate(found)},
                   np.ascontiguousarray(vectors, dtype=np.float32), tuple(labels))


@dataclass(frozen=True)
class EvalTask:
    """The evaluated users (sorted) and what a ranker may learn from.

    Attributes:
        users: evaluated user ids (U,).
        banned: per user, catalog rows of the training items (never recommended).
        test: per user, catalog rows of the held-out items (the relevant ones).
        u: (U, D) float32 device user vectors from the training events.
        train_users, train_items: (P,) int64 positive training pairs over every training
            user (``train_users`` indexes ``pair_users``).
        pair_users: training user id -> index in ``train_users``.
        item_counts: (N,) positive training events per catalog row.
        cold: (N,) bool, True for items with no training event at all.
        dropped_test_events: held-out events whose item is not in the catalog.
        no_history_users: users with held-out items but no usable training history.
    """

    users: tuple[str, ...]
    banned: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    u: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    pair_users: Mapping[str, int]
    item_counts: np.ndarray
    cold: np.ndarray
    dropped_test_events: int
    no_history_users: int

    @property
    def user_pairs_index(self) -> np.ndarray:
        """(U,) each evaluated user's index in ``train_users``."""
        return np.array([self.pair_users[u] for u in self.users], np.int64)


def _training_pairs(split: Holdout, index: Mapping[str, int], n: int
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, int], list[int], list[int]]:
    seen = np.zeros(n, bool)
    counts = np.zeros(n)
    pair_users: dict[str, int] = {}
    pair_u, pair_i = [], []
    for user in sorted(split.train):
        for it in split.train[user]:
            j = index.get(it.item_id)
            if j is None:
                continue
            seen[j] = True
            if it.positive:
                counts[j] += 1
                pair_u.append(pair_users.setdefault(user, len(pair_users)))
                pair_i.append(j)
    return seen, counts, pair_users, pair_u, pair_i


def build_task(split: Holdout, data: CatalogData,
               recipe: Optional[UserVectorRecipe] = None) -> EvalTask:
    """The users of ``split.test`` with a held-out catalog item and a usable training history,
    their user vectors made with ``recipe`` (the device's, default the standard one)."""
    recipe = recipe or UserVectorRecipe()
    index, n = data.index, len(data.ids)
    seen, counts, pair_users, pair_u, pair_i = _training_pairs(split, index, n)
    users, banned, test, vectors = [], [], [], []
    dropped = no_history = 0
    for user in sorted(split.test):
        held = [index[e.item_id] for e in split.test[user] if e.item_id in index]
        dropped += len(split.test[user]) - len(held)
        train = split.train.get(user, ())
        rows = {e.item_id: data.vectors[index[e.item_id]] for e in train if e.item_id in index}
        u = user_vector([e.to_event() for e in train], rows,
                        half_life_days=recipe.half_life_days, weights=recipe.event_weights)
        if not held or u is None or user not in pair_users:
            no_history += u is None and bool(held)
            continue
        users.append(user)
        banned.append(np.array(sorted({index[i] for i in rows}), dtype=np.int64))
        test.append(np.array(sorted(set(held)), dtype=np.int64))
        vectors.append(u)
    dim = data.vectors.shape[1]
    return EvalTask(tuple(users), tuple(banned), tuple(test),
                    np.array(vectors, np.float32).reshape(len(users), dim),
                    np.array(pair_u, np.int64), np.array(pair_i, np.int64), pair_users, counts,
                    ~seen, dropped, no_history)
