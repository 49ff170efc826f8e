"""torch -> ONNX and torch -> TFLite conversion of image encoders (fp32).

Recipes from TOOLCHAIN.md: the dynamo ONNX exporter at opset 18 with a dynamic batch and no
external data; litert-torch for TFLite with channels-last (NHWC) input, which is what LiteRT
runs fastest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch
from torch import nn

__all__ = ["to_onnx", "to_tflite"]

PathLike = Union[str, os.PathLike]


def to_onnx(model: nn.Module, path: PathLike, image_size: int, *, input_name: str = "image",
            output_name: str = "embedding") -> Path:
    """Export ``model`` (N, 3, S, S) -> (N, D) to a single-file ONNX with a dynamic batch."""
    path = Path(path)
    x = torch.randn(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model.eval(), (x,), str(path), dynamo=True, opset_version=18, external_data=False,
        input_names=[input_name], output_names=[output_name], dynamic_shapes={"x": {0: batch}},
        verbose=False,
    )
    return path


def to_tflite(model: nn.Module, path: PathLike, image_size: int) -> Path:
    """Convert ``model`` to an fp32 ``.tflite`` taking (1, S, S, 3) NHWC input."""
    import litert_torch

    path = Path(path)
    nhwc = litert_torch.to_channel_last_io(model.eval(), args=[0])
    x = torch.randn(1, image_size, image_size, 3)
    litert_torch.convert(nhwc.eval(), (x,)).export(str(path))
    return path
