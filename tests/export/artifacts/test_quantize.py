"""int8 quantization (ONNX Runtime QDQ, LiteRT PT2E) and the gated ladder of remedies.

Real quantization runs on real sample photos. Cosine thresholds were measured (seeds 0-2, 40
calibration and 40 held-out photos, 64 px, this 2-vCPU AVX2 machine):

- untrained MobileNetV3-Small student (width 0.5, 32-d): ONNX U8S8 with 7-bit weights 0.959 to
  0.963 mean cosine to torch fp32, S8S8 0.953 to 0.966, U8S8 with full 8-bit weights 0.75 to
  0.90 (int16 saturation of the AVX2 kernels); LiteRT PT2E int8 0.963 to 0.972, and 0.25 to
  0.39 when float input is cast to int8 instead of quantized. The 0.93 threshold sits below
  every correct configuration and above every broken one.
- the tiny 2-conv fixture network: see the thresholds next to its tests.

A randomly initialised network needs its BatchNorm statistics re-estimated on real images
before it means anything: with the running averages reset and ``momentum=None`` (an exact
cumulative average) one pass suffices; a few passes with momentum 0.1 leave the running
variance far from the batch statistics and every image maps to nearly the same vector (mean
pairwise cosine 0.99999 instead of 0.30).
"""

import onnx
import pytest
import torch
from conftest import TINY_ONNX, sample_images
from edgerec.export.artifacts.parity import (
    ParityReport,
    artifact_embeddings,
    parity,
    torch_embeddings,
)
from edgerec.export.artifacts.quantize import (
    ActivationType,
    Calibration,
    Gate,
    OnnxQuantOptions,
    QuantTarget,
    Remedy,
    TfliteQuantOptions,
    float_head_first,
    onnx_remedies,
    quantize_onnx,
    quantize_tflite,
    quantize_with_ladder,
    sensitive_layers,
    tflite_remedies,
)
from edgerec.export.distill.student import create_student
from edgerec.export.errors import ExportError
from edgerec.runtimes import open_runtime
from edgerec.sdk import Preprocessing, preprocess
from torch import nn


def _photos(size: int, per_label: int):
    items = sample_images(per_label)
    x = preprocess([p for p, _ in items], Preprocessing(input_size=size))
    return x[0::2], x[1::2]  # calibration, held out


def _batches(x, n=20):
    return [x[i : i + n] for i in range(0, len(x), n)]


def _recalibrate_batchnorm(model: nn.Module, x) -> nn.Module:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: exact in one pass
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def _report(cos=0.99, ratio=1.0):
    return ParityReport(n=10, k=10, cosine_mean=cos, cosine_min=cos - 0.1,
                        neighbour_overlap=0.9, map_reference=0.5, map_candidate=0.5 * ratio,
                        map_ratio=ratio)


# --------------------------------------------------------------------------- options


def test_option_enums_accept_their_string_values():
    options = OnnxQuantOptions(activation="int8", calibration="entropy")
    assert options.activation is ActivationType.INT8
    assert options.calibration is Calibration.ENTROPY


@pytest.mark.parametrize("make", [
    lambda: OnnxQuantOptions(calibration="histogram"),
    lambda: TfliteQuantOptions(calibration="entropy"),
    lambda: OnnxQuantOptions(max_images=0),
    lambda: OnnxQuantOptions(percentile=20.0),
    lambda: OnnxQuantOptions(activation="int4"),
])
def test_unsupported_options_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_keep_float_must_be_a_tuple_of_names():
    with pytest.raises(TypeError):
        TfliteQuantOptions(keep_float="features.0")


def test_targets_pick_the_activation_type_and_weight_range_that_fuse():
    assert OnnxQuantOptions() == OnnxQuantOptions.for_target(QuantTarget.X86_AVX2)
    arm = OnnxQuantOptions.for_target("arm", calibration="percentile")
    assert arm.activation is ActivationType.INT8 and not arm.reduce_range
    assert arm.calibration is Calibration.PERCENTILE
    vnni = OnnxQuantOptions.for_target(QuantTarget.X86_VNNI)
    assert vnni.activation is ActivationType.UINT8 and not vnni.reduce_range


def test_sensitive_layers_are_the_first_conv_block_and_the_head():
    assert sensitive_layers(create_student(image_size=32, hidden=0, dim=8, width=0.25)) == (
        "features.0", "head.1")
    assert sensitive_layers(create_student(image_size=32, hidden=16, dim=8, width=0.25)) == (
        "features.0", "head.0", "head.3")


def test_default_ladders_climb_from_cheap_to_costly_remedies():
    onnx_ladder = onnx_remedies(("features.0",), images=64)
    assert [r.name for r in onnx_ladder] == [
        "minmax", "percentile", "entropy", "more_images", "keep_float"]
    assert onnx_ladder[0].options.max_images == 64 and onnx_ladder[3].options.max_images is None
    assert onnx_ladder[-1].options.keep_float == ("features.0",)
    assert [r.name for r in tflite_remedies()] == [
        "histogram", "minmax", "more_images", "more_images_minmax"]
    assert [r.name for r in tflite_remedies(("head",))][-2:] == ["keep_float", "keep_float_minmax"]
    assert all(isinstance(r.options, TfliteQuantOptions) for r in tflite_remedies(("head",)))


