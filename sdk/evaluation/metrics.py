"""Ranking metrics at several cut-offs, computed from the ranks of the relevant items.

A model's ranking of the whole catalog (the user's history left out) is summarised, per user,
by ``ranks``: the 1-based position of each relevant (held-out) item in it. Every metric here is
a function of those ranks, so one ranking per user and model serves every cut-off, MRR and
every slice of the relevant items (cold, warm, a label: the ranks of that slice's items)::

    ranks = item_ranks(scores, exclude=history, items=held_out, tiebreak=order)
    NDCG(20).compute(ranks); parse_metric("HR@10").per_user([ranks_u1, ranks_u2, ...])

Gains are binary. With ``n`` relevant items and ``hits`` those ranked within ``k``:

* ``Recall@k = |hits| / n``; ``HR@k = 1`` if any hit, else 0
* ``NDCG@k = sum_hits 1 / log2(rank + 1)`` over the ideal ``sum_{i=1..min(n, k)} 1 / log2(i + 1)``
* ``MAP@k`` (AP@k) ``= sum_hits P@rank / min(n, k)`` (as in :mod:`.ranking_metrics`)
* ``MRR = 1 / (rank of the best-ranked relevant item)``, over the whole ranking (no cut-off)

They agree with the list-based functions of :mod:`.ranking_metrics` on the same ranking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

import numpy as np

__all__ = [
    "NDCG",
    "AveragePrecision",
    "HitRate",
    "Metric",
    "Recall",
    "ReciprocalRank",
    "item_ranks",
    "parse_metric",
]


def _flat(ranks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated ranks sorted within each user, each one's user index, and the counts."""
    counts = np.array([len(r) for r in ranks], np.int64)
    if (counts == 0).any():
        raise ValueError("every user needs at least one relevant item (skip the others)")
    users = np.repeat(np.arange(len(ranks)), counts)
    flat = np.concatenate([np.asarray(r, np.float64) for r in ranks]) if len(ranks) else \
        np.zeros(0)
    if (flat < 1).any():
        raise ValueError("ranks are 1-based positions")
    order = np.lexsort((flat, users))
    return flat[order], users[order], counts


class Metric:
    """A ranking metric: ``name`` (e.g. ``"NDCG@20"``), ``k`` (None: no cut-off).

    ``compute(ranks)``: one user's value from the 1-based ranks of their relevant items;
    ``per_user(list of ranks)``: ``(U,)`` float64 values, vectorised over users.
    """

    prefix = ""
    k: Optional[int] = None

    def __init__(self, k: Optional[int] = None) -> None:
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k = k

    @property
    def name(self) -> str:
        return self.prefix if self.k is None else f"{self.prefix}@{self.k}"

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Metric) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def compute(self, ranks: np.ndarray) -> float:
        return float(self.per_user([np.asarray(ranks)])[0])

    def per_user(self, ranks: Sequence[np.ndarray]) -> np.ndarray:
        flat, users, counts = _flat(ranks)
        return self._values(flat, users, counts)

    def _values(self, flat: np.ndarray, users: np.ndarray, counts: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Recall(Metric):
    prefix = "Recall"

    def _values(self, flat, users, counts):
        return np.bincount(users, flat <= self.k, len(counts)) / counts


class HitRate(Metric):
    prefix = "HR"

    def _values(self, flat, users, counts):
        return (np.bincount(users, flat <= self.k, len(counts)) > 0).astype(np.float64)


class NDCG(Metric):
    prefix = "NDCG"

    def _values(self, flat, users, counts):
        gain = np.where(flat <= self.k, 1.0 / np.log2(flat + 1.0), 0.0)
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, self.k + 2)))
        return np.bincount(users, gain, len(counts)) / ideal[np.minimum(counts, self.k) - 1]


class AveragePrecision(Metric):
    prefix = "MAP"

    def _values(self, flat, users, counts):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.arange(len(flat)) - starts[users] + 1  # hits so far (ranks sorted)
        precision = np.where(flat <= self.k, position / flat, 0.0)
        return np.bincount(users, precision, len(counts)) / np.minimum(counts, self.k)


class ReciprocalRank(Metric):
    prefix = "MRR"

    def __init__(self) -> None:
        super().__init__(None)

    def _values(self, flat, users, counts):
        best = np.full(len(counts), np.inf)
        np.minimum.at(best, users, flat)
        return 1.0 / best


_KINDS = {"NDCG": NDCG, "Recall": Recall, "HR": HitRate, "MAP": AveragePrecision}


def parse_metric(name: str) -> Metric:
    """``"NDCG@20"``, ``"Recall@20"``, ``"HR@10"``, ``"MAP@10"`` or ``"MRR"`` as a
    :class:`Metric`; ``ValueError`` for anything else."""
    if name == "MRR":
        return ReciprocalRank()
    match = re.fullmatch(r"(NDCG|Recall|HR|MAP)@([1-9][0-9]*)", name)
    if match is None:
        raise ValueError(f"unknown metric {name!r}: use NDCG@k, Recall@k, HR@k, MAP@k or MRR")
    return _KINDS[match.group(1)](int(match.group(2)))


def item_ranks(scores: np.ndarray, *, exclude: np.ndarray, items: np.ndarray,
               tiebreak: np.ndarray) -> np.ndarray:
    """The 1-based positions (int64) of catalog rows ``items`` in the ranking of ``scores``
    (N,) without the rows ``exclude``: higher scores first, equal scores by the lower
    ``tiebreak`` (N,) (the order of :func:`edgerec.sdk.ranking.top_rows`)."""
    s = np.asarray(scores, np.float64)
    available = np.ones(len(s), bool)
    available[np.asarray(exclude, np.int64)] = False
    items = np.asarray(items, np.int64)
    if not available[items].all():
        raise ValueError("a relevant item is also excluded")
    s, t = s[available], np.asarray(tiebreak)[available]
    mine, their = np.asarray(scores, np.float64)[items], np.asarray(tiebreak)[items]
    ahead = (s[None, :] > mine[:, None]) | ((s[None, :] == mine[:, None])
                                             & (t[None, :] < their[:, None]))
    return ahead.sum(1).astype(np.int64) + 1
