"""Quantization-aware fine-tuning: the last rung of the encoder's int8 ladders.

When every post-training rung of the ONNX ladder misses the gate, :class:`QatRung` fine-tunes
a copy of the float student for a bounded number of steps with ONNX Runtime's int8 rounding
simulated in its forward pass, then quantizes the fine-tuned float weights with the *same*
quantizer as the other rungs (:func:`~.quantize_onnx.quantize_onnx`). The rung is named
``"qat"`` in the ladder's attempts, and its file is gated like every other rung:
against the embeddings of the **original** fp32 student (the caller's ``evaluate``), never
against the fine-tuned copy, so a fine-tune that drifted from the student fails the gate.

Why simulated rounding and then post-training quantization, rather than exporting a QAT
model (decided by trying both): torchao's PT2E QAT (``prepare_qat_pt2e`` with its
``X86InductorQuantizer``, BatchNorm moved to eval, ``convert_pt2e``) does export through the
dynamo ONNX exporter to a QDQ file that ONNX Runtime runs (it matched the converted torch
model, cosine 0.637 vs 0.635), at the eager model's step time (0.06 s on the untrained test
MobileNetV3). But its simulation started far from the student (cosine 0.39 on the first
batch, against 0.976 for the simulation below) and 100 steps left held-out cosine at 0.65;
its quantizer does not follow ORT's scheme (7-bit *weights* for x86 without VNNI where it
narrows activations, ranges from moving averages instead of minmax over the calibration
set); and the file it writes would bypass the target-specific choices :mod:`.quantize_onnx`
makes for every other rung. So the fine-tune uses torch's fake-quantize operators
(``torch.fake_quantize_per_channel_affine`` / ``_per_tensor_affine``, straight-through
gradients) in the eager model to mimic the static QDQ file ORT will write:

- weights of every ``Conv2d`` and ``Linear``: symmetric, per output channel (or per tensor),
  to ±127, or ±64 where the target uses 7-bit weights (``reduce_range``); BatchNorm stays in
  eval mode, and per-channel rounding commutes with folding it into the conv;
- activations, per tensor, affine on the target's 8-bit grid, with the min/max ranges of the
  fp32 student over the calibration images: the input of every conv and linear layer, the
  output of every conv (after its BatchNorm, or after a following ReLU/ReLU6, which ORT
  folds into the conv's range) and of every linear layer.

On an ImageNet-initialised MobileNetV2 student (64 px) this simulation tracked the file ORT
then wrote within 0.0015 of cosine to the fp32 student, before the fine-tune (0.9140 vs
0.9149) and after it (0.9693 vs 0.9681). The objective needs no labels
and no teacher: the cosine between the fake-quantized copy's embeddings and the fp32
student's own, after the device's whitening when there is one, on the calibration images
with random flips and crops.

The LiteRT ladder has no such rung: the same fine-tuned weights quantized by PT2E for LiteRT
came out *worse* than the untuned student's post-training rungs on the test student (mean
cosine 0.848 minmax, 0.879 histogram, 0.902 with the head in float, against 0.859, 0.892 and
0.927): LiteRT's int8 scheme (where PT2E puts its quantizers, symmetric int8) is not the one
simulated here. A LiteRT rung would need its own simulation, or PT2E's own QAT.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from edgerec.export.artifacts.calibration import Calibration
from edgerec.export.artifacts.convert import ModelIO, to_onnx
from edgerec.export.artifacts.ladder import Remedy
from edgerec.export.artifacts.quantize_onnx import (
    ActivationType,
    OnnxQuantOptions,
    QuantTarget,
    quantize_onnx,
)
from edgerec.export.errors import ExportError
from edgerec.sdk.progress import ProgressBar
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["QAT_REMEDY", "FineTuned", "QatOptions", "QatRung", "Scheme", "fine_tune_for_int8"]

QAT_REMEDY = "qat"
"""The rung's name in the ladders' attempts and the bundle's records."""

Log = Callable[[str], None]


