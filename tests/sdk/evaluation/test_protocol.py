"""Offline evaluation (edgerec.sdk.evaluation.protocol, `edgerec evaluate`) on real engines and
photos.

One float16 catalog of the 200 sample photos embedded by the real teacher is shared by the
module; events are the sample's owners or small synthetic logs written as CSV in tmp_path.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
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
from edgerec.sdk.evaluation.device import DeviceRanker
from edgerec.sdk.evaluation.events import SplitProtocol, holdout_split, read_events
from edgerec.sdk.evaluation.protocol import (
    NO_SCORER_WARNING,
    EvaluateOptions,
    EvaluationResult,
    evaluate,
)
from edgerec.sdk.evaluation.ranker import BaselineOptions
from edgerec.sdk.evaluation.ranking_metrics import ranking_report
from edgerec.sdk.evaluation.task import CatalogData, EvalTask

BASELINES = ["visual_knn", "visual_knn_mean", "random", "popularity", "label_popularity",
             "cooccurrence", "item_knn", "ease", "bpr", "als", "vbpr"]
METRICS = {"NDCG@20", "Recall@20", "HR@10", "MRR", "NDCG@10", "Recall@10", "MAP@10", "AUC"}
SMALL = BaselineOptions(ease_lambdas=(1.0, 10.0, 100.0), knn_neighbours=(5, 0),
                        als_factors=(8, 16), als_regularizations=(0.1,), bpr_factors=(16,),
                        bpr_learning_rates=(0.05,), bpr_regularizations=(0.01,),
                        bpr_iterations=50, vbpr_epochs=10)
FAST = dict(resamples=200, latency_users=5, baselines=SMALL)


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


def _label_log(by_label, seed=1, per_user=8) -> list[tuple]:
    """Four groups of ten users, each liking one label (real photos, made-up behaviour)."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, label in enumerate(["dress", "hat", "shoes", "pants"]):
        for u in range(10):
            for t, item in enumerate(rng.choice(by_label[label], per_user, replace=False)):
                rows.append((f"g{g}u{u}", item, 1000 * u + t))
    return rows


# ------------------------------------------------------------------ the sample's owners


def test_sample_owners_without_a_scorer_rank_every_baseline_with_cis(teacher_bundle, shop):
    result = _run(teacher_bundle, shop, SAMPLE / "items.csv", user_column="owner_id")
    assert list(result.models) == BASELINES and result.skipped == {}
    assert result.reference == "visual_knn" and result.target_met is None
    assert result.primary == "NDCG@20" and set(result.metrics) == METRICS
    assert result.warnings[0] == NO_SCORER_WARNING and result.classification is None
    assert any("every held-out item is cold" in w for w in result.warnings)
    log = read_events(SAMPLE / "items.csv", user_column="owner_id")
    expected = holdout_split(log, test_fraction=0.2, seed=0).describe()  # no timestamps
    assert expected["protocol"] == "fraction"
    assert {k: result.split[k] for k in expected} == expected
    assert result.split["source"] == "default"
    assert result.split["cold_test_items"] == expected["test_events"]  # one event per item
    for model in result.models.values():
        assert model.all.users == result.split["evaluated_users"] > 0
        assert set(model.all.metrics) == METRICS
        assert all(_ci_ok(ci) for ci in model.all.metrics.values())
        assert model.warm is None and model.cold.metrics == model.all.metrics
        assert set(model.labels) <= {lab for _, lab in sample_images(1)}
        assert "AUC" not in next(iter(model.labels.values()))
    # every held-out owner item is cold: item-id models know nothing about it; popularity
    # ranks them below every trained item, the item-item models give every candidate 0
    assert result.models["popularity"].all.mean("NDCG@20") == 0.0
    for name in ("cooccurrence", "item_knn", "ease"):
        assert result.models[name].all.mean("AUC") == 0.5, name
    assert set(result.margins) == METRICS
    assert set(result.margins["MRR"]) == set(BASELINES) - {"visual_knn"}
    assert 0.4 < result.models["random"].all.mean("AUC") < 0.6
    data = json.loads(json.dumps(result.to_dict()))
    assert data["events"]["sha256"] == log.report.sha256
    assert data["models"]["vbpr"]["extras"]["losses"]
    assert data["models"]["ease"]["extras"]["lam"] in SMALL.ease_lambdas
    latency = result.latency
    assert latency.users == 5 and latency.k == 20 and not latency.scorer_used
    assert 0 < latency.median_ms <= latency.p90_ms and latency.agreement == 1.0


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
    result = _run(teacher_bundle, shop, _csv(tmp_path / "e.csv", rows), protocol="fraction")
    pop, lab = result.models["popularity"].all, result.models["label_popularity"].all
    assert pop.mean("NDCG@20") > 0.4 and pop.mean("AUC") > 0.8
    assert lab.mean("AUC") > 0.7 and lab.mean("HR@10") > 0.4
    assert result.margins["NDCG@20"]["popularity"].high < 0  # visual_knn loses to it here


