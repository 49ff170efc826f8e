"""Binary user x item training interactions, the input of the collaborative baselines.

:class:`Interactions` holds, per training user, the distinct catalog rows they had a positive
event on, oldest first (by their latest event). It gives the item-item Gram matrix
``X^T X`` (co-occurrence counts) over a chosen set of item columns, in user chunks so that
memory stays ``O(n^2 + chunk * n)``, and :meth:`Interactions.leave_last_out`, the validation
cut the baselines choose their hyperparameters on (each user's newest training item held out,
never a test event).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Interactions"]

_CHUNK = 1024  # users per dense block of the Gram matrix


@dataclass(frozen=True)
class Interactions:
    """``histories[u]``: int64 catalog rows of user ``u``'s distinct positive training items,
    oldest first; ``n_items``: catalog size N."""

    histories: tuple[np.ndarray, ...]
    n_items: int

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int,
                   n_items: int) -> Interactions:
        """From ``(users[i], items[i])`` positive pairs in event order (oldest first within a
        user); repeats of an item keep its latest position."""
        per_user: list[list[int]] = [[] for _ in range(n_users)]
        for u, i in zip(np.asarray(users).tolist(), np.asarray(items).tolist()):
            per_user[u].append(i)
        histories = tuple(np.array(list(dict.fromkeys(h[::-1]))[::-1], np.int64)
                          for h in per_user)
        return cls(histories, int(n_items))

    @property
    def n_users(self) -> int:
        return len(self.histories)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(users, items)`` int64, one pair per distinct (user, item)."""
        counts = [len(h) for h in self.histories]
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), counts)
        items = np.concatenate(self.histories) if self.histories else np.zeros(0, np.int64)
        return users, items.astype(np.int64)

    def item_counts(self) -> np.ndarray:
        """``(N,)`` float64: users with a positive training event per item."""
        return np.bincount(self.pairs()[1], minlength=self.n_items).astype(np.float64)

    def columns(self, limit: int) -> np.ndarray:
        """Sorted catalog rows of the items with a training event, at most ``limit`` of them
        (the most popular; ties to the lower row)."""
        counts = self.item_counts()
        trained = np.flatnonzero(counts > 0)
        if len(trained) > limit:
            order = np.lexsort((trained, -counts[trained]))
            trained = np.sort(trained[order[:limit]])
        return trained

    def gram(self, columns: np.ndarray) -> np.ndarray:
        """``(n, n)`` float32 ``X^T X`` over catalog rows ``columns`` (n,): entry ``(a, b)``
        counts the users with both items (exact below 2^24 users)."""
        n = len(columns)
        position = np.full(self.n_items, -1, np.int64)
        position[columns] = np.arange(n)
        gram = np.zeros((n, n), np.float32)
        for start in range(0, self.n_users, _CHUNK):
            block = self.histories[start:start + _CHUNK]
            cols = position[np.concatenate(block)] if block else np.zeros(0, np.int64)
            rows = np.repeat(np.arange(len(block)), [len(h) for h in block])
            keep = cols >= 0
            dense = np.zeros((len(block), n), np.float32)
            dense[rows[keep], cols[keep]] = 1.0
            gram += dense.T @ dense
        return gram

    def leave_last_out(self, users: Sequence[int]) -> tuple[Interactions, np.ndarray]:
        """These interactions without the newest item of each of ``users`` (each must have at
        least two), and those items (int64, aligned with ``users``)."""
        histories = list(self.histories)
        held = np.empty(len(users), np.int64)
        for p, u in enumerate(users):
            if len(histories[u]) < 2:
                raise ValueError(f"user {u} has fewer than two items to hold one out")
            held[p] = histories[u][-1]
            histories[u] = histories[u][:-1]
        return Interactions(tuple(histories), self.n_items), held