@dataclass(frozen=True)
class QatOptions:
    """The quantization-aware fine-tune's budget and recipe.

    Attributes:
        steps: optimizer steps at most (Adam, cosine-decayed learning rate).
        max_minutes: wall-time budget; the fine-tune stops after the step that crosses it
            (``None``: steps only).
        lr: peak learning rate (on the test student 2e-5 for 150 steps and 3e-5 for 100
            measured best; 5e-5 drifted from the fp32 student, 1e-3 ruined it).
        batch_size: calibration images per step.
        augment: random horizontal flips and crops (60-100% of the side, resized back) of
            the calibration images, so that a few hundred images are not memorised.
        seed: image sampling and augmentation seed; the same seed and ``threads`` give the
            same weights (another thread count sums in another order).
        threads: torch threads while fine-tuning (restored afterwards).
    """

    steps: int = 300
    max_minutes: Optional[float] = 10.0
    lr: float = 2e-5
    batch_size: int = 16
    augment: bool = True
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"qat {name} must be an int >= 1, got {value!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"qat max_minutes must be > 0 or None, got {self.max_minutes!r}")
        if not self.lr > 0:
            raise ValueError(f"qat lr must be > 0, got {self.lr!r}")


@dataclass(frozen=True)
class Scheme:
    """The int8 grid the fine-tune simulates.

    Attributes:
        activation: ``(qmin, qmax)`` of activations (affine, per tensor): ``(0, 255)`` for
            uint8, ``(-128, 127)`` for int8 (the same 256 levels).
        weight_max: symmetric weight grid ``[-weight_max, weight_max]``: 127, or 64 for 7-bit
            weights.
        per_channel: one weight scale per output channel (else one per tensor).
    """

    activation: tuple[int, int] = (0, 255)
    weight_max: int = 127
    per_channel: bool = True

    @classmethod
    def for_onnx(cls, options: OnnxQuantOptions) -> Scheme:
        """The grid :func:`~.quantize_onnx.quantize_onnx` writes with ``options``."""
        act = (0, 255) if options.activation is ActivationType.UINT8 else (-128, 127)
        return cls(act, 64 if options.reduce_range else 127, options.per_channel)


@dataclass
class FineTuned:
    """A fine-tune's outcome.

    Attributes:
        model: the fine-tuned float copy (eval mode); the student it came from is unchanged.
        steps: optimizer steps taken.
        seconds: wall time of the steps.
        loss_first, loss_last: the objective (1 - cosine to the fp32 student) averaged over
            the first and the last up-to-10 steps.
        stopped: ``"steps"`` or ``"time"`` (the ``max_minutes`` budget ran out first).
    """

    model: nn.Module
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    stopped: str

    def describe(self) -> str:
        return (f"qat fine-tune: {self.steps} steps in {self.seconds:.0f} s (stopped by "
                f"{self.stopped}), loss {self.loss_first:.4f} -> {self.loss_last:.4f}")


_FOLDED_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


def _quant_points(model: nn.Module) -> tuple[list[str], list[str]]:
    """Module names whose input, and those whose output, the int8 file quantizes.

    Inputs: every ``Conv2d`` and ``Linear``. Outputs: every ``Linear``, and every conv's
    output: the ``BatchNorm2d`` after it in its ``nn.Sequential`` (e.g. torchvision's
    ``Conv2dNormActivation``), or the ReLU/ReLU6 after that, whose range ORT gives the conv.
    """
    inputs, outputs = [], []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            inputs.append(name)
        if isinstance(module, nn.Linear):
            outputs.append(name)
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for i, (child, layer) in enumerate(children):
                if not isinstance(layer, nn.BatchNorm2d):
                    continue
                after = children[i + 1] if i + 1 < len(children) else None
                pick = after[0] if after and isinstance(after[1], _FOLDED_ACTIVATIONS) else child
                outputs.append(f"{name}.{pick}" if name else pick)
    return inputs, outputs


