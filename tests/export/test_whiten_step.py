"""Choosing the encoder's whitening power on held-out labelled embeddings."""

import json

import numpy as np
from edgerec.export.whiten_step import DEFAULT_POWERS, choose_whitening


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
    assert choice.maps[0.1] < 0.99 * choice.baseline_map  # it stopped at the first costly step


def test_whitening_that_keeps_label_quality_is_raised_as_far_as_it_holds():
    # the labels live in a weak direction: whitening helps, so the full power is kept
    train, select, labels = _data(label_axis_scale=0.5)
    choice = choose_whitening(train, select, labels)
    assert choice.power == max(DEFAULT_POWERS)
    assert choice.maps[1.0] >= choice.baseline_map
    assert choice.whitening is not None and choice.whitening.power == 1.0


def test_a_forced_power_is_kept_whatever_it_costs():
    train, select, labels = _data(label_axis_scale=20.0)
    choice = choose_whitening(train, select, labels, powers=(0.7,), keep=0.0)
    assert choice.power == 0.7 and list(choice.maps) == [0.7]


def test_the_record_is_json_ready():
    train, select, labels = _data(label_axis_scale=0.5)
    record = json.loads(json.dumps(choose_whitening(train, select, labels).to_dict()))
    assert record["fitted_on"] == 400 and len(record["selection_map@10"]) == len(DEFAULT_POWERS)
