"""`edgerec scorer train` end to end on the real sample (200 photos, owners as users), its
refusals, and `edgerec export --events` failing fast on bad events."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import SAMPLE, label_events, sample_images
from edgerec.export.errors import ExportError
from edgerec.export.options import ScorerConfig, ScorerExportOptions
from edgerec.export.pipeline import ExportOptions, export_bundle
from edgerec.export.scorer.artifacts import ScorerGate, ScorerParity
from edgerec.export.scorer.bundle import add_scorer
from edgerec.sdk import (
    Bundle,
    Catalog,
    EncoderMismatchError,
    Event,
    Recommender,
    RecommenderOptions,
    Role,
    Scorer,
    ScorerOptions,
    SourceItem,
    build_catalog,
)
from edgerec.sdk.cli.app import main

ARGS = ["--user-column", "owner_id", "--scorer-epochs", "3", "--scorer-hidden", "16", "8"]


@pytest.fixture(scope="module")
def shop(tiny_bundle, tmp_path_factory):
    """A float16 catalog of the 200 sample photos embedded by the tiny network."""
    out = tmp_path_factory.mktemp("scorer-shop") / "catalog"
    items = [SourceItem(p.stem, p, {"label": label}) for p, label in sample_images(20)]
    build_catalog(tiny_bundle, out, items, dtype="float16")
    return out


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """The sample's items.csv (owner_id owns item_id) plus 3 unknown items and a duplicate."""
    path = tmp_path_factory.mktemp("events") / "events.csv"
    with open(SAMPLE / "items.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows += [{**rows[0], "item_id": f"not-in-catalog-{k}"} for k in range(3)] + [rows[1]]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(tiny_bundle, shop, events, tmp_path_factory):
    out = tmp_path_factory.mktemp("scorer-out") / "bundle"
    argv = ["scorer", "train", "--bundle", str(tiny_bundle.path), "--catalog", str(shop),
            "--events", str(events), "--out", str(out), "--json", *ARGS]
    return main(argv), out


def test_scorer_train_writes_a_bundle_with_gated_scorer_files(trained, tiny_bundle, events):
    code, out = trained
    assert code == 0
    bundle = Bundle.open(out)
    assert bundle.encoder_id == tiny_bundle.encoder_id
    keys = {a.key for a in bundle.artifacts(Role.SCORER)}
    m = bundle.manifest.metrics["scorer"]
    assert {"scorer/onnx/fp32", "scorer/tflite/fp32"} <= keys
    int8 = {k for k in keys if k.endswith("int8")} | set(m["gate_failures"])
    assert int8 == {"scorer/onnx/int8", "scorer/tflite/int8"}  # shipped, or said why not
    assert [w.file for w in bundle.weights(Role.SCORER)] == ["scorer.fp32.npz"]
    for key in ("scorer/folded/fp32", "scorer/onnx/fp32", "scorer/tflite/fp32"):
        assert m["parity"][key]["max_abs_diff"] < 1e-3
    # the split is recorded so that `edgerec evaluate` can rebuild it
    assert m["holdout"]["test_fraction"] == 0.2 and m["holdout"]["seed"] == 0
    assert m["holdout"]["user_column"] == "owner_id"
    assert m["holdout"]["events_sha256"] == m["events"]["sha256"]
    assert len(m["events"]["sha256"]) == 64
    assert m["events"]["unknown_items"] == 3 and m["events"]["duplicates"] == 1
    assert m["events"]["single_event_users"] > 0
    assert m["training"]["data"]["single_item_users"] > 0
    assert len(m["training"]["history"]) >= 2 and m["training"]["history"][0]["epoch"] == 0
    assert bundle.manifest.recipe["scorer"]["hidden"] == [16, 8]
    # the typed record the device ranks by: C as the parity gate measured, the recipe, the split
    record = bundle.manifest.scorer
    assert record.shipped and record.candidates == ScorerConfig().candidates
    assert record.user_vector.half_life_days == ScorerConfig().half_life_days
    assert record.holdout.test_fraction == 0.2 and record.holdout.user_column == "owner_id"
    assert record.holdout.events_sha256 == m["events"]["sha256"]
    assert (out / "manifest.json").is_file() and not list(out.parent.glob(".bundle*"))
    # one owner per photo: no item is shared, so no behaviour signals, and the record says why
    assert not bundle.manifest.behaviour.shipped and m["behaviour"]["shipped"] is False
    assert "two different users" in bundle.manifest.behaviour.reason


def test_scorer_train_learns_behaviour_signals_around_a_leave_last_out_split(tiny_bundle, shop,
                                                                              tmp_path):
    with Catalog.open(shop, readonly=True) as cat:
        items = [(i, cat.get(i).metadata["label"]) for i in cat]
    events = label_events(tmp_path / "events.csv", items, users=60, per_user=4)
    out = tmp_path / "bundle"
    code = main(["scorer", "train", "--bundle", str(tiny_bundle.path), "--catalog", str(shop),
                 "--events", str(events), "--out", str(out), "--json", "--scorer-epochs", "1",
                 "--scorer-hidden", "8", "--scorer-holdout", "leave-last-out",
                 "--behaviour-dim", "4", "--behaviour-neighbours", "3"])
    bundle = Bundle.open(out)
    record, metrics = bundle.manifest.behaviour, bundle.manifest.metrics["scorer"]["behaviour"]
    assert code == 0 and record.shipped and record.dim == 4 and record.neighbours == 3
    assert record.fusion.fitted and record.items == len(items) and record.warm_items > 0
    assert record.holdout.strategy == "leave_last_out" and record.holdout.test_users == 60
    assert metrics["bytes_per_item"] == record.bytes_per_item > 0
    with Recommender.create_from_bundle(bundle, shop) as rec:
        assert rec.has_behaviour and rec.lacks == ()


def test_folded_equals_the_exported_models(trained, shop):
    bundle = Bundle.open(trained[1])
    with Catalog.open(shop, readonly=True) as cat:
        _, vectors = cat.vectors(list(cat))
    u = vectors[:5].mean(0)
    u /= np.linalg.norm(u)
    scores = {}
    for mode, engine, precision in (("folded", None, None), ("engine", "onnx", "fp32"),
                                    ("engine", "tflite", "fp32")):
        with Scorer.create_from_bundle(bundle, ScorerOptions(mode=mode, engine=engine,
                                                             precision=precision)) as s:
            scores[s.key] = s.score(u, vectors)
    folded = scores["scorer/folded/fp32"]
    for key, value in scores.items():
        np.testing.assert_allclose(value, folded, atol=1e-4, err_msg=key)
    for a in bundle.artifacts(Role.SCORER):
        if a.precision.value == "int8":
            with Scorer.create_from_bundle(
                    bundle, ScorerOptions(engine=a.engine, precision="int8")) as s:
                q = s.score(u, vectors)
            assert np.corrcoef(q, folded)[0, 1] > 0.95


def test_for_user_re_ranks_with_the_folded_scorer(trained, shop):
    with Catalog.open(shop, readonly=True) as cat:
        ids = list(cat)
    with Recommender.create_from_bundle_path(trained[1], shop,
                                             RecommenderOptions(candidates=50)) as rec:
        assert rec.has_scorer and "scorer/folded/fp32" in repr(rec)
        history = [Event(i, "purchase", 1_700_000_000.0 + k) for k, i in enumerate(ids[:2])]
        recs = rec.for_user(history, k=5)
    assert recs.scorer_used and recs.note == "" and len(recs) == 5


def test_scorer_train_refuses_an_existing_out_without_force(trained, tiny_bundle, shop, events,
                                                            capsys):
    code = main(["scorer", "train", "--bundle", str(tiny_bundle.path), "--catalog", str(shop),
                 "--events", str(events), "--out", str(trained[1]), "--json", *ARGS])
    error = json.loads(capsys.readouterr().out)
    assert code == 1 and error["error"] == "ExportError" and "--force" in error["message"]


def test_scorer_train_refuses_a_catalog_from_another_encoder(teacher_bundle, shop, events,
                                                             tmp_path):
    with pytest.raises(EncoderMismatchError, match="catalog built with this bundle"):
        add_scorer(teacher_bundle, shop, events, tmp_path / "b",
                   ScorerExportOptions(user_column="owner_id"), log=lambda _m: None)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("content", ["", "user_id,item_id\n", "who,what\nx,y\n"])
def test_bad_events_files_fail_clearly_and_leave_nothing(tiny_bundle, shop, tmp_path, content):
    path = tmp_path / "events.csv"
    path.write_text(content)
    with pytest.raises(ExportError, match="events"):
        add_scorer(tiny_bundle, shop, path, tmp_path / "b", log=lambda _m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv"]


def test_events_with_no_catalog_item_fail_clearly(tiny_bundle, shop, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id\na,x\na,y\nb,z\n")
    with pytest.raises(ExportError, match="unknown items: 3"):
        add_scorer(tiny_bundle, shop, path, tmp_path / "b", log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_export_with_an_empty_events_file_fails_before_training(tmp_path):
    (tmp_path / "events.csv").write_text("user_id,item_id\n")
    options = ExportOptions(images=SAMPLE / "images", out=tmp_path / "b", quick=True,
                            events=tmp_path / "events.csv")
    with pytest.raises(ExportError, match="no events"):
        export_bundle(options, log=lambda _m: None)
    assert not (tmp_path / "b").exists()
    assert not list((tmp_path / "b.work").glob("checkpoints/*"))


def test_the_int8_gate_says_what_fell_short_and_checks_ndcg_only_on_enough_hits():
    report = ScorerParity(users=10, candidates=200, k=10, max_abs_diff=0.3, top_k_overlap=0.7,
                          spearman=0.995, ndcg_reference=0.2, ndcg_candidate=0.19,
                          ndcg_ratio=0.95, reference_hits=80)
    gate = ScorerGate()
    assert set(gate.shortfalls(report)) == {"top_k_overlap", "ndcg_ratio"}
    assert gate.margin(report) == pytest.approx(-0.2)
    few = ScorerParity(10, 200, 10, 0.1, 0.95, 0.995, 0.02, 0.01, 0.5, reference_hits=4)
    assert not gate.ndcg_checked(few) and gate.shortfalls(few) == {}
    unmeasured = ScorerParity(10, 200, 10, 0.1, 0.95, 0.995)  # no held-out items at all
    assert gate.shortfalls(unmeasured) == {}


@pytest.fixture(scope="module")
def not_shipped(tiny_bundle, shop, events, tmp_path_factory):
    """A scorer whose training cannot move it (learning rate 0): it never beats u.v."""
    out = tmp_path_factory.mktemp("scorer-frozen") / "bundle"
    options = ScorerExportOptions(
        config=ScorerConfig(hidden=(8,), epochs=2, lr=0.0), user_column="owner_id")
    return add_scorer(tiny_bundle, shop, events, out, options, log=lambda _m: None)


def test_a_scorer_that_does_not_beat_the_inner_product_is_not_shipped(not_shipped, shop,
                                                                      tiny_bundle):
    bundle = Bundle.open(not_shipped.bundle.path)
    assert not bundle.artifacts(Role.SCORER) and not bundle.weights(Role.SCORER)
    assert bundle.encoder_id == tiny_bundle.encoder_id
    m = bundle.manifest.metrics["scorer"]
    assert m["shipped"] is False and "inner-product" in m["reason"]
    comparison = m["comparison"]
    assert comparison["best_epoch"] == 0 and comparison["metric"] == "ndcg@10"
    assert comparison["best_trained"] <= comparison["inner_product"]
    assert m["holdout"]["test_fraction"] == 0.2 and "parity" not in m
    assert bundle.manifest.scorer.shipped is False
    assert "inner-product" in bundle.manifest.scorer.reason
    with Recommender.create_from_bundle(bundle, shop) as rec:  # ranks as without a scorer
        assert not rec.has_scorer


def test_evaluate_falls_back_to_visual_knn_on_a_bundle_without_a_scorer(not_shipped, shop,
                                                                         events, capsys):
    code = main(["evaluate", "--bundle", str(not_shipped.bundle.path), "--catalog", str(shop),
                 "--events", str(events), "--user-column", "owner_id", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["reference"] == "visual_knn"
