"""ONNX Runtime and LiteRT agree on one network exported to both formats."""

import numpy as np
from conftest import TINY_ONNX, TINY_TFLITE
from edgerec.runtimes import RuntimeOptions, open_runtime


def test_onnx_runtime_and_litert_give_the_same_embedding():
    x = np.random.default_rng(1).normal(size=(6, 3, 32, 32)).astype(np.float32)
    opts = RuntimeOptions(num_threads=1)
    ort, lr = open_runtime(TINY_ONNX, options=opts), open_runtime(TINY_TFLITE, options=opts)
    with ort, lr:
        a = ort.run({"image": x})["embedding"]
        name = lr.input_specs()[0].name
        b = next(iter(lr.run({name: x.transpose(0, 2, 3, 1)}).values()))
    assert a.shape == b.shape == (6, 16)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
