"""The scorer's build wrapper (edgerec.export.scorer.artifacts.build_scorer_artifacts) around
the shared driver: folded weights, fp32 files checked against torch, int8 files for the
quantization target, gate failures recorded; a small real scorer on real engines."""

import numpy as np
import onnx
import pytest
from edgerec.export.errors import ExportError
from edgerec.export.scorer.artifacts import ParitySets, ScorerGate, build_scorer_artifacts
from edgerec.runtimes import Engine
from edgerec.sdk import Role

LENIENT = ScorerGate(min_top_k_overlap=0.5, min_spearman=0.9)


def _sets(vectors: np.ndarray, users: int = 20, candidates: int = 50) -> ParitySets:
    """Each of ``users`` catalog vectors as a user, with its ``candidates`` nearest items."""
    u = vectors[np.random.default_rng(1).permutation(len(vectors))[:users]]
    top = np.argsort(-(u @ vectors.T), axis=1, kind="stable")[:, :candidates]
    return ParitySets(u.astype(np.float32), top.astype(np.int64), None)


def _activation_dtypes(path) -> set:
    graph = onnx.load(str(path)).graph
    inits = {i.name: i.data_type for i in graph.initializer}
    return {inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"}


def test_scorer_build_writes_weights_fp32_and_int8_files_for_the_default_target(tmp_path,
                                                                               scorer_net):
    model, rows, vectors = scorer_net
    built = build_scorer_artifacts(model, tmp_path, sets=_sets(vectors), vectors=vectors,
                                   calibration=rows, gate=LENIENT, log=lambda _m: None)
    assert [a.key for a in built.artifacts] == [
        "scorer/onnx/fp32", "scorer/tflite/fp32", "scorer/onnx/int8", "scorer/tflite/int8"]
    assert all(a.role is Role.SCORER and a.layout is None for a in built.artifacts)
    assert list(built.parity) == ["scorer/folded/fp32", *(a.key for a in built.artifacts)]
    assert list(built.sizes) == ["scorer/weights/fp32", *(a.key for a in built.artifacts)]
    assert [w.source.name for w in built.weights] == ["scorer.fp32.npz"]
    for key in ("scorer/folded/fp32", "scorer/onnx/fp32", "scorer/tflite/fp32"):
        assert built.parity[key].max_abs_diff < 1e-3
    metrics = built.metrics()
    assert set(metrics) == {"parity", "quantization", "gate_failures", "sizes"}
    assert metrics["quantization"]["scorer/onnx/int8"]["remedy"] == "minmax"
    assert metrics["quantization"]["scorer/tflite/int8"]["remedy"] == "histogram"
    assert _activation_dtypes(tmp_path / "scorer.int8.onnx") == {onnx.TensorProto.UINT8}


def test_the_target_reaches_the_scorers_onnx_quantizer(tmp_path, scorer_net):
    model, rows, vectors = scorer_net
    built = build_scorer_artifacts(model, tmp_path, sets=_sets(vectors), vectors=vectors,
                                   calibration=rows, gate=LENIENT, int8=(Engine.ONNX,),
                                   target="arm", log=lambda _m: None)
    assert built.artifacts[-1].key == "scorer/onnx/int8"
    assert _activation_dtypes(tmp_path / "scorer.int8.onnx") == {onnx.TensorProto.INT8}


def test_scorer_build_leaves_out_or_fails_on_an_int8_file_that_misses_its_gate(tmp_path,
                                                                              scorer_net):
    model, rows, vectors = scorer_net
    common = dict(sets=_sets(vectors), vectors=vectors, calibration=rows,
                  gate=ScorerGate(min_top_k_overlap=1.5), int8=(Engine.ONNX,),
                  log=lambda _m: None)
    built = build_scorer_artifacts(model, tmp_path / "a", **common)
    assert [a.key for a in built.artifacts] == ["scorer/onnx/fp32", "scorer/tflite/fp32"]
    assert "keep_first_float" in built.gate_failures["scorer/onnx/int8"]
    record = built.metrics()["quantization"]["scorer/onnx/int8"]
    assert (record["remedy"], record["passed"], record["outcome"]) == (None, False, "left out")
    assert [a["remedy"] for a in record["attempts"]] == [
        "minmax", "percentile", "keep_first_float"]
    for attempt in record["attempts"]:  # each rung with the figure it fell short on
        assert not attempt["passed"]
        assert attempt["shortfalls"]["top_k_overlap"] == {
            "value": attempt["report"]["top_k_overlap"], "required": 1.5}
    with pytest.raises(ExportError, match=r"scorer\.int8\.onnx failed the int8 gate"):
        build_scorer_artifacts(model, tmp_path / "b", fail_on_gate=True, **common)
