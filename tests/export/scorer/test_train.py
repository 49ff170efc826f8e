"""Scorer training on a synthetic clustered catalog: it starts as the inner product, its loss
falls, it beats random, and the device's folded weights compute exactly the torch model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from edgerec.export.errors import ExportError
from edgerec.export.options import NegativeSampling, ScorerConfig
from edgerec.export.scorer.data import mean_ndcg
from edgerec.export.scorer.train import ScorerNet, catalog_scores, train_scorer
from edgerec.sdk.evaluation.events import Interaction

CONFIG = ScorerConfig(hidden=(32, 16), epochs=12, folds=2, lr=3e-3,
                      negatives=NegativeSampling(uniform=4, popular=1, hard=2, hard_pool=20))


def clustered(n_items=300, dim=16, clusters=10, users=60, per_user=8, seed=0):
    """Items around ``clusters`` centres; each user likes items of two clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    label = rng.integers(0, clusters, n_items)
    v = (centres[label] + 0.9 * rng.normal(size=(n_items, dim))).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [f"i{k}" for k in range(n_items)]
    train, line = {}, 2
    for u in range(users):
        liked = np.flatnonzero(np.isin(label, rng.choice(clusters, 2, replace=False)))
        events = []
        for item in rng.choice(liked, per_user, replace=False):
            events.append(Interaction(f"u{u}", ids[item], line=line))
            line += 1
        train[f"u{u}"] = events
    return train, ids, v


@pytest.fixture(scope="module")
def trained():
    train, ids, v = clustered()
    return train_scorer(train, ids, v, CONFIG, log=lambda _m: None), ids, v


def test_training_loss_falls_and_validation_ndcg_beats_random(trained):
    result, ids, _ = trained
    losses = [row["loss"] for row in result.history[1:]]
    assert losses[-1] < 0.8 * losses[0]
    val = result.validation
    assert len(val) > 20
    rng = np.random.default_rng(0)
    random = np.mean([mean_ndcg(rng.random((len(val), len(ids))), val) for _ in range(5)])
    assert result.best_val_ndcg > 2 * random
    assert result.best_val_ndcg >= result.inner_product_val_ndcg  # epoch 0 is a candidate
    assert result.stopped in ("epochs", "time")
    assert result.data["users"] == 60 and result.data["validation"]["users"] == len(val)


def test_the_epoch_count_comes_from_the_mean_fold_curve_and_the_refit_uses_every_event(
        trained):
    result, _, _ = trained
    curve = [row["val_ndcg@10"] for row in result.history]
    assert all(len(row["folds"]) == 2 for row in result.history)
    assert curve == pytest.approx([np.mean(row["folds"]) for row in result.history])
    assert result.best_epoch == int(np.argmax(curve))
    assert result.best_val_ndcg == pytest.approx(max(curve))
    assert result.data["validation_split"]["folds"] == 2
    # the shipped model trained on all 60 users' events, not a fold's 80 %
    assert result.examples.counts["examples"] == 60 * 8


def test_without_validation_it_trains_the_given_epochs_on_everything():
    train, ids, v = clustered(users=20)
    config = ScorerConfig(hidden=(8,), epochs=3, val_fraction=0.0)
    result = train_scorer(train, ids, v, config, log=lambda _m: None)
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3]
    assert result.best_val_ndcg is None and result.best_epoch == 3


def test_epoch_zero_is_the_inner_product_ranking():
    train, ids, v = clustered(users=20)
    config = ScorerConfig(hidden=(8,), epochs=1, negatives=NegativeSampling(hard_pool=5))
    result = train_scorer(train, ids, v, config, log=lambda _m: None)
    assert result.history[0]["val_ndcg@10"] == pytest.approx(result.inner_product_val_ndcg)
    net = ScorerNet(16, (8,), 0.0, np.full(48, 0.1), np.full(48, 0.5))
    net.init_inner_product_prior(7.0, -1.5)
    w = net.to_weights()
    u, items = v[0], v[1:50]
    np.testing.assert_allclose(w.folded()(u, items), 7.0 * items @ u - 1.5, atol=1e-4)


