"""The device's ranking for a person, in one place: top-C candidates by inner product with the
user vector, then the scorer's re-rank of those C (or the inner-product order without one).

:func:`rank_for_user` is what :meth:`edgerec.sdk.Recommender.for_user` runs, what
``edgerec evaluate`` measures as the device's model, and what the export's scorer parity gate
scores, so the three cannot drift; C comes from the bundle's
:class:`~edgerec.sdk.bundle.manifest.ScorerRecord` (the number the scorer was gated with).

A candidate source is any callable ``(u, size) -> Candidates``: the catalog's exact search
(with filters and exclusions, :meth:`Catalog.search`) on the device, or
:class:`MatrixCandidates` over float32 vectors held in memory (evaluation, export).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

__all__ = [
    "CandidateSource",
    "Candidates",
    "MatrixCandidates",
    "Ranking",
    "pool_size",
    "rank_for_user",
    "top_rows",
]

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``score(u (D,), vectors (C, D)) -> (C,)`` float32 logits (e.g. :meth:`Scorer.score`)."""


@dataclass(frozen=True)
class Candidates:
    """Stage 1's output, best first: ``keys`` (C,) (catalog rows or item ids), their float32
    ``vectors`` (C, D) and inner products ``scores`` (C,) with the user vector."""

    keys: np.ndarray
    vectors: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.keys.shape[0])


CandidateSource = Callable[[np.ndarray, int], Candidates]
"""``source(u (D,), size) -> Candidates``: the ``size`` best items by ``u . v``, best first."""


@dataclass(frozen=True)
class Ranking:
    """The top ``k``: ``keys`` (k,), ``scores`` (k,) float32 (the scorer's logits when
    ``reranked``, else inner products), ``order`` (k,) positions in the candidate set, and
    the candidate set itself."""

    keys: np.ndarray
    scores: np.ndarray
    order: np.ndarray
    reranked: bool
    candidates: Candidates

    def __len__(self) -> int:
        return int(self.keys.shape[0])


def pool_size(k: int, candidates: int, reranked: bool) -> int:
    """How many candidates stage 1 fetches: C (at least ``k``) for a re-rank, else ``k``
    (the top-k of the top-C by inner product is the top-k)."""
    return max(int(candidates), int(k)) if reranked else int(k)


def rank_for_user(u: np.ndarray, source: CandidateSource, score: Optional[ScoreFn], *,
                  k: int, candidates: int) -> Ranking:
    """Rank for user vector ``u`` (D,) float32: ``source`` gives the top
    :func:`pool_size` items by inner product; ``score`` (None: no scorer) re-ranks them, ties
    kept in inner-product order; the best ``k`` are returned."""
    pool = source(u, pool_size(k, candidates, score is not None))
    if score is None or len(pool) == 0:
        n = min(int(k), len(pool))
        order = np.arange(n, dtype=np.int64)
        return Ranking(pool.keys[:n], np.asarray(pool.scores[:n], np.float32), order, False,
                       pool)
    logits = np.asarray(score(u, pool.vectors), dtype=np.float32).reshape(-1)
    order = np.argsort(-logits, kind="stable")[: int(k)]
    return Ranking(pool.keys[order], logits[order], order, True, pool)


def top_rows(scores: np.ndarray, k: int, *, exclude: Optional[np.ndarray] = None,
             tiebreak: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices (int64) of the ``k`` largest of ``scores`` (N,), best first, never one in
    ``exclude``; ties go to the lower ``tiebreak`` (default: the lower index)."""
    s = np.array(scores, dtype=np.float64)
    if exclude is not None and len(exclude):
        s[np.asarray(exclude, dtype=np.int64)] = -np.inf
    avail = np.flatnonzero(s > -np.inf)
    if len(avail) > k:
        kth = -np.partition(-s[avail], k - 1)[k - 1]
        avail = avail[s[avail] >= kth]
    ties = avail if tiebreak is None else np.asarray(tiebreak)[avail]
    return avail[np.lexsort((ties, -s[avail]))][: int(k)]


class MatrixCandidates:
    """A candidate source over float32 item vectors ``(N, D)`` in memory: exact inner products,
    the ``exclude`` rows (e.g. the user's history) left out, ties by ``tiebreak``."""

    def __init__(self, vectors: np.ndarray, exclude: Optional[np.ndarray] = None,
                 tiebreak: Optional[np.ndarray] = None) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.exclude = exclude
        self.tiebreak = tiebreak

    def __call__(self, u: np.ndarray, size: int) -> Candidates:
        ip = self.vectors @ np.asarray(u, dtype=np.float32)
        rows = top_rows(ip, size, exclude=self.exclude, tiebreak=self.tiebreak)
        return Candidates(rows, self.vectors[rows], ip[rows].astype(np.float32))
