"""The encoder's role (edgerec.export.artifacts.encoder): its remedy ladders and its build
wrapper around the shared driver, on the tiny real network and real photos."""

import json

import onnx
import pytest
from conftest import sample_images
from edgerec.export.artifacts.encoder import (
    EncoderGate,
    build_artifacts,
    float_head_first,
    onnx_remedies,
    sensitive_layers,
    tflite_remedies,
)
from edgerec.export.artifacts.quantize_onnx import OnnxQuantOptions, QuantTarget
from edgerec.export.artifacts.quantize_tflite import TfliteQuantOptions
from edgerec.export.distill.student import create_student
from edgerec.export.errors import ExportError
from edgerec.runtimes import Engine
from edgerec.sdk import Layout, Precision, Preprocessing


def test_sensitive_layers_are_the_first_conv_block_and_the_head():
    assert sensitive_layers(create_student(image_size=32, hidden=0, dim=8, width=0.25)) == (
        "features.0", "head.1")
    assert sensitive_layers(create_student(image_size=32, hidden=16, dim=8, width=0.25)) == (
        "features.0", "head.0", "head.3")


def test_default_ladders_climb_from_cheap_to_costly_remedies():
    onnx_ladder = onnx_remedies(("features.0",), images=64)
    assert [r.name for r in onnx_ladder] == [
        "minmax", "percentile", "entropy", "more_images", "keep_float"]
    assert onnx_ladder[0].options.max_samples == 64
    assert onnx_ladder[3].options.max_samples is None
    assert onnx_ladder[-1].options.keep_float == ("features.0",)
    assert all(r.options.target is QuantTarget.X86_AVX2 for r in onnx_ladder)
    arm = onnx_remedies(base=OnnxQuantOptions(target="arm"))
    assert {r.options.target for r in arm} == {QuantTarget.ARM}
    assert [r.name for r in tflite_remedies()] == [
        "histogram", "minmax", "more_images", "more_images_minmax"]
    assert [r.name for r in tflite_remedies(("head",))][-2:] == ["keep_float", "keep_float_minmax"]
    assert all(isinstance(r.options, TfliteQuantOptions) for r in tflite_remedies(("head",)))


def test_float_head_first_moves_the_keep_float_rungs_to_the_front_in_order():
    ladder = tflite_remedies(("head",))
    names = [r.name for r in float_head_first(ladder)]
    assert names == ["keep_float", "keep_float_minmax", "histogram", "minmax", "more_images",
                     "more_images_minmax"]
    assert [r.name for r in float_head_first(tflite_remedies())] == [
        r.name for r in tflite_remedies()]  # nothing to move: unchanged


# --------------------------------------------------------------------------- the build


@pytest.fixture(scope="module")
def labelled(photos32):
    """Calibration photos, held-out photos and the held-out photos' labels."""
    labels = [label for _, label in sample_images(4)][1::2]
    return photos32[0], photos32[1], labels


def test_build_writes_checked_fp32_files_and_an_int8_onnx_for_the_target(tmp_path, tiny_net,
                                                                        labelled):
    cal, held, labels = labelled
    built = build_artifacts(
        tiny_net[0], Preprocessing(input_size=32), tmp_path, x_val=held, val_labels=labels,
        x_cal=cal, first_remedy_only=True, gate=EncoderGate(min_map_ratio=None),
        target="arm", int8=(Engine.ONNX,), log=lambda _m: None)
    assert [a.key for a in built.artifacts] == [
        "encoder/onnx/fp32", "encoder/tflite/fp32", "encoder/onnx/int8"]
    assert [a.layout for a in built.artifacts] == [Layout.NCHW, Layout.NHWC, Layout.NCHW]
    assert set(built.parity) == set(built.sizes) == {a.key for a in built.artifacts}
    assert all(built.parity[k].cosine_min >= 0.999 for k in ("encoder/onnx/fp32",
                                                              "encoder/tflite/fp32"))
    record = json.loads(json.dumps(built.ladder_records["encoder/onnx/int8"]))
    assert record["remedy"] == "minmax" and record["attempts"][0]["passed"]
    assert record["passed"] and record["outcome"] == "shipped"
    assert record["attempts"][0]["shortfalls"] == {}
    assert built.gate_failures == {}
    int8 = tmp_path / "encoder.int8.onnx"
    assert built.artifacts[-1].source == int8 and built.artifacts[-1].precision is Precision.INT8
    graph = onnx.load(str(int8)).graph
    zero_points = {i.name: i.data_type for i in graph.initializer}
    assert {zero_points[n.input[2]] for n in graph.node
            if n.op_type == "QuantizeLinear"} == {onnx.TensorProto.INT8}  # the arm target
    assert built.embed(built.artifacts[-1], held[:3]).shape == (3, 16)


def test_build_leaves_out_or_fails_on_an_int8_file_that_misses_its_gate(tmp_path, tiny_net,
                                                                        labelled):
    cal, held, labels = labelled
    impossible = EncoderGate(min_map_ratio=None, min_mean_cosine=1.5)
    common = dict(x_val=held, val_labels=labels, x_cal=cal, first_remedy_only=True,
                  gate=impossible, int8=(Engine.ONNX,), log=lambda _m: None)
    built = build_artifacts(tiny_net[0], Preprocessing(input_size=32), tmp_path / "a",
                            allow_gate_failure=True, **common)
    assert [a.key for a in built.artifacts] == ["encoder/onnx/fp32", "encoder/tflite/fp32"]
    assert "cosine_mean" in built.gate_failures["encoder/onnx/int8"]
    record = json.loads(json.dumps(built.ladder_records["encoder/onnx/int8"]))
    assert (record["remedy"], record["passed"], record["outcome"]) == (None, False, "left out")
    (attempt,) = record["attempts"]  # first_remedy_only: the one rung tried
    assert attempt["remedy"] == record["best"] == "minmax" and not attempt["passed"]
    assert attempt["shortfalls"] == {"cosine_mean": {
        "value": attempt["report"]["cosine_mean"], "required": 1.5}}
    with pytest.raises(ExportError, match=r"encoder\.int8\.onnx failed the int8 gate"):
        build_artifacts(tiny_net[0], Preprocessing(input_size=32), tmp_path / "b", **common)


def test_without_labels_the_int8_gate_checks_neighbour_overlap_and_says_so(tmp_path, tiny_net,
                                                                           labelled):
    cal, held, _ = labelled
    common = dict(x_val=held, val_labels=None, x_cal=cal, first_remedy_only=True,
                  int8=(Engine.ONNX,), log=lambda _m: None)
    built = build_artifacts(tiny_net[0], Preprocessing(input_size=32), tmp_path / "a",
                            gate=EncoderGate(min_mean_cosine=0.9), **common)
    assert built.gate_checks == ("neighbour_overlap", "cosine_mean")
    report = built.parity["encoder/onnx/int8"]
    assert report.map_ratio is None and report.neighbour_overlap >= 0.8
    strict = EncoderGate(min_neighbour_overlap=1.01, min_mean_cosine=None)
    built = build_artifacts(tiny_net[0], Preprocessing(input_size=32), tmp_path / "b",
                            gate=strict, allow_gate_failure=True, **common)
    assert "neighbour_overlap" in built.gate_failures["encoder/onnx/int8"]
    assert built.gate_checks == ("neighbour_overlap",)