def test_folded_weights_compute_exactly_the_torch_model(trained):
    result, _, v = trained
    model = result.model
    u, items = v[3], v[:200]
    rows = torch.from_numpy(np.concatenate([np.broadcast_to(u, items.shape), items, items * u],
                                           axis=1))
    with torch.no_grad():
        reference = model(rows)[:, 0].numpy()
    np.testing.assert_allclose(result.weights.folded()(u, items), reference, atol=1e-4)
    batched = catalog_scores(result.weights, v[[3, 4]], items)  # the validation's batching
    np.testing.assert_allclose(batched[0], reference, atol=1e-4)
    assert not model.training


def test_nothing_to_learn_from_raises_a_clear_error():
    _, ids, v = clustered(users=1)
    single = {f"u{k}": [Interaction(f"u{k}", ids[k], line=k)] for k in range(5)}
    with pytest.raises(ExportError, match="two or more catalog items"):
        train_scorer(single, ids, v, CONFIG, log=lambda _m: None)


def test_config_is_validated():
    with pytest.raises(ValueError, match="dropout"):
        ScorerConfig(dropout=1.0)
    with pytest.raises(ValueError, match="hidden"):
        ScorerConfig(hidden=())
    assert ScorerConfig(hidden=[4]).to_dict()["hidden"] == [4]


class BusierClock:
    """A clock whose every reading is later by more than the previous one (a machine getting
    busier): a later fold uses up the same time budget in fewer epochs."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return float(self.reads**2)


def test_folds_that_stop_at_different_epochs_are_compared_on_the_epochs_they_all_reached():
    train, ids, v = clustered(users=30)
    # budget 48 "seconds" per fold: fold 1 stops after 7 epochs, fold 2 after 3 (reads^2)
    config = ScorerConfig(hidden=(8,), epochs=12, folds=2, max_minutes=2.4,
                          negatives=NegativeSampling(uniform=4))
    result = train_scorer(train, ids, v, config, log=lambda _m: None, clock=BusierClock())
    runs = result.data["validation_split"]["fold_runs"]
    epochs = [r["epochs_run"] for r in runs]
    assert len(set(epochs)) == 2 and all(r["stopped"] == "time" for r in runs)
    assert [len(r["curve"]) for r in runs] == [e + 1 for e in epochs]
    assert len(result.history) == min(epochs) + 1  # the common epochs, each fold's value kept
    assert all(len(row["folds"]) == 2 for row in result.history)
    assert result.best_epoch <= min(epochs) and result.stopped == "time"


def test_training_memory_does_not_grow_with_examples_times_negatives_times_dimension():
    """3,000 examples x 17 rows x 3 x 256 floats would be 157 MB materialised; an epoch of at
    most 4,096 rows built per mini-batch stays far below (numpy's allocations, traced)."""
    import tracemalloc

    train, ids, v = clustered(n_items=2000, dim=256, users=100, per_user=30)
    config = ScorerConfig(hidden=(16,), epochs=2, folds=1, epoch_rows=4096,
                          negatives=NegativeSampling(uniform=16))
    tracemalloc.start()
    try:
        result = train_scorer(train, ids, v, config, log=lambda _m: None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.data["examples"] == 3000
    assert result.data["budget"]["examples_per_epoch"] == 4096 // 17
    assert peak < 40e6, f"numpy peak {peak / 1e6:.0f} MB"


def test_no_further_fold_once_the_validation_holds_enough_held_out_items():
    train, ids, v = clustered(users=40)
    few = ScorerConfig(hidden=(8,), epochs=1, folds=3, val_relevant=10)
    result = train_scorer(train, ids, v, few, log=lambda _m: None)
    split = result.data["validation_split"]
    assert split["folds_run"] == 1 and split["fold_runs"][0]["validation"]["relevant"] >= 10
    many = train_scorer(train, ids, v, replace(few, val_relevant=10**6), log=lambda _m: None)
    assert many.data["validation_split"]["folds_run"] == 3


def test_a_scorer_that_never_beats_the_inner_product_reports_it():
    train, ids, v = clustered(users=30)
    frozen = ScorerConfig(hidden=(8,), epochs=3, folds=2, lr=0.0)  # training changes nothing
    result = train_scorer(train, ids, v, frozen, log=lambda _m: None)
    assert result.best_epoch == 0 and not result.improves
    comparison = result.comparison()
    assert comparison["best_trained_epoch"] == 1
    assert comparison["best_trained"] == pytest.approx(comparison["inner_product"])
    assert comparison["folds"] == 2 and len(comparison["validation_users"]) == 2