# --------------------------------------------------------------------------- the ladder


def test_gate_lists_what_falls_short():
    gate = Gate()
    assert gate.shortfalls(_report()) == {}
    assert gate.shortfalls(_report(cos=0.97, ratio=0.995)) == {"cosine_mean": (0.97, 0.98)}
    no_labels = ParityReport(n=10, k=10, cosine_mean=0.99, cosine_min=0.9, neighbour_overlap=1)
    assert gate.shortfalls(no_labels) == {"map_ratio": (None, 0.99)}
    assert Gate(min_map_ratio=None).shortfalls(no_labels) == {}
    assert gate.margin(_report(cos=0.97, ratio=1.0)) == pytest.approx(-0.01)


def test_ladder_stops_at_the_first_remedy_that_passes(tmp_path):
    reports = {"minmax": _report(cos=0.95), "percentile": _report(), "entropy": _report()}
    built = []

    def build(remedy):
        built.append(remedy.name)
        return tmp_path / f"{remedy.name}.onnx"

    result = quantize_with_ladder(
        [Remedy(n) for n in reports], build, lambda p: reports[p.stem], Gate())
    assert built == ["minmax", "percentile"]
    assert result.remedy == "percentile" and result.artifact == tmp_path / "percentile.onnx"
    assert [(a.remedy, a.passed) for a in result.attempts] == [
        ("minmax", False), ("percentile", True)]
    assert result.report == reports["percentile"]
    assert result.to_dict()["attempts"][0]["report"]["cosine_mean"] == 0.95


def test_a_remedy_can_bring_its_own_builder(tmp_path):
    qat = Remedy("qat", build=lambda r: tmp_path / "qat.tflite")
    result = quantize_with_ladder(
        [Remedy("minmax"), qat], lambda r: tmp_path / "ptq.tflite",
        lambda p: _report() if p.stem == "qat" else _report(ratio=0.9), Gate())
    assert result.remedy == "qat" and result.artifact.name == "qat.tflite"


def test_ladder_fails_loudly_naming_the_artifact_the_best_attempt_and_the_shortfall(tmp_path):
    reports = {"minmax": _report(cos=0.90, ratio=0.95), "entropy": _report(cos=0.975, ratio=0.98)}

    def build(remedy):
        if remedy.name == "broken":
            raise RuntimeError("converter crashed")
        return tmp_path / f"{remedy.name}.onnx"

    remedies = [Remedy("minmax"), Remedy("broken"), Remedy("entropy")]
    with pytest.raises(ExportError) as info:
        quantize_with_ladder(remedies, build, lambda p: reports[p.stem], Gate(),
                             artifact="encoder.int8.onnx")
    message = str(info.value)
    assert "encoder.int8.onnx" in message and "'entropy'" in message
    assert "map_ratio 0.9800 < 0.99 (short by 0.0100)" in message
    assert "cosine_mean 0.9750 < 0.98 (short by 0.0050)" in message
    assert "broken failed: RuntimeError: converter crashed" in message


def test_ladder_whose_every_rung_fails_to_build_says_so():
    def build(remedy):
        raise ValueError("no converter")

    with pytest.raises(ExportError, match="every quantization remedy failed to build"):
        quantize_with_ladder([Remedy("a")], build, lambda p: _report())


# --------------------------------------------------------------------------- real ONNX, tiny


@pytest.fixture(scope="module")
def photos32():
    return _photos(32, 4)  # 20 calibration, 20 held-out photos


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


