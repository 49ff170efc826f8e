"""Offline evaluation (edgerec.sdk.evaluation.protocol, `edgerec evaluate`) on real engines and
photos.

One float16 catalog of the 200 sample photos embedded by the real teacher is shared by the
module; events are the sample's owners or small synthetic logs written as CSV in tmp_path.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE, sample_images
from edgerec.runtimes import open_runtime
from edgerec.sdk import (
    Bundle,
    Catalog,
    Precision,
    Profile,
    ProfileError,
    Recommender,
    RecommenderOptions,
    Role,
    SourceItem,
    build_catalog,
)
from edgerec.sdk.bundle.writer import NewArtifact, write_bundle
from edgerec.sdk.cli.app import main
from edgerec.sdk.evaluation.bpr import train_bpr
from edgerec.sdk.evaluation.events import holdout_split, read_events
from edgerec.sdk.evaluation.protocol import (
    NO_SCORER_WARNING,
    EvaluateOptions,
    EvaluationResult,
    evaluate,
)
from edgerec.sdk.evaluation.ranking_metrics import ranking_report

BASELINES = ["visual_knn", "popularity", "label_popularity", "bpr", "vbpr"]
FAST = dict(resamples=200)


@pytest.fixture(scope="module")
def shop(teacher_bundle, tmp_path_factory) -> Path:
    """A float16 catalog of the 200 sample photos (label and owner_id metadata)."""
    with open(SAMPLE / "items.csv", newline="") as f:
        owners = {r["item_id"]: r["owner_id"] for r in csv.DictReader(f)}
    items = [SourceItem(p.stem, p, {"label": label, "owner_id": owners[p.stem]})
             for p, label in sample_images(20)]
    out = tmp_path_factory.mktemp("evaluate") / "catalog"
    build_catalog(teacher_bundle, out, items, dtype="float16")
    return out


@pytest.fixture(scope="module")
def by_label() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path, label in sample_images(20):
        out.setdefault(label, []).append(path.stem)
    return out


def _csv(path: Path, rows, header=("user_id", "item_id")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _run(bundle, shop, events: Path, user_column="user_id", **options) -> EvaluationResult:
    with Catalog.open(shop, readonly=True) as cat:
        log = read_events(events, known_items=set(cat), user_column=user_column)
        return evaluate(bundle, cat, log, EvaluateOptions(**{**FAST, **options}))


def _ci_ok(ci) -> bool:
    return ci.low <= ci.mean <= ci.high and ci.resamples == FAST["resamples"]


# ------------------------------------------------------------------ the sample's owners


def test_sample_owners_without_a_scorer_rank_every_baseline_with_cis(teacher_bundle, shop):
    result = _run(teacher_bundle, shop, SAMPLE / "items.csv", user_column="owner_id")
    assert list(result.models) == BASELINES
    assert result.reference == "visual_knn" and result.target_met is None
    assert result.warnings[0] == NO_SCORER_WARNING and result.classification is None
    assert any("every held-out item is cold" in w for w in result.warnings)
    log = read_events(SAMPLE / "items.csv", user_column="owner_id")
    expected = holdout_split(log, test_fraction=0.2, seed=0).describe()
    assert {k: result.split[k] for k in expected} == expected
    assert result.split["source"] == "default"
    assert result.split["cold_test_items"] == expected["test_events"]  # one event per item
    for model in result.models.values():
        assert model.all.report.users == result.split["evaluated_users"] > 0
        assert set(model.all.ci) == {"ndcg", "recall", "hit_rate", "map", "auc"}
        assert all(_ci_ok(ci) for ci in model.all.ci.values())
        assert model.warm is None and model.cold.report == model.all.report
        assert set(model.labels) <= {lab for _, lab in sample_images(1)}
    # every held-out owner item is cold: item-id models know nothing about it
    assert result.models["popularity"].all.report.ndcg == 0.0
    assert set(result.margins) == set(BASELINES) - {"visual_knn"}
    data = json.loads(json.dumps(result.to_dict()))
    assert data["events"]["sha256"] == log.report.sha256
    assert data["models"]["bpr"]["extras"]["losses"]


# ------------------------------------------------------------------ baselines learn


def test_popularity_and_label_popularity_beat_random_on_a_popular_item_log(
        teacher_bundle, shop, by_label, tmp_path):
    rng = np.random.default_rng(0)
    hits = by_label["hat"][:5]
    others = [i for lab, ids in by_label.items() if lab != "hat" for i in ids]
    rows = []
    for u in range(40):
        for item in rng.choice(hits, 4, replace=False):
            rows.append((f"u{u}", item))
        rows.append((f"u{u}", rng.choice(others)))
    result = _run(teacher_bundle, shop, _csv(tmp_path / "e.csv", rows))
    pop, lab = result.models["popularity"].all, result.models["label_popularity"].all
    assert pop.report.ndcg > 0.4 and pop.report.auc > 0.8
    assert lab.report.auc > 0.7 and lab.report.hit_rate > 0.4
    assert result.margins["popularity"].high < 0  # visual_knn loses to popularity here


def test_visual_knn_bpr_and_vbpr_learn_users_who_like_one_label(
        teacher_bundle, shop, by_label, tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for g, label in enumerate(["dress", "hat", "shoes", "pants"]):
        for u in range(10):
            for item in rng.choice(by_label[label], 8, replace=False):
                rows.append((f"g{g}u{u}", item))
    result = _run(teacher_bundle, shop, _csv(tmp_path / "e.csv", rows), test_fraction=0.25)
    for name in ("visual_knn", "bpr", "vbpr"):
        report = result.models[name].all.report
        assert report.auc > 0.75 and report.ndcg > 0.15, (name, report)
    bpr = result.models["bpr"]
    assert bpr.warm is not None and bpr.warm.report.auc > 0.75
    assert bpr.extras["losses"][-1] < 0.5 * bpr.extras["losses"][0]


def test_bpr_training_loss_falls_and_held_out_items_rank_above_random():
    rng = np.random.default_rng(0)
    n_users, n_items, block = 60, 120, 30
    users, items, held = [], [], []
    for u in range(n_users):
        liked = rng.choice(np.arange(block) + block * (u % 4), 10, replace=False)
        users += [u] * 9
        items += list(liked[:9])
        held.append(liked[9])
    model = train_bpr(np.array(users), np.array(items), n_users, n_items, factors=8, epochs=30,
                      seed=0)
    assert model.losses[-1] < 0.5 * model.losses[0]
    ranks = []
    for u, item in enumerate(held):
        s = model.scores(u)
        s[np.array(items)[np.array(users) == u]] = -np.inf
        ranks.append(int((s > s[item]).sum()))
    assert np.mean(ranks) < 0.25 * (n_items - 9) / 2  # random: about half the items


# ------------------------------------------------------------------ split, slices


def test_timestamps_give_leave_last_out_and_the_split_matches_holdout_split(
        teacher_bundle, shop, by_label, tmp_path):
    rows = [(f"u{u}", item, 1000 * u + t)
            for u in range(6) for t, item in enumerate(by_label["shirt"][u:u + 5])]
    path = _csv(tmp_path / "e.csv", rows, ("user_id", "item_id", "timestamp"))
    result = _run(teacher_bundle, shop, path, seed=3, test_fraction=0.4)
    expected = holdout_split(read_events(path), test_fraction=0.4, seed=3).describe()
    assert expected["strategy"] == "leave_last_out"
    assert {k: result.split[k] for k in expected} == expected
    assert result.split["source"] == "options"


def test_cold_and_warm_held_out_items_are_reported_separately(
        teacher_bundle, shop, by_label, tmp_path):
    rng = np.random.default_rng(2)
    shared, own = by_label["pants"], iter(by_label["skirt"] + by_label["shorts"])
    rows = []
    for u in range(12):
        rows += [(f"u{u}", i) for i in rng.choice(shared, 4, replace=False)]
        rows += [(f"u{u}", next(own)), (f"u{u}", next(own))]
    path = _csv(tmp_path / "e.csv", rows)
    result = _run(teacher_bundle, shop, path, test_fraction=0.35)
    split = holdout_split(read_events(path), test_fraction=0.35, seed=0)
    trained = {e.item_id for events in split.train.values() for e in events}
    cold = {u: [e.item_id for e in ev if e.item_id not in trained] for u, ev in split.test.items()}
    warm = {u: [e.item_id for e in ev if e.item_id in trained] for u, ev in split.test.items()}
    assert result.split["cold_test_items"] == sum(map(len, cold.values())) > 0
    assert result.split["warm_test_items"] == sum(map(len, warm.values())) > 0
    for model in result.models.values():
        assert model.cold.report.users == sum(1 for v in cold.values() if v)
        assert model.warm.report.users == sum(1 for v in warm.values() if v)
        assert "auc" in model.cold.ci and "auc" in model.warm.ci
    assert result.models["bpr"].cold.report.ndcg < result.models["bpr"].warm.report.ndcg


# ------------------------------------------------------------------ bad input


def test_bad_rows_are_counted_single_event_users_skipped_and_gaps_in_time_noted(
        teacher_bundle, shop, by_label, tmp_path):
    ids = by_label["dress"]
    rows = [("a", ids[0], 1), ("a", ids[1], 2), ("a", ids[1], 2), ("a", ids[2], ""),
            ("a", "ghost", 4), ("b", ids[3], 5), ("b", ids[4], 3), ("b", "ghost-2", 6),
            ("c", ids[5], 7)]
    path = _csv(tmp_path / "e.csv", rows, ("user_id", "item_id", "timestamp"))
    result = _run(teacher_bundle, shop, path, test_fraction=0.3)
    ev = result.events
    assert (ev.unknown_items, ev.duplicates, ev.single_event_users) == (2, 1, 1)
    assert (ev.missing_timestamps, ev.out_of_order) == (1, 1)
    assert result.split["skipped_users"] == 1 and result.split["evaluated_users"] == 2
    assert result.split["strategy"] == "random"
    assert any("3 of 9 event rows were dropped" in w for w in result.warnings)
    assert any("1 event(s) have no timestamp" in w for w in result.warnings)


def test_a_log_with_nothing_to_hold_out_is_a_clear_error(teacher_bundle, shop, by_label,
                                                         tmp_path):
    rows = [(f"u{i}", item) for i, item in enumerate(by_label["hat"][:5])]
    with pytest.raises(ProfileError, match=r"nothing to evaluate.*at least two events"):
        _run(teacher_bundle, shop, _csv(tmp_path / "e.csv", rows))


def test_options_are_validated():
    for bad in (dict(k=0), dict(test_fraction=1.0), dict(seed=-1), dict(candidates=True),
                dict(level=1.5), dict(bpr_lr=0)):
        with pytest.raises(ValueError):
            EvaluateOptions(**bad)


# ------------------------------------------------------------------ with a scorer


def _scorer_bundle(teacher: Bundle, out: Path, weights: np.ndarray,
                   metrics: dict | None = None) -> Bundle:
    """The teacher's encoder plus an ONNX scorer ``logit = [u, v, u*v] @ weights``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    width = len(weights)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])], "scorer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(weights.astype(np.float32).reshape(width, 1), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = out.parent / f"{out.name}-scorer.onnx"
    onnx.save(model, path)
    runtime = open_runtime(path)
    arts = [NewArtifact(teacher.artifact_path(a), a.role, a.precision, a.inputs, a.outputs,
                        a.output, a.layout, a.file, a.engine)
            for a in teacher.artifacts(Role.ENCODER)]
    arts.append(NewArtifact(path, Role.SCORER, Precision.FP32, tuple(runtime.input_specs()),
                            tuple(runtime.output_specs()), "logits"))
    runtime.close()
    return write_bundle(out, artifacts=arts, preprocessing=teacher.preprocessing,
                        embedding_dim=teacher.embedding_dim, name="teacher+scorer",
                        metrics=metrics)


