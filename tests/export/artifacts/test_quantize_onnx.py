"""ONNX Runtime static QDQ quantization (edgerec.export.artifacts.quantize_onnx) of both
roles: image encoders and the scorer, on real photos and real rows.

Cosine thresholds for the student were measured (seeds 0-2, 40 calibration and 40 held-out
photos, 64 px, a 2-vCPU AVX2 machine): untrained MobileNetV3-Small student (width 0.5, 32-d),
U8S8 with 7-bit weights 0.959 to 0.963 mean cosine to torch fp32, S8S8 0.953 to 0.966, U8S8
with full 8-bit weights 0.75 to 0.90 (int16 saturation of the AVX2 kernels). The 0.93
threshold sits below every correct configuration and above every broken one.
"""

import numpy as np
import onnx
import pytest
import torch
from conftest import TINY_ONNX
from edgerec.export.artifacts.calibration import Calibration
from edgerec.export.artifacts.convert import ModelIO, to_onnx
from edgerec.export.artifacts.parity import artifact_embeddings, parity
from edgerec.export.artifacts.quantize_onnx import (
    ActivationType,
    OnnxQuantOptions,
    QuantTarget,
    quantize_onnx,
)
from edgerec.export.errors import ExportError
from edgerec.export.scorer.artifacts import FIRST_LAYERS, onnx_remedies
from edgerec.runtimes import open_runtime


def _batches(x, n=20):
    return [x[i : i + n] for i in range(0, len(x), n)]


def _activation_dtypes(path) -> set:
    """onnx element types of the QuantizeLinear zero points: the activations' integer type."""
    graph = onnx.load(str(path)).graph
    inits = {i.name: i.data_type for i in graph.initializer}
    return {inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"}


def _largest_weight(path) -> int:
    """The largest |int8| weight stored in the QDQ model."""
    graph = onnx.load(str(path)).graph
    weights = [onnx.numpy_helper.to_array(i) for i in graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and i.dims]
    return int(max(np.abs(w.astype(np.int32)).max() for w in weights))


# --------------------------------------------------------------------------- options


def test_option_enums_accept_their_string_values():
    options = OnnxQuantOptions(target="arm", calibration="entropy")
    assert options.target is QuantTarget.ARM and options.calibration is Calibration.ENTROPY


@pytest.mark.parametrize(("spelling", "target"), [
    ("x86-avx2", QuantTarget.X86_AVX2), ("x86_avx2", QuantTarget.X86_AVX2),
    ("x86-vnni", QuantTarget.X86_VNNI), ("X86_VNNI", QuantTarget.X86_VNNI),
    ("arm", QuantTarget.ARM),
])
def test_targets_accept_dashed_and_underscore_spellings(spelling, target):
    assert QuantTarget(spelling) is target


@pytest.mark.parametrize("make", [
    lambda: OnnxQuantOptions(calibration="histogram"),
    lambda: OnnxQuantOptions(max_samples=0),
    lambda: OnnxQuantOptions(percentile=20.0),
    lambda: OnnxQuantOptions(entropy_bins=128),
    lambda: OnnxQuantOptions(target="riscv"),
])
def test_unsupported_options_are_rejected(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("field", ["keep_float", "op_types"])
def test_name_lists_must_be_tuples_of_names(field):
    with pytest.raises(TypeError):
        OnnxQuantOptions(**{field: "Gemm"})


def test_targets_pick_the_activation_type_and_weight_range_that_fuse():
    assert OnnxQuantOptions().target is QuantTarget.X86_AVX2
    avx2 = OnnxQuantOptions()
    assert avx2.activation is ActivationType.UINT8 and avx2.reduce_range
    arm = OnnxQuantOptions(target="arm", calibration="percentile")
    assert arm.activation is ActivationType.INT8 and not arm.reduce_range
    vnni = OnnxQuantOptions(target=QuantTarget.X86_VNNI)
    assert vnni.activation is ActivationType.UINT8 and not vnni.reduce_range


# --------------------------------------------------------------------------- encoder, tiny


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "entropy"])
def test_tiny_onnx_quantizes_to_qdq_that_follows_fp32(tmp_path, photos32, calibration):
    cal, held = photos32
    out = quantize_onnx(TINY_ONNX, tmp_path / "tiny.int8.onnx", _batches(cal, 8),
                        OnnxQuantOptions(calibration=calibration))
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("DequantizeLinear") >= 4 and "QuantizeLinear" in ops
    with open_runtime(out) as rt:
        assert rt.input_specs()[0].dtype == "float32"
    report = parity(artifact_embeddings(TINY_ONNX, held), artifact_embeddings(out, held))
    # measured 0.9997 (minmax), 0.9997 (percentile), 0.9992 (entropy) on this network
    assert report.cosine_mean > 0.995


