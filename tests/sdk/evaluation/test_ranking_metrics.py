"""Ranking / classification metrics against hand-computed values (arithmetic in comments)."""

from math import log2

import numpy as np
import pytest
from edgerec.sdk.evaluation.ranking_metrics import (
    ClassificationReport,
    ConfidenceInterval,
    RankingReport,
    auc,
    average_precision_at_k,
    bootstrap_ci,
    classification_report,
    hit_rate_at_k,
    ndcg_at_k,
    paired_bootstrap_ci,
    per_user_metrics,
    ranking_report,
    recall_at_k,
)


def _all(ranked, relevant, k):
    return (recall_at_k(ranked, relevant, k), hit_rate_at_k(ranked, relevant, k),
            ndcg_at_k(ranked, relevant, k), average_precision_at_k(ranked, relevant, k))


# ------------------------------------------------------------------------ per-user metrics


def test_metrics_hand_computed_partial_hits():
    # top-3 = a b c, relevant {a, c, x} -> rel = [1, 0, 1]
    recall, hit, ndcg, ap = _all(["a", "b", "c", "d", "e"], {"a", "c", "x"}, 3)
    assert recall == pytest.approx(2 / 3)  # 2 of 3 relevant retrieved
    assert hit == 1.0
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG over min(3, 3) = 3 hits
    assert ndcg == pytest.approx((1 / log2(2) + 1 / log2(4))
                                 / (1 / log2(2) + 1 / log2(3) + 1 / log2(4)))
    assert ndcg == pytest.approx(0.703918, abs=1e-6)
    # AP = (P@1 * 1 + P@3 * 1) / min(3, 3) = (1 + 2/3) / 3 = 5/9
    assert ap == pytest.approx(5 / 9)


def test_k_larger_than_ranking():
    # k = 5 but only 2 ranked: rel = [0, 1]; relevant {b, z}
    recall, hit, ndcg, ap = _all(["a", "b"], ["b", "z"], 5)
    assert recall == pytest.approx(1 / 2)
    assert hit == 1.0
    # DCG = 1/log2(3); IDCG over min(2, 5) = 2 hits = 1/log2(2) + 1/log2(3)
    assert ndcg == pytest.approx((1 / log2(3)) / (1 / log2(2) + 1 / log2(3)))
    # AP = P@2 * 1 / min(2, 5) = (1/2) / 2
    assert ap == pytest.approx(1 / 4)


def test_relevant_items_not_in_ranking_score_zero():
    assert _all(["a", "b", "c"], {"x", "y"}, 2) == (0.0, 0.0, 0.0, 0.0)
    # "c" relevant but below the cut-off k = 2
    assert _all(["a", "b", "c"], {"c"}, 2) == (0.0, 0.0, 0.0, 0.0)


def test_perfect_ranking_and_cutoff_smaller_than_relevant():
    assert _all(["x", "y", "a"], {"x", "y"}, 2) == (1.0, 1.0, 1.0, 1.0)
    # k = 1, two relevant: recall = 1/2; IDCG over min(2, 1) = 1 hit -> NDCG = 1;
    # AP = P@1 / min(2, 1) = 1
    assert _all(["x", "y", "a"], {"x", "y"}, 1) == (0.5, 1.0, 1.0, 1.0)


def test_numpy_id_arrays_are_accepted():
    # rel = [0, 0, 1]: recall 1/1; DCG = 1/log2(4) = 0.5, IDCG = 1; AP = (1/3 * 1) / 1
    ranked, relevant = np.array(["a", "b", "c"]), np.array(["c"])
    recall, hit, ndcg, ap = _all(ranked, relevant, 3)
    assert (recall, hit, ndcg) == (1.0, 1.0, 0.5)
    assert ap == pytest.approx(1 / 3)
    assert isinstance(recall, float) and isinstance(ndcg, float)
    assert recall_at_k(np.array(["a", "b"], dtype=object), ["b"], np.int64(2)) == 1.0


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_k_must_be_positive_int(k):
    for metric in (recall_at_k, hit_rate_at_k, ndcg_at_k, average_precision_at_k):
        with pytest.raises(ValueError, match="k must be a positive int"):
            metric(["a"], {"a"}, k)


