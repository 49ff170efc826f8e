"""ImageNet weights for a MobileNetV2 student from the shipped .tflite classifier, and for a
MobileNetV1 student from the shipped V1 teacher (edgerec.export.distill.tflite_weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED, TEACHER, sample_images
from edgerec.export.data.views import make_views
from edgerec.export.distill.mobilenet_v1 import mobilenet_v1
from edgerec.export.distill.tflite_output import with_output
from edgerec.export.distill.tflite_weights import (
    SamePadConv2d,
    load_tflite_body,
    tf_same_padding,
)
from edgerec.export.errors import ExportError
from edgerec.sdk import load_image
from torch import nn
from torchvision.models import mobilenet_v2

V2 = SHARED / "models" / "teachers" / "mobilenet_v2_1.0_224_quant.tflite"
needs_v2 = pytest.mark.skipif(
    not V2.is_file(), reason=f"{V2} is not here (the repo does not ship the MobileNetV2 "
    "classifier; it lives in ../shared/models/teachers)")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _views(per_label: int) -> np.ndarray:
    """(N, 224, 224, 3) uint8 device crops of the sample photos."""
    return np.concatenate([make_views(load_image(p), 1, 224, 0)
                           for p, _ in sample_images(per_label)])


def _torch_pooled(features: nn.Module, views: np.ndarray) -> np.ndarray:
    x = (torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255
         - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return features.eval()(x).mean((2, 3)).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _tflite_outputs(path, views: np.ndarray) -> np.ndarray:
    """The model's (dequantized) output for each uint8 view, one invoke per view."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(path))
    it.allocate_tensors()
    out = it.get_output_details()[0]
    scale, zero = out["quantization"]
    rows = []
    for v in views:
        it.set_tensor(it.get_input_details()[0]["index"], v[None])
        it.invoke()
        y = it.get_tensor(out["index"]).reshape(-1).astype(np.float64)
        rows.append(scale * (y - float(zero)) if scale else y)
    return np.stack(rows)


def test_a_mobilenet_v1_body_loads_the_v1_teacher_and_computes_its_embedding():
    views = _views(2)  # 20 photos, 10 labels
    expected = _tflite_outputs(TEACHER, views)  # (20, 1024): the teacher's pooled features
    body = tf_same_padding(mobilenet_v1().features)
    assert load_tflite_body(body, TEACHER, arch="MobileNetV1", mean=MEAN, std=STD) == 27
    got = _cosines(_torch_pooled(body, views), expected)
    assert got.mean() > 0.99 and got.min() > 0.98  # measured 0.9993 mean on 951 posters


@needs_v2
def test_the_loaded_body_computes_the_tflite_classifiers_pooled_features(tmp_path):
    views = _views(2)  # 20 photos, 10 labels
    from ai_edge_litert.interpreter import Interpreter

    pooled = Interpreter(str(with_output(V2, "MobilenetV2/Logits/AvgPool",
                                         tmp_path / "pool.tflite")))
    pooled.allocate_tensors()
    out = pooled.get_output_details()[0]
    scale, zero = out["quantization"]
    expected = []
    for v in views:  # uint8 pixels in, uint8 pooled features out
        pooled.set_tensor(pooled.get_input_details()[0]["index"], v[None])
        pooled.invoke()
        expected.append(scale * (pooled.get_tensor(out["index"]).reshape(-1) - float(zero)))
    expected = np.stack(expected)
    same = tf_same_padding(mobilenet_v2(weights=None).features)
    assert load_tflite_body(same, V2, mean=MEAN, std=STD) == 52
    symmetric = mobilenet_v2(weights=None).features
    load_tflite_body(symmetric, V2, mean=MEAN, std=STD)

    got = _cosines(_torch_pooled(same, views), expected)
    assert got.mean() > 0.99 and got.min() > 0.98  # measured 0.998 / 0.995 on 100 photos
    # torch's symmetric padding shifts every stride-2 layer's grid by a pixel (measured 0.86)
    assert _cosines(_torch_pooled(symmetric, views), expected).mean() < got.mean() - 0.05


def test_same_padding_pads_after_on_even_inputs_and_keeps_the_output_size():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
    model = tf_same_padding(nn.Sequential(conv))
    assert isinstance(model[0], SamePadConv2d) and model[0].padding == (0, 0)
    for size in (8, 9):
        x = torch.randn(2, 4, size, size)
        got = model(x)
        total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
        padded = F.pad(x, (total // 2, total - total // 2) * 2)
        expected = F.conv2d(padded, conv.weight, stride=2)
        assert got.shape[-1] == -(-size // 2)
        torch.testing.assert_close(got, expected)


def test_a_tflite_that_is_not_a_mobilenet_v2_is_refused_with_a_reason(tmp_path):
    features = tf_same_padding(mobilenet_v2(weights=None).features)
    with pytest.raises(ExportError, match=r"not a MobileNetV2 1\.0"):
        load_tflite_body(features, TEACHER)  # the MobileNetV1 teacher: 27 convolutions
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ExportError, match="LiteRT cannot read"):
        load_tflite_body(features, junk)
    with pytest.raises(ExportError, match="no such file"):
        load_tflite_body(features, tmp_path / "missing.tflite")


@needs_v2
def test_v2_weights_are_refused_by_a_mobilenet_v1_body_naming_the_convolution_that_differs():
    body = tf_same_padding(mobilenet_v1().features)
    with pytest.raises(ExportError, match=r"convolution 2 .*not a MobileNetV1 1\.0"):
        load_tflite_body(body, V2, arch="MobileNetV1")


@needs_v2
def test_a_narrower_body_is_refused_naming_the_first_convolution_that_differs():
    features = tf_same_padding(mobilenet_v2(weights=None, width_mult=0.5).features)
    with pytest.raises(ExportError, match=r"convolution 0 .*not width 1\.0"):
        load_tflite_body(features, V2)