def _block(dim: int, block: int, scale: float = 1.0) -> np.ndarray:
    w = np.zeros(3 * dim)
    w[block * dim:(block + 1) * dim] = scale
    return w


def test_an_inner_product_scorer_matches_visual_knn_and_warns_about_its_split(
        teacher_bundle, shop, tmp_path):
    dim = teacher_bundle.embedding_dim
    bundle = _scorer_bundle(teacher_bundle, tmp_path / "b", _block(dim, 2))  # logit = u.v
    result = _run(bundle, shop, SAMPLE / "items.csv", user_column="owner_id", vbpr=False)
    assert list(result.models) == ["scorer", "visual_knn", "popularity", "label_popularity",
                                   "bpr"]
    scorer, knn = result.models["scorer"].all.report, result.models["visual_knn"].all.report
    assert scorer.ndcg == pytest.approx(knn.ndcg) and scorer.auc == pytest.approx(knn.auc)
    assert result.margins["visual_knn"].mean == pytest.approx(0.0, abs=1e-12)
    assert result.reference == "scorer" and result.target_met is False
    assert result.ahead_of_all is False and "visual_knn" in result.not_significant
    assert any("does not record its training split" in w for w in result.warnings)
    assert NO_SCORER_WARNING not in result.warnings
    c = result.classification
    assert c.support == 2 * result.split["cold_test_items"] and c.positives == c.support // 2