def test_invalid_rankings_and_relevant_sets():
    for metric in (recall_at_k, hit_rate_at_k, ndcg_at_k, average_precision_at_k):
        with pytest.raises(ValueError, match="duplicate id 'b'"):
            metric(["a", "b", "c", "b"], {"a"}, 2)
        with pytest.raises(ValueError, match="relevant is empty"):
            metric(["a", "b"], set(), 2)
        with pytest.raises(ValueError, match="single string"):
            metric("abc", {"a"}, 2)
        with pytest.raises(ValueError, match="single string"):
            metric(["a"], "a", 2)
        with pytest.raises(ValueError, match="1-D"):
            metric(np.array([["a", "b"]]), {"a"}, 2)


# -------------------------------------------------------------------------------- auc


def test_auc_hand_computed_with_tie():
    # positives 0.9, 0.8; negatives 0.8, 0.1. Pairs: (0.9>0.8)=1 (0.9>0.1)=1 (0.8=0.8)=1/2
    # (0.8>0.1)=1 -> 3.5 / 4. Average ranks: 0.1->1, 0.8,0.8->2.5, 0.9->4;
    # U = (4 + 2.5) - 2*3/2 = 3.5.
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    assert auc(scores, np.array([True, False, True, False])) == 0.875
    assert auc(scores, np.array([1, 0, 1, 0])) == 0.875  # 0/1 labels accepted


def test_auc_extremes():
    assert auc(np.array([3.0, 2.0, 1.0]), np.array([True, False, False])) == 1.0
    assert auc(np.array([1.0, 2.0, 3.0]), np.array([True, False, False])) == 0.0
    assert auc(np.full(5, 0.3), np.array([1, 0, 1, 0, 0], bool)) == 0.5  # all ties


def test_auc_matches_brute_force_pairwise_count():
    rng = np.random.default_rng(7)
    for n in (2, 5, 40, 200):
        scores = np.round(rng.normal(size=n), 1)  # rounding makes plenty of ties
        positive = rng.random(n) < 0.3
        positive[0], positive[-1] = True, False
        sp, sn = scores[positive][:, None], scores[~positive][None, :]
        brute = ((sp > sn).sum() + 0.5 * (sp == sn).sum()) / (sp.size * sn.size)
        assert auc(scores, positive) == brute


def test_auc_validation():
    with pytest.raises(ValueError, match="positive and a negative"):
        auc(np.array([0.1, 0.2]), np.array([False, False]))
    with pytest.raises(ValueError, match="positive and a negative"):
        auc(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="shape"):
        auc(np.array([0.1, 0.2, 0.3]), np.array([True, False]))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.array([0.1, np.nan]), np.array([True, False]))
    with pytest.raises(ValueError, match="bool"):
        auc(np.array([0.1, 0.2]), np.array([2, 0]))


# --------------------------------------------------------------------- classification


def test_classification_report_hand_computed():
    scores = np.array([0.9, 0.6, 0.5, 0.4, 0.2])
    labels = np.array([1, 0, 1, 1, 0], bool)
    # threshold 0.5 (>=): predicted [1 1 1 0 0] -> tp 2, fp 1, fn 1, tn 1
    r = classification_report(scores, labels)
    assert isinstance(r, ClassificationReport)
    assert (r.support, r.positives, r.threshold) == (5, 3, 0.5)
    assert r.accuracy == pytest.approx(3 / 5)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(2 / 3)
    # threshold 0.55: predicted [1 1 0 0 0] -> tp 1, fp 1, fn 2, tn 1
    # p = 1/2, r = 1/3, f1 = 2 * 1/2 * 1/3 / (1/2 + 1/3) = (1/3) / (5/6) = 2/5
    r = classification_report(scores, labels, threshold=0.55)
    assert r.accuracy == pytest.approx(2 / 5)
    assert r.precision == pytest.approx(1 / 2) and r.recall == pytest.approx(1 / 3)
    assert r.f1 == pytest.approx(2 / 5)


