"""A TFLite model with an inner tensor as its output (edgerec.export.distill.tflite_output): a
classifier's pooled features as a teacher."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import SHARED, TEACHER, sample_images
from edgerec.export.data.views import make_views
from edgerec.export.distill.teacher import Teacher
from edgerec.export.distill.tflite_output import tensor_names, with_output
from edgerec.export.errors import ExportError
from edgerec.sdk import load_image

V2 = SHARED / "models" / "teachers" / "mobilenet_v2_1.0_224_quant.tflite"


def _views(n: int = 3) -> np.ndarray:
    return np.concatenate([make_views(load_image(p), 1, 224, 0) for p, _ in sample_images(1)[:n]])


def test_the_named_tensor_becomes_the_output_and_matches_the_full_graph(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    names = tensor_names(TEACHER.read_bytes())
    relu = "MobilenetV1/MobilenetV1/Conv2d_13_depthwise/Relu6"  # the last block's activation
    inner = next(n for n in names if n.startswith(relu))
    out = with_output(TEACHER, inner, tmp_path / "inner.tflite")
    patched = Interpreter(str(out))
    patched.allocate_tensors()
    assert patched.get_output_details()[0]["name"] == inner
    assert list(patched.get_output_details()[0]["shape"]) == [1, 7, 7, 1024]
    with warnings.catch_warnings():  # "for debugging purposes only": that is what this is
        warnings.simplefilter("ignore", UserWarning)
        full = Interpreter(str(TEACHER), experimental_preserve_all_tensors=True)
    full.allocate_tensors()
    x = _views(1)
    for it in (patched, full):
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
    got = patched.get_tensor(patched.get_output_details()[0]["index"])
    np.testing.assert_array_equal(got, full.get_tensor(names.index(inner)))
    assert len(TEACHER.read_bytes()) == out.stat().st_size  # one int32 changed, nothing moved


def test_an_unknown_tensor_or_a_file_that_is_not_tflite_is_refused(tmp_path):
    with pytest.raises(ExportError, match="no tensor named 'nope'"):
        with_output(TEACHER, "nope", tmp_path / "x.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(ExportError, match="TFL3"):
        with_output(bad, "x", tmp_path / "y.tflite")


@pytest.mark.skipif(not V2.is_file(), reason="../shared/models/teachers is not here")
def test_the_shipped_classifier_serves_its_pooled_features_as_a_teacher(tmp_path):
    out = with_output(V2, "MobilenetV2/Logits/AvgPool", tmp_path / "v2-features.tflite")
    teacher = Teacher.load(out, tmp_path)
    try:
        assert teacher.dim == 1280 and teacher.input_size == 224
        vectors = teacher.embed_views(_views(3))
    finally:
        teacher.close()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (vectors >= 0).all() and vectors[0] @ vectors[1] < 0.99  # pooled ReLU6 features
