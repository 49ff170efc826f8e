"""The scorer's training data: leave-one-out user vectors, positives, sampled negatives, and the
ranking sets that validation NDCG and the parity gates are measured on (numpy only).

For every user with at least two distinct positive items and every such item ``i``, the user
vector is :func:`edgerec.sdk.user_vector` (the device's formula) of the user's *other* events:
every event on ``i`` is left out, so a positive is never scored against a vector that already
contains it. Dismissed items are explicit negatives with the same leave-one-out vector.
Each epoch draws fresh negatives per example (:func:`sample_epoch`):

- ``uniform``: any catalog item;
- ``popular``: items in proportion to how many users have a positive event on them;
- ``hard``: among the ``hard_pool`` items nearest to the example's user vector by inner product
  (what the device's candidate search hands the scorer).

No negative is ever one of the user's own items (any event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from edgerec.sdk.evaluation.events import Interaction
from edgerec.sdk.evaluation.ranking_metrics import ndcg_at_k
from edgerec.sdk.profile import user_vector

__all__ = [
    "EpochRows",
    "Examples",
    "NegativeSampling",
    "RankingSet",
    "build_examples",
    "hits_at_k",
    "mean_ndcg",
    "ranking_set",
    "sample_epoch",
]

_REDRAWS = 20  # rejection-sampling rounds before an unlucky negative is dropped


@dataclass(frozen=True)
class NegativeSampling:
    """Negatives drawn per positive, per epoch (see the module docstring).

    ``hard`` defaults to 0: on clothing-small (owners as users) hard negatives lowered the
    validation NDCG@10 in 4 of 5 seeds (mean 0.020 with 2 per positive vs 0.033 without; the
    inner product alone: 0.012): when
    a user's items share a look (one owner's background and camera), the nearest items the user
    has no event on are mostly their own unseen items, i.e. false negatives. Turn them on
    where unobserved look-alikes really are uninteresting (e.g. logged impressions).
    ``uniform`` 16 (and no popularity negatives) measured best of the few recipes tried on
    split seeds 1-3 (benchmarks/results/scorer_runs.jsonl); ``popular`` matters where
    popularity is skewed, which it is not here (every item has one owner).
    """

    uniform: int = 16
    popular: int = 0
    hard: int = 0
    hard_pool: int = 50

    def __post_init__(self) -> None:
        for name in ("uniform", "popular", "hard", "hard_pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.uniform + self.popular + self.hard == 0:
            raise ValueError("at least one negative per positive is needed")


@dataclass(frozen=True)
class Examples:
    """Training examples, one per (user, distinct positive or dismissed item).

    Attributes:
        u: float32 ``(P, D)`` leave-one-out user vectors.
        item: int64 ``(P,)`` catalog row of the example's item.
        label: float32 ``(P,)`` 1 (positive) or 0 (dismissed).
        weight: float32 ``(P,)`` the largest CSV ``weight`` of the user's events on the item.
        user: int64 ``(P,)`` index into ``user_ids``.
        user_ids: the users that have examples.
        own: per user, sorted int64 catalog rows of every item they have an event on.
        popularity: float64 ``(N,)`` users with a positive event per catalog row.
        hard_pool: int64 ``(P, pool)`` each example's nearest catalog rows by ``u . v``, the
            user's own items left out (``pool`` may be 0).
        counts: users and examples made and skipped, by reason.
    """

    u: np.ndarray
    item: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    user: np.ndarray
    user_ids: tuple[str, ...]
    own: tuple[np.ndarray, ...]
    popularity: np.ndarray
    hard_pool: np.ndarray
    counts: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.item)


@dataclass(frozen=True)
class EpochRows:
    """One epoch's rows: example ``example`` (index into :class:`Examples`) paired with catalog
    row ``item``, ``label`` 1/0 and BCE ``weight`` (all ``(M,)``)."""

    example: np.ndarray
    item: np.ndarray
    label: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.item)


def _positives(events: Sequence[Interaction]) -> list[str]:
    return list(dict.fromkeys(e.item_id for e in events if e.positive))


def build_examples(
    train: Mapping[str, Sequence[Interaction]],
    item_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    half_life_days: float = 30.0,
    hard_pool: int = 50,
) -> Examples:
    """Examples from each user's training events (see the module docstring).

    Args:
        train: user id -> events (any order; items not in ``item_ids`` are ignored).
        item_ids: the catalog's ids, row order of ``vectors``.
        vectors: float32 ``(N, D)`` unit item vectors.
        half_life_days: the recency half-life of :func:`~edgerec.sdk.user_vector`.
        hard_pool: nearest items kept per example for hard negatives.

    Users with fewer than two distinct positive items in the catalog have no leave-one-out
    vector and are skipped (``counts["single_item_users"]``).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    row_of = {item: r for r, item in enumerate(item_ids)}
    n_items = len(item_ids)
    us, items, labels, weights, users = [], [], [], [], []
    user_ids: list[str] = []
    own: list[np.ndarray] = []
    popularity = np.zeros(n_items, dtype=np.float64)
    counts = {"users": 0, "single_item_users": 0, "examples": 0, "positives": 0,
              "dismissed": 0, "no_vector": 0}
    for user in sorted(train):
        events = [e for e in train[user] if e.item_id in row_of]
        positives = _positives(events)
        for item in positives:
            popularity[row_of[item]] += 1
        if len(positives) < 2:
            counts["single_item_users"] += 1
            continue
        vec_of = {e.item_id: vectors[row_of[e.item_id]] for e in events}
        best_weight: dict[str, float] = {}
        for e in events:
            best_weight[e.item_id] = max(best_weight.get(e.item_id, 0.0), e.weight)
        dismissed = [i for i in dict.fromkeys(e.item_id for e in events if not e.positive)
                     if i not in set(positives)]
        made = 0
        for item, label in [(i, 1.0) for i in positives] + [(i, 0.0) for i in dismissed]:
            others = [e.to_event() for e in events if e.item_id != item]
            u = user_vector(others, vec_of, half_life_days=half_life_days)
            if u is None:  # e.g. the other events are all dismisses
                counts["no_vector"] += 1
                continue
            us.append(u)
            items.append(row_of[item])
            labels.append(label)
            weights.append(best_weight[item])
            users.append(len(user_ids))
            counts["positives" if label else "dismissed"] += 1
            made += 1
        if made:
            user_ids.append(user)
            own.append(np.array(sorted({row_of[e.item_id] for e in events}), dtype=np.int64))
    counts["users"] = len(user_ids)
    counts["examples"] = len(items)
    dim = vectors.shape[1]
    u_all = np.array(us, dtype=np.float32).reshape(-1, dim)
    user_arr = np.array(users, dtype=np.int64)
    pool = _nearest(u_all, user_arr, own, vectors, hard_pool)
    return Examples(u=u_all, item=np.array(items, dtype=np.int64),
                    label=np.array(labels, dtype=np.float32),
                    weight=np.array(weights, dtype=np.float32), user=user_arr,
                    user_ids=tuple(user_ids), own=tuple(own), popularity=popularity,
                    hard_pool=pool, counts=counts)