def test_classification_all_correct_and_all_wrong():
    r = classification_report(np.array([0.9, 0.1]), np.array([True, False]))
    assert (r.accuracy, r.precision, r.recall, r.f1) == (1.0, 1.0, 1.0, 1.0)
    # predicted [0 1] vs labels [1 0]: tp 0, fp 1, fn 1 -> everything 0
    r = classification_report(np.array([0.1, 0.9]), np.array([True, False]))
    assert (r.accuracy, r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0, 0.0)


def test_classification_zero_denominators():
    # nothing predicted positive: precision 0/0 -> 0.0 by convention; recall 0/1; f1 0
    r = classification_report(np.array([0.1, 0.2, 0.3]), np.array([1, 0, 0]))
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)
    assert r.accuracy == pytest.approx(2 / 3) and r.positives == 1
    # no labelled positive either: accuracy 1, recall 0/0 -> 0.0
    r = classification_report(np.array([0.1, 0.2]), np.array([0, 0]))
    assert (r.accuracy, r.precision, r.recall, r.f1, r.positives) == (1.0, 0.0, 0.0, 0.0, 0)


def test_classification_report_to_dict_and_validation():
    d = classification_report(np.array([0.9]), np.array([1])).to_dict()
    assert d == {"threshold": 0.5, "accuracy": 1.0, "precision": 1.0, "recall": 1.0,
                 "f1": 1.0, "support": 1, "positives": 1}
    with pytest.raises(ValueError, match="non-empty"):
        classification_report(np.array([]), np.array([], bool))
    with pytest.raises(ValueError, match="shape"):
        classification_report(np.array([0.1]), np.array([1, 0]))
    with pytest.raises(ValueError, match="bool"):
        classification_report(np.array([0.1, 0.2]), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        classification_report(np.array([np.nan]), np.array([1]))


# ------------------------------------------------------------------------------ reports

RANKINGS = {"u1": ["a", "b", "c"], "u2": ["x", "y", "z"], "u3": ["p"], "u4": ["m", "n"],
            "extra": ["q"]}
RELEVANT = {"u2": {"x", "w"}, "u1": {"b"}, "u3": set(), "u4": ["o"]}
# k = 2; u3 (nothing relevant) skipped, "extra" (no relevant entry) ignored.
# u1: top2 [a b] rel [0 1]: recall 1, hit 1, NDCG (1/log2 3) / 1, AP (1/2) / 1
# u2: top2 [x y] rel [1 0]: recall 1/2, hit 1, NDCG 1 / (1 + 1/log2 3), AP 1 / min(2, 2)
# u4: top2 [m n] rel [0 0]: all 0
U1_NDCG, U2_NDCG = 1 / log2(3), 1 / (1 + 1 / log2(3))


def test_per_user_metrics_hand_computed():
    m = per_user_metrics(RANKINGS, RELEVANT, k=2)
    assert m["users"].dtype == object and m["users"].tolist() == ["u1", "u2", "u4"]
    np.testing.assert_allclose(m["recall"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(m["hit_rate"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(m["ndcg"], [U1_NDCG, U2_NDCG, 0.0])
    np.testing.assert_allclose(m["map"], [0.5, 0.5, 0.0])
    assert all(m[name].dtype == np.float64 for name in ("recall", "ndcg", "hit_rate", "map"))


def test_ranking_report_hand_computed():
    r = ranking_report(RANKINGS, RELEVANT, k=2)
    assert isinstance(r, RankingReport) and (r.k, r.users, r.auc) == (2, 3, None)
    assert r.recall == pytest.approx((1 + 0.5 + 0) / 3)
    assert r.hit_rate == pytest.approx(2 / 3)
    assert r.ndcg == pytest.approx((U1_NDCG + U2_NDCG + 0) / 3)
    assert r.map == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert set(r.to_dict()) == {"k", "users", "recall", "ndcg", "hit_rate", "map", "auc"}


def test_ranking_report_auc_mean_over_evaluated_users():
    # u3 (skipped) and "extra" (not evaluated) are ignored; u4 has no AUC -> (0.9 + 0.7) / 2
    aucs = {"u1": 0.9, "u2": 0.7, "u3": 0.1, "extra": 0.0}
    assert ranking_report(RANKINGS, RELEVANT, k=2, aucs=aucs).auc == pytest.approx(0.8)
    assert ranking_report(RANKINGS, RELEVANT, k=2, aucs={"extra": 0.3}).auc is None


def test_ranking_report_validation():
    with pytest.raises(ValueError, match="'u0' has relevant items but no ranking"):
        ranking_report({"u1": ["a"]}, {"u9": {"c"}, "u1": {"a"}, "u0": {"b"}})
    with pytest.raises(ValueError, match="'u0'"):
        per_user_metrics({"u1": ["a"]}, {"u1": {"a"}, "u0": {"b"}})
    # a user without relevant items needs no ranking
    assert ranking_report({"u1": ["a"]}, {"u1": {"a"}, "u0": set()}).users == 1
    with pytest.raises(ValueError, match="no user has a relevant item"):
        ranking_report({"u1": ["a"]}, {"u1": set()})
    with pytest.raises(ValueError, match="k must be a positive int"):
        ranking_report(RANKINGS, RELEVANT, k=0)


# ---------------------------------------------------------------------------- bootstrap


def _values(n, seed=1):
    return (np.random.default_rng(seed).random(n) < 0.4).astype(np.float64)


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    v = _values(200)
    ci = bootstrap_ci(v, resamples=500, seed=3)
    assert isinstance(ci, ConfidenceInterval)
    assert ci.mean == pytest.approx(v.mean())
    assert ci.low < ci.mean < ci.high
    assert (ci.level, ci.resamples) == (0.95, 500)
    assert bootstrap_ci(v, resamples=500, seed=3) == ci
    assert bootstrap_ci(v, resamples=500, seed=4) != ci
    assert set(ci.to_dict()) == {"mean", "low", "high", "level", "resamples"}


def test_bootstrap_ci_narrows_with_more_users_and_lower_level():
    small = bootstrap_ci(_values(50), resamples=400)
    large = bootstrap_ci(_values(5000), resamples=400)
    # the standard error scales as 1/sqrt(n): 100x the users -> about 1/10 the width
    assert (large.high - large.low) < 0.25 * (small.high - small.low)
    narrow = bootstrap_ci(_values(50), resamples=400, level=0.5)
    assert (narrow.high - narrow.low) < (small.high - small.low)


def test_bootstrap_ci_bounds_on_tiny_and_constant_samples():
    # resampled means of [0, 1] can only be 0, 1/2 or 1
    ci = bootstrap_ci(np.array([0.0, 1.0]), resamples=200)
    assert ci.mean == 0.5 and {ci.low, ci.high} <= {0.0, 0.5, 1.0}
    ci = bootstrap_ci(np.full(10, 0.25))
    assert (ci.mean, ci.low, ci.high) == (0.25, 0.25, 0.25)


def test_paired_bootstrap_ci():
    a = np.random.default_rng(2).random(300)
    ci = paired_bootstrap_ci(a, a, resamples=300)
    assert (ci.mean, ci.low, ci.high) == (0.0, 0.0, 0.0)
    # a constant per-user gain stays exact because both use the SAME resampled users
    ci = paired_bootstrap_ci(a + 0.1, a, resamples=300)
    assert ci.mean == pytest.approx(0.1) and ci.high - ci.low < 1e-12
    b = np.random.default_rng(3).random(300)
    assert paired_bootstrap_ci(a, b, seed=5) == bootstrap_ci(a - b, seed=5)


def test_bootstrap_validation():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci(np.array([0.1]), resamples=0)
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="level"):
            bootstrap_ci(np.array([0.1]), level=level)
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap_ci(np.array([0.1, 0.2]), np.array([0.1]))
