"""`edgerec export --quick` end to end on the shipped sample, and its refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE, TINY_ONNX, sample_images
from edgerec.export.data.scan import ImageRecord
from edgerec.export.errors import ExportError
from edgerec.export.options import (
    DataOptions,
    DistillConfig,
    ExportOptions,
    ScorerConfig,
    ScorerExportOptions,
    StudentOptions,
    TeacherOptions,
)
from edgerec.export.pipeline import export_bundle, selection_split
from edgerec.sdk import Bundle, Encoder, EncoderOptions, Precision, Scorer
from edgerec.sdk.cli.app import main
from edgerec.sdk.scorer import ScorerMode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    unseen, extra = root / "unseen", root / "extra"
    extra.mkdir()
    for label in ("hat", "shoes", "skirt"):  # stands in for labels never trained on
        (unseen / label).mkdir(parents=True)
        for path in sorted((SAMPLE / "images" / label).glob("*.jpg"))[-4:]:
            shutil.copy(path, unseen / label / path.name)
    for path in sorted((SAMPLE / "images" / "dress").glob("*.jpg"))[-5:]:
        shutil.copy(path, extra / path.name)
    options = ExportOptions(images=SAMPLE / "images", out=root / "bundle", quick=True,
                            data=DataOptions(eval_unseen=unseen, extra_images=(extra,),
                                             select_fraction=0.25),
                            student=StudentOptions(whiten=0.5), events=SAMPLE / "items.csv",
                            # no validation folds, so the scorer always ships: on 200 sample
                            # events a trained epoch and u.v tie (NDCG@10 0.087 each) and a
                            # teacher's last decimals decide which wins; not shipping has its
                            # own tests (tests/export/scorer)
                            scorer=ScorerExportOptions(user_column="owner_id",
                                                       config=ScorerConfig(val_fraction=0)),
                            distill=DistillConfig(w_behaviour=1.0))
    return export_bundle(options, log=lambda _m: None)


def test_quick_export_writes_a_verified_bundle_with_metrics_and_report(quick_export):
    bundle = Bundle.open(quick_export.bundle.path)
    keys = {a.key for a in bundle.artifacts()}
    assert {"encoder/onnx/fp32", "encoder/tflite/fp32"} <= keys
    m = bundle.manifest.metrics
    int8 = {k for k in keys if k.startswith("encoder/") and k.endswith("int8")}
    int8 |= set(m["gate_failures"])
    assert int8 == {"encoder/onnx/int8", "encoder/tflite/int8"}  # shipped or said why not
    assert m["parity"]["encoder/onnx/fp32"]["cosine_min"] > 0.999
    assert m["macs"]["teacher"] > 10 * m["macs"]["student"]
    keys = {"seen_map@10", "unseen_map@10", "seen_agree@10", "unseen_agree@10"}
    assert set(m["quality"]["teacher"]) == keys == set(m["quality"]["encoder/tflite/fp32"])
    assert m["quality"]["teacher"]["seen_agree@10"] == 1.0
    assert m["training"]["selected_on"] == "val_map@10"  # labels pick the epoch when there
    assert m["int8_gate_checks"] == ["map_ratio", "cosine_mean"]
    assert bundle.manifest.recipe["trained_with_labels"] is True
    assert m["data"]["extra"] == 5 and m["data"]["unseen"] == 12
    assert m["data"]["epoch_selection"] > 0  # the epoch is picked on held-out train images
    assert bundle.manifest.teacher["embedding_dim"] == 1024
    assert bundle.preprocessing.input_size == 96 and bundle.embedding_dim == 128
    assert (bundle.path / "report" / "report.html").stat().st_size > 10_000
    assert not (bundle.path.parent / f".{bundle.path.name}.tmp").exists()


def test_the_export_ships_its_whitening_and_the_device_applies_it(quick_export):
    from edgerec.export.artifacts.parity import artifact_embeddings
    from edgerec.sdk import Engine, Role, Whitening, l2_normalize, preprocess

    bundle = Bundle.open(quick_export.bundle.path)
    assert bundle.manifest.format_version == 2
    (spec,) = bundle.weights(Role.ENCODER)
    whitening = Whitening.from_npz(bundle.read_weights(spec))
    m = bundle.manifest.metrics
    assert whitening.power == 0.5 == m["whitening"]["power"]
    assert m["whitening"]["covariance"] == "within-label"  # the sample has labels
    report = (bundle.path / "report" / "report.html").read_text()
    assert "Encoder whitening" in report and "within-label covariance" in report
    assert m["whitening"]["fitted_on"] > 0 and list(m["whitening"]["selection_map@10"]) == ["0.5"]
    assert m["quality"]["student_torch_fp32_unwhitened"]["unseen_map@10"] is not None
    for key in ("encoder/onnx/int8", "encoder/tflite/int8"):  # float head tried first
        if key in m["quantization"]:
            assert m["quantization"][key]["attempts"][0]["remedy"] == "keep_float"
        else:
            assert "(keep_float)" in m["gate_failures"][key]
    photos = [p for p, _ in sample_images(1)]
    art = bundle.select(Role.ENCODER, Engine.ONNX, Precision.FP32)
    raw = l2_normalize(artifact_embeddings(bundle.artifact_path(art),
                                           preprocess(photos, bundle.preprocessing)))
    options = EncoderOptions(engine=Engine.ONNX, precision=Precision.FP32)
    with Encoder.create_from_bundle(bundle, options) as enc:
        np.testing.assert_allclose(enc.embed(photos), whitening.apply(raw), atol=1e-5)


@pytest.mark.parametrize("value", [0, 1.5, "sometimes"])
def test_export_refuses_a_bad_whiten_value_before_anything_is_written(tmp_path, value):
    with pytest.raises(ExportError, match="whiten"):
        export_bundle(ExportOptions(images=SAMPLE / "images", out=tmp_path / "b", quick=True,
                                    student=StudentOptions(whiten=value)), log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_cli_whiten_flag_refuses_junk(tmp_path, capsys):
    code = main(["export", "--images", str(SAMPLE / "images"), "--out", str(tmp_path / "b"),
                 "--quick", "--whiten", "lots", "--json"])
    assert code == 1 and json.loads(capsys.readouterr().out)["error"] == "ExportError"
    assert not (tmp_path / "b").exists()


def test_export_with_events_ships_a_scorer_that_the_device_uses(quick_export):
    bundle = Bundle.open(quick_export.bundle.path)
    keys = {a.key for a in bundle.artifacts()}
    assert {"scorer/onnx/fp32", "scorer/tflite/fp32"} <= keys
    s = bundle.manifest.metrics["scorer"]
    assert s["holdout"]["events_sha256"] == hashlib.sha256(
        (SAMPLE / "items.csv").read_bytes()).hexdigest()
    assert s["events"]["kept"] == 200 and s["holdout"]["test_users"] > 0
    int8 = {k for k in keys if k.startswith("scorer/") and k.endswith("int8")}
    assert int8 | set(s["gate_failures"]) == {"scorer/onnx/int8", "scorer/tflite/int8"}
    with Scorer.create_from_bundle(bundle) as scorer:
        assert scorer.mode is ScorerMode.FOLDED
        rng = np.random.default_rng(0)
        items = rng.normal(size=(7, 128)).astype(np.float32)
        assert scorer.score(items[0] / np.linalg.norm(items[0]), items).shape == (7,)


def test_the_events_also_teach_the_encoder_which_photos_go_together(quick_export):
    history = json.loads((quick_export.bundle.path / "report" / "history.json").read_text())
    assert all(row["behaviour"] > 0 for row in history)
    assert quick_export.bundle.manifest.recipe["distill"]["w_behaviour"] == 1.0


def test_the_behaviour_term_without_events_says_what_to_do_before_any_work(tmp_path):
    options = ExportOptions(images=SAMPLE / "images", out=tmp_path / "b", quick=True,
                            distill=DistillConfig(w_behaviour=1.0))
    with pytest.raises(ExportError, match="pass --events"):
        export_bundle(options, log=lambda _m: None)
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.work" / "cache").exists()


def test_exported_encoder_runs_on_both_engines_alike(quick_export):
    photos = [p for p, _ in sample_images(1)]
    vectors = {}
    for engine in ("onnx", "tflite"):
        options = EncoderOptions(engine=engine, precision=Precision.FP32)
        with Encoder.create_from_bundle_path(quick_export.bundle.path, options) as enc:
            vectors[engine] = enc.embed(photos)
    assert vectors["onnx"].shape == (10, 128)
    assert np.min((vectors["onnx"] * vectors["tflite"]).sum(1)) > 0.999


def test_export_refuses_an_existing_output(quick_export, capsys):
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(ExportOptions(images=SAMPLE / "images", out=quick_export.bundle.path,
                                    quick=True), log=lambda _m: None)
    code = main(["export", "--images", str(SAMPLE / "images"), "--out",
                 str(quick_export.bundle.path), "--quick", "--json"])
    assert code == 1 and json.loads(capsys.readouterr().out)["error"] == "ExportError"


def test_distill_overrides_parse_every_field_type_and_refuse_unknown_keys(tmp_path, capsys):
    from edgerec.export.cli import _distill_overrides
    from edgerec.export.options import DistillConfig

    config = _distill_overrides(DistillConfig(), ["ema_decay=0.995", "epochs=7",
                                                  "max_minutes=2.5"])
    assert (config.ema_decay, config.epochs, config.max_minutes) == (0.995, 7, 2.5)
    code = main(["export", "--images", str(SAMPLE / "images"), "--out", str(tmp_path / "b"),
                 "--quick", "--distill", "warp_speed=9", "--json"])
    assert code == 1 and "warp_speed" in json.loads(capsys.readouterr().out)["message"]
    assert not (tmp_path / "b").exists()
    with pytest.raises(ExportError, match=r"target_mean must be in \[0, 1\]"):
        _distill_overrides(DistillConfig(), ["target_mean=1.5"])


def test_a_photo_too_few_to_hold_one_out_says_what_to_do(tmp_path):
    (tmp_path / "one").mkdir()
    shutil.copy(sample_images(1)[0][0], tmp_path / "one" / "a.jpg")
    with pytest.raises(ExportError, match="at least 2 held-out images"):
        export_bundle(ExportOptions(images=tmp_path / "one", out=tmp_path / "b", quick=True),
                      log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_export_of_an_empty_folder_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="No images found"):
        export_bundle(ExportOptions(images=tmp_path / "empty", out=tmp_path / "b", quick=True),
                      log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_export_refuses_a_teacher_that_is_not_a_model(tmp_path):
    bad = tmp_path / "teacher.onnx"
    bad.write_bytes(b"definitely not onnx")
    with pytest.raises(ExportError, match="teacher"):
        export_bundle(ExportOptions(images=SAMPLE / "images", out=tmp_path / "b", quick=True,
                                    teacher=TeacherOptions(source=bad)), log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_a_float_teacher_needs_its_normalisation(tmp_path):
    with pytest.raises(ExportError, match="--teacher-mean"):
        export_bundle(ExportOptions(images=SAMPLE / "images", out=tmp_path / "b", quick=True,
                                    teacher=TeacherOptions(source=TINY_ONNX)),
                      log=lambda _m: None)
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def flat_export(tmp_path_factory):
    """The sample's photos copied into one flat folder (no labels), exported with --quick;
    three labelled folders of them stand in for a labelled set that only measures."""
    root = tmp_path_factory.mktemp("flat")
    flat, unseen = root / "photos", root / "unseen"
    flat.mkdir()
    for path in sorted((SAMPLE / "images").glob("*/*.jpg")):
        shutil.copy(path, flat / path.name)
    for label in ("hat", "shoes", "skirt"):
        (unseen / label).mkdir(parents=True)
        for path in sorted((SAMPLE / "images" / label).glob("*.jpg"))[:5]:
            shutil.copy(path, unseen / label / path.name)
    code = main(["export", "--images", str(flat), "--out", str(root / "bundle"), "--quick",
                 "--eval-unseen", str(unseen), "--json"])
    assert code == 0
    return Bundle.open(root / "bundle")


def test_a_flat_folder_of_unlabelled_photos_exports_a_verified_bundle(flat_export):
    m, recipe = flat_export.manifest.metrics, flat_export.manifest.recipe
    assert recipe["trained_with_labels"] is False and recipe["labels"] == []
    assert m["data"]["validation"] >= 11 and m["data"]["epoch_selection"] >= 11  # random split
    assert m["training"]["selected_on"] == "agree@10"
    assert all("val_map@10" not in row for row in json.loads(
        (flat_export.path / "report" / "history.json").read_text()))
    q = m["quality"]
    assert q["teacher"]["seen_agree@10"] == 1.0 and q["teacher"]["seen_map@10"] is None
    for model in ("student_torch_fp32", "encoder/onnx/fp32", "encoder/tflite/fp32"):
        assert 0 <= q[model]["seen_agree@10"] <= 1 and q[model]["seen_map@10"] is None
        assert q[model]["unseen_map@10"] is not None  # a labelled set measures, never trains
    sets = m["quality_sets"]
    assert sets["seen"]["labelled"] is False and sets["unseen"]["labelled"] is True
    assert sets["seen"]["agree@10_chance"] == pytest.approx(10 / (sets["seen"]["images"] - 1))
    assert m["int8_gate_checks"] == ["neighbour_overlap", "cosine_mean"]
    keys = {a.key for a in flat_export.artifacts()}
    assert {"encoder/onnx/int8", "encoder/tflite/int8"} <= keys | set(m["gate_failures"])
    assert m["whitening"]["power"] is None or m["whitening"]["covariance"] == "total"
    assert m["whitening"]["measure"] == "agree@10"
    report = (flat_export.path / "report" / "report.html").read_text()
    assert "Where the student stands" in report and "seen_agree@10 vs teacher" in report


def test_ignore_labels_trains_without_them_and_keeps_them_to_measure(tmp_path):
    from edgerec.export.cli import _export_options
    from edgerec.export.pipeline import _read_data
    from edgerec.sdk.cli.app import build_parser

    args = build_parser().parse_args(["export", "--images", str(SAMPLE / "images"), "--out",
                                      str(tmp_path / "b"), "--ignore-labels"])
    options = _export_options(args)
    assert options.data.use_labels is False
    assert _export_options(build_parser().parse_args(
        ["export", "--images", "x", "--out", "y"])).data.use_labels is True
    data, _ = _read_data(options, log=lambda _m: None)
    assert not data.labelled and data.labels(data.val) is None
    assert all(r.label is None for r in data.train + data.select + data.val)
    truth = data.measured(data.val)  # the folder names, for the report only
    assert truth is not None and len(set(truth)) > 1 and None not in set(truth)
    assert (data.pool_labels() == -1).all()
    assert len(data.val) == 20 and len(data.select) == 18  # 10% each, at random


def _records(per_label: int, labels: int = 3) -> list:
    return [ImageRecord(item_id=f"{lab}-{i}", path=Path(f"{lab}-{i}.jpg"), label=f"l{lab}",
                        sha256="0" * 64, width=64, height=64)
            for lab in range(labels) for i in range(per_label)]


def test_selection_split_holds_out_a_stratified_share_of_train():
    train, select = selection_split(_records(20), 0.1, seed=1, log=lambda _: None)
    assert len(select) == 6 and len(train) == 54
    assert {r.label for r in select} == {"l0", "l1", "l2"}
    assert not {r.item_id for r in train} & {r.item_id for r in select}
    assert selection_split(_records(20), 0.0, seed=1) == (_records(20), [])


def test_selection_split_falls_back_to_validation_when_no_label_has_a_pair():
    said = []
    train, select = selection_split(_records(8), 0.1, seed=1, log=said.append)
    assert select == [] and len(train) == 24  # one held-out image per label ranks nothing
    assert "validation" in said[0]


def test_a_torchvision_teacher_needs_its_weights_file(tmp_path):
    with pytest.raises(ExportError, match="--teacher-weights"):
        export_bundle(ExportOptions(images=SAMPLE / "images", out=tmp_path / "b", quick=True,
                                    teacher=TeacherOptions(source=Path("torchvision:resnet18"))),
                      log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_cli_export_distils_from_a_torchvision_architecture_with_local_weights(tmp_path,
                                                                                capsys):
    import torch
    import torchvision

    torch.manual_seed(0)  # random weights stand in for a pretrained file: same mechanics
    weights = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), weights)
    code = main(["export", "--images", str(SAMPLE / "images"), "--out", str(tmp_path / "b"),
                 "--teacher", "torchvision:mobilenet_v3_small", "--teacher-weights",
                 str(weights), "--quick", "--allow-gate-failure", "--json"])
    assert code == 0
    bundle = Bundle.open(tmp_path / "b")
    assert bundle.manifest.teacher["embedding_dim"] == 1024
    assert "torchvision-mobilenet_v3_small" in bundle.manifest.teacher["name"]
    whitening = bundle.manifest.metrics["whitening"]  # auto: powers tried upwards from 0.1
    assert whitening["covariance"] == "within-label"
    tried = [float(p) for p in whitening["selection_map@10"]]
    assert tried == pytest.approx([0.1 * (i + 1) for i in range(len(tried))])
    assert whitening["power"] in (None, *tried)
    assert (whitening["power"] is None) == (bundle.manifest.format_version == 1)
    assert json.loads(capsys.readouterr().out)["bundle"] == str(tmp_path / "b")
