"""ONNX Runtime static int8 quantization (QDQ format) of an fp32 ONNX model, any role.

:func:`quantize_onnx` takes an fp32 model with one float32 input ``(N, ...)`` (dynamic N), as
:func:`~.convert.to_onnx` writes it, and writes an int8 QDQ model that keeps float32 input and
output: weights int8 (per channel by default), activations of the type the
:class:`QuantTarget` fuses, ranges calibrated on real data streamed batch by batch.

Which activation type fuses depends on the CPU that runs the model: on x86
without VNNI only uint8 activations (U8S8) fuse every Conv into QLinearConv, and 7-bit weights
(``reduce_range``) avoid the int16 saturation of its AVX2 kernels; ARM and VNNI CPUs take full
8-bit weights, ARM prefers int8 activations.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import platform
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from edgerec.export.artifacts.calibration import (
    Calibration,
    calibration_batches,
    checked_common_options,
)
from edgerec.export.errors import ExportError

__all__ = ["ActivationType", "OnnxQuantOptions", "QuantTarget", "quantize_onnx"]

PathLike = Union[str, os.PathLike]


class ActivationType(str, enum.Enum):
    """Integer type of quantized activations (weights are always int8)."""

    UINT8 = "uint8"  # U8S8: fuses everywhere on x86 without VNNI
    INT8 = "int8"  # S8S8: preferred by ARM kernels; on x86 without VNNI many Convs stay unfused


class QuantTarget(str, enum.Enum):
    """The CPU family an int8 ONNX model is made to run fastest on (``"x86_avx2"`` and the
    other underscore spellings are accepted too)."""

    X86_AVX2 = "x86-avx2"  # x86 without VNNI (e.g. AMD Zen 3, pre-Cascade-Lake Intel)
    X86_VNNI = "x86-vnni"  # x86 with AVX512-VNNI / AVX-VNNI
    ARM = "arm"  # Cortex-A (Raspberry Pi), Apple silicon, Graviton

    @classmethod
    def _missing_(cls, value: object) -> Optional[QuantTarget]:
        if isinstance(value, str):
            spelled = value.strip().lower().replace("_", "-")
            return next((t for t in cls if t.value == spelled), None)
        return None

    @classmethod
    def for_this_cpu(cls) -> QuantTarget:
        """The target of the CPU this runs on: ``arm`` on arm64, ``x86-vnni`` when
        ``/proc/cpuinfo`` lists ``avx512_vnni`` or ``avx_vnni``, else ``x86-avx2`` (also when
        the flags cannot be read: the choice that never saturates)."""
        from edgerec.sdk.bench.machine import cpu_flags

        if platform.machine().lower() in ("aarch64", "arm64"):
            return cls.ARM
        return cls.X86_VNNI if {"avx512_vnni", "avx_vnni"} & set(cpu_flags()) else cls.X86_AVX2

    @property
    def activation(self) -> ActivationType:
        """The activation type that fuses on this target: uint8 on x86, int8 on ARM."""
        return ActivationType.INT8 if self is QuantTarget.ARM else ActivationType.UINT8

    @property
    def reduce_range(self) -> bool:
        """7-bit weights: only on x86 without VNNI, whose U8S8 kernels saturate otherwise."""
        return self is QuantTarget.X86_AVX2


@dataclass(frozen=True)
class OnnxQuantOptions:
    """ONNX Runtime static int8 quantization (QDQ format).

    Attributes:
        target: :class:`QuantTarget`; sets the activation type and ``reduce_range``.
        per_channel: one weight scale per output channel (else one per tensor).
        calibration: ``MINMAX``, ``PERCENTILE`` or ``ENTROPY``.
        percentile: the kept percentile of |activation| for ``PERCENTILE``.
        entropy_bins: histogram bins for ``ENTROPY`` (> 128, the quantized bins; the KL
            search tries (bins - 128) / 2 + 1 thresholds, in Python: time grows with it).
        max_samples: use at most this many calibration samples (images, rows; ``None``: all).
        keep_float: layers left in float: torch module names of the exported model (e.g.
            ``"features.0"``, matched through the exporter's name scopes, submodules included)
            or ONNX node names. They also read the float tensors they consumed in fp32.
        op_types: the ONNX op types to quantize (e.g. ``("Gemm", "MatMul")``); empty: every
            op type onnxruntime can quantize.
    """

    target: QuantTarget = QuantTarget.X86_AVX2
    per_channel: bool = True
    calibration: Calibration = Calibration.MINMAX
    percentile: float = 99.999
    entropy_bins: int = 256
    max_samples: Optional[int] = None
    keep_float: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", QuantTarget(self.target))
        object.__setattr__(self, "calibration", Calibration(self.calibration))
        object.__setattr__(self, "keep_float",
                           checked_common_options(self.max_samples, self.keep_float))
        if isinstance(self.op_types, str):
            raise TypeError("op_types takes a tuple of ONNX op types, not a single string.")
        object.__setattr__(self, "op_types", tuple(self.op_types))
        if self.calibration is Calibration.HISTOGRAM:
            raise ValueError("ONNX calibration is minmax, percentile or entropy, not histogram.")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}.")
        if self.entropy_bins <= 128:
            raise ValueError(f"entropy_bins must be > 128, got {self.entropy_bins}.")

    @property
    def activation(self) -> ActivationType:
        """The activation type, from :attr:`target`."""
        return self.target.activation

    @property
    def reduce_range(self) -> bool:
        """7-bit weights, from :attr:`target`."""
        return self.target.reduce_range


class _OneBatch:
    """An onnxruntime CalibrationDataReader that yields one input dict, once."""

    def __init__(self, feed: dict[str, np.ndarray]):
        self._feed: Optional[dict[str, np.ndarray]] = feed

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        feed, self._feed = self._feed, None
        return feed


def _onnx_nodes_for(model, names: Sequence[str]) -> list[str]:
    """ONNX node names for ``names``: node names, or torch module names via name scopes."""
    import ast

    wanted, found, used = set(names), [], set()
    for node in model.graph.node:
        scopes: list[str] = []
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                with contextlib.suppress(ValueError, SyntaxError):
                    scopes = list(ast.literal_eval(prop.value))
        hits = wanted.intersection([node.name, *scopes])
        if hits and node.name:
            found.append(node.name)
            used.update(hits)
    missing = sorted(wanted - used)
    if missing:
        raise ExportError(
            f"keep_float names {missing} match no node of the ONNX model; give torch module "
            "names of a model exported by edgerec.export.artifacts.convert.to_onnx, or ONNX node "
            "names."
        )
    return found


def _float_inputs(path: Path, nodes: Sequence[str]) -> None:
    """Feed the float ``nodes`` the float tensors again: ORT's QDQ quantizer gives every
    consumer of a quantized activation the dequantized copy (8-bit), the excluded ones too."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    quantized_from = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    original = {n.output[0]: quantized_from[n.input[0]] for n in graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in quantized_from}
    keep = set(nodes)
    for node in graph.node:
        if node.name in keep:
            for i, name in enumerate(node.input):
                node.input[i] = original.get(name, name)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _input_of(path: Path) -> tuple[str, tuple[Optional[int], ...]]:
    """The model's first input: its name and its per-sample shape (``None``: symbolic)."""
    import onnx

    graph_input = onnx.load(str(path), load_external_data=False).graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim[1:]
    return graph_input.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                   for d in dims)


