"""Student encoders: torchvision MobileNetV3/V2 bodies with an embedding head, built exportable.

A small registry of named recipes, as in timm: ``create_student("mobilenet_v3_small")``;
:func:`resolve_student` is the one place a name and the caller's overrides become a
:class:`StudentConfig` (None keeps the registry's value).
Students start from random weights (nothing is downloaded), or, for ``mobilenet_v2`` and
``mobilenet_v1`` with ``init``, from the ImageNet weights of a MobileNet ``.tflite`` already on
disk (:mod:`edgerec.export.distill.tflite_weights`: the shipped V2 classifier, or the shipped
V1 teacher itself; their stride-2 convolutions use TensorFlow's SAME padding either way).
They are built for export:

- every ``nn.AdaptiveAvgPool2d(1)`` (squeeze-excitation blocks and the final pool) becomes a
  plain spatial mean, which the ONNX exporter turns into one ReduceMean instead of a Gather
  chain;
- BatchNorm momentum is 0.1, not torchvision's 0.01, whose running statistics lag a network
  trained from scratch and collapse evaluation;
- ``forward`` ends at the un-normalised embedding; L2 normalisation happens outside the graph
  (in numpy on the device), because it quantizes badly inside int8 graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import torch
from edgerec.export.distill.mobilenet_v1 import mobilenet_v1
from edgerec.export.distill.tflite_weights import load_tflite_body, tf_same_padding
from edgerec.export.errors import ExportError
from edgerec.export.options import DistillConfig, StudentConfig, resolve_student
from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small

__all__ = ["SpatialMean", "StudentEncoder", "create_student"]


class SpatialMean(nn.Module):
    """``x.mean((2, 3), keepdim=True)``: an exportable ``AdaptiveAvgPool2d(1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


def _replace_adaptive_pools(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
            setattr(module, name, SpatialMean())
        else:
            _replace_adaptive_pools(child)


def _mobilenet_v2_tf(**kwargs: Any) -> nn.Module:
    """torchvision's MobileNetV2 with TensorFlow's SAME padding on its stride-2 convolutions."""
    body = mobilenet_v2(**kwargs)
    tf_same_padding(body.features)
    return body


def _mobilenet_v1_tf(**kwargs: Any) -> nn.Module:
    """MobileNetV1 with TensorFlow's SAME padding on its stride-2 convolutions."""
    body = mobilenet_v1(**kwargs)
    tf_same_padding(body.features)
    return body


_BODIES: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v3_small": mobilenet_v3_small,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v2": _mobilenet_v2_tf,
    "mobilenet_v1": _mobilenet_v1_tf,
}
_INIT_ARCHS = {"mobilenet_v2": "MobileNetV2", "mobilenet_v1": "MobileNetV1"}
"""The arches ``config.init`` can load (TFLite weights), with the name the loader checks."""


class StudentEncoder(nn.Module):
    """MobileNet features -> spatial mean -> head (MLP or linear) -> D-dim embedding (not
    normalised).

    Input: (N, 3, S, S) float32, normalised with the bundle's mean/std (``mean``/``std``: the
    per-channel normalisation of [0, 1] pixels, which ``config.init`` weights are adapted to).
    Output: (N, D) float32.

    Raises:
        ExportError: ``config.init`` on an arch other than ``mobilenet_v2`` / ``mobilenet_v1``,
            or weights that do not fit (see
            :func:`~edgerec.export.distill.tflite_weights.load_tflite_body`).
    """

    def __init__(self, config: StudentConfig, *, mean: Sequence[float] = DistillConfig.mean,
                 std: Sequence[float] = DistillConfig.std):
        super().__init__()
        if config.arch not in _BODIES:
            raise ValueError(f"unknown student arch {config.arch!r}; choose from {list(_BODIES)}")
        if config.init is not None and config.arch not in _INIT_ARCHS:
            raise ExportError(f"--student-init loads MobileNet V1/V2 weights, but the student is "
                              f"a {config.arch}; choose a mobilenet_v2 or mobilenet_v1 student "
                              "(e.g. --student mobilenet_v2_160).")
        body = _BODIES[config.arch](weights=None, width_mult=config.width)
        if config.init is not None:
            load_tflite_body(body.features, config.init, arch=_INIT_ARCHS[config.arch],
                             mean=mean, std=std)
        self.config = config
        self.features = body.features
        self.pool = SpatialMean()
        channels = next(m for m in body.classifier if isinstance(m, nn.Linear)).in_features
        if config.hidden:
            self.head = nn.Sequential(
                nn.Linear(channels, config.hidden),
                nn.Hardswish(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.dim),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(channels, config.dim))
        _replace_adaptive_pools(self)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = config.bn_momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def create_student(name: str = "mobilenet_v3_small", **overrides: Any) -> StudentEncoder:
    """Build a registered student recipe with optional field overrides (e.g. ``dim=64``;
    None keeps the registry's value)."""
    return StudentEncoder(resolve_student(name, **overrides))