def test_onnx_keep_float_leaves_named_layers_unquantized(tmp_path, photos32):
    cal, _ = photos32
    out = quantize_onnx(TINY_ONNX, tmp_path / "keep.onnx", _batches(cal),
                        OnnxQuantOptions(keep_float=("conv1", "head")))
    graph = onnx.load(str(out)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    quantized = [(n.op_type, any(i in dequantized for i in n.input)) for n in graph.node
                 if n.op_type in ("Conv", "Gemm")]
    assert quantized == [("Conv", False), ("Conv", True), ("Gemm", False)]


def test_onnx_calibration_streams_batches_and_stops_at_max_images(tmp_path, photos32):
    cal, _ = photos32
    seen = []

    class Recorder:  # re-iterable, records what was consumed
        def __iter__(self):
            for batch in _batches(cal, 4):
                seen.append(len(batch))
                yield batch

    quantize_onnx(TINY_ONNX, tmp_path / "few.onnx", Recorder(), OnnxQuantOptions(max_images=6))
    assert seen == [4, 4]


@pytest.mark.parametrize(("calibration", "match"), [
    ([], "calibration data is empty"),
    ([torch.zeros(2, 32, 32, 3).numpy()], "NCHW"),
])
def test_onnx_rejects_unusable_calibration_data(tmp_path, calibration, match):
    with pytest.raises(ExportError, match=match):
        quantize_onnx(TINY_ONNX, tmp_path / "x.onnx", calibration)


def test_onnx_keep_float_names_must_exist(tmp_path, photos32):
    with pytest.raises(ExportError, match="match no node"):
        quantize_onnx(TINY_ONNX, tmp_path / "x.onnx", _batches(photos32[0]),
                      OnnxQuantOptions(keep_float=("features.99",)))


# --------------------------------------------------------------------------- real TFLite, tiny


class _TinyNet(nn.Module):
    """The student's op kinds in miniature: conv + BN + hardswish, a residual depthwise block,
    a spatial mean and a linear head. 32 px in, 16-d out."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.Hardswish())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8),
                                   nn.ReLU())
        self.head = nn.Linear(8, 16)

    def forward(self, x):
        x = self.stem(x)
        return self.head((x + self.block(x)).mean((2, 3)))


def _tensor_dtypes(path) -> set:
    from ai_edge_litert.interpreter import Interpreter

    return {d["dtype"].__name__ for d in Interpreter(model_path=str(path)).get_tensor_details()}


@pytest.fixture(scope="module")
def tiny_net(photos32):
    torch.manual_seed(0)
    model = _recalibrate_batchnorm(_TinyNet(), photos32[0])
    return model, torch_embeddings(model, photos32[1])


def test_tiny_int8_tflite_takes_quantized_int8_input(tmp_path, photos32, tiny_net):
    cal, held = photos32
    model, reference = tiny_net
    model.train()
    try:
        out = quantize_tflite(model, tmp_path / "tiny.tflite", _batches(cal, 8), 32,
                              TfliteQuantOptions(calibration="minmax"))
        assert model.training  # the caller's model is not touched
    finally:
        model.eval()
    with open_runtime(out) as rt:
        spec = rt.input_specs()[0]
    assert spec.dtype == "int8" and spec.shape == (1, 32, 32, 3) and spec.scale > 0
    report = parity(reference, artifact_embeddings(out, held, batch_size=7))
    assert report.cosine_mean > 0.995, report  # measured 1.0000 (min 0.9998)


def test_tflite_keep_float_leaves_named_modules_in_float(tmp_path, photos32, tiny_net):
    cal, held = photos32
    model, reference = tiny_net
    out = quantize_tflite(model, tmp_path / "keep.tflite", _batches(cal), 32,
                          TfliteQuantOptions(keep_float=("stem", "head")))
    with open_runtime(out) as rt:
        assert rt.input_specs()[0].dtype == "float32"  # the first layer is float
    assert "int8" in _tensor_dtypes(out)  # the block in between is not
    assert parity(reference, artifact_embeddings(out, held)).cosine_mean > 0.995


def test_tflite_keep_float_names_must_be_modules(tmp_path, tiny_net):
    with pytest.raises(ExportError, match="not modules"):
        quantize_tflite(tiny_net[0], tmp_path / "x.tflite", [], 32,
                        TfliteQuantOptions(keep_float=("features.0",)))


# --------------------------------------------------------------------------- real, student


@pytest.fixture(scope="module")
def student_setup(tmp_path_factory):
    """An untrained 64-px student with BatchNorm re-estimated on 40 photos, and its fp32 ONNX."""
    from edgerec.export.artifacts.convert import to_onnx

    cal, held = _photos(64, 8)
    torch.manual_seed(0)
    model = create_student("mobilenet_v3_small", image_size=64, hidden=0, dim=32, width=0.5)
    _recalibrate_batchnorm(model, cal)
    fp32 = to_onnx(model, tmp_path_factory.mktemp("student") / "student.onnx", 64)
    return model, fp32, _batches(cal), held, torch_embeddings(model, held)


@pytest.mark.slow
def test_student_int8_onnx_follows_torch_fp32(tmp_path, student_setup):
    _, fp32, calibration, held, reference = student_setup
    out = quantize_onnx(fp32, tmp_path / "student.int8.onnx", calibration)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}
    report = parity(reference, artifact_embeddings(out, held))
    assert report.cosine_mean > 0.93, report  # measured 0.963


@pytest.mark.slow
def test_student_int8_tflite_takes_int8_input_and_follows_torch_fp32(tmp_path, student_setup):
    model, _, calibration, held, reference = student_setup
    out = quantize_tflite(model, tmp_path / "student.int8.tflite", calibration, 64,
                          TfliteQuantOptions(calibration=Calibration.MINMAX))
    with open_runtime(out) as rt:
        spec = rt.input_specs()[0]
    assert spec.dtype == "int8" and spec.shape == (1, 64, 64, 3) and spec.scale
    report = parity(reference, artifact_embeddings(out, held))  # the adapter quantizes input
    assert report.cosine_mean > 0.93, report  # measured 0.967


def test_float_head_first_moves_the_keep_float_rungs_to_the_front_in_order():
    ladder = tflite_remedies(("head",))
    names = [r.name for r in float_head_first(ladder)]
    assert names == ["keep_float", "keep_float_minmax", "histogram", "minmax", "more_images",
                     "more_images_minmax"]
    assert [r.name for r in float_head_first(tflite_remedies())] == [
        r.name for r in tflite_remedies()]  # nothing to move: unchanged

