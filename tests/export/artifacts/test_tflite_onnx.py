"""The shipped uint8 teacher rewritten as ONNX: the same integers on ONNX Runtime, checked
against LiteRT on real photos, refused (and nothing written) where the rewrite cannot hold."""

import numpy as np
import onnx
import pytest
from conftest import ROOT, SAMPLE, TEACHER
from edgerec.export.artifacts.quantize_onnx import QuantTarget
from edgerec.export.artifacts.tflite_onnx import (
    ConversionOptions,
    _check_ops,
    _stride_and_pads,
    tflite_to_onnx,
)
from edgerec.export.errors import ExportError
from edgerec.sdk import Encoder, EncoderOptions
from edgerec.sdk.bundle import ImportOptions, import_model

PHOTOS = sorted((SAMPLE / "images").rglob("*.jpg"))[::10]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "teacher.onnx"
    return tflite_to_onnx(TEACHER, out, ConversionOptions(probe_images=PHOTOS,
                                                          target=QuantTarget.X86_VNNI))


def test_the_teacher_converts_and_agrees_with_litert_on_photos(converted):
    assert converted.path.is_file() and converted.probe_kind == "photos"
    assert converted.probes == len(PHOTOS) >= 20
    assert converted.min_cosine >= 0.9999
    # the only rounding the rewrite does not repeat is the TFLite pool's uint8 mean: half a step
    assert converted.max_abs_diff <= 0.5 + 1e-3
    assert converted.ops.count("CONV_2D") == 14 and converted.ops.count("DEPTHWISE_CONV_2D") == 13
    assert converted.mean == (128 / 255,) * 3 and converted.std == pytest.approx((128 / 255,) * 3)


def test_the_onnx_graph_holds_the_tflite_integers(converted):
    model = onnx.load(str(converted.path))
    graph = model.graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QLinearConv") == 27
    assert ops[0] == "QuantizeLinear" and ops[-3:] == ["DequantizeLinear", "GlobalAveragePool",
                                                      "Flatten"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    w, zero = inits["w_0"], inits["w_zero_0"]
    assert w.dtype == np.int8 and w.shape == (32, 3, 3, 3)
    # the teacher's first weights are uint8 with zero point 151: shifted by 128 together
    assert int(zero) == 151 - 128
    assert inits["in_scale"] == np.float32(1 / 128) and inits["in_zero"] == 128
    props = {p.key: p.value for p in model.metadata_props}
    assert props["edgerec.convert.target"] == "x86-vnni"
    assert props["edgerec.convert.weights"] == converted.weights == "int8"


def test_for_x86_without_vnni_the_weights_stay_uint8_and_still_agree(tmp_path):
    # ORT's AVX2 u8s8 kernels add products in int16 and saturate on full-range weights
    result = tflite_to_onnx(TEACHER, tmp_path / "avx2.onnx",
                            ConversionOptions(target="x86-avx2", synthetic_probes=2))
    inits = {t.name: onnx.numpy_helper.to_array(t)
             for t in onnx.load(str(result.path)).graph.initializer}
    assert inits["w_0"].dtype == np.uint8 and int(inits["w_zero_0"]) == 151
    assert result.weights == "uint8" and result.target == "x86-avx2"
    assert result.min_cosine >= 0.9999


@pytest.mark.parametrize("machine, flags, target", [
    ("x86_64", ["avx2", "avx512_vnni"], QuantTarget.X86_VNNI),
    ("x86_64", ["avx2", "avx_vnni"], QuantTarget.X86_VNNI),
    ("x86_64", ["avx2", "fma"], QuantTarget.X86_AVX2),
    ("x86_64", [], QuantTarget.X86_AVX2),
    ("aarch64", ["asimd"], QuantTarget.ARM),
])
def test_the_default_target_is_this_cpus(monkeypatch, machine, flags, target):
    import edgerec.export.artifacts.quantize_onnx as quantize_onnx
    import edgerec.sdk.bench.machine as bench_machine

    monkeypatch.setattr(quantize_onnx.platform, "machine", lambda: machine)
    monkeypatch.setattr(bench_machine, "cpu_flags", lambda: flags)
    assert QuantTarget.for_this_cpu() is target


def test_a_bundle_of_both_files_embeds_alike_on_either_engine(converted, tmp_path):
    options = ImportOptions(mean=converted.mean, std=converted.std, name="teacher")
    bundle = import_model([TEACHER, converted.path], tmp_path / "both", options)
    assert {a.key for a in bundle.manifest.artifacts} == {"encoder/tflite/int8",
                                                          "encoder/onnx/int8"}
    photos = PHOTOS[:12]
    with (Encoder.create_from_bundle(bundle, EncoderOptions(engine="tflite")) as litert,
          Encoder.create_from_bundle(bundle, EncoderOptions(engine="onnx")) as ort):
        a, b = litert.embed(photos), ort.embed(photos)
    assert ((a * b).sum(axis=1) >= 0.9999).all()
    assert (np.argsort(-(a @ a.T), axis=1)[:, :3] == np.argsort(-(b @ b.T), axis=1)[:, :3]).all()


def test_a_stricter_gate_refuses_and_writes_nothing(tmp_path):
    out = tmp_path / "teacher.onnx"
    with pytest.raises(ExportError, match="disagrees"):
        tflite_to_onnx(TEACHER, out, ConversionOptions(min_cosine=1.0, synthetic_probes=2))
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_kept_without_force(tmp_path):
    out = tmp_path / "teacher.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="--force"):
        tflite_to_onnx(TEACHER, out)
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("source, message", [
    (ROOT / "README.md", "LiteRT cannot read"),
    (ROOT / "tests" / "fixtures" / "tiny_embedder.tflite", "not quantized"),
    (ROOT / "examples" / "models" / "clothing-student" / "encoder.int8.tflite", "not quantized"),
    (ROOT / "no-such.tflite", "does not exist"),
])
def test_files_it_cannot_rewrite_get_a_clear_error(tmp_path, source, message):
    with pytest.raises(ExportError, match=message):
        tflite_to_onnx(source, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def _op(name, src, dst):
    return {"op_name": name, "inputs": [src, 100], "outputs": [dst]}


def test_ops_outside_the_rewrite_are_named():
    ops = [_op("CONV_2D", 0, 1), _op("ADD", 1, 2), _op("SOFTMAX", 2, 3)]
    with pytest.raises(ExportError, match="ADD, SOFTMAX"):
        _check_ops(TEACHER, ops, 0)


def test_a_branching_graph_is_refused():
    ops = [_op("CONV_2D", 0, 1), _op("CONV_2D", 1, 2), _op("CONV_2D", 1, 3)]
    with pytest.raises(ExportError, match="not a chain"):
        _check_ops(TEACHER, ops, 0)


@pytest.mark.parametrize("size, out, kernel, strides, pads", [
    (224, 112, 3, 2, (0, 1)),  # TF SAME on an even input: the extra pixel after
    (112, 112, 3, 1, (1, 1)),
    (7, 7, 1, 1, (0, 0)),
    (10, 8, 3, 1, (0, 0)),  # VALID
    (15, 8, 3, 2, (1, 1)),
])
def test_strides_and_padding_are_read_off_the_shapes(size, out, kernel, strides, pads):
    got_strides, got_pads = _stride_and_pads((size, size), (out, out), (kernel, kernel), "op")
    assert got_strides == [strides, strides]
    assert got_pads == [pads[0], pads[0], pads[1], pads[1]]


def test_shapes_no_stride_explains_are_refused():
    with pytest.raises(ExportError, match="stride and padding"):
        _stride_and_pads((224, 224), (20, 20), (3, 3), "op")