def _calibration_method(calibration: Calibration):
    """onnxruntime's ``CalibrationMethod`` for ``calibration``."""
    from onnxruntime.quantization import CalibrationMethod

    return {Calibration.MINMAX: CalibrationMethod.MinMax,
            Calibration.PERCENTILE: CalibrationMethod.Percentile,
            Calibration.ENTROPY: CalibrationMethod.Entropy}[calibration]


def _calibrated_ranges(pre: Path, tmp: Path, calibration: Iterable, options: OnnxQuantOptions,
                       op_types: Sequence[str]) -> Path:
    """Collect activation ranges of ``pre`` one batch at a time; returns the cache file."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data

    method = _calibration_method(options.calibration)
    extra = {
        CalibrationMethod.Percentile: {"percentile": options.percentile},
        # onnxruntime's default of 128 bins for 128 quantized bins leaves the KL search a
        # single candidate, the full range: entropy would silently equal minmax
        CalibrationMethod.Entropy: {"num_bins": options.entropy_bins},
    }.get(method, {})
    calibrator = create_calibrator(pre, op_types, augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=method, extra_options=extra)
    input_name, sample_shape = _input_of(pre)
    # the histogram calibrators print a line per call
    with contextlib.redirect_stdout(io.StringIO()):
        for batch in calibration_batches(calibration, sample_shape, options.max_samples):
            calibrator.collect_data(_OneBatch({input_name: batch}))
        ranges = calibrator.compute_data()
    del calibrator
    cache = tmp / "ranges.json"
    save_tensors_data(ranges, cache)
    return cache


def quantize_onnx(
    fp32_onnx: PathLike,
    out: PathLike,
    calibration: Iterable,
    options: OnnxQuantOptions = OnnxQuantOptions(),
) -> Path:
    """Quantize an fp32 ONNX model to int8 QDQ, calibrated on ``calibration``.

    Args:
        fp32_onnx: the fp32 model: one float32 input ``(N, ...)``, N dynamic.
        out: where to write the int8 model (float32 input and output are kept).
        calibration: re-iterable of float32 batches shaped like the input (an encoder's NCHW
            images, a scorer's rows); iterated once here.
        options: :class:`OnnxQuantOptions` (the target, calibration, float layers).

    Steps: ``quant_pre_process(skip_symbolic_shape=True)`` (symbolic shape inference fails on
    these graphs), ranges collected one batch at a time (so entropy/percentile histograms are
    merged as they go instead of keeping every activation of every batch, ORT issue #21979),
    saved as a calibration cache, then ``quantize_static`` from that cache; last, the
    ``keep_float`` nodes get their float inputs back.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    op_types = list(options.op_types) or sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    keep = _onnx_nodes_for(onnx.load(str(fp32_onnx), load_external_data=False),
                           options.keep_float)
    with tempfile.TemporaryDirectory(prefix="edgerec-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        cache = _calibrated_ranges(pre, Path(tmp), calibration, options, op_types)
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(pre), str(out), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            activation_type=(QuantType.QUInt8 if options.activation is ActivationType.UINT8
                             else QuantType.QInt8),
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            calibrate_method=_calibration_method(options.calibration),
            calibration_cache_path=str(cache),
        )
    if keep:
        _float_inputs(out, keep)
    return out
