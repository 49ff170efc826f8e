"""Scorer training on a synthetic clustered catalog: it starts as the inner product, its loss
falls, it beats random, and the device's folded weights compute exactly the torch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edgerec.export.errors import ExportError
from edgerec.export.scorer.data import NegativeSampling, mean_ndcg
from edgerec.export.scorer.train import ScorerConfig, ScorerNet, catalog_scores, train_scorer
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
