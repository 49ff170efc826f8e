"""Co-interaction pairs: partners drawn by score, batch targets from the neighbour table."""

from __future__ import annotations

import numpy as np
import pytest
from edgerec.export.distill.pairs import BehaviourPairs

# item 0: neighbours 1 (score 3) and 2 (score 1); item 1: neighbour 0; items 2, 3: none
ROWS = np.array([[1, 2], [0, -1], [-1, -1], [-1, -1]])
SCORES = np.array([[3.0, 1.0], [0.5, 0.0], [0.0, 0.0], [0.0, 0.0]], np.float32)


def test_partners_are_drawn_in_proportion_to_the_neighbour_scores():
    pairs = BehaviourPairs(ROWS, SCORES)
    rng = np.random.default_rng(0)
    drawn = pairs.partners(np.zeros(8000, np.int64), rng)
    assert set(np.unique(drawn)) == {1, 2}
    assert np.mean(drawn == 1) == pytest.approx(0.75, abs=0.02)
    assert (pairs.partners(np.ones(50, np.int64), rng) == 0).all()


def test_an_item_without_neighbours_gets_a_random_partner():
    pairs = BehaviourPairs(ROWS, SCORES)
    drawn = pairs.partners(np.full(400, 3, np.int64), np.random.default_rng(1))
    assert set(np.unique(drawn)) == {0, 1, 2, 3}
    assert pairs.items == 4 and pairs.linked == 2


def test_batch_targets_hold_the_scores_of_neighbours_present_and_nothing_else():
    pairs = BehaviourPairs(ROWS, SCORES)
    items = np.array([0, 2, 1, 0, 3])
    t = pairs.targets(items)
    assert t.shape == (5, 5) and t.dtype == np.float32
    np.testing.assert_array_equal(t[0], [0, 1, 3, 0, 0])  # its copy at 3 is not a neighbour
    np.testing.assert_array_equal(t[2], [0.5, 0, 0, 0.5, 0])
    assert not t[1].any() and not t[4].any()


@pytest.mark.parametrize("rows, scores", [
    (ROWS[:, :1], SCORES),  # shapes differ
    (ROWS, -SCORES),  # negative scores
    (np.full((4, 2), -1), SCORES),  # a score without a neighbour
])
def test_inconsistent_tables_are_refused(rows, scores):
    with pytest.raises(ValueError):
        BehaviourPairs(rows, scores)
