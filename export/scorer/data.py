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

**Memory.** Nothing of size examples x dimension is kept. With exponential decay normalised
by the weight sum, the reference time only scales every weight by one common factor, so with
``w_e = kind_weight * 0.5 ** ((t_ref - t_e) / half_life)`` relative to the user's newest event
``t_ref`` and ``S = sum_e w_e v_e``, the leave-one-out vector of item ``i`` is
``normalise(S - W_i v_i)`` (``W_i``: the summed weight of the user's events on ``i``). So
:class:`Examples` keeps one ``S`` per user and one ``W_i`` per example (O(n) per user instead
of one ``user_vector`` call over the other events per item, O(n^2)), and
:meth:`Examples.user_vectors` builds the vectors of the examples an epoch uses. Where the
subtraction would cancel (one item holds almost all of the user's weight, e.g. a single recent
event after years of silence), that example's vector is computed by ``user_vector`` itself and
kept (at most about one per user).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from edgerec.export.options import NegativeSampling
from edgerec.sdk import DEFAULT_EVENT_WEIGHTS
from edgerec.sdk.evaluation.events import Interaction
from edgerec.sdk.evaluation.ranking_metrics import ndcg_at_k
from edgerec.sdk.profile import user_vector
from edgerec.sdk.progress import track
from edgerec.sdk.ranking import MatrixCandidates, pool_size, top_rows

__all__ = [
    "EpochRows",
    "Examples",
    "RankingSet",
    "build_examples",
    "candidate_rows",
    "device_candidates",
    "hits_at_k",
    "mean_ndcg",
    "ranking_set",
    "sample_epoch",
]

_REDRAWS = 20  # rejection-sampling rounds before an unlucky negative is dropped
_SECONDS_PER_DAY = 86400.0
# below this ||S - W_i v_i|| / sum|w| the subtraction may lose float32 precision: the example's
# vector is computed by user_vector instead (float64 rounding ~1e-16 * sum|w| / ||S - W_i v_i||)
_CANCELLATION = 1e-6
_CHUNK = 512  # rows per block where a (rows, D) float64 temporary is made



@dataclass(frozen=True)
class Examples:
    """Training examples, one per (user, distinct positive or dismissed item).

    Attributes:
        item: int64 ``(P,)`` catalog row of the example's item.
        label: float32 ``(P,)`` 1 (positive) or 0 (dismissed).
        weight: float32 ``(P,)`` the largest CSV ``weight`` of the user's events on the item.
        user: int64 ``(P,)`` index into ``user_ids``.
        user_ids: the users that have examples.
        own: per user, sorted int64 catalog rows of every item they have an event on.
        popularity: float64 ``(N,)`` users with a positive event per catalog row.
        pool: nearest items per example that hard negatives are drawn from (0: none); see
            :meth:`nearest` (searched when an epoch needs them, for that epoch's examples).
        vectors: the float32 ``(N, D)`` catalog the examples index (shared, not copied).
        user_sum: float64 ``(U, D)`` per user ``S = sum_e w_e v_e`` (module docstring).
        drop: float64 ``(P,)`` ``W_i``: the summed weight of the user's events on the item.
        exact_index, exact_u: int64 ``(F,)`` sorted example indices whose vector
            ``user_vector`` computed (where ``S - W_i v_i`` would cancel) and their float32
            ``(F, D)`` vectors.
        counts: users and examples made and skipped, by reason.
    """

    item: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    user: np.ndarray
    user_ids: tuple[str, ...]
    own: tuple[np.ndarray, ...]
    popularity: np.ndarray
    pool: int
    vectors: np.ndarray
    user_sum: np.ndarray
    drop: np.ndarray
    exact_index: np.ndarray
    exact_u: np.ndarray
    counts: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.item)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def user_vectors(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 ``(len(index), D)`` leave-one-out user vectors of examples ``index``: what
        :func:`edgerec.sdk.user_vector` gives for the user's other events (to float32
        rounding)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), self.dim), dtype=np.float32)
        for start in range(0, len(index), _CHUNK):  # float64 temporaries of _CHUNK rows
            part = index[start : start + _CHUNK]
            x = self.user_sum[self.user[part]]
            x -= self.drop[part, None] * self.vectors[self.item[part]]
            with np.errstate(invalid="ignore", divide="ignore"):
                x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[start : start + len(part)] = x
        if len(self.exact_index):
            pos, hit = _lookup(self.exact_index, index)
            out[hit] = self.exact_u[pos[hit]]
        return out

    def nearest(self, index: Sequence[int] | np.ndarray, chunk: int = 512) -> np.ndarray:
        """int64 ``(len(index), pool)``: each example's ``pool`` nearest catalog rows by
        ``u . v``, best first, the user's own items left out (O(len(index) x N x D))."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), self.pool), dtype=np.int64)
        if not self.pool:
            return out
        for start in range(0, len(index), chunk):
            part = index[start : start + chunk]
            sims = self.user_vectors(part) @ self.vectors.T
            for r, p in enumerate(part):
                sims[r, self.own[self.user[p]]] = -np.inf
            top = np.argpartition(-sims, self.pool - 1, axis=1)[:, : self.pool]
            order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
            out[start : start + len(part)] = np.take_along_axis(top, order, 1)
        return out

    @property
    def hard_pool(self) -> np.ndarray:
        """int64 ``(P, pool)``: :meth:`nearest` of every example (P x N x D work: for small
        sets)."""
        return self.nearest(np.arange(len(self)))

    @property
    def u(self) -> np.ndarray:
        """float32 ``(P, D)`` every example's user vector: P x D floats, so only for small sets
        (e.g. a :meth:`subset`); training builds them per mini-batch."""
        return self.user_vectors(np.arange(len(self)))

    def subset(self, index: Sequence[int] | np.ndarray) -> Examples:
        """The examples ``index`` (same users, catalog and counts)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        pos, hit = _lookup(self.exact_index, index)
        return Examples(
            item=self.item[index], label=self.label[index], weight=self.weight[index],
            user=self.user[index], user_ids=self.user_ids, own=self.own,
            popularity=self.popularity, pool=self.pool, vectors=self.vectors,
            user_sum=self.user_sum, drop=self.drop[index],
            exact_index=np.flatnonzero(hit).astype(np.int64),
            exact_u=self.exact_u[pos[hit]], counts=self.counts)


