"""The item-item baselines' pieces (interactions, item_item, cf_baselines, tuning) on small
hand-computed cases.

Four users and four items: u0 {0, 1}, u1 {0, 1, 2}, u2 {1, 2}, u3 {2, 3}, so

    G = X^T X = [[2, 2, 1, 0],
                 [2, 3, 2, 0],
                 [1, 2, 3, 1],
                 [0, 0, 1, 1]]
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from edgerec.sdk.evaluation.cf_baselines import ItemItemScores
from edgerec.sdk.evaluation.interactions import Interactions
from edgerec.sdk.evaluation.item_item import cosine_neighbours, ease_weights, spd_inverse
from edgerec.sdk.evaluation.tuning import ValidationCut, edge_warning, grid, grid_search

USERS = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3])
ITEMS = np.array([0, 1, 0, 1, 2, 1, 2, 2, 3])
G = np.array([[2, 2, 1, 0], [2, 3, 2, 0], [1, 2, 3, 1], [0, 0, 1, 1]], np.float32)


@pytest.fixture()
def log() -> Interactions:
    return Interactions.from_pairs(USERS, ITEMS, 4, 6)  # items 4 and 5: nobody's


def test_interactions_keep_distinct_items_in_order_of_their_latest_event():
    inter = Interactions.from_pairs(np.array([0, 0, 0, 1]), np.array([5, 2, 5, 1]), 3, 6)
    assert [h.tolist() for h in inter.histories] == [[2, 5], [1], []]
    users, items = inter.pairs()
    assert users.tolist() == [0, 0, 1] and items.tolist() == [2, 5, 1]
    assert inter.item_counts().tolist() == [0, 1, 1, 0, 0, 1]


def test_gram_counts_users_with_both_items_over_the_trained_columns(log):
    columns = log.columns(100)
    assert columns.tolist() == [0, 1, 2, 3]  # items 4 and 5 have no event
    np.testing.assert_array_equal(log.gram(columns), G)
    top2 = log.columns(2)  # the two most popular: items 1 and 2 (3 users each)
    assert top2.tolist() == [1, 2]
    np.testing.assert_array_equal(log.gram(top2), G[np.ix_([1, 2], [1, 2])])


def test_cooccurrence_scores_are_counts_with_the_history_item_itself_not_counted(log):
    columns = log.columns(100)
    score = ItemItemScores(columns, log.gram(columns), 6, np.diag(G).copy())
    assert score(0, np.array([0])).tolist() == [0, 2, 1, 0, 0, 0]
    assert score(0, np.array([0, 3])).tolist() == [0, 2, 2, 0, 0, 0]


def test_item_knn_cosine_keeps_each_history_items_k_nearest(log):
    s = cosine_neighbours(G, 0)
    assert s[0, 1] == pytest.approx(2 / math.sqrt(6)) and s[0, 2] == pytest.approx(1 / math.sqrt(6))
    assert s[1, 2] == pytest.approx(2 / 3) and s[2, 3] == pytest.approx(1 / math.sqrt(3))
    assert np.all(np.diag(s) == 0) and np.allclose(s, s.T)
    score = ItemItemScores(np.arange(4), cosine_neighbours(G, 1), 6)
    np.testing.assert_allclose(score(0, np.array([0])), [0, 2 / math.sqrt(6), 0, 0, 0, 0],
                               rtol=1e-6)
    np.testing.assert_allclose(score(0, np.array([3])), [0, 0, 1 / math.sqrt(3), 0, 0, 0],
                               rtol=1e-6)


def test_ease_two_items_closed_form_by_hand():
    # G = [[a, c], [c, b]], P = (G + lam I)^-1: B_01 = c / (a + lam), B_10 = c / (b + lam)
    b = ease_weights(np.array([[2, 2], [2, 3]], np.float32), 1.0)
    np.testing.assert_allclose(b, [[0, 2 / 3], [2 / 4, 0]], rtol=1e-6)


def test_ease_solves_its_constrained_least_squares():
    lam = 0.5
    b = ease_weights(G, lam).astype(np.float64)
    assert np.all(np.diag(b) == 0)
    # stationarity: (G + lam I) B - G is zero off the diagonal (the constraint's multipliers)
    residual = (G + lam * np.eye(4)) @ b - G
    np.testing.assert_allclose(residual - np.diag(np.diag(residual)), 0, atol=1e-5)
    p = np.linalg.inv(G + lam * np.eye(4))
    np.testing.assert_allclose(b, np.eye(4) - p / np.diag(p)[None, :], atol=1e-6)
    with pytest.raises(ValueError, match="lambda"):
        ease_weights(G, 0.0)


def test_spd_inverse_with_and_without_scipy(monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1500, 40))
    a = a.T @ a + np.eye(40)
    expected = np.linalg.inv(a)
    np.testing.assert_allclose(spd_inverse(a.copy()), expected, atol=1e-10)
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)  # numpy's LU instead
    np.testing.assert_allclose(spd_inverse(a.copy()), expected, atol=1e-10)


def test_the_validation_cut_holds_out_each_users_newest_training_item(log):
    cut = ValidationCut.make(log, max_users=10, seed=0, tiebreak=np.arange(6), k=2)
    assert cut.users.tolist() == [0, 1, 2, 3] and cut.held.tolist() == [1, 2, 2, 3]
    assert [h.tolist() for h in cut.train.histories] == [[0], [0, 1], [1], [2]]
    assert len(ValidationCut.make(log, max_users=2, seed=0, tiebreak=np.arange(6)).users) == 2
    single = Interactions.from_pairs(np.array([0, 1]), np.array([0, 1]), 2, 3)
    assert ValidationCut.make(single, max_users=10, seed=0, tiebreak=np.arange(3)) is None


def test_grid_search_keeps_the_point_that_ranks_the_held_out_items_best(log):
    cut = ValidationCut.make(log, max_users=10, seed=0, tiebreak=np.arange(6), k=2)
    assert grid(a=[1, 2], b=["x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]

    def fit(train, point):
        return lambda user, history: point["w"] * np.arange(6, dtype=float)  # prefers high rows

    best, table = grid_search(cut, grid(w=[-1.0, 1.0]), fit)
    assert best == {"w": -1.0} and table[0]["validation_ndcg"] > table[1]["validation_ndcg"]
    assert grid_search(cut, [{"w": 3.0}], fit) == ({"w": 3.0}, [])  # one point: no search


def test_a_choice_at_the_edge_of_its_grid_is_flagged_and_zero_means_all():
    points = grid(k=[2, 5, 0], lam=[1.0])
    assert "k (2) is at the edge" in edge_warning("item_knn", {"k": 2, "lam": 1.0}, points)
    assert edge_warning("item_knn", {"k": 5, "lam": 1.0}, points) is None
    assert edge_warning("item_knn", {"k": 0, "lam": 1.0}, points) is None  # all items
    wide = grid(lam=[1.0, 10.0, 100.0])
    assert "lam (100.0)" in edge_warning("ease", {"lam": 100.0}, wide)
    assert edge_warning("ease", {"lam": 1.0}, grid(lam=[1.0, 10.0])) is None  # two: no middle
    flat = [{"lam": 1.0, "validation_ndcg": 0.0}, {"lam": 10.0, "validation_ndcg": 0.0}]
    assert "scored the same" in edge_warning("ease", {"lam": 1.0}, wide, flat)
