"""PT2E int8 quantization of a torch model into a LiteRT ``.tflite``, any role.

:func:`quantize_tflite`: ``torch.export`` -> ``prepare_pt2e`` with litert-torch's symmetric
(per-channel) int8 quantizer -> calibrate on real data -> ``convert_pt2e`` -> litert-torch.
Activations and weights are int8 on every target. The model's first quantized op decides the
input tensor's type: int8 when the first layer is quantized (the edgerec LiteRT adapter
quantizes float input with the tensor's scale and zero point), float32 when it is kept float.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

from edgerec.export.artifacts.calibration import (
    Calibration,
    calibration_batches,
    checked_common_options,
)
from edgerec.export.artifacts.convert import ModelIO
from edgerec.export.errors import ExportError

__all__ = ["TfliteQuantOptions", "quantize_tflite"]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class TfliteQuantOptions:
    """PT2E int8 quantization for LiteRT (int8 activations, symmetric int8 weights).

    Attributes:
        per_channel: one weight scale per output channel.
        calibration: ``HISTOGRAM`` (litert-torch's default) or ``MINMAX``.
        max_samples: use at most this many calibration samples (images, rows; ``None``: all).
        keep_float: torch module names (e.g. ``"features.0"``, ``"head"``) whose ops stay float.
    """

    per_channel: bool = True
    calibration: Calibration = Calibration.HISTOGRAM
    max_samples: Optional[int] = None
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibration", Calibration(self.calibration))
        object.__setattr__(self, "keep_float",
                           checked_common_options(self.max_samples, self.keep_float))
        if self.calibration not in (Calibration.HISTOGRAM, Calibration.MINMAX):
            raise ValueError("TFLite (PT2E) calibration is histogram or minmax.")


def _in_modules(node, names: frozenset) -> bool:
    """True when an exported graph node comes from one of the (wrapped) modules ``names``."""
    for qualified, _ in node.meta.get("nn_module_stack", {}).values():
        name = qualified.removeprefix("wrapped.")  # to_channel_last_io's wrapper
        if any(name == n or name.startswith(n + ".") for n in names):
            return True
    return False


def _pt2e_quantizer(options: TfliteQuantOptions):
    """litert-torch's symmetric int8 PT2E quantizer, with our observer and float layers."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.observer import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=options.per_channel)
    if options.calibration is Calibration.MINMAX:
        act = replace(config.input_activation,
                      observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = replace(config, input_activation=act, output_activation=act)
    keep = frozenset(options.keep_float)

    class _Quantizer(PT2EQuantizer):
        # litert-torch's own module-name filter does not match torch 2.14's module stack keys
        # and refuses a None config, so the float layers are filtered here.
        def _annotate_for_static_quantization_config(self, model):
            self._annotate_all_static_patterns(
                model, self.global_config, lambda n: not _in_modules(n, keep))
            return model

    return _Quantizer().set_global(config)


def quantize_tflite(
    model,
    out: PathLike,
    calibration: Iterable,
    io: ModelIO,
    options: TfliteQuantOptions = TfliteQuantOptions(),
) -> Path:
    """Quantize a torch model to an int8 ``.tflite`` taking one sample (batch of one).

    Args:
        model: ``nn.Module`` float32 ``(N, *io.sample_shape)`` -> output; an encoder ends
            before any L2 normalisation. Not changed (a copy is quantized).
        out: where to write the ``.tflite``.
        calibration: re-iterable of float32 batches ``(n, *io.sample_shape)`` (numpy or
            torch; images NCHW even with ``io.channel_last``); iterated once.
        io: the input's shape; with ``io.channel_last`` the file takes ``(1, S, S, 3)`` NHWC.
        options: :class:`TfliteQuantOptions`.

    An int8 input tensor must be fed through ``edgerec.runtimes.open_runtime``, which
    quantizes float32 input with the tensor's scale and zero point (casting floats to int8
    directly runs and gives garbage).

    Raises:
        ExportError: a ``keep_float`` name is not a module of ``model``, or the calibration
            data is empty or shaped otherwise.
    """
    import litert_torch
    import torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    out = Path(out)
    keep = set(options.keep_float)
    names = {name for name, _ in model.named_modules()}
    if keep - names:
        raise ExportError(f"keep_float names {sorted(keep - names)} are not modules of the model.")
    wrapped = copy.deepcopy(model).eval()
    if io.channel_last:
        wrapped = litert_torch.to_channel_last_io(wrapped, args=[0]).eval()
    quantizer = _pt2e_quantizer(options)
    # Calibrate with a dynamic batch (observers see whole batches: ~30x faster than one sample
    # at a time); litert_torch.convert re-exports the result with the batch-1 example.
    first = {0: torch.export.Dim(io.axis, min=1, max=1 << 20)}
    # to_channel_last_io's wrapper takes ``*args``: its one input sits in a tuple
    shapes = ((first,),) if io.channel_last else (first,)
    graph = torch.export.export(wrapped, (io.example(2, channel_last=io.channel_last),),
                                dynamic_shapes=shapes).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in calibration_batches(calibration, io.sample_shape, options.max_samples):
            batch = torch.from_numpy(x)
            if io.channel_last:
                batch = batch.permute(0, 2, 3, 1)
            prepared(batch.contiguous())
    converted = convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(converted, (io.example(1, channel_last=io.channel_last),),
                                quant_config=QuantConfig(pt2e_quantizer=quantizer))
    out.parent.mkdir(parents=True, exist_ok=True)
    edge.export(str(out))
    return out
