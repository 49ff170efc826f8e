import numpy as np
import pytest
from edgerec.runtimes import TensorSpec, dequantize, quantize


def test_quantize_rounds_and_clips_to_uint8_range():
    spec = TensorSpec("x", (None, 4), "uint8", scale=0.5, zero_point=10)
    q = quantize(np.array([[-100.0, 0.0, 1.26, 1000.0]], np.float32), spec)
    assert q.dtype == np.uint8
    assert q.tolist() == [[0, 10, 13, 255]]


def test_quantize_then_dequantize_is_within_half_a_step():
    spec = TensorSpec("x", (None, 100), "int8", scale=0.02, zero_point=-3)
    x = np.linspace(-2.0, 2.0, 100, dtype=np.float32)[None]
    back = dequantize(quantize(x, spec), spec)
    assert np.abs(back - x).max() <= 0.01 + 1e-6


def test_integer_tensor_without_scale_is_cast_with_rounding():
    spec = TensorSpec("x", (None, 3), "uint8")
    assert quantize(np.array([[1.4, 1.6, 300.0]]), spec).tolist() == [[1, 2, 255]]
    assert dequantize(np.array([[7]], np.uint8), spec).dtype == np.float32


def test_float_tensors_pass_through_as_float32():
    spec = TensorSpec("x", (None, 2), "float32")
    x = np.array([[0.1, 0.2]], np.float64)
    assert quantize(x, spec).dtype == np.float32
    assert not spec.quantized


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_matches_tflite_formula(dtype):
    spec = TensorSpec("x", (None, 5), dtype, scale=0.1, zero_point=0 if dtype == "int8" else 128)
    x = np.array([[-1.0, -0.05, 0.0, 0.05, 1.0]], np.float32)
    expected = np.clip(np.rint(x / 0.1) + spec.zero_point, *(
        (np.iinfo(dtype).min, np.iinfo(dtype).max)))
    assert quantize(x, spec).astype(int).tolist() == expected.astype(int).tolist()
