"""Metrics at several cut-offs from the ranks of the relevant items
(edgerec.sdk.evaluation.metrics), checked against hand-computed values and the list-based
functions of ranking_metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from edgerec.sdk.evaluation.metrics import (
    NDCG,
    AveragePrecision,
    HitRate,
    Recall,
    ReciprocalRank,
    item_ranks,
    parse_metric,
)
from edgerec.sdk.evaluation.ranking_metrics import (
    average_precision_at_k,
    hit_rate_at_k,
    ndcg_at_k,
    recall_at_k,
)
from edgerec.sdk.ranking import top_rows


def test_hand_computed_two_relevant_items_at_ranks_1_and_4():
    ranks = np.array([4, 1])
    assert Recall(3).compute(ranks) == 0.5
    assert HitRate(3).compute(ranks) == 1.0
    assert NDCG(3).compute(ranks) == pytest.approx(1.0 / (1.0 + 1.0 / math.log2(3)))
    assert AveragePrecision(3).compute(ranks) == pytest.approx(0.5)  # (1/1) / min(2, 3)
    assert AveragePrecision(5).compute(ranks) == pytest.approx((1.0 + 2 / 4) / 2)
    assert ReciprocalRank().compute(ranks) == 1.0
    assert NDCG(20).compute(ranks) == pytest.approx(
        (1.0 + 1.0 / math.log2(5)) / (1.0 + 1.0 / math.log2(3)))


def test_mrr_is_the_reciprocal_of_the_best_rank_without_a_cut_off():
    assert ReciprocalRank().compute(np.array([3])) == pytest.approx(1 / 3)
    assert ReciprocalRank().compute(np.array([250, 40])) == pytest.approx(1 / 40)
    per_user = ReciprocalRank().per_user([np.array([2]), np.array([7, 5]), np.array([1])])
    np.testing.assert_allclose(per_user, [1 / 2, 1 / 5, 1.0])
    assert NDCG(2).compute(np.array([3])) == 0.0 and NDCG(3).compute(np.array([3])) == 0.5


def test_per_user_values_match_one_user_at_a_time():
    rng = np.random.default_rng(0)
    ranks = [rng.choice(np.arange(1, 60), rng.integers(1, 6), replace=False) for _ in range(40)]
    for metric in (NDCG(10), Recall(20), HitRate(10), AveragePrecision(10), ReciprocalRank()):
        together = metric.per_user(ranks)
        assert together.tolist() == pytest.approx([metric.compute(r) for r in ranks])


def test_ranks_agree_with_the_list_based_metrics_and_top_rows_on_ties():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = 30
        scores = rng.normal(size=n)
        scores[rng.random(n) < 0.3] = 0.0  # ties
        tiebreak = rng.permutation(n)
        exclude = rng.choice(n, 5, replace=False)
        rest = np.setdiff1d(np.arange(n), exclude)
        relevant = rng.choice(rest, int(rng.integers(1, 6)), replace=False)
        order = top_rows(scores, n, exclude=exclude, tiebreak=tiebreak).tolist()
        ranks = item_ranks(scores, exclude=exclude, items=relevant, tiebreak=tiebreak)
        assert ranks.tolist() == [order.index(i) + 1 for i in relevant]
        for k in (1, 3, 10):
            ids = relevant.tolist()
            assert NDCG(k).compute(ranks) == pytest.approx(ndcg_at_k(order, ids, k))
            assert Recall(k).compute(ranks) == pytest.approx(recall_at_k(order, ids, k))
            assert HitRate(k).compute(ranks) == hit_rate_at_k(order, ids, k)
            assert AveragePrecision(k).compute(ranks) == pytest.approx(
                average_precision_at_k(order, ids, k))


def test_item_ranks_hand_computed_with_a_tie_and_an_excluded_row():
    scores = np.array([3.0, 1.0, 3.0, 2.0])
    ranks = item_ranks(scores, exclude=np.array([3]), items=np.array([0, 2, 1]),
                       tiebreak=np.array([1, 0, 0, 2]))
    assert ranks.tolist() == [2, 1, 3]
    with pytest.raises(ValueError, match="excluded"):
        item_ranks(scores, exclude=np.array([1]), items=np.array([1]), tiebreak=np.arange(4))


def test_metric_names_parse_and_bad_ones_are_refused():
    assert [parse_metric(n).name for n in ("NDCG@20", "Recall@20", "HR@10", "MAP@10", "MRR")] \
        == ["NDCG@20", "Recall@20", "HR@10", "MAP@10", "MRR"]
    assert parse_metric("NDCG@20") == NDCG(20) and len({NDCG(5), NDCG(5)}) == 1
    for bad in ("NDCG", "ndcg@20", "NDCG@0", "P@10", "MRR@10"):
        with pytest.raises(ValueError, match="metric"):
            parse_metric(bad)
    with pytest.raises(ValueError):
        NDCG(0)
    with pytest.raises(ValueError, match="relevant"):
        NDCG(5).per_user([np.array([1]), np.array([], np.int64)])
