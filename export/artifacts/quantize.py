"""int8 post-training quantization of image encoders, and the gated ladder of remedies.

- :func:`quantize_onnx`: ONNX Runtime static quantization, QDQ format, per-channel weights,
  calibrated on real images; the model keeps its float32 input and output.
- :func:`quantize_tflite`: PT2E (``torch.export`` -> ``prepare_pt2e`` with litert-torch's
  symmetric per-channel quantizer -> calibrate -> ``convert_pt2e``) -> litert-torch; NHWC
  input, and the input tensor is int8 (the edgerec LiteRT adapter quantizes float input).
- :func:`quantize_with_ladder`: try remedies in order until one passes the :class:`Gate`
  (int8/fp32 mAP ratio and mean cosine); record every attempt; raise ``ExportError`` naming
  the artifact, the best attempt and the shortfall when none passes.

Calibration data is any re-iterable of float32 NCHW batches (N, 3, S, S) normalised as the
model expects; statistics are streamed batch by batch (min/max or histograms), never buffered.

Which activation type fuses depends on the CPU that runs the model (TOOLCHAIN.md): on x86
without VNNI only uint8 activations (U8S8) fuse every Conv into QLinearConv, and 7-bit weights
(``reduce_range``) avoid the int16 saturation of its AVX2 kernels; ARM and VNNI CPUs take full
8-bit weights, ARM prefers int8 activations. :meth:`OnnxQuantOptions.for_target` encodes that.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from edgerec.export.artifacts.parity import ParityReport
from edgerec.export.errors import ExportError

__all__ = [
    "ActivationType",
    "Attempt",
    "Calibration",
    "Gate",
    "LadderResult",
    "OnnxQuantOptions",
    "QuantTarget",
    "Remedy",
    "TfliteQuantOptions",
    "float_head_first",
    "onnx_remedies",
    "quantize_onnx",
    "quantize_tflite",
    "quantize_with_ladder",
    "sensitive_layers",
    "tflite_remedies",
]

PathLike = Union[str, os.PathLike]


class ActivationType(str, enum.Enum):
    """Integer type of quantized activations (weights are always int8)."""

    UINT8 = "uint8"  # U8S8: fuses everywhere on x86 without VNNI
    INT8 = "int8"  # S8S8: preferred by ARM kernels; on x86 without VNNI many Convs stay unfused


class QuantTarget(str, enum.Enum):
    """The CPU family the int8 ONNX model is meant to run fastest on."""

    X86_AVX2 = "x86_avx2"  # x86 without VNNI (e.g. AMD Zen 3, pre-Cascade-Lake Intel)
    X86_VNNI = "x86_vnni"  # x86 with AVX512-VNNI / AVX-VNNI
    ARM = "arm"  # Cortex-A (Raspberry Pi), Apple silicon, Graviton


class Calibration(str, enum.Enum):
    """How activation ranges are chosen from the calibration images.

    ONNX takes ``MINMAX``, ``PERCENTILE`` and ``ENTROPY`` (onnxruntime's calibrators); TFLite
    takes ``MINMAX`` and ``HISTOGRAM`` (torchao observers; ``HISTOGRAM`` picks the range that
    minimises the L2 quantization error, litert-torch's default).
    """

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    HISTOGRAM = "histogram"


def _check_common(max_images: Optional[int], keep_float: tuple[str, ...]) -> tuple[str, ...]:
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}.")
    if isinstance(keep_float, str):
        raise TypeError("keep_float takes a tuple of names, not a single string.")
    return tuple(keep_float)


@dataclass(frozen=True)
class OnnxQuantOptions:
    """ONNX Runtime static int8 quantization (QDQ format).

    Attributes:
        activation: :class:`ActivationType` of activations.
        reduce_range: 7-bit weights; avoids saturation of U8S8 kernels on x86 without VNNI and
            costs one bit of weight precision everywhere.
        per_channel: one weight scale per output channel (else one per tensor).
        calibration: ``MINMAX``, ``PERCENTILE`` or ``ENTROPY``.
        percentile: the kept percentile of |activation| for ``PERCENTILE``.
        entropy_bins: histogram bins for ``ENTROPY`` (> 128, the quantized bins; the KL
            search tries (bins - 128) / 2 + 1 thresholds, in Python: time grows with it).
        max_images: use at most this many calibration images (``None``: all).
        keep_float: layers left in float: torch module names of the exported model (e.g.
            ``"features.0"``, matched through the exporter's name scopes, submodules included)
            or ONNX node names.
    """

    activation: ActivationType = ActivationType.UINT8
    reduce_range: bool = True
    per_channel: bool = True
    calibration: Calibration = Calibration.MINMAX
    percentile: float = 99.999
    entropy_bins: int = 256
    max_images: Optional[int] = None
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "activation", ActivationType(self.activation))
        object.__setattr__(self, "calibration", Calibration(self.calibration))
        object.__setattr__(self, "keep_float", _check_common(self.max_images, self.keep_float))
        if self.calibration is Calibration.HISTOGRAM:
            raise ValueError("ONNX calibration is minmax, percentile or entropy, not histogram.")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}.")
        if self.entropy_bins <= 128:
            raise ValueError(f"entropy_bins must be > 128, got {self.entropy_bins}.")

    @classmethod
    def for_target(cls, target: QuantTarget, **overrides) -> OnnxQuantOptions:
        """Activation type and weight range that fuse and stay exact on ``target``."""
        target = QuantTarget(target)
        base = {
            QuantTarget.X86_AVX2: cls(ActivationType.UINT8, reduce_range=True),
            QuantTarget.X86_VNNI: cls(ActivationType.UINT8, reduce_range=False),
            QuantTarget.ARM: cls(ActivationType.INT8, reduce_range=False),
        }[target]
        return replace(base, **overrides)


@dataclass(frozen=True)
class TfliteQuantOptions:
    """PT2E int8 quantization for LiteRT (int8 activations, symmetric int8 weights).

    Attributes:
        per_channel: one weight scale per output channel.
        calibration: ``HISTOGRAM`` (litert-torch's default) or ``MINMAX``.
        max_images: use at most this many calibration images (``None``: all).
        keep_float: torch module names (e.g. ``"features.0"``, ``"head"``) whose ops stay float.
    """

    per_channel: bool = True
    calibration: Calibration = Calibration.HISTOGRAM
    max_images: Optional[int] = None
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibration", Calibration(self.calibration))
        object.__setattr__(self, "keep_float", _check_common(self.max_images, self.keep_float))
        if self.calibration not in (Calibration.HISTOGRAM, Calibration.MINMAX):
            raise ValueError("TFLite (PT2E) calibration is histogram or minmax.")


def _batches(calibration: Iterable, max_images: Optional[int]) -> Iterator[np.ndarray]:
    """Float32 NCHW batches from ``calibration``, cut at ``max_images`` images in total."""
    seen = 0
    for batch in calibration:
        if hasattr(batch, "detach"):  # a torch tensor
            batch = batch.detach().cpu().numpy()
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ExportError(
                f"Calibration batches must be float32 NCHW (N, 3, S, S) arrays; got shape "
                f"{x.shape}. Preprocess the images with the bundle's Preprocessing first."
            )
        if max_images is not None:
            x = x[: max_images - seen]
        if len(x):
            seen += len(x)
            yield x
        if max_images is not None and seen >= max_images:
            return
    if seen == 0:
        raise ExportError("The calibration data is empty; pass at least one batch of images.")


# --------------------------------------------------------------------------- ONNX Runtime


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


def quantize_onnx(
    fp32_onnx: PathLike,
    out: PathLike,
    calibration: Iterable,
    options: OnnxQuantOptions = OnnxQuantOptions(),
) -> Path:
    """Quantize an fp32 ONNX encoder to int8 QDQ, calibrated on ``calibration``.

    Args:
        fp32_onnx: the fp32 model (one image input, NCHW, dynamic batch).
        out: where to write the int8 model (float32 input and output are kept).
        calibration: re-iterable of float32 NCHW batches; iterated once here.
        options: :class:`OnnxQuantOptions`.

    Steps: ``quant_pre_process(skip_symbolic_shape=True)`` (symbolic shape inference fails on
    these graphs), ranges collected one batch at a time (so entropy/percentile histograms are
    merged as they go instead of keeping every activation of every batch, ORT issue #21979),
    saved as a calibration cache, then ``quantize_static`` from that cache.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        create_calibrator,
        quant_pre_process,
        quantize_static,
    )
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    method = {
        Calibration.MINMAX: CalibrationMethod.MinMax,
        Calibration.PERCENTILE: CalibrationMethod.Percentile,
        Calibration.ENTROPY: CalibrationMethod.Entropy,
    }[options.calibration]
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    keep = _onnx_nodes_for(onnx.load(str(fp32_onnx), load_external_data=False),
                           options.keep_float)
    with tempfile.TemporaryDirectory(prefix="edgerec-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        extra = {
            CalibrationMethod.Percentile: {"percentile": options.percentile},
            # onnxruntime's default of 128 bins for 128 quantized bins leaves the KL search a
            # single candidate, the full range: entropy would silently equal minmax
            CalibrationMethod.Entropy: {"num_bins": options.entropy_bins},
        }.get(method, {})
        calibrator = create_calibrator(
            pre, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method, extra_options=extra,
        )
        # the histogram calibrators print a line per call
        with contextlib.redirect_stdout(io.StringIO()):
            for batch in _batches(calibration, options.max_images):
                calibrator.collect_data(_OneBatch({input_name: batch}))
            ranges = calibrator.compute_data()
        del calibrator
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(pre), str(out), None,
            quant_format=QuantFormat.QDQ,
            per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            activation_type=(QuantType.QUInt8 if options.activation is ActivationType.UINT8
                             else QuantType.QInt8),
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            calibrate_method=method,
            calibration_cache_path=str(cache),
        )
    return out


# --------------------------------------------------------------------------- LiteRT (PT2E)


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
    image_size: int,
    options: TfliteQuantOptions = TfliteQuantOptions(),
) -> Path:
    """Quantize a torch encoder to an int8 ``.tflite`` taking (1, S, S, 3) NHWC input.

    Args:
        model: ``nn.Module`` (N, 3, S, S) -> (N, D), ending before any L2 normalisation.
        out: where to write the ``.tflite``.
        calibration: re-iterable of float32 NCHW batches (numpy or torch); iterated once.
        image_size: S.
        options: :class:`TfliteQuantOptions`.

    The model itself is not changed. Its input tensor is int8: feed it through
    ``edgerec.runtimes.open_runtime``, which quantizes float32 input with the tensor's scale
    and zero point (casting floats to int8 directly runs and gives garbage).
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
    nhwc = litert_torch.to_channel_last_io(copy.deepcopy(model).eval(), args=[0]).eval()
    example = (torch.zeros(1, image_size, image_size, 3),)
    quantizer = _pt2e_quantizer(options)
    # Calibrate with a dynamic batch (observers see whole batches: ~30x faster than one image
    # at a time); litert_torch.convert re-exports the result with the batch-1 example.
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    graph = torch.export.export(nhwc, (torch.zeros(2, image_size, image_size, 3),),
                                dynamic_shapes=(({0: batch},),)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in _batches(calibration, options.max_images):
            prepared(torch.from_numpy(x).permute(0, 2, 3, 1).contiguous())
    converted = convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(converted, example,
                                quant_config=QuantConfig(pt2e_quantizer=quantizer))
    out.parent.mkdir(parents=True, exist_ok=True)
    edge.export(str(out))
    return out


def sensitive_layers(model) -> tuple[str, ...]:
    """Module names to keep in float when quantization hurts: the first conv and the head.

    The first conv sees raw normalised pixels and the last linear layer(s) write the embedding
    itself; both are small, so keeping them float costs little size or time. Returns the
    first ``Conv2d``'s parent block (conv + norm + activation, e.g. ``"features.0"``) and the
    ``Linear`` layers after the last conv.
    """
    from torch import nn

    modules = list(model.named_modules())
    convs = [i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ExportError("sensitive_layers expects a convolutional encoder; found no Conv2d.")
    first = modules[convs[0]][0]
    block = first.rpartition(".")[0] or first
    head = [name for name, m in modules[convs[-1]:] if isinstance(m, nn.Linear)]
    return (block, *head)


# --------------------------------------------------------------------------- the ladder


@dataclass(frozen=True)
class Gate:
    """What an int8 artifact must reach against its fp32 reference; ``None`` skips a check."""

    min_map_ratio: Optional[float] = 0.99
    min_mean_cosine: Optional[float] = 0.98

    def shortfalls(self, report: ParityReport) -> dict[str, tuple[Optional[float], float]]:
        """``{metric: (value, required)}`` for every check ``report`` fails (empty: passes).

        A mAP check on a report without labels fails with value ``None``.
        """
        checks = {"map_ratio": (report.map_ratio, self.min_map_ratio),
                  "cosine_mean": (report.cosine_mean, self.min_mean_cosine)}
        return {metric: (value, need) for metric, (value, need) in checks.items()
                if need is not None and (value is None or not value >= need)}

    def margin(self, report: ParityReport) -> float:
        """The worst (value - required) over the checks; >= 0 when the report passes."""
        margins = [(-np.inf if v is None else v - need)
                   for v, need in ((report.map_ratio, self.min_map_ratio),
                                   (report.cosine_mean, self.min_mean_cosine))
                   if need is not None]
        return float(min(margins, default=np.inf))


@dataclass(frozen=True)
class Remedy:
    """One rung of the ladder.

    Attributes:
        name: recorded in the attempts and the bundle (e.g. ``"percentile"``).
        options: quantization options the ladder's ``build`` uses for this rung.
        build: a builder for this rung alone (e.g. quantization-aware fine-tuning supplied by
            the training code); when set it replaces the ladder's ``build``.
    """

    name: str
    options: Union[OnnxQuantOptions, TfliteQuantOptions, None] = None
    build: Optional[Callable[[Remedy], Path]] = field(default=None, compare=False)


@dataclass(frozen=True)
class Attempt:
    """One tried remedy: its artifact and parity, or the error that stopped it."""

    remedy: str
    passed: bool
    artifact: Optional[Path] = None
    report: Optional[ParityReport] = None
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return {"remedy": self.remedy, "passed": self.passed,
                "artifact": None if self.artifact is None else self.artifact.name,
                "report": None if self.report is None else self.report.to_dict(),
                "error": self.error}


@dataclass(frozen=True)
class LadderResult:
    """The artifact that passed, the remedy that made it, and every attempt up to it."""

    artifact: Path
    remedy: str
    attempts: tuple[Attempt, ...]

    @property
    def report(self) -> ParityReport:
        return self.attempts[-1].report

    def to_dict(self) -> dict:
        """JSON-ready form (for the bundle manifest's ``recipe``)."""
        return {"remedy": self.remedy, "attempts": [a.to_dict() for a in self.attempts]}


def _describe_shortfall(gate: Gate, report: ParityReport) -> str:
    parts = []
    for metric, (value, need) in gate.shortfalls(report).items():
        if value is None:
            parts.append(f"{metric} not measured (needs >= {need}; pass labels to parity)")
        else:
            parts.append(f"{metric} {value:.4f} < {need} (short by {need - value:.4f})")
    return "; ".join(parts)


def quantize_with_ladder(
    remedies: Sequence[Remedy],
    build: Callable[[Remedy], Path],
    evaluate: Callable[[Path], ParityReport],
    gate: Gate = Gate(),
    *,
    artifact: str = "int8 encoder",
) -> LadderResult:
    """Build and evaluate ``remedies`` in order; stop at the first that passes ``gate``.

    Args:
        remedies: the rungs, cheapest first (see :func:`onnx_remedies`,
            :func:`tflite_remedies`); a remedy with its own ``build`` uses it.
        build: remedy -> path of the int8 artifact it produced.
        evaluate: artifact path -> :class:`ParityReport` against the fp32 reference on
            held-out images (with labels for the mAP check).
        gate: the thresholds.
        artifact: what is being built, for the error message (e.g. ``"encoder.int8.onnx"``).

    Returns:
        :class:`LadderResult`; its ``attempts`` end with the passing one.

    Raises:
        ExportError: no remedy passed; the message names ``artifact``, the best attempt and
            by how much it fell short (and any remedy that failed to build).
    """
    if not remedies:
        raise ValueError("quantize_with_ladder needs at least one remedy.")
    attempts: list[Attempt] = []
    for remedy in remedies:
        try:
            path = Path((remedy.build or build)(remedy))
            report = evaluate(path)
        except Exception as exc:  # one broken rung must not hide the others' results
            attempts.append(Attempt(remedy.name, False, error=f"{type(exc).__name__}: {exc}"))
            continue
        passed = not gate.shortfalls(report)
        attempts.append(Attempt(remedy.name, passed, path, report))
        if passed:
            return LadderResult(path, remedy.name, tuple(attempts))
    tried = ", ".join(a.remedy for a in attempts)
    measured = [a for a in attempts if a.report is not None]
    failures = "; ".join(f"{a.remedy} failed: {a.error}" for a in attempts if a.error)
    if not measured:
        raise ExportError(f"{artifact}: every quantization remedy failed to build ({failures}).")
    best = max(measured, key=lambda a: gate.margin(a.report))
    message = (f"{artifact} failed the int8 gate after {len(attempts)} remedies ({tried}); "
               f"the best, {best.remedy!r}, reached {_describe_shortfall(gate, best.report)}.")
    if failures:
        message += f" Also: {failures}."
    raise ExportError(message + " Export the fp32 artifact only, or train with "
                      "quantization-aware fine-tuning.")


def _ladder(base, steps: Sequence[tuple[str, dict]]) -> list[Remedy]:
    return [Remedy(name, replace(base, **changes)) for name, changes in steps]


def onnx_remedies(
    keep_float: Sequence[str] = (),
    *,
    base: OnnxQuantOptions = OnnxQuantOptions(),
    images: int = 256,
    more_images: Optional[int] = None,
) -> list[Remedy]:
    """The ONNX post-training ladder: minmax -> percentile -> entropy -> more calibration
    images (percentile) -> ``keep_float`` layers in float (percentile, more images).

    ``images`` caps calibration for the first rungs; ``more_images`` (``None``: all) for the
    later ones. The keep-float rung is left out when ``keep_float`` is empty.
    """
    steps = [
        ("minmax", {"calibration": Calibration.MINMAX, "max_images": images}),
        ("percentile", {"calibration": Calibration.PERCENTILE, "max_images": images}),
        ("entropy", {"calibration": Calibration.ENTROPY, "max_images": images}),
        ("more_images", {"calibration": Calibration.PERCENTILE, "max_images": more_images}),
    ]
    if keep_float:
        steps.append(("keep_float", {"calibration": Calibration.PERCENTILE,
                                     "max_images": more_images, "keep_float": tuple(keep_float)}))
    return _ladder(base, steps)


def tflite_remedies(
    keep_float: Sequence[str] = (),
    *,
    base: TfliteQuantOptions = TfliteQuantOptions(),
    images: int = 256,
    more_images: Optional[int] = None,
) -> list[Remedy]:
    """The TFLite post-training ladder: histogram -> minmax -> more calibration images
    (histogram, then minmax) -> ``keep_float`` layers in float (more images; histogram, then
    minmax). Which observer wins differs from network to network (measured: minmax passed
    where histogram missed by 0.001), so each later rung is tried with both."""
    steps = [
        ("histogram", {"calibration": Calibration.HISTOGRAM, "max_images": images}),
        ("minmax", {"calibration": Calibration.MINMAX, "max_images": images}),
        ("more_images", {"calibration": Calibration.HISTOGRAM, "max_images": more_images}),
        ("more_images_minmax", {"calibration": Calibration.MINMAX, "max_images": more_images}),
    ]
    if keep_float:
        for name, calibration in (("keep_float", Calibration.HISTOGRAM),
                                  ("keep_float_minmax", Calibration.MINMAX)):
            steps.append((name, {"calibration": calibration, "max_images": more_images,
                                 "keep_float": tuple(keep_float)}))
    return _ladder(base, steps)


def float_head_first(remedies: Sequence[Remedy]) -> list[Remedy]:
    """The same rungs with those that keep layers in float moved to the front (order kept).

    For an encoder whose output is whitened (``edgerec.sdk.Whitening``): whitening magnifies
    the embedding's weak directions, where an int8 output layer's rounding lives, so on the
    clothing export every fully-int8 rung missed the mean-cosine gate on both engines (0.88-0.92
    against 0.98) and only the float-head rung passed (0.994 ONNX, 0.999 TFLite); trying it
    first saves the failing rungs' minutes.
    """
    def keeps_float(r: Remedy) -> bool:
        return bool(r.options is not None and getattr(r.options, "keep_float", ()))

    return [r for r in remedies if keeps_float(r)] + [r for r in remedies if not keeps_float(r)]

