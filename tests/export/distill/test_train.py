"""Distillation: trains on real teacher features, checkpoints atomically, resumes exactly."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TEACHER, sample_images
from edgerec.export.data.views import make_views
from edgerec.export.distill.pairs import BehaviourPairs
from edgerec.export.distill.student import create_student
from edgerec.export.distill.teacher import Teacher
from edgerec.export.distill.train import (
    _to_input,
    _view_targets,
    embed_views,
    rebase_batchnorm,
    train_student,
)
from edgerec.export.options import DistillConfig
from edgerec.sdk import load_image

SIZE = 48
CONFIG = DistillConfig(epochs=2, batch_size=10, queue_size=32, patience=5, threads=2,
                       warmup_epochs=0.5, ema_decay=0.0, label_decay_from=1.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    items = sample_images(2)  # 20 photos, 10 labels
    teacher = Teacher.load(TEACHER, tmp_path_factory.mktemp("teacher"))
    big = [make_views(load_image(p), 2, 224, i) for i, (p, _) in enumerate(items)]
    feats = teacher.embed_views(np.concatenate(big)).astype(np.float16)
    teacher.close()
    small = np.stack([np.asarray(load_image(v).resize((SIZE, SIZE))) for b in big for v in b])
    names = sorted({lab for _, lab in items})
    labels = np.array([names.index(lab) for _, lab in items])
    labels[::7] = -1  # some unlabelled items
    val_views = small[::2]
    val_labels = np.array([lab for _, lab in items])
    return small, feats, labels, val_views, val_labels


def _train(data, tmp_path, config=CONFIG, resume=False, log=None, probe=None,
           select_on="val_map@10", pairs=None):
    views, feats, labels, val_views, val_labels = data
    torch.manual_seed(0)
    model = create_student("mobilenet_v3_small", image_size=SIZE, dim=32, hidden=0, width=0.5)
    result = train_student(model, views=views, features=feats, views_per_item=2, labels=labels,
                           val_views=val_views, val_labels=val_labels, config=config,
                           checkpoint_dir=tmp_path, resume=resume, log=log,
                           probe=probe, select_on=select_on, pairs=pairs)
    return model, result


def test_training_runs_every_loss_and_records_history(data, tmp_path):
    model, result = _train(data, tmp_path)
    assert result.epochs_run == 2 and result.stopped == "epochs"
    row = result.history[-1]
    assert row["relational"] > 0 and row["cosine"] > 0 and row["label"] > 0
    assert 0 <= result.best_map <= 1 and (tmp_path / "best.pt").is_file()
    vectors = embed_views(model, data[3], CONFIG)
    assert vectors.shape == (20, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not list(tmp_path.glob("*.tmp"))


def test_interrupted_training_resumes_to_the_same_weights(data, tmp_path):
    straight, _ = _train(data, tmp_path / "a")

    def stop_after_first_epoch(row):
        if row["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(data, tmp_path / "b", log=stop_after_first_epoch)
    resumed, result = _train(data, tmp_path / "b", resume=True)
    assert [h["epoch"] for h in result.history] == [0, 1]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)


def test_early_stopping_and_time_budget_stop_training(data, tmp_path):
    _, result = _train(data, tmp_path / "a", replace(CONFIG, epochs=4, patience=0))
    assert result.stopped == "early_stop" and result.epochs_run < 4
    _, result = _train(data, tmp_path / "b", replace(CONFIG, epochs=4, max_minutes=1e-6))
    assert result.stopped == "time_budget" and result.epochs_run == 1


def test_label_weight_ramps_down_after_the_decay_point(data, tmp_path):
    config = replace(CONFIG, epochs=4, label_decay_from=0.5, w_label=2.0, w_label_end=0.0)
    _, result = _train(data, tmp_path, config)
    weights = [row["w_label"] for row in result.history]  # weight at the end of each epoch
    assert weights == pytest.approx([2.0, 2.0, 1.0, 0.0])


def test_a_probe_adds_numbers_to_history_and_can_pick_the_epoch(data, tmp_path):
    calls = []

    def probe(model):
        assert not model.training  # probed in eval mode
        calls.append(1)
        return {"pick": [0.2, 0.9, 0.1][len(calls) - 1]}

    config = replace(CONFIG, epochs=3)
    _, result = _train(data, tmp_path / "a", config, probe=probe, select_on="pick")
    assert [row["pick"] for row in result.history] == [0.2, 0.9, 0.1]
    assert result.best_epoch == 1 and result.best_map == 0.9
    with pytest.raises(ValueError, match="select_on"):
        _train(data, tmp_path / "b", CONFIG, select_on="missing")


def test_weight_averaging_is_what_gets_kept_and_it_resumes_exactly(data, tmp_path):
    config = replace(CONFIG, ema_decay=0.9)
    straight, result = _train(data, tmp_path / "a", config)
    assert result.epochs_run == 2
    raw = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert raw["ema_steps"] > 0
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    ema, live = raw["ema"], raw["model"]
    name = next(k for k, v in live.items() if v.dtype.is_floating_point and v.ndim == 4)
    assert not torch.equal(ema[name], live[name])  # the average is not the live weights
    if result.best_epoch == result.epochs_run - 1:  # kept the last epoch: its average
        torch.testing.assert_close(best[name], ema[name])

    def stop_after_first_epoch(row):
        if row["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(data, tmp_path / "b", config, log=stop_after_first_epoch)
    resumed, _ = _train(data, tmp_path / "b", config, resume=True)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=key)


def test_without_validation_labels_a_probe_picks_the_epoch(data, tmp_path):
    views, feats, labels, val_views, _ = data
    teacher = np.asarray(feats[::2], np.float32)  # view 0 of each item: the device crop
    scores = []

    def agreement(model):
        from edgerec.export.artifacts.parity import neighbour_overlap

        scores.append(neighbour_overlap(teacher, embed_views(model, views[::2], CONFIG), 5))
        return {"agree@5": scores[-1]}

    torch.manual_seed(0)
    model = create_student("mobilenet_v3_small", image_size=SIZE, dim=32, hidden=0, width=0.5)
    config = replace(CONFIG, w_label=0.0, epochs=3)
    result = train_student(model, views=views, features=feats, views_per_item=2,
                           labels=np.full(len(labels), -1), val_views=val_views,
                           val_labels=None, config=config, checkpoint_dir=tmp_path,
                           probe=agreement, select_on="agree@5")
    assert all("val_map@10" not in row and row["label"] == 0 for row in result.history)
    assert [row["agree@5"] for row in result.history] == scores
    assert result.best_map == max(scores) and result.best_epoch == int(np.argmax(scores))
    with pytest.raises(ValueError, match="probe"):
        train_student(model, views=views, features=feats, views_per_item=2, labels=labels,
                      val_views=val_views, val_labels=None, config=CONFIG,
                      checkpoint_dir=tmp_path / "b")


def test_rebased_batchnorm_keeps_the_network_and_makes_train_mode_compute_it():
    """Pretrained weights with BatchNorm folded (mean 0, variance 1, weight 1: a shift) compute
    another network in train mode; after the rebase both modes compute the loaded one."""
    torch.manual_seed(0)
    model = create_student("mobilenet_v2_160", image_size=SIZE, dim=8, dropout=0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.normal_(0, 0.5)
                m.running_mean.zero_()
                m.running_var.fill_(1 - m.eps)
    views = np.stack([np.asarray(load_image(p).resize((SIZE, SIZE))) for p, _ in sample_images(2)])
    x = _to_input(views, torch.tensor(CONFIG.mean).view(1, 3, 1, 1) * 255,
                  1 / (torch.tensor(CONFIG.std).view(1, 3, 1, 1) * 255))

    def run(train: bool) -> torch.Tensor:
        net = copy.deepcopy(model).train(train)  # a train-mode pass moves running statistics
        with torch.no_grad():
            return net(x)

    loaded = run(False)
    assert torch.nn.functional.cosine_similarity(run(True), loaded).mean() < 0.9
    # every photo in one batch: train mode's batch statistics are the measured ones
    rebase_batchnorm(model, views, CONFIG, images=len(views), batch=len(views))
    torch.testing.assert_close(run(False), loaded, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(run(True), loaded, rtol=1e-3, atol=1e-3)


def test_item_mean_targets_give_every_view_of_an_image_its_views_normalised_mean(data):
    feats = data[1]  # (20 images * 2 views, D) float16 teacher vectors
    assert _view_targets(feats, 2, 0.0) is feats
    mean = _view_targets(feats, 2, 1.0)
    f = feats.astype(np.float32) / np.linalg.norm(feats.astype(np.float32), axis=1, keepdims=True)
    want = f.reshape(20, 2, -1).mean(1)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert mean.dtype == np.float16 and mean.shape == feats.shape
    np.testing.assert_allclose(mean[0::2], want, atol=2e-3)
    np.testing.assert_allclose(mean[1::2], want, atol=2e-3)
    half = _view_targets(feats, 2, 0.5).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1, atol=2e-3)
    between = (half * f).sum(1)  # closer to its own view than the mean is
    assert (between >= (want.repeat(2, 0) * f).sum(1) - 1e-3).all()


def test_training_towards_item_mean_targets_runs_and_rejects_a_bad_weight(data, tmp_path):
    _, result = _train(data, tmp_path, replace(CONFIG, target_mean=1.0))
    assert result.epochs_run == 2 and result.history[-1]["cosine"] > 0
    with pytest.raises(ValueError, match="target_mean"):
        DistillConfig(target_mean=-0.1)


def _linked_pairs(n=20):
    """Each image linked to the one five places on (another label), both ways."""
    rows = np.full((n, 2), -1, np.int64)
    rows[:, 0], rows[:, 1] = (np.arange(n) + 5) % n, (np.arange(n) - 5) % n
    return BehaviourPairs(rows, np.ones((n, 2), np.float32))


def _linked_margin(model, data):
    """Mean cosine of linked images minus the mean over all pairs of distinct images."""
    v = embed_views(model, data[0][::2], CONFIG)  # each image's first view
    sims = v @ v.T
    linked = sims[np.arange(20), (np.arange(20) + 5) % 20].mean()
    return linked - sims[~np.eye(20, dtype=bool)].mean()


def test_the_behaviour_term_pulls_co_interacted_images_together(data, tmp_path):
    config = replace(CONFIG, epochs=6, w_label=0.0)
    plain, _ = _train(data, tmp_path / "plain", config)
    linked, result = _train(data, tmp_path / "linked", replace(config, w_behaviour=4.0),
                            pairs=_linked_pairs())
    assert all(row["behaviour"] > 0 for row in result.history)
    assert _linked_margin(linked, data) > _linked_margin(plain, data) + 0.03


def test_the_behaviour_term_needs_pairs_for_every_training_image(data, tmp_path):
    with pytest.raises(ValueError, match="co-occurrence pairs"):
        _train(data, tmp_path, replace(CONFIG, w_behaviour=1.0))
    with pytest.raises(ValueError, match="got them for 10"):
        _train(data, tmp_path, replace(CONFIG, w_behaviour=1.0), pairs=_linked_pairs(10))
    for bad in ({"w_behaviour": -1.0}, {"tau_behaviour": 0.0}, {"behaviour_neighbours": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DistillConfig(**bad)