def _ranges(model: nn.Module, batches: Sequence[torch.Tensor], inputs: Sequence[str],
            outputs: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``{"<module>:in"/"<module>:out": (min, max)}`` of the fp32 model over ``batches``,
    each range widened to hold 0 (as ORT's affine ranges are)."""
    ranges: dict[str, tuple[float, float]] = {}

    def record(key: str, t: torch.Tensor) -> None:
        lo, hi = ranges.get(key, (0.0, 0.0))
        ranges[key] = (min(lo, float(t.min())), max(hi, float(t.max())))

    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(
        lambda _m, args, key=f"{n}:in": record(key, args[0])) for n in inputs]
    handles += [modules[n].register_forward_hook(
        lambda _m, _a, out, key=f"{n}:out": record(key, out)) for n in outputs]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return ranges


def _fake_quant_activation(t: torch.Tensor, lo: float, hi: float,
                           grid: tuple[int, int]) -> torch.Tensor:
    qmin, qmax = grid
    scale = max(hi - lo, 1e-8) / (qmax - qmin)
    zero_point = int(min(qmax, max(qmin, round(qmin - lo / scale))))
    return torch.fake_quantize_per_tensor_affine(t, scale, zero_point, qmin, qmax)


class _FakeQuantWeight(nn.Module):
    """A parametrization: the weight as the int8 file stores it (symmetric, max-abs scale)."""

    def __init__(self, scheme: Scheme) -> None:
        super().__init__()
        self.scheme = scheme

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q = self.scheme.weight_max
        if not self.scheme.per_channel:
            scale = max(float(w.detach().abs().max()), 1e-12) / q
            return torch.fake_quantize_per_tensor_affine(w, scale, 0, -q, q)
        scale = (w.detach().abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-12) / q).float()
        zero = torch.zeros(w.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -q, q)


@contextlib.contextmanager
def _simulated(model: nn.Module, scheme: Scheme, ranges: dict[str, tuple[float, float]],
               inputs: Sequence[str], outputs: Sequence[str]) -> Iterator[nn.Module]:
    """``model`` with int8 rounding simulated while inside; plain float again after."""
    modules = dict(model.named_modules())
    grid = scheme.activation
    handles = [modules[n].register_forward_pre_hook(
        lambda _m, args, r=ranges[f"{n}:in"]: (_fake_quant_activation(args[0], *r, grid),))
        for n in inputs]
    handles += [modules[n].register_forward_hook(
        lambda _m, _a, out, r=ranges[f"{n}:out"]: _fake_quant_activation(out, *r, grid))
        for n in outputs]
    weighted = [modules[n] for n in inputs]
    for m in weighted:
        parametrize.register_parametrization(m, "weight", _FakeQuantWeight(scheme))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        for m in weighted:  # keep the trained float weight, drop the rounding
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


def _images(calibration: Iterable) -> torch.Tensor:
    """All calibration batches as one float32 (N, 3, S, S) tensor."""
    parts = [np.asarray(b.detach().cpu().numpy() if hasattr(b, "detach") else b, np.float32)
             for b in calibration]
    if not parts or not sum(len(p) for p in parts):
        raise ExportError("quantization-aware fine-tuning needs calibration images; none given.")
    x = np.concatenate(parts)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ExportError(f"quantization-aware fine-tuning takes NCHW images; got {x.shape}.")
    return torch.from_numpy(x)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips (per image) and one random crop (60-100% of the side, per
    batch) resized back to the input size."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    side = float(torch.empty(()).uniform_(0.6, 1.0, generator=g))
    ch, cw = max(1, round(h * side)), max(1, round(w * side))
    top = int(torch.randint(0, h - ch + 1, (), generator=g))
    left = int(torch.randint(0, w - cw + 1, (), generator=g))
    crop = x[:, :, top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def _device_space(whitening) -> Callable[[torch.Tensor], torch.Tensor]:
    """Raw embeddings -> unit vectors as the device compares them (after ``whitening``)."""
    if whitening is None:
        return lambda y: F.normalize(y, dim=1)
    mean = torch.from_numpy(np.asarray(whitening.mean, np.float32))
    projection = torch.from_numpy(np.asarray(whitening.projection, np.float32))
    return lambda y: F.normalize((F.normalize(y, dim=1) - mean) @ projection, dim=1)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fine_tune_for_int8(
    model: nn.Module,
    calibration: Iterable,
    *,
    scheme: Scheme = Scheme(),
    options: QatOptions = QatOptions(),
    whitening=None,
    log: Optional[Log] = None,
) -> FineTuned:
    """Fine-tune a copy of ``model`` to keep its own embeddings under simulated int8.

    Args:
        model: the fp32 encoder, (N, 3, S, S) -> (N, D); used as the fixed target, never
            changed.
        calibration: re-iterable of float32 NCHW image batches (numpy or torch), preprocessed
            as the model expects; the ranges and the training images.
        scheme: the int8 grid to simulate (:meth:`Scheme.for_onnx`).
        options: :class:`QatOptions` (budget, learning rate, seed, threads).
        whitening: an ``edgerec.sdk.Whitening`` the device applies to the embeddings (its
            ``mean`` and ``projection``): the objective is then measured after it, as the
            gate is; ``None``: on the unit embeddings.
        log: one line when done.

    Returns:
        :class:`FineTuned`, its ``model`` a float copy in eval mode (BatchNorm statistics as
        the student's: they are frozen while fine-tuning).

    Raises:
        ExportError: no calibration images, or not NCHW.
    """
    x = _images(calibration)
    student = copy.deepcopy(model).eval()
    reference = copy.deepcopy(model).eval()  # the caller's model keeps its mode
    inputs, outputs = _quant_points(student)
    space = _device_space(whitening)
    g = torch.Generator().manual_seed(options.seed)
    losses: list[float] = []
    stopped = "steps"
    with _threads(options.threads):
        ranges = _ranges(student, x.split(64), inputs, outputs)
        for p in student.parameters():
            p.requires_grad_(True)
        with _simulated(student, scheme, ranges, inputs, outputs) as simulated:
            opt = torch.optim.Adam(simulated.parameters(), lr=options.lr)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, options.steps)
                                                   / options.steps)))
            start = time.monotonic()
            with ProgressBar(options.steps, "qat fine-tune", unit="step") as bar:
                for step in range(options.steps):
                    batch = x[torch.randint(0, len(x), (options.batch_size,), generator=g)]
                    if options.augment:
                        batch = _augment(batch, g)
                    with torch.no_grad():
                        target = space(reference(batch))
                    loss = 1 - (space(simulated(batch)) * target).sum(1).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    schedule.step()
                    losses.append(loss.item())
                    bar.update_to(step + 1)
                    if (options.max_minutes is not None
                            and time.monotonic() - start > 60 * options.max_minutes):
                        stopped = "time"
                        break
            seconds = time.monotonic() - start
    for p in student.parameters():
        p.requires_grad_(False)
    result = FineTuned(student.eval(), len(losses), seconds, float(np.mean(losses[:10])),
                       float(np.mean(losses[-10:])), stopped)
    if log is not None:
        log("  " + result.describe())
    return result


