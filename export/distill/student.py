"""Student encoders: torchvision MobileNetV3 bodies with an embedding head, built exportable.

A small registry of named recipes, as in timm: ``create_student("mobilenet_v3_small")``;
:func:`resolve_student` is the one place a name and the caller's overrides become a
:class:`StudentConfig` (None keeps the registry's value).
Students start from random weights (nothing is downloaded) and are built for export:

- every ``nn.AdaptiveAvgPool2d(1)`` (squeeze-excitation blocks and the final pool) becomes a
  plain spatial mean, which the ONNX exporter turns into one ReduceMean instead of a Gather
  chain (TOOLCHAIN.md);
- BatchNorm momentum is 0.1, not torchvision's 0.01, whose running statistics lag a network
  trained from scratch and collapse evaluation (TOOLCHAIN.md);
- ``forward`` ends at the un-normalised embedding; L2 normalisation happens outside the graph
  (in numpy on the device), because it quantizes badly inside int8 graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

__all__ = [
    "STUDENTS",
    "SpatialMean",
    "StudentConfig",
    "StudentEncoder",
    "create_student",
    "resolve_student",
]


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


@dataclass(frozen=True)
class StudentConfig:
    """A student recipe.

    Attributes:
        arch: ``"mobilenet_v3_small"`` or ``"mobilenet_v3_large"``.
        width: width multiplier of the torchvision body.
        dim: embedding dimension D.
        image_size: square input side the student is trained and served at.
        hidden: width of the head's hidden layer (0: a single linear layer).
        dropout: dropout before the embedding layer (training only).
        bn_momentum: BatchNorm momentum for every BatchNorm layer.
    """

    arch: str = "mobilenet_v3_small"
    width: float = 1.0
    dim: int = 128
    image_size: int = 192
    hidden: int = 1024
    dropout: float = 0.1
    bn_momentum: float = 0.1


_BODIES: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v3_small": mobilenet_v3_small,
    "mobilenet_v3_large": mobilenet_v3_large,
}

STUDENTS: dict[str, StudentConfig] = {
    "mobilenet_v3_small": StudentConfig(),
    "mobilenet_v3_small_160": StudentConfig(image_size=160),
    "mobilenet_v3_small_075": StudentConfig(width=0.75),
    "mobilenet_v3_large": StudentConfig(arch="mobilenet_v3_large"),
}
"""Named recipes (the first is the export's default: 192 px, 128-d, width 1.0)."""


def resolve_student(name: str = "mobilenet_v3_small", **overrides: Any) -> StudentConfig:
    """The registered recipe ``name`` with the ``overrides`` that are not None.

    Raises:
        ValueError: an unknown name or field.
    """
    if name not in STUDENTS:
        raise ValueError(f"unknown student {name!r}; registered: {sorted(STUDENTS)}")
    return replace(STUDENTS[name], **{k: v for k, v in overrides.items() if v is not None})


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
