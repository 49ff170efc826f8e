"""The one build driver for a model role's bundle files (encoder, scorer).

:func:`build_model_files` converts the torch model to fp32 ONNX and TFLite
(:mod:`.convert`), checks each fp32 file against torch with the role's check (which raises
``ExportError`` on a conversion bug), then climbs one int8 ladder per engine
(:func:`~.ladder.quantize_with_ladder` over :func:`~.quantize_onnx.quantize_onnx` and
:func:`~.quantize_tflite.quantize_tflite`) until a rung passes the role's gate. An int8 file
that never passes fails the build, or with ``fail_on_gate=False`` is left out and the reason
recorded with every rung tried (:attr:`BuiltFiles.ladder_records`). The roles' wrappers are
:func:`edgerec.export.artifacts.encoder.build_artifacts` and
:func:`edgerec.export.scorer.artifacts.build_scorer_artifacts`.

Files in ``out_dir``: ``<role>.fp32.onnx``, ``<role>.fp32.tflite``, ``<role>.int8.onnx``,
``<role>.int8.tflite`` and each rung's ``int8-<remedy>.<suffix>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from edgerec.export.artifacts.convert import ModelIO, to_onnx, to_tflite
from edgerec.export.artifacts.ladder import (
    Gate,
    LadderFailedError,
    Remedy,
    Report,
    quantize_with_ladder,
)
from edgerec.export.artifacts.quantize_onnx import quantize_onnx
from edgerec.export.artifacts.quantize_tflite import quantize_tflite
from edgerec.runtimes import Engine, RuntimeOptions, open_runtime
from edgerec.sdk import Layout, Precision, Role
from edgerec.sdk.bundle.writer import NewArtifact
from torch import nn

__all__ = ["BuiltFiles", "build_model_files"]

Log = Callable[[str], None]
R = TypeVar("R", bound=Report)


@dataclass
class BuiltFiles:
    """One role's model files and what was measured on the way.

    Attributes:
        artifacts: the files for the bundle: fp32 ONNX and TFLite, then each int8 that passed.
        parity: artifact key (e.g. ``"scorer/onnx/int8"``) -> the role's parity report.
        ladder_records: int8 key -> the ladder's record (the manifest's
            ``metrics["quantization"]``), for every int8 file tried: a file that passed has
            :meth:`~.ladder.LadderResult.to_dict` (``remedy``, ``passed: True``,
            ``attempts``) with ``outcome: "shipped"``; one left out has
            :meth:`~.ladder.LadderFailedError.to_dict` (``remedy: None``, ``passed: False``,
            ``best``, every ``attempts``' parity and shortfalls) with ``outcome: "left out"``.
        gate_failures: int8 key -> why that file was left out.
        sizes: artifact key -> file size in bytes.
    """

    artifacts: list[NewArtifact] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    ladder_records: dict[str, Any] = field(default_factory=dict)
    gate_failures: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def add(self, artifact: NewArtifact, report: Any) -> None:
        """Record a checked file: its artifact, parity report and size."""
        self.artifacts.append(artifact)
        self.parity[artifact.key] = report
        self.sizes[artifact.key] = artifact.source.stat().st_size


def _describe(path: Path, role: Role, precision: Precision) -> NewArtifact:
    """The bundle entry of a model file, its tensors read by its engine; image inputs get
    their layout (NHWC when the last axis holds the 3 channels)."""
    with open_runtime(path, options=RuntimeOptions(num_threads=1)) as rt:
        inputs, outputs, engine = tuple(rt.input_specs()), tuple(rt.output_specs()), rt.engine
    shape = inputs[0].shape
    layout = None
    if len(shape) == 4:
        layout = Layout.NHWC if shape[-1] == 3 and shape[1] != 3 else Layout.NCHW
    return NewArtifact(source=path, role=role, precision=precision, inputs=inputs,
                       outputs=outputs, output=outputs[0].name, layout=layout, engine=engine)


@dataclass
class _Build(Generic[R]):
    """The state of one :func:`build_model_files` run."""

    model: nn.Module
    out_dir: Path
    role: Role
    io: ModelIO
    calibration: Iterable
    log: Log
    built: BuiltFiles = field(default_factory=BuiltFiles)

    def fp32(self, engine: Engine, check: Callable[[NewArtifact], R]) -> None:
        """Convert, describe and check the fp32 file of ``engine``."""
        convert = to_onnx if engine is Engine.ONNX else to_tflite
        path = convert(self.model, self.out_dir / f"{self.role.value}.fp32{engine.suffix}",
                       self.io)
        art = _describe(path, self.role, Precision.FP32)
        report = check(art)
        self.built.add(art, report)
        self.log(f"  {art.key}: {report}")

    def quantize(self, engine: Engine, remedy: Remedy) -> Path:
        """The int8 file of one rung: ONNX from the fp32 ONNX file, TFLite from torch."""
        out = self.out_dir / f"int8-{remedy.name}{engine.suffix}"
        if engine is Engine.ONNX:
            fp32 = self.out_dir / f"{self.role.value}.fp32.onnx"
            return quantize_onnx(fp32, out, self.calibration, remedy.options)
        return quantize_tflite(self.model, out, self.calibration, self.io, remedy.options)

    def int8(self, engine: Engine, remedies: Sequence[Remedy], evaluate: Callable[[Path], R],
             gate: Gate[R], fail_on_gate: bool) -> None:
        """Climb ``engine``'s ladder; keep the passing file or record why there is none."""
        name = f"{self.role.value}.int8{engine.suffix}"
        key = f"{self.role.value}/{engine.value}/int8"
        self.log(f"quantizing {name} ...")
        try:
            result = quantize_with_ladder(remedies, lambda r: self.quantize(engine, r),
                                          evaluate, gate, artifact=name)
        except LadderFailedError as exc:
            if fail_on_gate:
                raise
            self.built.gate_failures[key] = str(exc)
            self.built.ladder_records[key] = {**exc.to_dict(), "outcome": "left out"}
            self.log(f"  left out: {exc}")
            return
        final = self.out_dir / name
        result.artifact.replace(final)
        self.built.ladder_records[key] = {**result.to_dict(), "outcome": "shipped"}
        self.built.add(_describe(final, self.role, Precision.INT8), result.report)
        self.log(f"  {key}: {result.report} (remedy {result.remedy!r})")


def build_model_files(
    model: nn.Module,
    out_dir: Path,
    *,
    role: Role,
    io: ModelIO,
    check_fp32: Callable[[NewArtifact], R],
    evaluate: Callable[[Path], R],
    gate: Gate[R],
    ladders: Mapping[Engine, Sequence[Remedy]],
    calibration: Iterable,
    fail_on_gate: bool = True,
    log: Log = print,
) -> BuiltFiles:
    """Write and check one role's fp32 ONNX + TFLite and int8 files into ``out_dir``.

    Args:
        model: the trained torch model (eval mode), float32 ``(N, *io.sample_shape)`` in.
        role: names the files and keys (``encoder.fp32.onnx``, ``encoder/onnx/fp32``).
        io: the model's input and output (:class:`~.convert.ModelIO`).
        check_fp32: an fp32 artifact -> its parity report; raises ``ExportError`` when the
            file disagrees with torch (a conversion bug).
        evaluate: an int8 file -> its parity report against torch, for ``gate``.
        gate: what an int8 file must reach (:class:`~.ladder.Gate`).
        ladders: the engines to build int8 files for, each with its rungs (their options
            carry the ONNX quantization target), cheapest first.
        calibration: re-iterable of float32 batches ``(n, *io.sample_shape)`` for both
            quantizers.
        fail_on_gate: raise when an int8 file fails its gate (else leave it out and record).

    Raises:
        ExportError: an fp32 file disagrees with torch, or an int8 file fails its gate and
            ``fail_on_gate``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run: _Build = _Build(model, out_dir, role, io, calibration, log)
    log("converting fp32 ONNX and TFLite ...")
    for engine in (Engine.ONNX, Engine.TFLITE):
        run.fp32(engine, check_fp32)
    for engine, remedies in ladders.items():
        run.int8(Engine(engine), remedies, evaluate, gate, fail_on_gate)
    return run.built