@dataclass
class QatRung:
    """The ``"qat"`` rung of an encoder's ONNX int8 ladder: the fine-tune (run on the rung's
    build, once), then ORT's quantizer on the fine-tuned weights.

    Attributes:
        model: the fp32 student (not changed).
        calibration: re-iterable of float32 NCHW batches, as the other rungs calibrate on.
        io: the encoder's :class:`~.convert.ModelIO`.
        out_dir: where ``int8-qat.onnx`` is written.
        target: the ONNX file's :class:`~.quantize_onnx.QuantTarget` (it sets the simulated
            grid).
        options: :class:`QatOptions`.
        whitening: the device's whitening, if any (:func:`fine_tune_for_int8`).
        log: progress lines.
    """

    model: nn.Module
    calibration: Sequence
    io: ModelIO
    out_dir: Path
    target: QuantTarget = QuantTarget.X86_AVX2
    options: QatOptions = field(default_factory=QatOptions)
    whitening: object = None
    log: Log = print
    _tuned: Optional[FineTuned] = field(default=None, init=False, repr=False)

    @property
    def onnx_options(self) -> OnnxQuantOptions:
        """ORT's settings for the rung: the target, minmax over every calibration image (the
        ranges the fine-tune simulated)."""
        return OnnxQuantOptions(target=self.target, calibration=Calibration.MINMAX)

    def fine_tuned(self) -> FineTuned:
        """The fine-tune, run once."""
        if self._tuned is None:
            self._tuned = fine_tune_for_int8(
                self.model, self.calibration, scheme=Scheme.for_onnx(self.onnx_options),
                options=self.options, whitening=self.whitening, log=self.log)
        return self._tuned

    def onnx_remedy(self) -> Remedy:
        """The ONNX ladder's rung: fine-tune, export fp32 ONNX (a temporary file), quantize
        with ORT as the other rungs do."""
        return Remedy(QAT_REMEDY, self.onnx_options, build=self._build_onnx)

    def _build_onnx(self, remedy: Remedy) -> Path:
        tuned = self.fine_tuned().model
        with tempfile.TemporaryDirectory(prefix="edgerec-qat-") as tmp:
            fp32 = to_onnx(tuned, Path(tmp) / "qat.fp32.onnx", self.io)
            return quantize_onnx(fp32, Path(self.out_dir) / "int8-qat.onnx", self.calibration,
                                 remedy.options)
