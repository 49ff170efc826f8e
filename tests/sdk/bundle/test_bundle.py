"""Loading refuses anything but a complete, untampered bundle; writing is all-or-nothing."""

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
from conftest import TINY_ONNX, TINY_TFLITE
from edgerec.runtimes import open_runtime
from edgerec.sdk import (
    FORMAT_VERSION,
    ArtifactNotFoundError,
    Bundle,
    BundleError,
    BundleIntegrityError,
    Engine,
    Layout,
    Precision,
    Preprocessing,
    Role,
)
from edgerec.sdk.bundle.writer import NewArtifact, write_bundle


@pytest.fixture()
def bundle_dir(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, dst)
    return dst


def _edit_manifest(path, edit):
    data = json.loads((path / "manifest.json").read_text())
    edit(data)
    (path / "manifest.json").write_text(json.dumps(data))


def _artifact(source, **kw):
    with open_runtime(source) as rt:
        ins, outs = tuple(rt.input_specs()), tuple(rt.output_specs())
    return NewArtifact(source=source, role=Role.ENCODER, precision=Precision.FP32, inputs=ins,
                       outputs=outs, output=outs[0].name, layout=Layout.NCHW, **kw)


def test_a_good_bundle_loads_and_verifies(bundle_dir):
    b = Bundle.open(bundle_dir)
    assert b.embedding_dim == 16 and len(b.artifacts(Role.ENCODER)) == 2
    assert b.manifest.format_version == 1  # 2 only with encoder weights (test_whitening.py)
    assert len(b.encoder_id) == 32


def test_load_fails_on_a_tampered_artifact(bundle_dir):
    f = bundle_dir / "encoder.fp32.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="does not match its sha256"):
        Bundle.open(bundle_dir)


def test_load_fails_on_a_missing_artifact(bundle_dir):
    (bundle_dir / "encoder.fp32.tflite").unlink()
    with pytest.raises(BundleIntegrityError, match="missing"):
        Bundle.open(bundle_dir, verify=False)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx", ""])
def test_load_refuses_paths_that_leave_the_bundle(bundle_dir, name):
    (bundle_dir.parent / "outside.onnx").write_bytes(TINY_ONNX.read_bytes())
    _edit_manifest(bundle_dir, lambda d: d["artifacts"][0].update(file=name))
    with pytest.raises(BundleIntegrityError, match="outside the bundle"):
        Bundle.open(bundle_dir)


def test_load_refuses_a_symlink_out_of_the_bundle(bundle_dir, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle_dir / "encoder.fp32.onnx", outside)
    (bundle_dir / "encoder.fp32.onnx").unlink()
    (bundle_dir / "encoder.fp32.onnx").symlink_to(outside)
    with pytest.raises(BundleIntegrityError, match="outside the bundle"):
        Bundle.open(bundle_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "upgrade edgerec"),
        (lambda d: d.update(format_version="1"), "no integer format_version"),
        (lambda d: d.pop("embedding_dim"), "lacks the field 'embedding_dim'"),
        (lambda d: d["artifacts"][0].update(role="decoder"), "invalid value"),
        (lambda d: d.update(artifacts=[]), "lists no artifacts"),
        (lambda d: d["artifacts"][1].update(engine="onnx"), "same role/engine/precision"),
        (lambda d: d["preprocessing"].update(std=[0, 1, 1]), "invalid value"),
    ],
)
def test_load_refuses_a_malformed_manifest(bundle_dir, edit, message):
    _edit_manifest(bundle_dir, edit)
    with pytest.raises(BundleError, match=message):
        Bundle.open(bundle_dir)