def test_the_scorer_row_is_the_devices_two_stage_for_user(teacher_bundle, shop, tmp_path):
    dim = teacher_bundle.embedding_dim
    weights = _block(dim, 1) * np.random.default_rng(0).normal(size=3 * dim)  # a v-only logit
    bundle = _scorer_bundle(teacher_bundle, tmp_path / "b", weights)
    events = SAMPLE / "items.csv"
    result = _run(bundle, shop, events, user_column="owner_id", candidates=20, vbpr=False)
    log = read_events(events, user_column="owner_id")
    split = holdout_split(log, test_fraction=0.2, seed=0)
    rankings, relevant = {}, {}
    with Recommender.create_from_bundle(bundle, shop, RecommenderOptions(candidates=20)) as rec:
        for user, held in split.test.items():
            history = Profile(user, tuple(e.to_event() for e in split.train[user]))
            rankings[user] = rec.for_user(history, k=10).ids
            relevant[user] = [e.item_id for e in held]
    device = ranking_report(rankings, relevant, 10)
    got = result.models["scorer"].all.report
    assert (got.ndcg, got.recall, got.map) == pytest.approx((device.ndcg, device.recall,
                                                             device.map))
    assert got.ndcg != pytest.approx(result.models["visual_knn"].all.report.ndcg)


