"""The scorer's training data: leave-one-out user vectors, negatives that are never the user's
own items, hard negatives from nearest neighbours, ranking sets and NDCG."""

from __future__ import annotations

import numpy as np
import pytest
from edgerec.export.scorer.data import (
    NegativeSampling,
    build_examples,
    candidate_rows,
    hits_at_k,
    mean_ndcg,
    ranking_set,
    sample_epoch,
)
from edgerec.sdk import EventKind, user_vector
from edgerec.sdk.evaluation.events import Interaction

DAY = 86400.0


def _catalog(n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [f"i{k}" for k in range(n)], v


def _events(user, items, kind=EventKind.PURCHASE, start=0.0, weight=1.0):
    return [Interaction(user, item, kind, start + k * DAY, weight, line=k)
            for k, item in enumerate(items)]


def test_leave_one_out_user_vector_never_includes_the_positive_item():
    ids, v = _catalog()
    events = [*_events("a", ["i1", "i2", "i3", "i4"]),
              Interaction("a", "i2", EventKind.VIEW, 10 * DAY, 3.0, line=9)]  # i2 twice
    ex = build_examples({"a": events}, ids, v, half_life_days=30.0, hard_pool=5)
    assert sorted(ex.item.tolist()) == [1, 2, 3, 4] and ex.label.tolist() == [1.0] * 4
    vec_of = {i: v[int(i[1:])] for i in ids}
    for u, row in zip(ex.u, ex.item):
        others = [e.to_event() for e in events if e.item_id != ids[row]]
        np.testing.assert_allclose(u, user_vector(others, vec_of, half_life_days=30.0), atol=1e-6)
        alone = user_vector([e.to_event() for e in events if e.item_id == ids[row]], vec_of)
        assert float(u @ alone) < 0.99  # a vector that contained the item would lean to it
    assert ex.weight[ex.item.tolist().index(2)] == 3.0  # the item's largest event weight


def test_single_item_users_are_skipped_and_counted_and_dismisses_are_negatives():
    ids, v = _catalog()
    train = {"solo": _events("solo", ["i5", "i5"]),  # two events, one item
             "one": _events("one", ["i6"]),
             "b": [*_events("b", ["i1", "i2"]),
                   Interaction("b", "i9", EventKind.DISMISS, 5 * DAY)],
             "ghost": _events("ghost", ["nope", "i3"])}  # an unknown item does not count
    ex = build_examples(train, ids, v, hard_pool=5)
    assert ex.counts["single_item_users"] == 3 and ex.user_ids == ("b",)
    assert ex.counts["positives"] == 2 and ex.counts["dismissed"] == 1
    assert ex.label[ex.item.tolist().index(9)] == 0.0
    assert ex.own[0].tolist() == [1, 2, 9]
    assert ex.popularity[[1, 2, 3, 5, 6, 9]].tolist() == [1, 1, 1, 1, 1, 0]


def test_hard_negatives_come_from_nearest_neighbours_and_never_from_the_users_items():
    ids, v = _catalog(n=80)
    train = {"a": _events("a", ["i1", "i2", "i3", "i7"]), "b": _events("b", ["i3", "i4"])}
    ex = build_examples(train, ids, v, hard_pool=6)
    pool, u = ex.hard_pool, ex.u
    for p in range(len(ex)):
        sims = v @ u[p]
        own = ex.own[ex.user[p]]
        sims[own] = -np.inf
        nearest = np.argsort(-sims)[:6]
        assert pool[p].tolist() == nearest.tolist()
    np.testing.assert_array_equal(ex.nearest([3, 1]), pool[[3, 1]])  # searched per epoch
    rows = sample_epoch(ex, NegativeSampling(uniform=0, popular=0, hard=3), 80,
                        np.random.default_rng(0))
    neg = rows.label == 0
    assert neg.sum() == 3 * len(ex)
    for p, item in zip(rows.example[neg], rows.item[neg]):
        assert item in pool[p] and item not in ex.own[ex.user[p]]


def test_uniform_and_popular_negatives_are_never_the_users_items():
    ids, v = _catalog(n=12)
    train = {"a": _events("a", [f"i{k}" for k in range(9)]), "b": _events("b", ["i9", "i10"])}
    ex = build_examples(train, ids, v, hard_pool=0)
    rows = sample_epoch(ex, NegativeSampling(uniform=5, popular=5, hard=2), 12,
                        np.random.default_rng(1))
    assert ex.hard_pool.shape[1] == 0  # a pool of 0: no hard negatives, no error
    neg = rows.label == 0
    assert neg.sum() > 0.9 * 10 * len(ex)  # a few unlucky draws may be dropped, not more
    for p, item in zip(rows.example[neg], rows.item[neg]):
        assert item not in ex.own[ex.user[p]]
    pos = ~neg
    assert rows.item[pos].tolist() == ex.item.tolist()


def test_negative_sampling_is_validated():
    with pytest.raises(ValueError, match="at least one negative"):
        NegativeSampling(uniform=0, popular=0, hard=0)
    with pytest.raises(ValueError, match="hard"):
        NegativeSampling(hard=-1)


def test_ranking_set_and_ndcg_match_a_hand_computed_case():
    ids, v = _catalog(n=5, d=3)
    history = {"a": _events("a", ["i0"]), "b": _events("b", ["i1"]), "c": []}
    heldout = {"a": _events("a", ["i2", "i0"]), "b": _events("b", ["nope"]),
               "c": _events("c", ["i3"])}
    rs = ranking_set(history, heldout, ids, v)
    assert rs.users == ("a",)  # b: nothing held out in the catalog; c: no history
    assert rs.seen[0].tolist() == [0] and rs.relevant[0].tolist() == [2]
    scores = np.array([[9.0, 3.0, 2.0, 1.0, 0.0]])  # i0 is seen: ranking i1, i2, ...
    assert mean_ndcg(scores, rs, k=10) == pytest.approx(1 / np.log2(3))
    assert hits_at_k(scores, rs, k=10) == 1 and hits_at_k(scores, rs, k=1) == 0
    cands = np.array([[2, 0, 4]])
    assert mean_ndcg(np.array([[1.0, 5.0, 2.0]]), rs, k=10, candidates=cands) == \
        pytest.approx(1 / np.log2(3))
    assert mean_ndcg(np.empty((0, 5)), ranking_set({}, {}, ids, v), k=10) is None


def _device_vector(events, item, vectors, half_life_days=30.0):
    """What the device computes for ``events`` without any event on ``item``."""
    others = [e.to_event() for e in events if e.item_id != item]
    return user_vector(others, vectors, half_life_days=half_life_days)


def test_leave_one_out_vectors_equal_the_device_formula_for_mixed_histories():
    """The O(n) leave-one-out (``normalise(S - W_i v_i)``) against ``user_vector`` of the other
    events: several kinds, repeated items, dismisses, no timestamps, and a user whose newest
    item is years after the rest (the subtraction would cancel: computed exactly instead)."""
    ids, v = _catalog(n=200, d=32, seed=3)
    rng = np.random.default_rng(4)
    kinds = [EventKind.VIEW, EventKind.CLICK, EventKind.ADD_TO_CART, EventKind.PURCHASE,
             EventKind.DISMISS]
    train = {}
    for u in range(12):
        items = rng.choice(200, 15, replace=True)  # repeats: several events on one item
        train[f"u{u}"] = [
            Interaction(f"u{u}", ids[i], kinds[rng.integers(0, 5)],
                        float(rng.integers(0, 400)) * DAY + rng.random() * 3600, 1.0, line=k)
            for k, i in enumerate(items)]
    train["no_time"] = [Interaction("no_time", ids[i], EventKind.PURCHASE, None, line=50 + k)
                        for k, i in enumerate([5, 6, 7, 5])]
    train["returning"] = [*_events("returning", ["i20", "i21", "i22"]),  # then 10 years later
                          Interaction("returning", "i23", EventKind.PURCHASE, 3650 * DAY)]
    ex = build_examples(train, ids, v, half_life_days=30.0, hard_pool=0)
    vec_of = {i: v[k] for k, i in enumerate(ids)}
    assert len(ex) > 100 and ex.counts["exact_vectors"] >= 1
    got = ex.u
    for p in range(len(ex)):
        user = ex.user_ids[ex.user[p]]
        want = _device_vector(train[user], ids[ex.item[p]], vec_of)
        np.testing.assert_allclose(got[p], want, atol=2e-7, err_msg=f"{user} {ids[ex.item[p]]}")
    assert ex.counts["dismissed"] > 0  # dismissed items' vectors were checked too


def test_examples_keep_no_vector_per_example_and_subsets_agree():
    ids, v = _catalog(n=300, d=64)
    train = {f"u{u}": _events(f"u{u}", [f"i{(u * 7 + k) % 300}" for k in range(40)])
             for u in range(30)}
    ex = build_examples(train, ids, v, hard_pool=0)
    assert len(ex) == 30 * 40
    assert ex.user_sum.shape == (30, 64) and ex.drop.shape == (len(ex),)  # O(users x D + P)
    pick = np.array([5, 17, 400, 1199])
    sub = ex.subset(pick)
    np.testing.assert_array_equal(sub.u, ex.user_vectors(pick))
    np.testing.assert_array_equal(sub.item, ex.item[pick])
    rows = sample_epoch(ex, NegativeSampling(uniform=3), 300, np.random.default_rng(0),
                        examples=pick)
    assert set(rows.example.tolist()) == set(pick.tolist()) and len(rows) <= 4 * len(pick)


def test_candidates_are_each_users_nearest_unseen_items_best_first():
    ids, v = _catalog(n=50, d=8)
    history = {"a": _events("a", ["i1", "i2"]), "b": _events("b", ["i3"])}
    heldout = {"a": _events("a", ["i4"]), "b": _events("b", ["i5"])}
    rs = ranking_set(history, heldout, ids, v)
    cand = candidate_rows(rs, v, 10)
    for b in range(len(rs)):
        sims = v @ rs.u[b]
        sims[rs.seen[b]] = -np.inf
        assert cand[b].tolist() == np.argsort(-sims, kind="stable")[:10].tolist()
    assert candidate_rows(rs, v, 1000).shape == (2, 48)  # at most the catalog minus a history


def test_validation_users_are_a_seeded_sample_when_capped():
    ids, v = _catalog(n=80, d=8)
    history = {f"u{k}": _events(f"u{k}", [f"i{k}", f"i{k + 1}"]) for k in range(40)}
    heldout = {f"u{k}": _events(f"u{k}", [f"i{k + 2}"]) for k in range(40)}
    whole = ranking_set(history, heldout, ids, v)
    capped = ranking_set(history, heldout, ids, v, max_users=10, seed=3)
    assert len(whole) == 40 and len(capped) == 10
    assert list(capped.users) == sorted(capped.users) and set(capped.users) < set(whole.users)
    assert capped.users == ranking_set(history, heldout, ids, v, max_users=10, seed=3).users