def _nearest(u: np.ndarray, user: np.ndarray, own: Sequence[np.ndarray], vectors: np.ndarray,
             pool: int) -> np.ndarray:
    """``(P, pool)`` nearest catalog rows to each ``u`` by inner product, own items excluded."""
    most_owned = max((len(o) for o in own), default=0)
    pool = max(0, min(pool, len(vectors) - most_owned))
    out = np.empty((len(u), pool), dtype=np.int64)
    if pool == 0 or len(u) == 0:
        return out
    for start in range(0, len(u), 512):
        sims = u[start : start + 512] @ vectors.T
        for r in range(len(sims)):
            sims[r, own[user[start + r]]] = -np.inf
        top = np.argpartition(-sims, pool - 1, axis=1)[:, :pool]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        out[start : start + len(sims)] = np.take_along_axis(top, order, 1)
    return out


def _owned_keys(ex: Examples, n_items: int) -> np.ndarray:
    """Sorted ``user * n_items + row`` for every (user, own item)."""
    parts = [i * n_items + rows for i, rows in enumerate(ex.own)]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)


def _redraw(draw, example: np.ndarray, ex: Examples, keys: np.ndarray,
            n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one item per entry of ``example`` with ``draw(n)``, redrawing the user's own
    items; entries still unlucky after :data:`_REDRAWS` rounds are dropped."""
    items = draw(len(example))
    for _ in range(_REDRAWS):
        bad = np.isin(ex.user[example] * n_items + items, keys)
        if not bad.any():
            break
        items[bad] = draw(int(bad.sum()))
    keep = ~np.isin(ex.user[example] * n_items + items, keys)
    return example[keep], items[keep]


def sample_epoch(ex: Examples, sampling: NegativeSampling, n_items: int,
                 rng: np.random.Generator) -> EpochRows:
    """Every example once (label and weight as given) plus fresh negatives (label 0, weight 1)."""
    keys = _owned_keys(ex, n_items)
    idx = np.arange(len(ex), dtype=np.int64)
    examples, items = [idx], [ex.item]
    labels, weights = [ex.label], [ex.weight]

    def add(example: np.ndarray, item: np.ndarray) -> None:
        examples.append(example)
        items.append(item)
        labels.append(np.zeros(len(item), np.float32))
        weights.append(np.ones(len(item), np.float32))

    if sampling.uniform:
        add(*_redraw(lambda n: rng.integers(0, n_items, n), np.repeat(idx, sampling.uniform),
                     ex, keys, n_items))
    total = ex.popularity.sum()
    if sampling.popular and total > 0:
        p = ex.popularity / total
        add(*_redraw(lambda n: rng.choice(n_items, n, p=p), np.repeat(idx, sampling.popular),
                     ex, keys, n_items))
    pool = ex.hard_pool.shape[1]
    if sampling.hard and pool:
        cols = rng.integers(0, pool, (len(ex), sampling.hard))
        add(np.repeat(idx, sampling.hard), np.take_along_axis(ex.hard_pool, cols, 1).ravel())
    return EpochRows(np.concatenate(examples), np.concatenate(items),
                     np.concatenate(labels), np.concatenate(weights))


@dataclass(frozen=True)
class RankingSet:
    """Users to rank the catalog for, as the device would: ``u`` float32 ``(B, D)`` from the
    user's whole history; ``seen`` per user, catalog rows never recommended (history items,
    dismissed ones included); ``relevant`` per user, catalog rows of held-out positives."""

    users: tuple[str, ...]
    u: np.ndarray
    seen: tuple[np.ndarray, ...]
    relevant: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.users)

    def describe(self) -> dict[str, Any]:
        return {"users": len(self), "relevant": int(sum(len(r) for r in self.relevant))}


def ranking_set(
    history: Mapping[str, Sequence[Interaction]],
    heldout: Mapping[str, Sequence[Interaction]],
    item_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    half_life_days: float = 30.0,
) -> RankingSet:
    """The users of ``heldout`` that have a usable ``history`` and a held-out item in the
    catalog that is not in their history."""
    row_of = {item: r for r, item in enumerate(item_ids)}
    users, us, seen, relevant = [], [], [], []
    for user in sorted(heldout):
        events = [e for e in history.get(user, ()) if e.item_id in row_of]
        vec_of = {e.item_id: vectors[row_of[e.item_id]] for e in events}
        u = user_vector([e.to_event() for e in events], vec_of, half_life_days=half_life_days)
        seen_rows = {row_of[e.item_id] for e in events}
        rel = sorted({row_of[e.item_id] for e in heldout[user]
                      if e.positive and e.item_id in row_of} - seen_rows)
        if u is None or not rel:
            continue
        users.append(user)
        us.append(u)
        seen.append(np.array(sorted(seen_rows), dtype=np.int64))
        relevant.append(np.array(rel, dtype=np.int64))
    dim = np.shape(vectors)[1]
    return RankingSet(tuple(users), np.array(us, dtype=np.float32).reshape(-1, dim),
                      tuple(seen), tuple(relevant))


def _top_k(scores: np.ndarray, rs: RankingSet, b: int, k: int,
           candidates: Optional[np.ndarray]) -> np.ndarray:
    """User ``b``'s top-k catalog rows by ``scores``, seen rows left out."""
    row = np.asarray(scores[b], dtype=np.float64).copy()
    ids = np.arange(len(row)) if candidates is None else candidates[b]
    row[np.isin(ids, rs.seen[b])] = -np.inf
    top = np.argsort(-row, kind="stable")[:k]
    return ids[top[np.isfinite(row[top])]]


def hits_at_k(scores: np.ndarray, rs: RankingSet, k: int = 10,
              candidates: Optional[np.ndarray] = None) -> int:
    """Held-out items found in the users' top-k, summed over ``rs`` (arguments as
    :func:`mean_ndcg`): how much evidence an NDCG value rests on."""
    return int(sum(np.isin(_top_k(scores, rs, b, k, candidates), rs.relevant[b]).sum()
                   for b in range(len(rs))))


def mean_ndcg(scores: np.ndarray, rs: RankingSet, k: int = 10,
              candidates: Optional[np.ndarray] = None) -> Optional[float]:
    """Mean NDCG@k over ``rs``'s users (:func:`edgerec.sdk.ndcg_at_k`, binary gains).

    ``scores``: float ``(B, N)`` over the whole catalog (seen items are excluded here), or,
    with ``candidates`` int64 ``(B, C)`` catalog rows, ``(B, C)`` scores of those rows only
    (a re-ranked candidate set; relevant items outside it count as misses). None when ``rs``
    is empty.
    """
    if len(rs) == 0:
        return None
    values = [ndcg_at_k(_top_k(scores, rs, b, k, candidates), rs.relevant[b].tolist(), k)
              for b in range(len(rs))]
    return float(np.mean(values))
