"""Fitting the feed's fusion: the validation cuts, the MLP (BCE) beside the linear listwise
regression, the cross-validated choice between them, and the record the device reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import label_events, sample_images
from edgerec.export.behaviour import fit_fusion, fit_linear, fit_mlp
from edgerec.export.behaviour.fusion import ValidationLists, choose_fusion, validation_lists
from edgerec.export.options import BehaviourOptions
from edgerec.sdk import SourceItem, build_catalog
from edgerec.sdk.behaviour import FEATURES, FeedOptions, contributions, fuse
from edgerec.sdk.bundle.manifest import FusionRecord, UserVectorRecipe
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.evaluation.events import holdout_split, read_events

OPTIONS = BehaviourOptions(dim=4, neighbours=3, iterations=5, validation_users=40)


@pytest.fixture(scope="module")
def train(tiny_bundle, tmp_path_factory):
    """100 real photos' ids and vectors, and events generated from their labels."""
    work = tmp_path_factory.mktemp("fusion-shop")
    pairs = sample_images(10)
    build_catalog(tiny_bundle, work / "catalog",
                  [SourceItem(p.stem, p, {"label": lab}) for p, lab in pairs], dtype="float16")
    with Catalog.open(work / "catalog", readonly=True) as cat:
        ids = list(cat)
        _, vectors = cat.vectors(ids)
    labels = {p.stem: lab for p, lab in pairs}
    path = label_events(work / "events.csv", [(i, labels[i]) for i in ids])
    return holdout_split(read_events(path, known_items=ids), test_fraction=0).train, ids, vectors