@pytest.mark.parametrize(("target", "dtype", "weights_up_to"), [
    ("x86-avx2", onnx.TensorProto.UINT8, 64),
    ("x86-vnni", onnx.TensorProto.UINT8, 127),
    ("arm", onnx.TensorProto.INT8, 127),
])
def test_the_target_sets_the_activation_type_and_weight_range_in_the_file(
        tmp_path, photos32, target, dtype, weights_up_to):
    cal, held = photos32
    out = quantize_onnx(TINY_ONNX, tmp_path / "t.onnx", _batches(cal),
                        OnnxQuantOptions(target=target))
    assert _activation_dtypes(out) == {dtype}
    assert _largest_weight(out) == weights_up_to  # 7-bit weights reach 64, 8-bit ones 127
    report = parity(artifact_embeddings(TINY_ONNX, held), artifact_embeddings(out, held))
    assert report.cosine_mean > 0.995


def test_onnx_keep_float_leaves_named_layers_unquantized(tmp_path, photos32):
    cal, _ = photos32
    out = quantize_onnx(TINY_ONNX, tmp_path / "keep.onnx", _batches(cal),
                        OnnxQuantOptions(keep_float=("conv1", "head")))
    graph = onnx.load(str(out)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    quantized = [(n.op_type, any(i in dequantized for i in n.input)) for n in graph.node
                 if n.op_type in ("Conv", "Gemm")]
    assert quantized == [("Conv", False), ("Conv", True), ("Gemm", False)]


def test_onnx_calibration_streams_batches_and_stops_at_max_samples(tmp_path, photos32):
    cal, _ = photos32
    seen = []

    class Recorder:  # re-iterable, records what was consumed
        def __iter__(self):
            for batch in _batches(cal, 4):
                seen.append(len(batch))
                yield batch

    quantize_onnx(TINY_ONNX, tmp_path / "few.onnx", Recorder(), OnnxQuantOptions(max_samples=6))
    assert seen == [4, 4]


@pytest.mark.parametrize(("calibration", "match"), [
    ([], "calibration data is empty"),
    ([torch.zeros(2, 32, 32, 3).numpy()], r"shaped \(N, 3, 32, 32\)"),
])
def test_onnx_rejects_unusable_calibration_data(tmp_path, calibration, match):
    with pytest.raises(ExportError, match=match):
        quantize_onnx(TINY_ONNX, tmp_path / "x.onnx", calibration)


def test_onnx_keep_float_names_must_exist(tmp_path, photos32):
    with pytest.raises(ExportError, match="match no node"):
        quantize_onnx(TINY_ONNX, tmp_path / "x.onnx", _batches(photos32[0]),
                      OnnxQuantOptions(keep_float=("features.99",)))


# --------------------------------------------------------------------------- scorer


@pytest.fixture(scope="module")
def scorer_onnx(scorer_net, tmp_path_factory):
    model, rows, _ = scorer_net
    return to_onnx(model, tmp_path_factory.mktemp("scorer") / "scorer.fp32.onnx",
                   ModelIO.rows(rows.shape[1]))


def _gemms_reading_int8(path) -> int:
    """How many Gemm nodes read a dequantized (8-bit) activation."""
    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    dequantized = {n.output[0] for n in graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] not in inits}
    return sum(n.input[0] in dequantized for n in graph.node if n.op_type == "Gemm")


@pytest.mark.parametrize(("keep_first", "int8_gemms"), [(False, 2), (True, 1)])
def test_the_same_quantizer_serves_the_scorer_with_its_float_layers(
        tmp_path, scorer_net, scorer_onnx, scorer_check, keep_first, int8_gemms):
    _, rows, _ = scorer_net
    options = onnx_remedies("arm")[0].options
    if keep_first:
        options = OnnxQuantOptions(target="arm", keep_float=FIRST_LAYERS,
                                   op_types=("Gemm", "MatMul"))
    out = quantize_onnx(scorer_onnx, tmp_path / "scorer.int8.onnx", _batches(rows, 512), options)
    # four Gemms (two hidden, head, skip); the standardised rows feed deep.0 and skip, and
    # the skip path and the head read float tensors, not the 8-bit copies
    assert _gemms_reading_int8(out) == int8_gemms
    assert _activation_dtypes(out) == {onnx.TensorProto.INT8}  # the arm target
    spec, correlation = scorer_check(out)
    assert (spec.name, spec.dtype) == ("rows", "float32") and correlation > 0.99


# --------------------------------------------------------------------------- real, student


@pytest.mark.slow
def test_student_int8_onnx_follows_torch_fp32(tmp_path, student_setup):
    _, fp32, calibration, held, reference = student_setup
    out = quantize_onnx(fp32, tmp_path / "student.int8.onnx", calibration)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}
    report = parity(reference, artifact_embeddings(out, held))
    assert report.cosine_mean > 0.93, report  # measured 0.963
