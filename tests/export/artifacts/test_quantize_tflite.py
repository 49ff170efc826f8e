"""PT2E -> LiteRT int8 quantization (edgerec.export.artifacts.quantize_tflite) of both roles:
image encoders (NHWC input) and the scorer (rows), on real photos and real rows.

Measured on the untrained 64-px student (seeds 0-2, a 2-vCPU AVX2 machine): LiteRT PT2E int8
0.963 to 0.972 mean cosine to torch fp32, and 0.25 to 0.39 when float input is cast to int8
instead of quantized; the 0.93 threshold sits between.
"""

import numpy as np
import pytest
from edgerec.export.artifacts.calibration import Calibration
from edgerec.export.artifacts.convert import ModelIO
from edgerec.export.artifacts.parity import artifact_embeddings, parity
from edgerec.export.artifacts.quantize_tflite import TfliteQuantOptions, quantize_tflite
from edgerec.export.errors import ExportError
from edgerec.export.scorer.artifacts import tflite_remedies
from edgerec.runtimes import open_runtime


def _batches(x, n=20):
    return [x[i : i + n] for i in range(0, len(x), n)]


def _tensor_dtypes(path) -> set:
    from ai_edge_litert.interpreter import Interpreter

    return {d["dtype"].__name__ for d in Interpreter(model_path=str(path)).get_tensor_details()}


@pytest.mark.parametrize("make", [
    lambda: TfliteQuantOptions(calibration="entropy"),
    lambda: TfliteQuantOptions(max_samples=0),
])
def test_unsupported_options_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_keep_float_must_be_a_tuple_of_names():
    with pytest.raises(TypeError):
        TfliteQuantOptions(keep_float="features.0")


# --------------------------------------------------------------------------- encoder, tiny


def test_tiny_int8_tflite_takes_quantized_int8_input(tmp_path, photos32, tiny_net):
    cal, held = photos32
    model, reference = tiny_net
    model.train()
    try:
        out = quantize_tflite(model, tmp_path / "tiny.tflite", _batches(cal, 8),
                              ModelIO.image(32), TfliteQuantOptions(calibration="minmax"))
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
    out = quantize_tflite(model, tmp_path / "keep.tflite", _batches(cal), ModelIO.image(32),
                          TfliteQuantOptions(keep_float=("stem", "head")))
    with open_runtime(out) as rt:
        assert rt.input_specs()[0].dtype == "float32"  # the first layer is float
    assert "int8" in _tensor_dtypes(out)  # the block in between is not
    assert parity(reference, artifact_embeddings(out, held)).cosine_mean > 0.995


def test_tflite_keep_float_names_must_be_modules(tmp_path, tiny_net):
    with pytest.raises(ExportError, match="not modules"):
        quantize_tflite(tiny_net[0], tmp_path / "x.tflite", [], ModelIO.image(32),
                        TfliteQuantOptions(keep_float=("features.0",)))


def test_tflite_rejects_calibration_shaped_otherwise(tmp_path, tiny_net):
    with pytest.raises(ExportError, match=r"shaped \(N, 3, 32, 32\)"):
        quantize_tflite(tiny_net[0], tmp_path / "x.tflite", [np.zeros((2, 32, 32, 3))],
                        ModelIO.image(32))


# --------------------------------------------------------------------------- scorer


def test_the_same_quantizer_serves_the_scorer_with_float_input_and_int8_inside(
        tmp_path, scorer_net, scorer_check):
    model, rows, _ = scorer_net
    out = quantize_tflite(model, tmp_path / "scorer.int8.tflite", _batches(rows, 512),
                          ModelIO.rows(rows.shape[1]), tflite_remedies()[0].options)
    assert "int8" in _tensor_dtypes(out)
    spec, correlation = scorer_check(out)
    assert spec.dtype == "float32" and spec.shape == (1, 12)  # standardize stays float
    assert correlation > 0.99


# --------------------------------------------------------------------------- real, student


@pytest.mark.slow
def test_student_int8_tflite_takes_int8_input_and_follows_torch_fp32(tmp_path, student_setup):
    model, _, calibration, held, reference = student_setup
    out = quantize_tflite(model, tmp_path / "student.int8.tflite", calibration,
                          ModelIO.image(64), TfliteQuantOptions(calibration=Calibration.MINMAX))
    with open_runtime(out) as rt:
        spec = rt.input_specs()[0]
    assert spec.dtype == "int8" and spec.shape == (1, 64, 64, 3) and spec.scale
    report = parity(reference, artifact_embeddings(out, held))  # the adapter quantizes input
    assert report.cosine_mean > 0.93, report  # measured 0.967
