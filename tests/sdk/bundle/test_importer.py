"""Bring your own model: what imports, and what is refused with a useful message."""

import numpy as np
import onnx
import pytest
from conftest import TEACHER, TINY_ONNX, TINY_TFLITE
from edgerec.sdk import (
    Bundle,
    BundleError,
    ImportOptions,
    Layout,
    ModelError,
    Precision,
    TensorSpec,
    import_model,
    raw_pixel_normalization,
)
from onnx import TensorProto, helper

NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def _onnx_model(path, inputs, outputs, nodes):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _vec(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_raw_pixel_normalisation_inverts_the_input_quantization():
    mean, std = raw_pixel_normalization(TensorSpec("x", (1,), "uint8", 0.0078125, 128))
    pixels = np.arange(256, dtype=np.float32)
    real = (pixels / 255 - mean) / std
    assert np.array_equal(np.rint(real / 0.0078125 + 128), pixels)
    assert raw_pixel_normalization(TensorSpec("x", (1,), "float32")) == (0.0, 1 / 255)


def test_teacher_imports_with_its_detected_properties(teacher_bundle):
    (art,) = teacher_bundle.artifacts()
    assert art.precision is Precision.INT8 and art.layout is Layout.NHWC
    assert teacher_bundle.embedding_dim == 1024 and teacher_bundle.preprocessing.input_size == 224
    assert teacher_bundle.manifest.recipe["sources"][0]["sha256"].startswith("f409ef4f")


def test_layout_and_size_are_inferred_per_format(tiny_bundle):
    layouts = {a.engine.value: a.layout for a in tiny_bundle.artifacts()}
    assert layouts == {"onnx": Layout.NCHW, "tflite": Layout.NHWC}
    assert tiny_bundle.preprocessing.input_size == 32


def test_import_needs_a_stated_normalisation(tmp_path):
    with pytest.raises(ModelError, match="--mean and --std"):
        import_model([TINY_ONNX], tmp_path / "b", ImportOptions())
    assert not (tmp_path / "b").exists()


def test_import_refuses_a_size_the_model_does_not_take(tmp_path):
    with pytest.raises(ModelError, match="takes 224x224 images, not 160"):
        import_model([TEACHER], tmp_path / "b", ImportOptions(raw_pixels=True, input_size=160))


def test_import_refuses_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "fake.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(ModelError):
        import_model([bad], tmp_path / "b", ImportOptions(**NORM))
    with pytest.raises(ModelError, match=r"neither \.onnx nor \.tflite"):
        import_model([tmp_path / "weights.pt"], tmp_path / "b", ImportOptions(**NORM))


def test_import_refuses_a_model_whose_input_is_not_an_image(tmp_path):
    model = _onnx_model(tmp_path / "mlp.onnx", [_vec("x", [None, 8])], [_vec("y", [None, 8])],
                        [helper.make_node("Relu", ["x"], ["y"])])
    with pytest.raises(ModelError, match="4-D batch"):
        import_model([model], tmp_path / "b", ImportOptions(**NORM))
    one_channel = _onnx_model(
        tmp_path / "grey.onnx", [_vec("x", [None, 1, 8, 8])], [_vec("y", [None, 1, 8, 8])],
        [helper.make_node("Relu", ["x"], ["y"])],
    )
    with pytest.raises(ModelError, match="cannot tell the layout"):
        import_model([one_channel], tmp_path / "b", ImportOptions(**NORM))


def test_import_needs_output_when_the_model_has_several(tmp_path):
    model = _onnx_model(
        tmp_path / "two.onnx", [_vec("x", [None, 3, 8, 8])],
        [_vec("a", [None, 3, 8, 8]), _vec("b", [None, 3, 8, 8])],
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])],
    )
    with pytest.raises(ModelError, match=r"outputs \['a', 'b'\]; pass --output"):
        import_model([model], tmp_path / "b", ImportOptions(**NORM))
    b = import_model([model], tmp_path / "b", ImportOptions(**NORM, output="b"))
    assert b.embedding_dim == 3 * 8 * 8 and b.artifacts()[0].output == "b"


def test_dynamic_size_models_need_size(tmp_path):
    model = _onnx_model(tmp_path / "dyn.onnx", [_vec("x", [None, 3, None, None])],
                        [_vec("y", [None, 3])],
                        [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                         helper.make_node("Flatten", ["p"], ["y"])])
    with pytest.raises(ModelError, match="pass --size"):
        import_model([model], tmp_path / "b", ImportOptions(**NORM))
    b = import_model([model], tmp_path / "b", ImportOptions(**NORM, input_size=48))
    assert b.preprocessing.input_size == 48 and b.embedding_dim == 3


def test_models_that_disagree_are_refused(tmp_path):
    with pytest.raises(ModelError, match="disagree"):
        import_model([TINY_ONNX, TEACHER], tmp_path / "b", ImportOptions(**NORM, input_size=None))


def test_import_refuses_to_overwrite_without_force(tiny_bundle, tmp_path):
    out = tmp_path / "b"
    import_model([TINY_TFLITE], out, ImportOptions(**NORM))
    with pytest.raises(BundleError, match="already exists"):
        import_model([TINY_ONNX], out, ImportOptions(**NORM))
    b = import_model([TINY_ONNX], out, ImportOptions(**NORM), force=True)
    assert [a.key for a in Bundle.open(out).artifacts()] == [a.key for a in b.artifacts()]
