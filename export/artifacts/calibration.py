"""What both int8 quantizers (:mod:`.quantize_onnx`, :mod:`.quantize_tflite`) share: the
:class:`Calibration` methods and the streaming of calibration batches.

Calibration data is any re-iterable of float32 batches ``(N, *sample_shape)`` (numpy or
torch), prepared as the model expects its input: an encoder's NCHW images normalised with the
bundle's Preprocessing, a scorer's ``[u, v, u*v]`` rows. Quantizers read it one batch at a
time, so statistics are streamed, never buffered.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from typing import Optional

import numpy as np
from edgerec.export.errors import ExportError

__all__ = ["Calibration", "calibration_batches", "checked_common_options"]


class Calibration(str, enum.Enum):
    """How activation ranges are chosen from the calibration data.

    ONNX takes ``MINMAX``, ``PERCENTILE`` and ``ENTROPY`` (onnxruntime's calibrators); TFLite
    takes ``MINMAX`` and ``HISTOGRAM`` (torchao observers; ``HISTOGRAM`` picks the range that
    minimises the L2 quantization error, litert-torch's default).
    """

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    HISTOGRAM = "histogram"


def checked_common_options(max_samples: Optional[int],
                           keep_float: Sequence[str]) -> tuple[str, ...]:
    """Validate the options both quantizers take; returns ``keep_float`` as a tuple.

    Raises:
        ValueError: ``max_samples`` is below 1.
        TypeError: ``keep_float`` is a single string instead of a tuple of names.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}.")
    if isinstance(keep_float, str):
        raise TypeError("keep_float takes a tuple of names, not a single string.")
    return tuple(keep_float)


def _shape_text(sample_shape: Sequence[Optional[int]]) -> str:
    return "(N, " + ", ".join("?" if d is None else str(d) for d in sample_shape) + ")"


def calibration_batches(calibration: Iterable, sample_shape: Sequence[Optional[int]],
                        max_samples: Optional[int] = None) -> Iterator[np.ndarray]:
    """Float32 batches ``(n, *sample_shape)`` from ``calibration``, ``max_samples`` in total.

    ``None`` in ``sample_shape`` accepts any size on that axis; a single sample (without the
    first axis) becomes a batch of one. Iteration stops as soon as ``max_samples`` are given.

    Raises:
        ExportError: a batch has another shape, or ``calibration`` holds no sample.
    """
    seen = 0
    for batch in calibration:
        if hasattr(batch, "detach"):  # a torch tensor
            batch = batch.detach().cpu().numpy()
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == len(sample_shape):
            x = x[None]
        if x.ndim != len(sample_shape) + 1 or any(
                want is not None and got != want for got, want in zip(x.shape[1:], sample_shape)):
            raise ExportError(
                f"Calibration batches must be float32 arrays shaped {_shape_text(sample_shape)} "
                f"like the model's input; got shape {x.shape}. Prepare them as the model expects "
                "its input (images: NCHW, with the bundle's Preprocessing)."
            )
        if max_samples is not None:
            x = x[: max_samples - seen]
        if len(x):
            seen += len(x)
            yield x
        if max_samples is not None and seen >= max_samples:
            return
    if seen == 0:
        raise ExportError("The calibration data is empty; pass at least one batch of samples.")
