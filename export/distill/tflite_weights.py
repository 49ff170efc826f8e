"""ImageNet weights for a MobileNet student, read from a quantized TFLite model on disk.

Nothing is downloaded: the shipped ``mobilenet_v2_1.0_224_quant.tflite`` classifier (uint8,
Apache-2.0) holds the whole of torchvision's ``mobilenet_v2`` body, and the shipped
``mobilenet_v1_1.0_224_quant_embedding_extractor.tflite`` teacher the whole of a
:class:`~edgerec.export.distill.mobilenet_v1.MobileNetV1` body, BatchNorm folded into each
convolution. :func:`read_convolutions` dequantizes their CONV_2D / DEPTHWISE_CONV_2D weights
and biases in graph order (``real = scale * (q - zero_point)``, per tensor or per channel;
int32 biases carry ``scale = input_scale * weight_scale``); :func:`load_tflite_body` writes
them into the body's ``features`` (with :func:`tf_same_padding` applied), in module order:

- conv weights OHWI -> torch OIHW; depthwise 1HWO -> torch O1HW;
- each folded bias goes into the following BatchNorm: weight 1, bias = folded bias, running
  mean 0, running variance ``1 - eps`` (the eval-mode BatchNorm is then ``x + bias``);
- the model's input transform (uint8 ``q`` -> ``scale * (q - zero_point)``, i.e. [-1, 1])
  is folded into the first convolution, so the student keeps the export's own
  normalisation (``(x / 255 - mean) / std``); only the zero padding of the first
  convolution's border differs (the mean colour instead of mid grey).

TF ``SAME`` padding on a stride-2 convolution of an even input pads one pixel after (bottom,
right) and none before, where torch pads one on each side: the same weights would then sample
a grid shifted by a pixel at every stride-2 layer. :func:`tf_same_padding` swaps those
convolutions for :class:`SamePadConv2d` (an explicit ``F.pad`` then an unpadded convolution;
ONNX ``Pad`` + ``Conv``, TFLite ``PAD`` + ``CONV_2D``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from edgerec.export.errors import ExportError
from edgerec.runtimes.litert import open_interpreter
from torch import nn

__all__ = [
    "SamePadConv2d",
    "TFLiteConvolution",
    "load_tflite_body",
    "read_convolutions",
    "tf_same_padding",
]

PathLike = Union[str, os.PathLike]

_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


@dataclass(frozen=True)
class TFLiteConvolution:
    """One dequantized convolution of a TFLite graph, in torch layout.

    Attributes:
        name: the weight tensor's name.
        depthwise: a DEPTHWISE_CONV_2D.
        weight: (O, I, kH, kW) float32 (depthwise: (O, 1, kH, kW)).
        bias: (O,) float32, the folded BatchNorm's shift.
    """

    name: str
    depthwise: bool
    weight: np.ndarray
    bias: np.ndarray


def _dequantize(q: np.ndarray, detail: dict, name: str) -> np.ndarray:
    """``scale * (q - zero_point)`` float32, per tensor or along ``quantized_dimension``."""
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), np.float64)
    zeros = np.asarray(params.get("zero_points", ()), np.float64)
    if q.dtype.kind == "f":
        return q.astype(np.float32)
    if scales.size == 0:
        raise ExportError(f"tensor {name!r} is {q.dtype} without quantization parameters; "
                          "expected a quantized MobileNet .tflite.")
    if zeros.size == 0:
        zeros = np.zeros_like(scales)
    if scales.size > 1:
        shape = [1] * q.ndim
        shape[int(params.get("quantized_dimension", 0))] = scales.size
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return (scales * (q.astype(np.float64) - zeros)).astype(np.float32)


def read_convolutions(path: PathLike) -> tuple[list[TFLiteConvolution], tuple[float, float]]:
    """Every convolution of a TFLite model in graph order, dequantized, and the input's
    transform ``real = a * q + c`` as ``(a, c)`` for uint8 ``q`` ((1.0, 0.0) for float input).

    Raises:
        ExportError: the file cannot be read by LiteRT or has no convolutions.
    """
    path = Path(path)
    try:
        it = open_interpreter(path, allocate=False)
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"LiteRT cannot read {path}: {exc}. --student-init needs the "
                          "MobileNet 1.0 .tflite of the student's arch.") from None
    details = {d["index"]: d for d in it.get_tensor_details()}
    convs = []
    for op in it._get_ops_details():  # graph order; LiteRT has no public op listing
        if op["op_name"] not in _CONV_OPS or len(op["inputs"]) < 3:
            continue
        w, b = details[int(op["inputs"][1])], details[int(op["inputs"][2])]
        weight = _dequantize(it.get_tensor(w["index"]), w, w["name"])
        bias = (_dequantize(it.get_tensor(b["index"]), b, b["name"]) if int(op["inputs"][2]) >= 0
                else np.zeros(weight.shape[0 if op["op_name"] == "CONV_2D" else 3], np.float32))
        depthwise = op["op_name"] == "DEPTHWISE_CONV_2D"
        # OHWI -> OIHW; depthwise 1HWO -> O1HW
        weight = weight.transpose(3, 0, 1, 2) if depthwise else weight.transpose(0, 3, 1, 2)
        convs.append(TFLiteConvolution(w["name"], depthwise, np.ascontiguousarray(weight),
                                       bias.reshape(-1)))
    if not convs:
        raise ExportError(f"{path.name} has no convolutions; --student-init needs the "
                          "MobileNet 1.0 .tflite of the student's arch.")
    inp = it.get_input_details()[0]
    scales = inp["quantization_parameters"]["scales"]
    if inp["dtype"] == np.float32 or len(scales) == 0:
        return convs, (1.0, 0.0)
    scale = float(scales[0])
    zero = float(inp["quantization_parameters"]["zero_points"][0])
    return convs, (scale, -scale * zero)


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's ``SAME`` padding: the extra pixel of an even total pad
    goes after (bottom/right). Same parameters as :class:`torch.nn.Conv2d` with padding 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                              reversed(self.stride)):
            total = max((math.ceil(int(size) / s) - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]
        return self._conv_forward(F.pad(x, pads), self.weight, self.bias)


def tf_same_padding(module: nn.Module) -> nn.Module:
    """Swap every strided, padded ``nn.Conv2d`` of ``module`` (in place) for a
    :class:`SamePadConv2d` with the same parameters; returns ``module``."""
    for name, child in module.named_children():
        if (type(child) is nn.Conv2d and max(child.stride) > 1
                and child.padding != (0, 0) and child.padding != "valid"):
            new = SamePadConv2d(child.in_channels, child.out_channels, child.kernel_size,
                                child.stride, 0, child.dilation, child.groups,
                                child.bias is not None)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            tf_same_padding(child)
    return module


def _pairs(features: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, the BatchNorm right after it) of every convolution, in module order."""
    modules = [m for m in features.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    pairs = []
    for conv, bn in zip(modules[::2], modules[1::2]):
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise ExportError("the student body is not conv/BatchNorm pairs; --student-init "
                              "loads a MobileNetV1 or MobileNetV2 body only.")
        pairs.append((conv, bn))
    return pairs


@torch.no_grad()
def load_tflite_body(features: nn.Module, path: PathLike, *, arch: str = "MobileNetV2",
                     mean: Sequence[float] = (0.485, 0.456, 0.406),
                     std: Sequence[float] = (0.229, 0.224, 0.225)) -> int:
    """Load the ImageNet weights of the TFLite MobileNet 1.0 at ``path`` (``arch``:
    ``"MobileNetV2"``, the classifier, into torchvision ``mobilenet_v2(weights=None).features``;
    ``"MobileNetV1"``, the embedding extractor, into ``MobileNetV1().features``), for an input
    normalised as ``(x / 255 - mean) / std`` per RGB channel. Returns the convolutions loaded.

    The TFLite graph's convolutions are matched to the body's in order; any after them (the
    V2 classifier's 1001-class logits) are not used.

    Raises:
        ExportError: the file is not an ``arch`` 1.0 (count or shape of a convolution
            differs), or the body is not conv/BatchNorm pairs.
    """
    path = Path(path)
    example = {"MobileNetV1": "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"}.get(
        arch, "mobilenet_v2_1.0_224_quant.tflite")
    if not path.is_file():
        raise ExportError(f"--student-init {path}: no such file. It takes the {arch} 1.0 "
                          f".tflite (e.g. {example}).")
    convs, (a, c) = read_convolutions(path)
    pairs = _pairs(features)
    if len(convs) < len(pairs):
        raise ExportError(f"{path.name} has {len(convs)} convolutions, the {arch} body "
                          f"{len(pairs)}: it is not a {arch} 1.0.")
    for i, ((conv, bn), src) in enumerate(zip(pairs, convs)):
        if tuple(conv.weight.shape) != src.weight.shape or (conv.groups > 1) != src.depthwise:
            raise ExportError(
                f"{path.name}: convolution {i} ({src.name!r}) is {src.weight.shape}"
                f"{' depthwise' if src.depthwise else ''}, the student's "
                f"{tuple(conv.weight.shape)}: it is not a {arch} 1.0 (or the "
                "student is not width 1.0).")
        weight = torch.from_numpy(src.weight).double()
        bias = torch.from_numpy(src.bias).double()
        if i == 0:  # fold x_tflite = a * (255 * (std * x_n + mean)) + c into the first conv
            s = torch.tensor(std, dtype=torch.float64) * 255 * a
            m = torch.tensor(mean, dtype=torch.float64) * 255 * a + c
            bias = bias + (weight * m.view(1, -1, 1, 1)).sum((1, 2, 3))
            weight = weight * s.view(1, -1, 1, 1)
        conv.weight.copy_(weight.float())
        bn.weight.fill_(1.0)
        bn.bias.copy_(bias.float())
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
    return len(pairs)