def test_every_baseline_learns_users_who_like_one_label(teacher_bundle, shop, by_label,
                                                        tmp_path):
    path = _csv(tmp_path / "e.csv", _label_log(by_label), ("user_id", "item_id", "timestamp"))
    result = _run(teacher_bundle, shop, path, protocol="fraction", test_fraction=0.25)
    random_ = result.models["random"].all
    assert 0.35 < random_.mean("AUC") < 0.65
    for name in BASELINES:
        if name in ("random", "popularity"):
            continue
        part = result.models[name].all
        assert part.mean("AUC") > 0.7 and part.mean("MRR") > 2 * random_.mean("MRR"), (name, part)
    ease = result.models["ease"]
    assert ease.warm is not None and ease.warm.mean("AUC") > 0.75
    assert len(ease.extras["validation"]) == len(SMALL.ease_lambdas)
    assert result.models["vbpr"].extras["losses"][-1] < result.models["vbpr"].extras["losses"][0]


def test_a_missing_implicit_skips_bpr_and_als_with_a_warning(teacher_bundle, shop, monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit", None)
    only = ("visual_knn", "bpr", "als")
    result = _run(teacher_bundle, shop, SAMPLE / "items.csv", user_column="owner_id",
                  latency_users=0, baselines=BaselineOptions(
                      skip=tuple(b for b in BASELINES if b not in only)))
    assert set(result.skipped) == {"bpr", "als"} and list(result.models) == ["visual_knn"]
    assert any(w.startswith("bpr skipped: implicit is not installed") and "edgerec[eval]" in w
               for w in result.warnings)
    assert result.latency is None


def test_importing_the_sdk_and_the_evaluation_never_imports_implicit():
    code = ("import sys, edgerec.sdk, edgerec.sdk.evaluation, edgerec.sdk.cli.app; "
            "print(sorted(m for m in ('implicit', 'scipy', 'threadpoolctl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ split, slices


def test_leave_last_out_holds_out_each_users_newest_item(teacher_bundle, shop, by_label,
                                                         tmp_path):
    rows = [(f"u{u}", item, 1000 * u + t)
            for u in range(6) for t, item in enumerate(by_label["shirt"][u:u + 5])]
    path = _csv(tmp_path / "e.csv", rows, ("user_id", "item_id", "timestamp"))
    result = _run(teacher_bundle, shop, path, seed=3)
    expected = holdout_split(read_events(path), protocol=SplitProtocol.LEAVE_LAST_OUT,
                             seed=3).describe()
    assert expected["strategy"] == "leave_last_out" and expected["test_events"] == 6
    assert {k: result.split[k] for k in expected} == expected
    assert result.split["source"] == "options" and result.split["evaluated_users"] == 6
    assert result.options.protocol is None  # the default: timestamps -> leave-last-out
    ignored = _run(teacher_bundle, shop, path, test_fraction=0.4, latency_users=0)
    assert ignored.split["test_events"] == 6
    assert any("test_fraction 0.4 is not used" in w for w in ignored.warnings)
    fraction = _run(teacher_bundle, shop, path, seed=3, protocol="fraction", test_fraction=0.4)
    assert fraction.split["strategy"] == "newest_fraction" and fraction.split["test_events"] == 12


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
        assert model.cold.users == sum(1 for v in cold.values() if v)
        assert model.warm.users == sum(1 for v in warm.values() if v)
        assert "AUC" in model.cold and "AUC" in model.warm
    for name in ("cooccurrence", "ease", "item_knn"):  # cold items score 0: never ahead
        model = result.models[name]
        assert model.cold.mean("AUC") <= 0.5 < model.warm.mean("AUC"), name
        assert model.cold.mean("NDCG@20") < model.warm.mean("NDCG@20"), name


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
    llo = _run(teacher_bundle, shop, path, protocol="leave-last-out")
    assert any("each user's last item in file order" in w for w in llo.warnings)


def test_a_log_with_nothing_to_hold_out_is_a_clear_error(teacher_bundle, shop, by_label,
                                                         tmp_path):
    rows = [(f"u{i}", item) for i, item in enumerate(by_label["hat"][:5])]
    with pytest.raises(ProfileError, match=r"nothing to evaluate.*at least two events"):
        _run(teacher_bundle, shop, _csv(tmp_path / "e.csv", rows))


def test_options_are_validated():
    for bad in (dict(k=0), dict(test_fraction=1.0), dict(seed=-1), dict(candidates=True),
                dict(level=1.5), dict(latency_users=-1), dict(metrics=("P@10",)),
                dict(metrics=()), dict(protocol="leave-one-out")):
        with pytest.raises(ValueError):
            EvaluateOptions(**bad)
    for bad in (dict(ease_lambdas=(0.0,)), dict(ease_lambdas=()), dict(knn_neighbours=(-1,)),
                dict(als_factors=(True,)), dict(vbpr_reg=-1.0), dict(threads=0)):
        with pytest.raises(ValueError):
            BaselineOptions(**bad)
    with pytest.raises(TypeError):
        EvaluateOptions(baselines={"skip": ()})
    names = [m.name for m in EvaluateOptions(k=5).metric_list()]
    assert names == ["NDCG@20", "Recall@20", "HR@10", "MRR", "NDCG@5", "Recall@5", "HR@5",
                     "MAP@5"]


def test_the_device_ranking_continues_by_inner_product_after_the_top_c():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(40, 8)).astype(np.float32)
    u = rng.normal(size=8).astype(np.float32)

    class Reverse:  # a pure-logic stand-in scorer: the negated inner product
        key = "reverse"

        def score(self, user_vector, vectors):
            return -(np.asarray(vectors) @ user_vector).astype(np.float32)

    data = CatalogData(tuple(map(str, range(40))), {str(i): i for i in range(40)}, v,
                       ("",) * 40)
    task = EvalTask(("a",), (np.array([0]),), (np.arange(1, 40),), u[None],
                    np.zeros(0, np.int64), np.zeros(0, np.int64), {"a": 0}, np.zeros(40),
                    np.zeros(40, bool), 0, 0)
    order = np.arange(40)
    device = DeviceRanker(Reverse(), task, data, 10, order)
    by_ip = [r for r in np.argsort(-(v @ u), kind="stable") if r != 0]
    expected = by_ip[:10][::-1] + by_ip[10:]  # top-C reversed, then inner-product order
    ranks = device.ranks(0, np.array([0]), np.array(expected), np.zeros(40))
    assert ranks.tolist() == list(range(1, 40))
    assert device.top(0, np.array([0]), 3).tolist() == expected[:3]


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


NO_FIT = dict(skip=("visual_knn_mean", "random", "popularity", "label_popularity",
                    "cooccurrence", "item_knn", "ease", "bpr", "als", "vbpr"))


def test_an_inner_product_scorer_matches_visual_knn_and_warns_about_its_split(
        teacher_bundle, shop, tmp_path):
    dim = teacher_bundle.embedding_dim
    bundle = _scorer_bundle(teacher_bundle, tmp_path / "b", _block(dim, 2))  # logit = u.v
    result = _run(bundle, shop, SAMPLE / "items.csv", user_column="owner_id",
                  baselines=BaselineOptions(skip=("vbpr",)))
    assert list(result.models) == ["scorer"] + [b for b in BASELINES if b != "vbpr"]
    scorer, knn = result.models["scorer"].all, result.models["visual_knn"].all
    for name in METRICS:  # the same ranking, beyond C too: every metric agrees
        assert scorer.mean(name) == pytest.approx(knn.mean(name)), name
        assert result.margins[name]["visual_knn"].mean == pytest.approx(0.0, abs=1e-12)
    assert result.reference == "scorer" and result.target_met is False
    assert result.ahead_of_all is False and "visual_knn" in result.not_significant
    assert any("does not record its training split" in w for w in result.warnings)
    assert NO_SCORER_WARNING not in result.warnings
    c = result.classification
    assert c.support == 2 * result.split["cold_test_items"] and c.positives == c.support // 2
    assert result.latency.scorer_used and result.latency.agreement == 1.0


def test_the_scorer_row_is_the_devices_two_stage_for_user(teacher_bundle, shop, tmp_path):
    dim = teacher_bundle.embedding_dim
    weights = _block(dim, 1) * np.random.default_rng(0).normal(size=3 * dim)  # a v-only logit
    bundle = _scorer_bundle(teacher_bundle, tmp_path / "b", weights)
    events = SAMPLE / "items.csv"
    result = _run(bundle, shop, events, user_column="owner_id", candidates=20,
                  latency_users=1000, baselines=BaselineOptions(**NO_FIT))
    log = read_events(events, user_column="owner_id")
    split = holdout_split(log, test_fraction=0.2, seed=0)
    rankings, relevant = {}, {}
    with Recommender.create_from_bundle(bundle, shop, RecommenderOptions(candidates=20)) as rec:
        for user, held in split.test.items():
            history = Profile(user, tuple(e.to_event() for e in split.train[user]))
            rankings[user] = rec.for_user(history, k=10).ids
            relevant[user] = [e.item_id for e in held]
    device = ranking_report(rankings, relevant, 10)
    got = result.models["scorer"].all
    assert (got.mean("NDCG@10"), got.mean("Recall@10"), got.mean("MAP@10")) == pytest.approx(
        (device.ndcg, device.recall, device.map))
    assert got.mean("NDCG@20") != pytest.approx(result.models["visual_knn"].all.mean("NDCG@20"))
    assert result.latency.users == len(split.test) and result.latency.agreement == 1.0


def _timed_log(tmp_path: Path, by_label) -> Path:
    rows = _label_log(by_label, seed=4, per_user=6)
    return _csv(tmp_path / "timed.csv", rows, ("user_id", "item_id", "timestamp"))


def _record(log, **split) -> dict:
    held = holdout_split(log, **split)
    return {**held.describe(), "events_sha256": log.report.sha256}


def test_the_scorers_recorded_split_is_used_and_a_different_events_file_is_flagged(
        teacher_bundle, shop, tmp_path):
    dim = teacher_bundle.embedding_dim
    events = SAMPLE / "items.csv"
    log = read_events(events, user_column="owner_id")
    record = _record(log, test_fraction=0.3, seed=7)
    same = _scorer_bundle(teacher_bundle, tmp_path / "same", _block(dim, 2),
                          {"scorer": {"holdout": record}})
    fit = dict(baselines=BaselineOptions(**NO_FIT), latency_users=0)
    result = _run(same, shop, events, user_column="owner_id", **fit)
    assert (result.split["seed"], result.split["test_fraction"]) == (7, 0.3)
    assert result.split["source"] == "bundle" and result.split["strategy"] == "random"
    assert not any("scorer" in w for w in result.warnings if "cold" not in w)  # split matches
    other = _scorer_bundle(teacher_bundle, tmp_path / "other", _block(dim, 2),
                           {"scorer": {"holdout": {**record, "events_sha256": "0" * 64}}})
    flagged = _run(other, shop, events, user_column="owner_id", seed=1, **fit)
    assert any(w.startswith("WARNING: the events file") for w in flagged.warnings)
    assert flagged.split["seed"] == 1 and flagged.split["source"] == "options"
    leaky = _run(same, shop, events, user_column="owner_id", seed=1, **fit)  # another draw
    assert any(w.startswith("WARNING: ") and "are in the scorer's training events" in w
               for w in leaky.warnings)


def test_leave_last_out_on_a_scorer_trained_around_the_newest_fraction_is_clean(
        teacher_bundle, shop, by_label, tmp_path):
    dim = teacher_bundle.embedding_dim
    path = _timed_log(tmp_path, by_label)
    log = read_events(path)
    fit = dict(baselines=BaselineOptions(**NO_FIT), latency_users=0)
    newest = _scorer_bundle(teacher_bundle, tmp_path / "newest", _block(dim, 2),
                            {"scorer": {"holdout": _record(log, test_fraction=0.3)}})
    result = _run(newest, shop, path, protocol="leave-last-out", **fit)
    assert result.split["strategy"] == "leave_last_out"
    assert not any(w.startswith("WARNING") for w in result.warnings)
    assert any(w.startswith("note: this split (leave_last_out) is not the scorer's")
               for w in result.warnings)
    recorded = _run(newest, shop, path, **fit)  # no protocol given: the scorer's own split
    assert recorded.split["strategy"] == "newest_fraction" and recorded.split["source"] == "bundle"
    everything = _scorer_bundle(teacher_bundle, tmp_path / "all", _block(dim, 2), {"scorer": {
        "holdout": _record(log, test_fraction=0.0)}})
    leaked = _run(everything, shop, path, protocol="leave-last-out", **fit)
    assert any(w.startswith("WARNING: 40 of 40 held-out (user, item) pairs") for w in
               leaked.warnings)


# ------------------------------------------------------------------ the CLI


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


CLI_FAST = ["--resamples", 50, "--latency-users", 3, "--ease-lambdas", 10, 100,
            "--knn-neighbours", 0, "--skip", "bpr", "als", "vbpr"]


def test_cli_json_and_out_file(teacher_bundle, shop, capsys, tmp_path):
    out = tmp_path / "results.json"
    code, stdout, _ = _cli(capsys, "evaluate", "--bundle", teacher_bundle.path, "--catalog",
                           shop, "--events", SAMPLE / "items.csv", "--user-column", "owner_id",
                           *CLI_FAST, "--out", out, "--json")
    assert code == 0
    payload = json.loads(stdout)
    assert payload == json.loads(out.read_text())
    assert set(payload["models"]) == set(BASELINES) - {"bpr", "als", "vbpr"}
    assert payload["models"]["visual_knn"]["all"]["metrics"]["NDCG@20"]["resamples"] == 50
    assert payload["options"]["baselines"]["ease_lambdas"] == [10.0, 100.0]
    assert payload["latency"]["users"] == 3 and payload["split"]["protocol"] == "fraction"


def test_cli_prints_a_table_margins_latency_and_warnings(teacher_bundle, shop, capsys):
    code, stdout, _ = _cli(capsys, "evaluate", "--bundle", teacher_bundle.path, "--catalog",
                           shop, "--events", SAMPLE / "items.csv", "--user-column", "owner_id",
                           *CLI_FAST, "--k", 5, "--protocol", "leave-last-out")
    assert code == 0
    assert "NDCG@20 [95% CI]" in stdout and "MRR" in stdout and "cold NDCG@20" in stdout
    assert "margins: visual_knn minus each baseline" in stdout
    assert "at k=5: NDCG@5, Recall@5, HR@5, MAP@5" in stdout
    assert "device for_user: median" in stdout and "(3 users, k=20" in stdout
    assert "per-label NDCG@20" in stdout and "warnings:" in stdout
    assert "events: 200 of 200 events kept" in stdout
    assert "leave_last_out (protocol leave-last-out)" in stdout
    for name in ("ease", "item_knn", "cooccurrence", "random", "visual_knn_mean"):
        assert f"\n{name} " in stdout


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
    text = capsys.readouterr().out
    assert exc.value.code == 0 and "--events" in text and "--protocol" in text
    assert "leave-last-out" in text and "--ease-lambdas" in text
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--bundle", "b", "--catalog", "c", "--events", "e", "--k", "0"])
    assert exc.value.code == 2
