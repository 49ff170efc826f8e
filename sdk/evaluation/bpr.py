"""The visual BPR trainer behind the ``vbpr`` baseline (numpy only).

:func:`train_vbpr`: BPR (Rendle et al. 2009) on the items' visual vectors,
``theta_u . (E v) + beta . v`` (after He & McAuley's VBPR, without the per-item factors, so cold
items can be scored). Seeded, Adam on mini-batches of uniformly sampled ``(user, positive,
negative)`` triples, per-epoch loss recorded. (Plain BPR on item ids is ``implicit``'s, in
:mod:`.implicit_baselines`.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["VBPRModel", "train_vbpr"]

_BATCH = 256
_NEGATIVE_RETRIES = 5


class _Adam:
    """Adam over a list of dense float64 arrays, updated in place."""

    def __init__(self, params: Sequence[np.ndarray], lr: float) -> None:
        self.params, self.lr, self.t = list(params), lr, 0
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]

    def step(self, grads: Sequence[np.ndarray], b1: float = 0.9, b2: float = 0.999) -> None:
        self.t += 1
        scale = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= scale * m / (np.sqrt(v) + 1e-8)


@dataclass(frozen=True)
class VBPRModel:
    """Visual BPR: ``score(u, i) = theta[u] . (E v_i) + beta . v_i``; ``theta`` (U, F),
    ``E`` (F, D), ``beta`` (D,) float64; ``losses`` the mean ``-log sigmoid(x_uij)`` of each
    epoch."""

    user_factors: np.ndarray
    projection: np.ndarray
    visual_bias: np.ndarray
    losses: tuple[float, ...]

    def scores(self, user: int, vectors: np.ndarray) -> np.ndarray:
        """``(N,)`` float64 scores of ``vectors`` (N, D) for user index ``user``."""
        v = np.asarray(vectors, dtype=np.float64)
        return v @ (self.projection.T @ self.user_factors[user] + self.visual_bias)


def _pairs(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))


def _negatives(rng: np.random.Generator, users: np.ndarray, pool: np.ndarray,
               positives: np.ndarray, n_items: int) -> np.ndarray:
    """One item of ``pool`` per user, resampled (a few times) where it is a positive."""
    j = pool[rng.integers(0, len(pool), len(users))]
    for _ in range(_NEGATIVE_RETRIES):
        key = users.astype(np.int64) * n_items + j  # positives: sorted, unique
        bad = positives[np.minimum(np.searchsorted(positives, key), len(positives) - 1)] == key
        if not bad.any():
            break
        j[bad] = pool[rng.integers(0, len(pool), int(bad.sum()))]
    return j


def _triples(rng: np.random.Generator, users: np.ndarray, items: np.ndarray, pool: np.ndarray,
             positives: np.ndarray, n_items: int):
    """One epoch of shuffled mini-batches of ``(user, positive, negative)`` index arrays."""
    for batch in np.array_split(rng.permutation(len(users)), max(1, len(users) // _BATCH)):
        u = users[batch]
        yield u, items[batch], _negatives(rng, u, pool, positives, n_items)


def _check_pairs(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    if users.ndim != 1 or users.shape != items.shape or len(users) == 0:
        raise ValueError(f"users and items must be equal non-empty 1-D arrays, got "
                         f"{users.shape} and {items.shape}")
    return users, items


def train_vbpr(users: np.ndarray, items: np.ndarray, vectors: np.ndarray, n_users: int, *,
               factors: int = 32, epochs: int = 30, lr: float = 0.02, reg: float = 1e-3,
               seed: int = 0) -> VBPRModel:
    """Train visual BPR on positive ``(users[i], items[i])`` pairs over ``vectors`` (N, D).

    Negatives are drawn uniformly from the whole catalog (the model has no per-item
    parameter, so any item can be scored), never from the user's positives. Adam on
    mini-batches of 256 triples; seeded. Run it with one BLAS thread (:func:`.one_blas_thread`):
    its products are small, and a threaded BLAS on busy cores crawls.
    """
    users, items = _check_pairs(users, items)
    v = np.asarray(vectors, dtype=np.float64)
    n_items, dim = v.shape
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.1, (n_users, factors))
    e = rng.normal(0.0, 1.0 / math.sqrt(dim), (factors, dim))
    beta = np.zeros(dim)
    pool = np.arange(n_items)
    positives = _pairs(users, items, n_items)
    adam = _Adam([theta, e, beta], lr)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for u, i, j in _triples(rng, users, items, pool, positives, n_items):
            d = v[i] - v[j]
            ed, tu = d @ e.T, theta[u]
            x = (tu * ed).sum(1) + d @ beta
            total += float(np.logaddexp(0.0, -x).sum())
            g = -1.0 / (1.0 + np.exp(x)) / len(u)
            gt = np.zeros_like(theta)
            np.add.at(gt, u, g[:, None] * ed + reg * tu / len(u))
            ge = (g[:, None] * tu).T @ d + reg * e
            gb = g @ d + reg * beta
            adam.step([gt, ge, gb])
        losses.append(total / len(users))
    return VBPRModel(theta, e, beta, tuple(losses))
