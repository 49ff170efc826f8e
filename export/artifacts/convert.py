"""torch -> ONNX and torch -> TFLite conversion (fp32) of any one-input, one-output model.

:class:`ModelIO` names the model's tensors and the shape of one sample: an encoder's image
(:meth:`ModelIO.image`: ``(N, 3, S, S)`` in, ``image`` -> ``embedding``) or a scorer's
candidate rows (:meth:`ModelIO.rows`: ``(C, 3D)`` in, ``rows`` -> ``logits``). Both
converters use the dynamo ONNX exporter at opset 18, a dynamic first axis and no external
data; litert-torch for TFLite, with channels-last (NHWC) image input, which is
what LiteRT runs fastest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import nn

__all__ = ["ModelIO", "to_onnx", "to_tflite"]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ModelIO:
    """The one input and one output of an exported model.

    Attributes:
        input_name, output_name: the tensors' names in the ONNX file.
        sample_shape: one sample without the first axis, channels first: ``(3, S, S)`` for an
            image, ``(W,)`` for a row. Inputs and calibration batches are float32
            ``(N, *sample_shape)``.
        axis: name of the ONNX file's dynamic first axis (``"batch"``, ``"candidates"``).
        max_first: the largest first-axis size the ONNX export accepts.
        channel_last: the TFLite file takes NHWC ``(1, S, S, 3)`` images instead of NCHW.
    """

    input_name: str
    output_name: str
    sample_shape: tuple[int, ...]
    axis: str = "batch"
    max_first: int = 4096
    channel_last: bool = False

    @classmethod
    def image(cls, size: int) -> ModelIO:
        """An encoder: float32 ``(N, 3, S, S)`` ``image`` -> ``(N, D)`` ``embedding``; NHWC
        TFLite input."""
        return cls("image", "embedding", (3, int(size), int(size)), channel_last=True)

    @classmethod
    def rows(cls, width: int) -> ModelIO:
        """A scorer: float32 ``(C, W)`` ``rows`` -> ``(C, 1)`` ``logits``, C up to 2**20."""
        return cls("rows", "logits", (int(width),), axis="candidates", max_first=1 << 20)

    def example(self, n: int, *, channel_last: bool = False) -> torch.Tensor:
        """Zeros ``(n, *sample_shape)``; with ``channel_last``, an image as ``(n, S, S, 3)``."""
        shape = self.sample_shape
        if channel_last:
            shape = (*shape[1:], shape[0])
        return torch.zeros(n, *shape)


def to_onnx(model: nn.Module, path: PathLike, io: ModelIO) -> Path:
    """Export ``model`` (eval mode) to a single-file fp32 ONNX at ``path``.

    The input ``io.input_name`` is float32 ``(N, *io.sample_shape)`` with N dynamic (named
    ``io.axis``, 1 to ``io.max_first``); the output is ``io.output_name``.
    """
    path = Path(path)
    first = torch.export.Dim(io.axis, min=1, max=io.max_first)
    torch.onnx.export(
        model.eval(), (io.example(2),), str(path), dynamo=True, opset_version=18,
        external_data=False, input_names=[io.input_name], output_names=[io.output_name],
        dynamic_shapes={"x": {0: first}}, verbose=False,
    )
    return path


def to_tflite(model: nn.Module, path: PathLike, io: ModelIO) -> Path:
    """Convert ``model`` (eval mode) to an fp32 ``.tflite`` at ``path``.

    Saved with a batch of one: float32 ``(1, *io.sample_shape)`` input, or ``(1, S, S, 3)``
    with ``io.channel_last`` (LiteRT resizes the first axis to the batch it is given).
    """
    import litert_torch

    path = Path(path)
    model = model.eval()
    if io.channel_last:
        model = litert_torch.to_channel_last_io(model, args=[0]).eval()
    litert_torch.convert(model, (io.example(1, channel_last=io.channel_last),)).export(str(path))
    return path
