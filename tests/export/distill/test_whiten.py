"""Choosing the encoder's whitening (kind and power) on held-out labelled embeddings."""

import json

import numpy as np
import pytest
from edgerec.export.distill.whiten import DEFAULT_POWERS, choose_whitening


def _data(label_axis_scale: float, n: int = 600, d: int = 12, seed: int = 0):
    """Labels separated along axis 0 (scaled by ``label_axis_scale``) beside nuisance axes with
    falling variance; returns (train, select, select_labels)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.normal(size=(n, d)) * np.geomspace(3.0, 0.3, d)
    x[:, 0] = labels * label_axis_scale + rng.normal(size=n) * 0.05 * label_axis_scale
    x += 5.0  # off-centre, like ReLU features
    return x[:400].astype(np.float32), x[400:].astype(np.float32), labels[400:]


def test_whitening_that_only_costs_label_quality_is_left_off():
    # the labels live in the strongest direction: equalising the others drowns them
    train, select, labels = _data(label_axis_scale=20.0)
    choice = choose_whitening(train, select, labels)
    assert choice.whitening is None and choice.power is None
    assert choice.scores[0.1] < 0.99 * choice.baseline  # it stopped at the first costly step


def test_whitening_that_keeps_label_quality_is_raised_as_far_as_it_holds():
    # the labels live in a weak direction: whitening helps, so the full power is kept
    train, select, labels = _data(label_axis_scale=0.5)
    choice = choose_whitening(train, select, labels)
    assert choice.power == max(DEFAULT_POWERS)
    assert choice.scores[1.0] >= choice.baseline
    assert choice.whitening is not None and choice.whitening.power == 1.0


def test_a_forced_power_is_kept_whatever_it_costs():
    train, select, labels = _data(label_axis_scale=20.0)
    choice = choose_whitening(train, select, labels, powers=(0.7,), keep=0.0)
    assert choice.power == 0.7 and list(choice.scores) == [0.7]


def test_the_record_is_json_ready():
    train, select, labels = _data(label_axis_scale=0.5)
    record = json.loads(json.dumps(choose_whitening(train, select, labels).to_dict()))
    assert record["fitted_on"] == 400 and len(record["selection_map@10"]) == len(DEFAULT_POWERS)


def _nuisance(separation: float, train_noise: float, select_noise: float, n: int = 900,
              d: int = 8, seed: int = 0):
    """Labels ``separation`` apart along axis 0 (spread 0.3 inside a label, as on the other
    axes) beside a nuisance axis 1 whose spread is ``train_noise`` on the training rows and
    ``select_noise`` on the held-out ones; returns (train, train_labels, select, labels)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.normal(size=(n, d)) * 0.3
    x[:, 0] += labels * separation
    x[:, 1] = rng.normal(size=n) * np.where(np.arange(n) < 600, train_noise, select_noise)
    x += 5.0
    return x[:600].astype(np.float32), labels[:600], x[600:].astype(np.float32), labels[600:]


def test_labelled_training_rows_get_within_label_whitening_at_its_best_power():
    # the nuisance varies inside each label alike on train and held-out rows: shrinking it helps
    train, train_labels, select, labels = _nuisance(1.0, train_noise=3.0, select_noise=3.0)
    choice = choose_whitening(train, select, labels, train_labels=train_labels)
    assert choice.covariance == "within-label" and choice.whitening.within_labels
    assert list(choice.scores) == list(DEFAULT_POWERS)  # every power is tried ...
    assert choice.scores[choice.power] == max(choice.scores.values())  # ... and the best kept
    assert choice.scores[choice.power] > choice.baseline + 0.05
    assert choice.to_dict()["covariance"] == "within-label"


def test_within_label_whitening_is_left_off_when_no_power_beats_the_raw_embedding():
    # quiet on the training rows, loud on held-out ones: whitening magnifies held-out noise
    train, train_labels, select, labels = _nuisance(2.0, train_noise=0.01, select_noise=1.0)
    choice = choose_whitening(train, select, labels, train_labels=train_labels)
    assert choice.covariance == "within-label"
    assert max(choice.scores.values()) < choice.baseline
    assert choice.whitening is None and choice.power is None


def test_without_a_labelled_pair_the_total_whitening_rule_is_used():
    train, select, labels = _data(label_axis_scale=0.5)
    unlabelled = np.full(len(train), -1)
    unlabelled[0] = 2  # one labelled row: no pair, so nothing to measure within a label
    choice = choose_whitening(train, select, labels, train_labels=unlabelled)
    assert choice.covariance == "total" and not choice.whitening.within_labels
    assert choice.power == max(DEFAULT_POWERS)


def test_without_labels_the_power_is_judged_by_agreement_with_the_teacher():
    # the teacher sees the weak directions the student's raw embedding underweights
    train, select, _ = _data(label_axis_scale=0.5)
    rng = np.random.default_rng(1)
    teacher = (select - select.mean(0)) / select.std(0) + rng.normal(size=select.shape) * 0.05
    choice = choose_whitening(train, select, teacher=teacher)
    assert choice.covariance == "total" and choice.measure == "agree@10"
    assert choice.power == max(DEFAULT_POWERS)  # full whitening matches the teacher best
    assert choice.scores[1.0] > choice.baseline + 0.1
    record = choice.to_dict()
    assert record["measure"] == "agree@10" and "selection_agree@10" in record
    assert record["baseline_selection_agree@10"] == choice.baseline


def test_whitening_needs_labels_or_the_teacher_but_not_both():
    train, select, labels = _data(label_axis_scale=0.5)
    with pytest.raises(ValueError, match="either select_labels or teacher"):
        choose_whitening(train, select)
    with pytest.raises(ValueError, match="either select_labels or teacher"):
        choose_whitening(train, select, labels, teacher=select)
    with pytest.raises(ValueError, match="rows"):
        choose_whitening(train, select, teacher=select[:10])