def test_load_refuses_non_json_and_missing_manifests(bundle_dir, tmp_path):
    (bundle_dir / "manifest.json").write_bytes(b"{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(bundle_dir)
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        Bundle.open(bundle_dir)
    with pytest.raises(BundleError, match="No bundle directory"):
        Bundle.open(tmp_path / "nowhere")


def test_select_prefers_installed_engine_order_then_fp32(tiny_bundle):
    assert tiny_bundle.select(Role.ENCODER).engine is Engine.ONNX
    assert tiny_bundle.select(Role.ENCODER, engines=[Engine.TFLITE]).engine is Engine.TFLITE
    with pytest.raises(ArtifactNotFoundError, match="encoder/onnx/fp32, encoder/tflite/fp32"):
        tiny_bundle.select(Role.ENCODER, precision=Precision.INT8)
    with pytest.raises(ArtifactNotFoundError, match="no scorer"):
        tiny_bundle.select(Role.SCORER)


def test_write_refuses_an_existing_directory_unless_forced(tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    pre = Preprocessing(input_size=32)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(out, artifacts=[_artifact(TINY_ONNX)], preprocessing=pre, embedding_dim=16)
    assert (out / "keep.txt").read_text() == "mine"
    b = write_bundle(out, artifacts=[_artifact(TINY_ONNX)], preprocessing=pre, embedding_dim=16,
                     force=True)
    assert not (out / "keep.txt").exists() and b.artifacts()[0].file == "encoder.fp32.onnx"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary or old dirs left


def test_an_interrupted_write_leaves_no_bundle_behind(tmp_path):
    out = tmp_path / "b"
    vanished = replace(_artifact(TINY_ONNX), source=tmp_path / "vanished.onnx", file="x.onnx")
    arts = [_artifact(TINY_ONNX), vanished]
    with pytest.raises(FileNotFoundError):
        write_bundle(out, artifacts=arts, preprocessing=Preprocessing(input_size=32),
                     embedding_dim=16)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_force_write_keeps_the_old_bundle(tiny_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, out)
    arts = [replace(_artifact(TINY_ONNX), source=tmp_path / "vanished.onnx")]
    with pytest.raises(FileNotFoundError):
        write_bundle(out, artifacts=arts, preprocessing=Preprocessing(input_size=32),
                     embedding_dim=16, force=True)
    assert Bundle.open(out).encoder_id == tiny_bundle.encoder_id


def test_leftovers_of_a_killed_writer_are_cleaned_on_the_next_write(tmp_path):
    stale = tmp_path / ".b.tmp-999999999-deadbeef"
    stale.mkdir()
    (stale / "encoder.fp32.onnx").write_bytes(b"partial")
    write_bundle(tmp_path / "b", artifacts=[_artifact(TINY_ONNX)],
                 preprocessing=Preprocessing(input_size=32), embedding_dim=16)
    assert not stale.exists()


def test_encoder_id_is_shared_across_engines_and_changes_with_preprocessing(tmp_path):
    pre = Preprocessing(input_size=32)
    a = write_bundle(tmp_path / "a", artifacts=[_artifact(TINY_ONNX)], preprocessing=pre,
                     embedding_dim=16)
    b = write_bundle(tmp_path / "b", artifacts=[_artifact(TINY_ONNX)], preprocessing=pre,
                     embedding_dim=16)
    c = write_bundle(tmp_path / "c", artifacts=[_artifact(TINY_ONNX)],
                     preprocessing=Preprocessing(input_size=32, crop_pct=0.875),
                     embedding_dim=16)
    assert a.encoder_id == b.encoder_id != c.encoder_id


def test_two_artifacts_with_one_file_name_are_refused(tmp_path):
    arts = [_artifact(TINY_ONNX), _artifact(TINY_TFLITE, file="encoder.fp32.onnx")]
    with pytest.raises(BundleError, match="both be written"):
        write_bundle(tmp_path / "b", artifacts=arts, preprocessing=Preprocessing(input_size=32),
                     embedding_dim=16)
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------ the scorer record


def test_the_scorer_record_round_trips_through_the_manifest(bundle_dir):
    from edgerec.sdk.bundle.manifest import HoldoutRecord, ScorerRecord, UserVectorRecipe

    record = ScorerRecord(candidates=300, user_vector=UserVectorRecipe(7.0, {"click": 0.75}),
                          holdout=HoldoutRecord("leave_last_out", 3, 0.2, "ab" * 32,
                                                train_events=90, test_events=10,
                                                test_users=5))
    _edit_manifest(bundle_dir, lambda d: d.update(scorer=record.to_dict()))
    loaded = Bundle.open(bundle_dir).manifest.scorer
    assert loaded == record
    assert loaded.user_vector.event_weights["click"] == 0.75
    assert loaded.user_vector.event_weights["purchase"] == 2.0  # the rest stay the defaults


def test_a_bundle_from_before_scorer_records_reads_its_split_from_the_metrics(bundle_dir):
    holdout = {"strategy": "random", "seed": 4, "test_fraction": 0.25, "events_sha256": "cd"}
    _edit_manifest(bundle_dir, lambda d: d["metrics"].update(scorer={"holdout": holdout}))
    record = Bundle.open(bundle_dir).manifest.scorer
    assert record.candidates == 500 and record.user_vector.half_life_days == 30.0
    assert (record.holdout.seed, record.holdout.test_fraction) == (4, 0.25)


@pytest.mark.parametrize("scorer", [
    {"candidates": 0}, {"candidates": "many"}, {"user_vector": {"half_life_days": -1}},
    {"user_vector": {"event_weights": {"stare": 1.0}}}, {"holdout": {"seed": 1}},
])
def test_a_malformed_scorer_record_is_refused(bundle_dir, scorer):
    _edit_manifest(bundle_dir, lambda d: d.update(scorer=scorer))
    with pytest.raises(BundleError, match=r"invalid value|lacks the field"):
        Bundle.open(bundle_dir)


# ---------------------------------------------------------------- issue 16: hostile manifests


def _write_manifest_bytes(path, data: bytes):
    (path / "manifest.json").write_bytes(data)


def _manifest_text(path) -> str:
    return (path / "manifest.json").read_text()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.encode().replace(b'"name"', b'"n\xffme"', 1), "not UTF-8"),
        (lambda t: t.encode()[:-2] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
         "not valid JSON"),
        (lambda t: re.sub(r'"embedding_dim": \d+', '"embedding_dim": Infinity', t).encode(),
         "NaN or Infinity in 'embedding_dim'"),
        (lambda t: re.sub(r'"embedding_dim": \d+', '"embedding_dim": NaN', t).encode(),
         "NaN or Infinity"),
        (lambda t: re.sub(r'"embedding_dim": \d+', '"embedding_dim": 1e400', t).encode(),
         "NaN or Infinity"),
        (lambda t: re.sub(r'"mean": \[[^]]*\]', '"mean": [0.5, NaN, 0.5]', t).encode(),
         "NaN or Infinity in 'preprocessing'"),
        (lambda t: re.sub(r'"embedding_dim": \d+', '"embedding_dim": ' + "9" * 5000, t).encode(),
         "not valid JSON"),
        (lambda t: re.sub(r'"embedding_dim": \d+', '"embedding_dim": ' + "9" * 40, t).encode(),
         "not valid JSON"),
        (lambda t: t.encode() + b" " * (5 * 1024 * 1024), "larger than"),
    ],
    ids=["non-utf8", "deep-nesting", "infinity", "nan", "huge-float", "nan-mean",
         "5000-digit-int", "40-digit-int", "5-mb-manifest"],
)
def test_a_hostile_manifest_raises_bundle_error_only(bundle_dir, mutate, message):
    _write_manifest_bytes(bundle_dir, mutate(_manifest_text(bundle_dir)))
    with pytest.raises(BundleError, match=message):
        Bundle.open(bundle_dir)


