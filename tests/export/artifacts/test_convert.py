"""One torch -> ONNX and one torch -> TFLite converter (edgerec.export.artifacts.convert) for
both roles: an image encoder (NCHW ONNX, NHWC TFLite) and the scorer (rows -> logits)."""

import numpy as np
import onnx
import pytest
import torch
from edgerec.export.artifacts.convert import ModelIO, to_onnx, to_tflite
from edgerec.runtimes import open_runtime


def _onnx_io(path) -> list:
    graph = onnx.load(str(path)).graph
    return [(t.name, t.type.tensor_type.elem_type,
             [d.dim_value or d.dim_param for d in t.type.tensor_type.shape.dim])
            for t in (*graph.input, *graph.output)]


def _run(path, x: np.ndarray, one_at_a_time: bool = False) -> np.ndarray:
    with open_runtime(path) as rt:
        name, out = rt.input_specs()[0].name, rt.output_specs()[0].name
        if one_at_a_time:
            return np.concatenate([rt.run({name: x[i : i + 1]})[out] for i in range(len(x))])
        return rt.run({name: x})[out]


def test_model_io_describes_each_role():
    image, rows = ModelIO.image(32), ModelIO.rows(12)
    assert (image.input_name, image.output_name, image.sample_shape) == (
        "image", "embedding", (3, 32, 32))
    assert image.channel_last and tuple(image.example(2, channel_last=True).shape) == (
        2, 32, 32, 3)
    assert (rows.input_name, rows.output_name, rows.sample_shape, rows.axis) == (
        "rows", "logits", (12,), "candidates")
    assert not rows.channel_last and tuple(rows.example(1).shape) == (1, 12)


def test_encoder_files_take_nchw_onnx_and_nhwc_tflite_and_match_torch(tmp_path, photos32,
                                                                    tiny_net):
    model, _ = tiny_net
    x = np.ascontiguousarray(photos32[1][:5])
    io = ModelIO.image(32)
    onnx_path, tflite_path = to_onnx(model, tmp_path / "e.onnx", io), to_tflite(
        model, tmp_path / "e.tflite", io)
    f32 = onnx.TensorProto.FLOAT
    assert _onnx_io(onnx_path) == [("image", f32, ["batch", 3, 32, 32]),
                                   ("embedding", f32, ["batch", 16])]
    with open_runtime(tflite_path) as rt:
        spec = rt.input_specs()[0]
        assert spec.shape == (1, 32, 32, 3) and spec.dtype == "float32"
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(onnx_path, x), reference, atol=1e-5)
    np.testing.assert_allclose(_run(tflite_path, x.transpose(0, 2, 3, 1).copy(), True),
                               reference, atol=1e-5)


@pytest.mark.parametrize("candidates", [1, 200])
def test_scorer_files_take_rows_with_a_dynamic_first_axis_and_match_torch(
        tmp_path, scorer_net, candidates):
    model, rows, _ = scorer_net
    io = ModelIO.rows(rows.shape[1])
    onnx_path, tflite_path = to_onnx(model, tmp_path / "s.onnx", io), to_tflite(
        model, tmp_path / "s.tflite", io)
    f32 = onnx.TensorProto.FLOAT
    assert _onnx_io(onnx_path) == [("rows", f32, ["candidates", 12]),
                                   ("logits", f32, ["candidates", 1])]
    x = rows[:candidates]
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    for path in (onnx_path, tflite_path):  # LiteRT resizes its batch-1 input
        out = _run(path, x)
        assert out.shape == (candidates, 1) and out.dtype == np.float32
        np.testing.assert_allclose(out, reference, atol=1e-5)