def test_the_scorers_recorded_split_is_used_and_a_different_events_file_is_flagged(
        teacher_bundle, shop, tmp_path):
    dim = teacher_bundle.embedding_dim
    events = SAMPLE / "items.csv"
    sha = read_events(events, user_column="owner_id").report.sha256
    record = {"strategy": "random", "seed": 7, "test_fraction": 0.3, "events_sha256": sha}
    same = _scorer_bundle(teacher_bundle, tmp_path / "same", _block(dim, 2),
                          {"scorer": {"holdout": record}})
    result = _run(same, shop, events, user_column="owner_id", vbpr=False)
    assert (result.split["seed"], result.split["test_fraction"]) == (7, 0.3)
    assert result.split["source"] == "bundle"
    assert not any("scorer" in w for w in result.warnings if "cold" not in w)  # split matches
    other = _scorer_bundle(teacher_bundle, tmp_path / "other", _block(dim, 2),
                           {"scorer": {"holdout": {**record, "events_sha256": "0" * 64}}})
    flagged = _run(other, shop, events, user_column="owner_id", vbpr=False, seed=1)
    assert any(w.startswith("WARNING: the events file") for w in flagged.warnings)
    assert any("seed 1 differs from the 7" in w for w in flagged.warnings)
    assert flagged.split["seed"] == 1 and flagged.split["source"] == "options"


# ------------------------------------------------------------------ the CLI


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_and_out_file(teacher_bundle, shop, capsys, tmp_path):
    out = tmp_path / "results.json"
    code, stdout, _ = _cli(capsys, "evaluate", "--bundle", teacher_bundle.path, "--catalog",
                           shop, "--events", SAMPLE / "items.csv", "--user-column", "owner_id",
                           "--resamples", 50, "--no-vbpr", "--out", out, "--json")
    assert code == 0
    payload = json.loads(stdout)
    assert payload == json.loads(out.read_text())
    assert set(payload["models"]) == set(BASELINES) - {"vbpr"}
    assert payload["models"]["visual_knn"]["all"]["ci"]["ndcg"]["resamples"] == 50


def test_cli_prints_a_table_margins_and_warnings(teacher_bundle, shop, capsys):
    code, stdout, _ = _cli(capsys, "evaluate", "--bundle", teacher_bundle.path, "--catalog",
                           shop, "--events", SAMPLE / "items.csv", "--user-column", "owner_id",
                           "--resamples", 50, "--k", 5, "--no-vbpr")
    assert code == 0
    assert "NDCG@5 [95% CI]" in stdout and "margins: NDCG@5 of visual_knn" in stdout
    assert "per-label NDCG@5" in stdout and "warnings:" in stdout
    assert "events: 200 of 200 events kept" in stdout


def test_cli_refuses_an_empty_events_file_with_one_line(teacher_bundle, shop, capsys,
                                                        tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, stdout, stderr = _cli(capsys, "evaluate", "--bundle", teacher_bundle.path,
                                "--catalog", shop, "--events", empty)
    assert code == 1 and stderr.startswith("edgerec: error:") and "is empty" in stderr
    assert len(stderr.strip().splitlines()) == 1
    code, stdout, _ = _cli(capsys, "evaluate", "--bundle", teacher_bundle.path, "--catalog",
                           shop, "--events", empty, "--json")
    assert code == 1 and json.loads(stdout)["error"] == "ProfileError"


def test_cli_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--help"])
    assert exc.value.code == 0 and "--events" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--bundle", "b", "--catalog", "c", "--events", "e", "--k", "0"])
    assert exc.value.code == 2