def test_nan_in_the_free_form_metrics_is_kept_not_refused(bundle_dir):
    _edit_manifest(bundle_dir, lambda d: d.update(metrics={"ndcg": float("nan"),
                                                           "ci": [float("inf"), 1.0]}))
    assert Bundle.open(bundle_dir).manifest.metrics["ci"][1] == 1.0


@pytest.mark.parametrize("name", ["a\x00b.onnx", "x" * 300 + ".onnx", "loop.onnx",
                                  "\ud800.onnx"],
                         ids=["nul", "overlong", "symlink-loop", "lone-surrogate"])
def test_a_hostile_file_name_raises_bundle_integrity_error(bundle_dir, name):
    (bundle_dir / "loop.onnx").symlink_to(bundle_dir / "loop.onnx")
    _edit_manifest(bundle_dir, lambda d: d["artifacts"][0].update(file=name))
    with pytest.raises(BundleIntegrityError):
        Bundle.open(bundle_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["artifacts"][0].update(output="nope"), "output 'nope'"),
        (lambda d: d["artifacts"][0].update(inputs=[]), "no input"),
        (lambda d: d.update(embedding_dim=10**12), "embedding_dim"),
        (lambda d: d.update(embedding_dim=17), "embedding_dim"),
    ],
    ids=["unknown-output", "empty-inputs", "absurd-dim", "dim-unlike-output"],
)
def test_a_manifest_that_would_crash_the_encoder_is_refused_at_open(bundle_dir, edit, message):
    def edit_and_rehash(d):
        edit(d)
        d["encoder_id"] = _recomputed_id(d)

    _edit_manifest(bundle_dir, edit_and_rehash)
    with pytest.raises(BundleError, match=message):
        Bundle.open(bundle_dir)


