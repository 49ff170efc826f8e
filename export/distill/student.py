"""Student encoders: torchvision MobileNetV3 bodies with an embedding head, built exportable.

A small registry of named recipes, as in timm: ``create_student("mobilenet_v3_small")``;
:func:`resolve_student` is the one place a name and the caller's overrides become a
:class:`StudentConfig` (None keeps the registry's value).
Students start from random weights (nothing is downloaded) and are built for export:

- every ``nn.AdaptiveAvgPool2d(1)`` (squeeze-excitation blocks and the final pool) becomes a
  plain spatial mean, which the ONNX exporter turns into one ReduceMean instead of a Gather
  chain;
- BatchNorm momentum is 0.1, not torchvision's 0.01, whose running statistics lag a network
  trained from scratch and collapse evaluation;
- ``forward`` ends at the un-normalised embedding; L2 normalisation happens outside the graph
  (in numpy on the device), because it quantizes badly inside int8 graphs.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from edgerec.export.options import StudentConfig, resolve_student
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

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


_BODIES: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v3_small": mobilenet_v3_small,
    "mobilenet_v3_large": mobilenet_v3_large,
}


class StudentEncoder(nn.Module):
    """MobileNetV3 features -> spatial mean -> MLP head -> D-dim embedding (not normalised).

    Input: (N, 3, S, S) float32, normalised with the bundle's mean/std. Output: (N, D) float32.
    """

    def __init__(self, config: StudentConfig):
        super().__init__()
        if config.arch not in _BODIES:
            raise ValueError(f"unknown student arch {config.arch!r}; choose from {list(_BODIES)}")
        body = _BODIES[config.arch](weights=None, width_mult=config.width)
        self.config = config
        self.features = body.features
        self.pool = SpatialMean()
        channels = body.classifier[0].in_features
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
