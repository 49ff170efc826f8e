"""The BPR trainers behind two of the evaluation's baselines (numpy only).

- :func:`train_bpr`: BPR matrix factorisation on item ids (Rendle et al. 2009);
- :func:`train_vbpr`: BPR on the items' visual vectors, ``theta_u . (E v) + beta . v`` (after
  He & McAuley's VBPR, without the per-item factors, so cold items can be scored).

Both are seeded, use Adam on mini-batches of uniformly sampled ``(user, positive, negative)``
triples and record their per-epoch loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BPRModel", "VBPRModel", "train_bpr", "train_vbpr"]

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
class BPRModel:
    """BPR-MF: ``score(u, i) = P[u] . Q[i] + b[i]``; ``P`` (U, F), ``Q`` (N, F), ``b`` (N,)
    float64; ``losses`` the mean ``-log sigmoid(x_uij)`` of each epoch."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray
    losses: tuple[float, ...]

    def scores(self, user: int) -> np.ndarray:
        """``(N,)`` float64 scores of every item for user index ``user``."""
        return self.item_factors @ self.user_factors[user] + self.item_bias


@dataclass(frozen=True)
class VBPRModel:
    """Visual BPR: ``score(u, i) = theta[u] . (E v_i) + beta . v_i``; ``theta`` (U, F),
    ``E`` (F, D), ``beta`` (D,) float64; ``losses`` per epoch as in :class:`BPRModel`."""

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
        bad = np.isin(users.astype(np.int64) * n_items + j, positives)
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


def train_bpr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, *,
              factors: int = 32, epochs: int = 30, lr: float = 0.02, reg: float = 1e-3,
              seed: int = 0) -> BPRModel:
    """Train BPR-MF on positive ``(users[i], items[i])`` pairs (int arrays, (n,)).

    Negatives are drawn uniformly from the items that have a training pair (the model's item
    universe), never from the user's positives. Items without a training pair end with zero
    factors and the mean bias. Adam on mini-batches of 256 triples; seeded.
    """
    users, items = _check_pairs(users, items)
    rng = np.random.default_rng(seed)
    p = rng.normal(0.0, 0.1, (n_users, factors))
    q = rng.normal(0.0, 0.1, (n_items, factors))
    b = np.zeros(n_items)
    pool = np.unique(items)
    positives = _pairs(users, items, n_items)
    adam = _Adam([p, q, b], lr)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for u, i, j in _triples(rng, users, items, pool, positives, n_items):
            pu, d = p[u], q[i] - q[j]
            x = (pu * d).sum(1) + b[i] - b[j]
            total += float(np.logaddexp(0.0, -x).sum())
            g = -1.0 / (1.0 + np.exp(x)) / len(u)  # d(mean loss)/dx
            gp, gq, gb = np.zeros_like(p), np.zeros_like(q), np.zeros_like(b)
            np.add.at(gp, u, g[:, None] * d + reg * pu / len(u))
            np.add.at(gq, i, g[:, None] * pu + reg * q[i] / len(u))
            np.add.at(gq, j, -g[:, None] * pu + reg * q[j] / len(u))
            np.add.at(gb, i, g)
            np.add.at(gb, j, -g)
            adam.step([gp, gq, gb])
        losses.append(total / len(users))
    cold = np.ones(n_items, bool)
    cold[pool] = False
    q[cold] = 0.0
    b[cold] = b[pool].mean()
    return BPRModel(p, q, b, tuple(losses))


def train_vbpr(users: np.ndarray, items: np.ndarray, vectors: np.ndarray, n_users: int, *,
               factors: int = 32, epochs: int = 30, lr: float = 0.02, reg: float = 1e-3,
               seed: int = 0) -> VBPRModel:
    """Train visual BPR on positive ``(users[i], items[i])`` pairs over ``vectors`` (N, D).

    Negatives are drawn uniformly from the whole catalog (the model has no per-item
    parameter, so any item can be scored), never from the user's positives. Adam on
    mini-batches of 256 triples; seeded.
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
            # einsum, not BLAS: tiny products where a threaded BLAS on busy cores crawls
            ed, tu = np.einsum("bd,fd->bf", d, e), theta[u]
            x = (tu * ed).sum(1) + np.einsum("bd,d->b", d, beta)
            total += float(np.logaddexp(0.0, -x).sum())
            g = -1.0 / (1.0 + np.exp(x)) / len(u)
            gt = np.zeros_like(theta)
            np.add.at(gt, u, g[:, None] * ed + reg * tu / len(u))
            ge = np.einsum("bf,bd->fd", g[:, None] * tu, d) + reg * e
            gb = np.einsum("b,bd->d", g, d) + reg * beta
            adam.step([gt, ge, gb])
        losses.append(total / len(users))
    return VBPRModel(theta, e, beta, tuple(losses))