def _recomputed_id(d) -> str:
    from edgerec.sdk.bundle.manifest import compute_encoder_id

    return compute_encoder_id(Preprocessing.from_dict(d["preprocessing"]),
                              [_spec(a) for a in d["artifacts"]])


def _spec(a):
    from edgerec.sdk.bundle.manifest import ArtifactSpec

    return ArtifactSpec.from_dict(a)


@pytest.mark.parametrize("edit", [
    lambda p: p.update(mean=[0.4, 0.5, 0.5]),
    lambda p: p.update(std=[0.3, 0.25, 0.25]),
    lambda p: p.update(resize="stretch"),
    lambda p: p.update(interpolation="bicubic"),
], ids=["mean", "std", "resize", "interpolation"])
def test_an_edited_preprocessing_no_longer_matches_the_encoder_id(bundle_dir, edit):
    _edit_manifest(bundle_dir, lambda d: edit(d["preprocessing"]))
    with pytest.raises(BundleIntegrityError, match="encoder_id"):
        Bundle.open(bundle_dir, verify=False)


@pytest.mark.parametrize("engine", list(Engine))
def test_an_artifact_swapped_after_open_is_refused_when_the_encoder_opens(bundle_dir, engine):
    from edgerec.sdk import Encoder, EncoderOptions

    bundle = Bundle.open(bundle_dir)
    f = bundle_dir / f"encoder.fp32{engine.suffix}"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="sha256"):
        Encoder.create_from_bundle(bundle, EncoderOptions(engine=engine))


def test_the_engine_gets_the_bytes_that_were_hashed(bundle_dir, monkeypatch):
    """Read once, hash, hand the buffer over: the file is never opened by path again."""
    import edgerec.sdk.encoder as encoder_module
    from edgerec.sdk import Encoder, EncoderOptions

    bundle = Bundle.open(bundle_dir)
    seen = []
    real = encoder_module.open_runtime

    def spy(model, *args, **kwargs):
        seen.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(encoder_module, "open_runtime", spy)
    for engine in Engine:
        with Encoder.create_from_bundle(bundle, EncoderOptions(engine=engine)) as enc:
            assert enc.embed([np.zeros((40, 40, 3), np.uint8)]).shape == (1, 16)
    assert all(isinstance(m, bytes) for m in seen) and len(seen) == 2


def test_an_encoder_whose_manifest_names_a_tensor_the_model_lacks_raises_model_error(bundle_dir):
    from edgerec.sdk import Encoder, EncoderOptions, ModelError

    _edit_manifest(bundle_dir, lambda d: [a["inputs"][0].update(name="pixels")
                                          for a in d["artifacts"]])
    bundle = Bundle.open(bundle_dir)  # input names are not part of the encoder's identity
    for engine in Engine:
        with pytest.raises(ModelError, match="'pixels'"):
            Encoder.create_from_bundle(bundle, EncoderOptions(engine=engine))
