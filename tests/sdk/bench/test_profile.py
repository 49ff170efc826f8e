"""The device profile: `edgerec bench --choose` measures, writes, and the encoder follows it."""

import json
import warnings

import pytest
from conftest import SAMPLE
from edgerec.runtimes import Engine
from edgerec.sdk import Encoder, EncoderOptions, Precision
from edgerec.sdk.bench import (
    PROFILE_ENV,
    DeviceProfile,
    Measurement,
    machine_identity,
    read_device_profile,
    write_device_profile,
)
from edgerec.sdk.bench.runner import BenchOptions, choose, gated_artifacts
from edgerec.sdk.bundle.manifest import Role
from edgerec.sdk.bundle.writer import NewArtifact, write_bundle
from edgerec.sdk.cli.app import main

QUICK = BenchOptions.quick(images=(str(SAMPLE / "images"),), threads=(1, 2), runs=20,
                           rounds=2)


@pytest.fixture(autouse=True)
def _own_profile(tmp_path, monkeypatch):
    """Every test reads and writes its own profile file, never ~/.cache."""
    monkeypatch.setenv(PROFILE_ENV, str(tmp_path / "device-profile.json"))


def _profile(bundle, fastest: Engine, threads: int = 1, machine=None) -> DeviceProfile:
    other = Engine.ONNX if fastest is Engine.TFLITE else Engine.TFLITE
    return DeviceProfile(
        encoder_id=bundle.encoder_id, machine=machine or machine_identity(),
        measured=(Measurement(fastest, Precision.FP32, threads, 0.5, 1.0),
                  Measurement(other, Precision.FP32, threads, 0.9, 1.8)))


def _opened(bundle, options=None):
    with Encoder.create_from_bundle(bundle, options or EncoderOptions()) as enc:
        return enc.artifact.key, enc.options.num_threads, enc.chosen_by


def test_choose_writes_a_profile_that_changes_what_encoder_picks(tiny_bundle, tmp_path):
    assert _opened(tiny_bundle)[::2] == ("encoder/onnx/fp32", "rule")  # no profile yet
    profile = choose(tiny_bundle.path, QUICK)
    assert {(m.engine, m.threads) for m in profile.measured} == {
        (e, t) for e in Engine for t in (1, 2)}
    assert min(m.ratio for m in profile.measured) == 1.0
    path = write_device_profile(profile)
    assert path == tmp_path / "device-profile.json"
    best = profile.choice
    key, threads, how = _opened(tiny_bundle)
    assert key == f"encoder/{best.engine.value}/{best.precision.value}"
    assert threads == best.threads and how.startswith("device profile")
    # A profile that measured LiteRT fastest moves the default off the rule's ONNX Runtime ...
    write_device_profile(_profile(tiny_bundle, Engine.TFLITE, threads=2))
    assert _opened(tiny_bundle)[:2] == ("encoder/tflite/fp32", 2)
    # ... but explicit options still win, and the profile can be turned off.
    assert _opened(tiny_bundle, EncoderOptions(engine="onnx", precision="fp32"))[2] == "options"
    assert _opened(tiny_bundle, EncoderOptions(engine="onnx"))[:2] == ("encoder/onnx/fp32", 2)
    # A thread count the profile did not measure: the rule.
    assert _opened(tiny_bundle, EncoderOptions(num_threads=1)) == ("encoder/onnx/fp32", 1, "rule")
    off = EncoderOptions(use_device_profile=False)
    assert _opened(tiny_bundle, off) == ("encoder/onnx/fp32", None, "rule")


def test_the_cli_choose_writes_the_profile_it_prints(tiny_bundle, tmp_path, capsys):
    where = tmp_path / "elsewhere" / "profile.json"
    assert main(["bench", str(tiny_bundle.path), "--choose", "--quick", "--images",
                 str(SAMPLE / "images"), "--profile", str(where), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads(where.read_text())["encoders"][tiny_bundle.encoder_id]
    assert printed["profile"] == str(where) and printed["choice"] == stored["choice"]
    assert [m["threads"] for m in stored["measured"]] == [1, 1]  # --quick: one thread
    picked = _opened(tiny_bundle, EncoderOptions(device_profile=where))[0]
    assert picked == f"encoder/{stored['choice']['engine']}/{stored['choice']['precision']}"


def test_a_profile_for_another_bundle_or_another_cpu_is_not_used(tiny_bundle, teacher_bundle):
    write_device_profile(_profile(teacher_bundle, Engine.TFLITE))  # another encoder_id
    assert _opened(tiny_bundle)[2] == "rule"
    elsewhere = {**machine_identity(), "cpu": "Cortex-A76"}
    write_device_profile(_profile(tiny_bundle, Engine.TFLITE, machine=elsewhere))
    assert _opened(tiny_bundle)[::2] == ("encoder/onnx/fp32", "rule")
    assert read_device_profile(teacher_bundle.encoder_id) is not None  # both entries kept


def test_a_broken_profile_warns_and_the_rule_applies(tiny_bundle, tmp_path):
    (tmp_path / "device-profile.json").write_text("{not json")
    with pytest.warns(UserWarning, match="ignoring the device profile"):
        assert _opened(tiny_bundle)[2] == "rule"
    write_device_profile(_profile(tiny_bundle, Engine.TFLITE))  # replaces the broken file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _opened(tiny_bundle)[0] == "encoder/tflite/fp32"


def test_choose_leaves_out_artifacts_that_failed_their_gates(tiny_bundle, tmp_path):
    arts = [NewArtifact(tiny_bundle.artifact_path(a), a.role, a.precision, a.inputs, a.outputs,
                        a.output, a.layout, a.file, a.engine)
            for a in tiny_bundle.artifacts(Role.ENCODER)]
    failed = {"encoder/tflite/fp32": "cosine 0.90 < 0.98 (shipped with --allow-gate-failure)"}
    bundle = write_bundle(tmp_path / "gated", artifacts=arts,
                          preprocessing=tiny_bundle.preprocessing,
                          embedding_dim=tiny_bundle.embedding_dim, metrics={
                              "gate_failures": failed})
    keep, out = gated_artifacts(bundle)
    assert [a.key for a in keep] == ["encoder/onnx/fp32"] and list(out) == list(failed)
    profile = choose(bundle.path, BenchOptions.quick(images=(str(SAMPLE / "images"),)))
    assert {m.engine for m in profile.measured} == {Engine.ONNX}
    assert "failed its export gate" in profile.left_out["encoder/tflite/fp32"]


def test_encoder_options_default_to_auto_and_refuse_unknown_choices():
    assert EncoderOptions().engine == "auto" and EncoderOptions().precision == "auto"
    assert EncoderOptions(engine=None, precision=None) == EncoderOptions()
    assert EncoderOptions(engine="tflite").engine is Engine.TFLITE
    with pytest.raises(ValueError, match="engine must be one of"):
        EncoderOptions(engine="tensorrt")
    with pytest.raises(ValueError, match="num_threads"):
        EncoderOptions(num_threads=0)