def _lookup(sorted_keys: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``index`` in ``sorted_keys`` and whether each is there."""
    if not len(sorted_keys):
        return np.zeros(len(index), np.int64), np.zeros(len(index), bool)
    pos = np.minimum(np.searchsorted(sorted_keys, index), len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == index


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


def _targets(events: Sequence[Interaction], positives: Sequence[str]
             ) -> tuple[list[tuple[str, float]], dict[str, float]]:
    """A user's examples ``(item, label)``: every positive item (label 1), then every item
    only dismissed (label 0); and each item's largest event weight."""
    best_weight: dict[str, float] = {}
    for e in events:
        best_weight[e.item_id] = max(best_weight.get(e.item_id, 0.0), e.weight)
    positive_set = set(positives)
    dismissed = [i for i in dict.fromkeys(e.item_id for e in events if not e.positive)
                 if i not in positive_set]
    return [(i, 1.0) for i in positives] + [(i, 0.0) for i in dismissed], best_weight


def _leave_one_out_sums(events: Sequence[Interaction], targets: Sequence[tuple[str, float]],
                        row_of: Mapping[str, int], vectors: np.ndarray,
                        half_life_days: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """The device's weighted sum over a user's usable events (weights relative to their
    newest event), and per target what leaving it out removes.

    Returns ``(s, scale, drop, left_positive)``: ``s`` float64 ``(D,)`` the weighted sum of
    item vectors; ``scale`` the sum of absolute weights; ``drop`` float64 ``(T,)`` the weight
    of each target's own events (so its leave-one-out sum is ``s - drop[k] * v_k``);
    ``left_positive`` int ``(T,)`` the positive events left when it is out.
    """
    kind_weight = DEFAULT_EVENT_WEIGHTS
    local = {item: k for k, (item, _) in enumerate(targets)}
    usable = [e.to_event() for e in events if kind_weight[e.kind] != 0.0]
    stamps = np.array([e.timestamp for e in usable], dtype=np.float64)
    kinds = np.array([kind_weight[e.kind] for e in usable], dtype=np.float64)
    w = kinds * np.power(0.5, (stamps.max() - stamps) / _SECONDS_PER_DAY / half_life_days)
    rows = np.array([row_of[e.item_id] for e in usable], dtype=np.int64)
    s = w @ vectors[rows].astype(np.float64)
    target = np.array([local.get(e.item_id, -1) for e in usable], dtype=np.int64)
    on = target >= 0
    drop = np.bincount(target[on], weights=w[on], minlength=len(targets))
    pos_events = np.bincount(target[on & (kinds > 0)], minlength=len(targets))
    return s, float(np.abs(w).sum()), drop, int((kinds > 0).sum()) - pos_events


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
        hard_pool: nearest items per example that hard negatives are drawn from (0: none;
            capped so that every user has that many items that are not theirs).

    Users with fewer than two distinct positive items in the catalog have no leave-one-out
    vector and are skipped (``counts["single_item_users"]``). Memory: O(users x D +
    examples), time O(events x D).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    row_of = {item: r for r, item in enumerate(item_ids)}
    n_items, dim = vectors.shape
    items, labels, weights, users, drops = [], [], [], [], []
    sums: list[np.ndarray] = []
    exact: dict[int, np.ndarray] = {}
    user_ids: list[str] = []
    own: list[np.ndarray] = []
    popularity = np.zeros(n_items, dtype=np.float64)
    counts = {"users": 0, "single_item_users": 0, "examples": 0, "positives": 0,
              "dismissed": 0, "no_vector": 0, "exact_vectors": 0}
    for user in track(sorted(train), "scorer examples", unit="user"):
        events = [e for e in train[user] if e.item_id in row_of]
        positives = _positives(events)
        for item in positives:
            popularity[row_of[item]] += 1
        if len(positives) < 2:
            counts["single_item_users"] += 1
            continue
        targets, best_weight = _targets(events, positives)
        t_rows = np.array([row_of[i] for i, _ in targets], dtype=np.int64)
        s, scale, drop, left_positive = _leave_one_out_sums(events, targets, row_of, vectors,
                                                            half_life_days)
        rest = s[None, :] - drop[:, None] * vectors[t_rows].astype(np.float64)
        norm = np.linalg.norm(rest, axis=1)
        index = len(user_ids)
        made = 0
        for k, (item, label) in enumerate(targets):
            if left_positive[k] == 0:  # e.g. the other events are all dismisses
                counts["no_vector"] += 1
                continue
            if not norm[k] >= _CANCELLATION * scale:  # would cancel: the device's own formula
                others = [e.to_event() for e in events if e.item_id != item]
                vec_of = {e.item_id: vectors[row_of[e.item_id]] for e in events}
                u = user_vector(others, vec_of, half_life_days=half_life_days)
                if u is None:
                    counts["no_vector"] += 1
                    continue
                exact[len(items)] = u
            items.append(t_rows[k])
            labels.append(label)
            weights.append(best_weight[item])
            users.append(index)
            drops.append(drop[k])
            counts["positives" if label else "dismissed"] += 1
            made += 1
        if made:
            user_ids.append(user)
            sums.append(s)
            own.append(np.array(sorted({row_of[e.item_id] for e in events}), dtype=np.int64))
    counts["users"] = len(user_ids)
    counts["examples"] = len(items)
    counts["exact_vectors"] = len(exact)
    keys = np.array(sorted(exact), dtype=np.int64)
    return Examples(
        item=np.array(items, dtype=np.int64), label=np.array(labels, dtype=np.float32),
        weight=np.array(weights, dtype=np.float32), user=np.array(users, dtype=np.int64),
        user_ids=tuple(user_ids), own=tuple(own), popularity=popularity,
        pool=max(0, min(hard_pool, n_items - max((len(o) for o in own), default=0))),
        vectors=vectors,
        user_sum=np.array(sums, dtype=np.float64).reshape(-1, dim),
        drop=np.array(drops, dtype=np.float64),
        exact_index=keys,
        exact_u=np.array([exact[k] for k in keys], dtype=np.float32).reshape(-1, dim),
        counts=counts)


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
                 rng: np.random.Generator,
                 examples: Optional[np.ndarray] = None) -> EpochRows:
    """Every example of ``examples`` (default: all) once, label and weight as given, plus
    fresh negatives (label 0, weight 1)."""
    keys = _owned_keys(ex, n_items)
    idx = (np.arange(len(ex), dtype=np.int64) if examples is None
           else np.asarray(examples, dtype=np.int64))
    rows_examples, items = [idx], [ex.item[idx]]
    labels, weights = [ex.label[idx]], [ex.weight[idx]]

    def add(example: np.ndarray, item: np.ndarray) -> None:
        rows_examples.append(example)
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
    if sampling.hard and ex.pool:
        cols = rng.integers(0, ex.pool, (len(idx), sampling.hard))
        add(np.repeat(idx, sampling.hard),
            np.take_along_axis(ex.nearest(idx), cols, 1).ravel())
    return EpochRows(np.concatenate(rows_examples), np.concatenate(items),
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
    max_users: Optional[int] = None,
    seed: int = 0,
) -> RankingSet:
    """The users of ``heldout`` that have a usable ``history`` and a held-out item in the
    catalog that is not in their history; at most ``max_users`` of them (a seeded sample,
    sorted by id) when given."""
    row_of = {item: r for r, item in enumerate(item_ids)}
    order = sorted(heldout)
    if max_users is not None and len(order) > max_users:
        order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    chosen: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    for user in order:
        if max_users is not None and len(chosen) >= max_users:
            break
        events = [e for e in history.get(user, ()) if e.item_id in row_of]
        vec_of = {e.item_id: vectors[row_of[e.item_id]] for e in events}
        seen_rows = {row_of[e.item_id] for e in events}
        rel = sorted({row_of[e.item_id] for e in heldout[user]
                      if e.positive and e.item_id in row_of} - seen_rows)
        if not rel:
            continue
        u = user_vector([e.to_event() for e in events], vec_of, half_life_days=half_life_days)
        if u is None:
            continue
        chosen.append((user, u, np.array(sorted(seen_rows), dtype=np.int64),
                       np.array(rel, dtype=np.int64)))
    chosen.sort(key=lambda c: c[0])
    dim = np.shape(vectors)[1]
    return RankingSet(tuple(c[0] for c in chosen),
                      np.array([c[1] for c in chosen], dtype=np.float32).reshape(-1, dim),
                      tuple(c[2] for c in chosen), tuple(c[3] for c in chosen))


def device_candidates(u: np.ndarray, seen: Sequence[np.ndarray], vectors: np.ndarray,
                      candidates: int) -> np.ndarray:
    """int64 ``(B, C)``: for each user vector ``u[b]`` the candidates the device's ranking
    (:func:`edgerec.sdk.ranking.rank_for_user`, stage 1) hands its scorer: the top ``C`` catalog
    rows by ``u . v``, best first, the user's ``seen`` rows left out. ``C`` is ``candidates`` or
    fewer where the catalog minus the largest history is smaller."""
    c = max(1, min(candidates, len(vectors) - max((len(s) for s in seen), default=0)))
    size = pool_size(c, c, reranked=True)
    out = np.empty((len(u), c), dtype=np.int64)
    for b, (user, rows) in enumerate(zip(u, seen)):
        out[b] = MatrixCandidates(vectors, exclude=rows)(user, size).keys[:c]
    return out


def candidate_rows(rs: RankingSet, vectors: np.ndarray, candidates: int) -> np.ndarray:
    """:func:`device_candidates` of a :class:`RankingSet`'s users."""
    return device_candidates(rs.u, rs.seen, vectors, candidates)


def _user_top_k(scores: np.ndarray, rs: RankingSet, b: int, k: int,
                candidates: Optional[np.ndarray]) -> np.ndarray:
    """User ``b``'s top-k catalog rows by ``scores`` (:func:`~edgerec.sdk.ranking.top_rows`:
    ties to the lower position), seen rows left out."""
    ids = np.arange(scores.shape[1]) if candidates is None else candidates[b]
    return ids[top_rows(scores[b], k, exclude=np.flatnonzero(np.isin(ids, rs.seen[b])))]


def hits_at_k(scores: np.ndarray, rs: RankingSet, k: int = 10,
              candidates: Optional[np.ndarray] = None) -> int:
    """Held-out items found in the users' top-k, summed over ``rs`` (arguments as
    :func:`mean_ndcg`): how much evidence an NDCG value rests on."""
    return int(sum(np.isin(_user_top_k(scores, rs, b, k, candidates), rs.relevant[b]).sum()
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
    values = [ndcg_at_k(_user_top_k(scores, rs, b, k, candidates), rs.relevant[b].tolist(), k)
              for b in range(len(rs))]
    return float(np.mean(values))
