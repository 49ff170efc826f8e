"""The baselines one by one (edgerec.sdk.evaluation.baselines, cf_baselines,
implicit_baselines) on the sample's real owner log: what each is trained from, seeded
determinism, and what a missing optional library does."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import SAMPLE
from edgerec.sdk.bundle.manifest import UserVectorRecipe
from edgerec.sdk.evaluation.baselines import (
    BASELINES,
    Popularity,
    RandomScores,
    VisualKnnMean,
    make_baselines,
)
from edgerec.sdk.evaluation.cf_baselines import Cooccurrence, Ease
from edgerec.sdk.evaluation.events import holdout_split, read_events
from edgerec.sdk.evaluation.implicit_baselines import ImplicitAls, ImplicitBpr
from edgerec.sdk.evaluation.ranker import BaselineContext, BaselineOptions
from edgerec.sdk.evaluation.task import CatalogData, build_task

SMALL = BaselineOptions(ease_lambdas=(1.0, 10.0), knn_neighbours=(5,), als_factors=(8,),
                        als_regularizations=(0.1,), bpr_factors=(8,),
                        bpr_learning_rates=(0.05,), bpr_regularizations=(0.01,),
                        bpr_iterations=20, vbpr_epochs=3)


def _context(options: BaselineOptions = SMALL, seed: int = 0) -> BaselineContext:
    """The sample's owners as users (a real log), leave-last-out, over random unit vectors
    (these baselines but the visual ones never look at the vectors)."""
    log = read_events(SAMPLE / "items.csv", user_column="owner_id")
    ids = tuple(sorted(log.items))
    v = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    data = CatalogData(ids, {x: i for i, x in enumerate(ids)}, v, ("",) * len(ids))
    task = build_task(holdout_split(log, protocol="leave-last-out"), data, UserVectorRecipe())
    return BaselineContext(task, data, np.random.default_rng([seed, 1]).permutation(len(ids)),
                           seed, options)


def test_every_baseline_scores_the_whole_catalog_and_ranks_the_held_out_items():
    context = _context()
    rankers, skipped = make_baselines(context)
    assert [r.name for r in rankers] == [b.name for b in BASELINES] and skipped == {}
    task, n = context.task, len(context.data.ids)
    for ranker in rankers:
        scores = ranker.scores(0)
        assert scores.shape == (n,) and np.isfinite(scores).all(), ranker.name
        ranks = ranker.ranks(0, task.banned[0], task.test[0], scores)
        assert ranks.min() >= 1 and ranks.max() <= n - len(task.banned[0]), ranker.name
        top = ranker.top(0, task.banned[0], 5)
        assert len(top) == 5 and not set(top) & set(task.banned[0].tolist())
    assert context._grams == {}  # released after training


def test_the_users_history_is_their_distinct_positive_training_items():
    context = _context()
    task = context.task
    for p, user in enumerate(task.users):
        assert sorted(context.history(p).tolist()) == task.banned[p].tolist(), user
    mean = VisualKnnMean(context)
    v = context.data.vectors[context.history(0)].mean(0)
    np.testing.assert_allclose(mean.scores(0), context.data.vectors @ (v / np.linalg.norm(v)),
                               rtol=1e-5, atol=1e-6)


def test_popularity_counts_training_users_and_random_is_seeded_per_user():
    context = _context()
    counts = Popularity(context).scores(0)
    assert counts.sum() == sum(len(h) for h in context.interactions.histories)
    a, b = RandomScores(context), RandomScores(_context())
    np.testing.assert_array_equal(a.scores(3), b.scores(3))
    assert not np.array_equal(a.scores(3), a.scores(4))


def test_item_item_models_record_their_choice_and_its_validation_table():
    context = _context()
    ease = Ease(context)
    assert ease.extras["lam"] in (1.0, 10.0) and len(ease.extras["validation"]) == 2
    assert ease.extras["columns"] == int((context.interactions.item_counts() > 0).sum())
    assert Cooccurrence(context).extras["validation"] == []  # nothing to tune


@pytest.mark.parametrize("cls", [ImplicitBpr, ImplicitAls])
def test_implicit_models_are_seeded_and_record_their_version(cls):
    first, again = cls(_context()), cls(_context())
    np.testing.assert_array_equal(first.scores(2), again.scores(2))
    other = cls(_context(seed=5))
    assert not np.array_equal(first.scores(2), other.scores(2))
    assert first.extras["implicit"] and first.extras["factors"] == 8


def test_without_implicit_bpr_and_als_are_skipped_and_the_rest_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit", None)
    rankers, skipped = make_baselines(_context())
    assert set(skipped) == {"bpr", "als"}
    assert all("pip install 'edgerec[eval]'" in why for why in skipped.values())
    assert "ease" in [r.name for r in rankers]


def test_skipped_names_are_not_trained():
    rankers, skipped = make_baselines(_context(BaselineOptions(skip=tuple(
        b.name for b in BASELINES if b.name != "random"))))
    assert [r.name for r in rankers] == ["random"] and skipped == {}