def _synthetic_lists(seed: int = 0, users: int = 60, size: int = 30) -> ValidationLists:
    """Lists whose positive has feature 0 high *and* feature 1 high (an interaction a linear
    score cannot express as well as an MLP), the rest noise."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(users):
        x = rng.normal(size=(size, len(FEATURES))).astype(np.float32)
        y = np.zeros(size, bool)
        y[int(rng.integers(size))] = True
        x[y, :2] = 1.5
        decoys = rng.choice(np.flatnonzero(~y), 4, replace=False)
        x[decoys[:2], 0], x[decoys[2:], 1] = 3.0, 3.0  # high on one feature only
        xs.append(x)
        ys.append(y)
    return ValidationLists(xs, ys, np.arange(users), np.ones(users, np.int64))


def test_each_cut_gives_the_same_sampled_users_one_list_each(train):
    events, ids, vectors = train
    lists = validation_lists(events, ids, vectors, BehaviourOptions(
        dim=4, neighbours=3, iterations=5, validation_users=30, validation_cuts=3),
        UserVectorRecipe(), FeedOptions(candidates=30))
    assert set(lists.cuts.tolist()) == {1, 2, 3}
    for cut in (1, 2, 3):
        assert len(lists.users[lists.cuts == cut]) == len(set(lists.users[lists.cuts == cut]))
    assert set(lists.users[lists.cuts == 2]) <= set(lists.users[lists.cuts == 1])
    assert len(set(lists.users.tolist())) <= 30 and lists.hits(1) > 0
    assert all(x.shape == (len(y), len(FEATURES)) for x, y in zip(lists.xs, lists.ys))


def test_the_mlp_learns_an_interaction_the_linear_fusion_cannot():
    fit_on, measure = _synthetic_lists(0, users=200), _synthetic_lists(1)
    mlp = fit_mlp(fit_on, hidden=8, epochs=40, batch=128)
    linear = fit_linear(fit_on)
    assert mlp.kind == "mlp" and linear.kind == "linear" and len(mlp.hidden_weights) == 8

    def top1(fusion: FusionRecord) -> float:
        return float(np.mean([y[np.argmax(fuse(x, fusion))] for x, y in
                              zip(measure.xs, measure.ys)]))

    assert top1(mlp) > top1(linear) + 0.1 and top1(mlp) > 0.6


def test_auto_keeps_the_mlp_only_when_its_cross_validated_gain_is_clear():
    options = BehaviourOptions(fusion_hidden=8, fusion_epochs=150)
    interaction = choose_fusion(_synthetic_lists(0, users=200), options, log=lambda _m: None)
    assert interaction.kind == "mlp"
    margin = interaction.validation["mlp_minus_linear"]
    assert margin["mean"] > 2 * margin["standard_error"]
    rng = np.random.default_rng(3)  # the positive is marked by feature 0 alone: linear is enough
    xs, ys = [], []
    for _ in range(100):
        x = rng.normal(size=(30, len(FEATURES))).astype(np.float32)
        y = np.zeros(30, bool)
        y[int(rng.integers(30))] = True
        x[y, 0] += 2.5
        xs.append(x)
        ys.append(y)
    plain = choose_fusion(ValidationLists(xs, ys, np.arange(100), np.ones(100, np.int64)),
                          options, log=lambda _m: None)
    assert plain.kind == "linear"


def test_the_mlp_is_reproducible_from_its_seed():
    lists = _synthetic_lists(2, users=20)
    assert fit_mlp(lists, epochs=3, seed=5) == fit_mlp(lists, epochs=3, seed=5)
    assert fit_mlp(lists, epochs=3, seed=5) != fit_mlp(lists, epochs=3, seed=6)


@pytest.mark.parametrize("choice", ["auto", "mlp", "linear"])
def test_fit_fusion_records_its_kind_and_how_it_chose(train, choice):
    events, ids, vectors = train
    options = BehaviourOptions(dim=4, neighbours=3, iterations=5, validation_users=40,
                               validation_cuts=2, fusion=choice, fusion_epochs=5)
    messages: list[str] = []
    fusion = fit_fusion(events, ids, vectors, options, UserVectorRecipe(),
                        FeedOptions(candidates=30), log=messages.append)
    v = fusion.validation
    assert fusion.fitted and v["choice"] == choice and v["cuts"] == 2 and v["lists"] > v["users"]
    if choice == "auto":
        cv = v["cv_ndcg@20"]
        assert set(cv) == {"linear", "mlp"} and all(len(c["folds"]) == 5 for c in cv.values())
        diff = np.array(cv["mlp"]["folds"]) - np.array(cv["linear"]["folds"])
        significant = diff.mean() > 2 * diff.std(ddof=1) / np.sqrt(len(diff))
        assert fusion.kind == ("mlp" if significant else "linear")
        assert v["mlp_minus_linear"]["mean"] == pytest.approx(diff.mean(), abs=1e-5)
        assert "by cross-validation" in messages[-1]
    else:
        assert fusion.kind == choice and "cv_ndcg@20" not in v
    assert FusionRecord.from_dict(json.loads(json.dumps(fusion.to_dict()))) == fusion


def test_an_mlp_record_scores_as_its_formula_and_explains_by_occlusion():
    rng = np.random.default_rng(0)
    f, h = len(FEATURES), 3
    record = FusionRecord(FEATURES, tuple(rng.normal(size=f)), tuple(rng.normal(size=f)),
                          tuple(rng.uniform(0.5, 2, size=f)), bias=0.3, fitted=True,
                          hidden_weights=tuple(map(tuple, rng.normal(size=(h, f)))),
                          hidden_bias=tuple(rng.normal(size=h)),
                          output_weights=tuple(rng.normal(size=h)))
    x = rng.normal(size=(7, f)).astype(np.float32)
    z = (x - np.array(record.mean)) / np.array(record.scale)

    def score(z: np.ndarray) -> np.ndarray:
        hidden = np.maximum(z @ np.array(record.hidden_weights).T + record.hidden_bias, 0)
        return record.bias + z @ np.array(record.weights) + hidden @ record.output_weights

    np.testing.assert_allclose(fuse(x, record), score(z), rtol=1e-4, atol=1e-4)
    held = z.copy()
    held[:, 4] = 0.0
    np.testing.assert_allclose(contributions(x, record)[:, 4], score(z) - score(held),
                               rtol=1e-3, atol=1e-3)
    linear = FusionRecord(FEATURES, record.weights, record.mean, record.scale)
    np.testing.assert_allclose(contributions(x, linear), z * np.array(record.weights),
                               rtol=1e-4, atol=1e-4)


def test_a_fusion_record_with_a_bad_hidden_layer_is_refused():
    f = len(FEATURES)
    base = dict(features=FEATURES, weights=(0.0,) * f, mean=(0.0,) * f, scale=(1.0,) * f)
    with pytest.raises(ValueError, match="hidden_weights row"):
        FusionRecord(**base, hidden_weights=((1.0,) * (f - 1),), hidden_bias=(0.0,),
                     output_weights=(1.0,))
    with pytest.raises(ValueError, match="output_weights"):
        FusionRecord(**base, hidden_weights=((1.0,) * f,), hidden_bias=(0.0,))
    with pytest.raises(ValueError, match="at most 64"):
        FusionRecord(**base, hidden_weights=((0.0,) * f,) * 65, hidden_bias=(0.0,) * 65,
                     output_weights=(0.0,) * 65)
    with pytest.raises(ValueError, match="finite"):
        FusionRecord(**base, hidden_weights=((float("nan"),) * f,), hidden_bias=(0.0,),
                     output_weights=(1.0,))
    with pytest.raises(ValueError, match="must be 'auto'"):
        BehaviourOptions(fusion="gbdt")
