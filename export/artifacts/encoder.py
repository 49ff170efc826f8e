"""The image encoder's files: its gate, its remedy ladders and its build wrapper.

:func:`build_artifacts` writes the four encoder artifacts through the shared driver
(:func:`~.build.build_model_files`). Every artifact is compared with the torch fp32 student on
the same preprocessed held-out images (:func:`~.parity.parity`): fp32 artifacts must match the
student (min cosine >= :data:`FP32_MIN_COSINE`); int8 artifacts climb :func:`onnx_remedies`
and :func:`tflite_remedies` until they pass :class:`EncoderGate` (int8/fp32 mAP@10 >= 0.99,
or without labels top-10 neighbour overlap >= :data:`NEIGHBOUR_OVERLAP_WITHOUT_LABELS`; mean
cosine >= 0.98). With a ``transform`` (the bundle's whitening) every comparison is made
on the vectors the device ends with, after it, and the float-head rungs go first. Unless
turned off, the ONNX ladder ends with quantization-aware fine-tuning (:mod:`.qat`, rung
``"qat"``), gated like the others against the original student.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgerec.export.artifacts.build import BuiltFiles, build_model_files
from edgerec.export.artifacts.calibration import Calibration
from edgerec.export.artifacts.convert import ModelIO
from edgerec.export.artifacts.ladder import Remedy, remedies_from
from edgerec.export.artifacts.parity import (
    ParityReport,
    artifact_embeddings,
    parity,
    torch_embeddings,
)
from edgerec.export.artifacts.qat import QatOptions, QatRung
from edgerec.export.artifacts.quantize_onnx import OnnxQuantOptions, QuantTarget
from edgerec.export.artifacts.quantize_tflite import TfliteQuantOptions
from edgerec.export.errors import ExportError
from edgerec.runtimes import Engine
from edgerec.sdk import Preprocessing, Role, Whitening, l2_normalize
from edgerec.sdk.bundle.writer import NewArtifact

__all__ = [
    "FP32_MIN_COSINE",
    "NEIGHBOUR_OVERLAP_WITHOUT_LABELS",
    "BuiltArtifacts",
    "EncoderGate",
    "build_artifacts",
    "encoder_ladders",
    "float_head_first",
    "onnx_remedies",
    "sensitive_layers",
    "tflite_remedies",
]

FP32_MIN_COSINE = 0.999
NEIGHBOUR_OVERLAP_WITHOUT_LABELS = 0.8
"""The top-10 neighbour overlap an int8 encoder must keep with its fp32 reference on held-out
images that have no labels (:class:`EncoderGate`)."""
CALIBRATION_BATCH = 16  # images per calibration batch
_QAT = QatOptions()  # build_artifacts' default: the fine-tune's rung ends the ONNX ladder


@dataclass(frozen=True)
class EncoderGate:
    """What an int8 encoder must reach against its fp32 reference (a
    :class:`~.ladder.Gate` over :class:`~.parity.ParityReport`).

    Attributes:
        min_map_ratio: int8/fp32 same-label mAP@10 on the held-out images, checked when they
            have labels (the report has ``map_reference``).
        min_neighbour_overlap: top-10 neighbour overlap with the fp32 reference, checked *in
            place of* the mAP ratio when the held-out images have no labels, so that an
            unlabelled export is gated on what it can measure instead of not at all.
        min_mean_cosine: mean cosine to the fp32 reference, always checked.

    ``None`` turns a check off; a check that applies but whose number was not measured fails
    (value ``None``): no check is skipped silently. :meth:`applied` names those applied.
    """

    min_map_ratio: Optional[float] = 0.99
    min_mean_cosine: Optional[float] = 0.98
    min_neighbour_overlap: Optional[float] = NEIGHBOUR_OVERLAP_WITHOUT_LABELS

    def applied(self, labelled: bool) -> tuple[str, ...]:
        """The metrics this gate checks on held-out images with (or without) labels, e.g.
        ``("neighbour_overlap", "cosine_mean")`` without."""
        names = []
        if labelled or self.min_neighbour_overlap is None:
            names += ["map_ratio"] if self.min_map_ratio is not None else []
        else:
            names.append("neighbour_overlap")
        return (*names, *(["cosine_mean"] if self.min_mean_cosine is not None else []))

    def _checks(self, report: ParityReport) -> dict[str, tuple[Optional[float], float]]:
        values = {"map_ratio": (report.map_ratio, self.min_map_ratio),
                  "neighbour_overlap": (report.neighbour_overlap, self.min_neighbour_overlap),
                  "cosine_mean": (report.cosine_mean, self.min_mean_cosine)}
        return {m: values[m] for m in self.applied(report.map_reference is not None)}

    def shortfalls(self, report: ParityReport) -> dict[str, tuple[Optional[float], float]]:
        """``{metric: (value, required)}`` for every check ``report`` fails (empty: passes).

        A check whose number the report lacks fails with value ``None``.
        """
        return {m: (v, need) for m, (v, need) in self._checks(report).items()
                if v is None or not v >= need}

    def margin(self, report: ParityReport) -> float:
        """The worst (value - required) over the checks; >= 0 when the report passes."""
        return float(min(((-np.inf if v is None else v - need)
                          for v, need in self._checks(report).values()), default=np.inf))


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


def onnx_remedies(
    keep_float: Sequence[str] = (),
    *,
    base: Optional[OnnxQuantOptions] = None,
    images: int = 256,
    more_images: Optional[int] = None,
) -> list[Remedy]:
    """The ONNX post-training ladder: minmax -> percentile -> entropy -> more calibration
    images (percentile) -> ``keep_float`` layers in float (percentile, more images).

    ``base`` (default ``OnnxQuantOptions()``) carries the quantization target. ``images`` caps
    calibration for the first rungs; ``more_images`` (``None``: all) for the later ones. The
    keep-float rung is left out when ``keep_float`` is empty.
    """
    steps: list[tuple[str, dict[str, Any]]] = [
        ("minmax", {"calibration": Calibration.MINMAX, "max_samples": images}),
        ("percentile", {"calibration": Calibration.PERCENTILE, "max_samples": images}),
        ("entropy", {"calibration": Calibration.ENTROPY, "max_samples": images}),
        ("more_images", {"calibration": Calibration.PERCENTILE, "max_samples": more_images}),
    ]
    if keep_float:
        steps.append(("keep_float", {"calibration": Calibration.PERCENTILE,
                                     "max_samples": more_images,
                                     "keep_float": tuple(keep_float)}))
    return remedies_from(base or OnnxQuantOptions(), steps)


def tflite_remedies(
    keep_float: Sequence[str] = (),
    *,
    base: Optional[TfliteQuantOptions] = None,
    images: int = 256,
    more_images: Optional[int] = None,
) -> list[Remedy]:
    """The TFLite post-training ladder: histogram -> minmax -> more calibration images
    (histogram, then minmax) -> ``keep_float`` layers in float (more images; histogram, then
    minmax). Which observer wins differs from network to network, so each later rung is
    tried with both. ``base``
    defaults to ``TfliteQuantOptions()``."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("histogram", {"calibration": Calibration.HISTOGRAM, "max_samples": images}),
        ("minmax", {"calibration": Calibration.MINMAX, "max_samples": images}),
        ("more_images", {"calibration": Calibration.HISTOGRAM, "max_samples": more_images}),
        ("more_images_minmax", {"calibration": Calibration.MINMAX, "max_samples": more_images}),
    ]
    if keep_float:
        for name, calibration in (("keep_float", Calibration.HISTOGRAM),
                                  ("keep_float_minmax", Calibration.MINMAX)):
            steps.append((name, {"calibration": calibration, "max_samples": more_images,
                                 "keep_float": tuple(keep_float)}))
    return remedies_from(base or TfliteQuantOptions(), steps)


def float_head_first(remedies: Sequence[Remedy]) -> list[Remedy]:
    """The same rungs with those that keep layers in float moved to the front (order kept).

    For an encoder whose output is whitened (``edgerec.sdk.Whitening``): whitening magnifies
    the embedding's weak directions, where an int8 output layer's rounding lives, so the fully
    int8 rungs tend to miss the mean-cosine gate where a float head passes; trying the
    float-head rungs first saves the failing rungs' minutes.
    """
    def keeps_float(r: Remedy) -> bool:
        return bool(r.options is not None and getattr(r.options, "keep_float", ()))

    return [r for r in remedies if keeps_float(r)] + [r for r in remedies if not keeps_float(r)]


@dataclass
class BuiltArtifacts(BuiltFiles):
    """The encoder's artifacts, their parity with the torch student, and the ladders' records
    (:class:`~.build.BuiltFiles`), with the whitening ``transform`` they were compared after."""

    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None
    gate_checks: tuple[str, ...] = ()  # what the int8 gate checked (EncoderGate.applied)

    def embed(self, artifact: NewArtifact, x: np.ndarray) -> np.ndarray:
        """Unit ``(N, D)`` float32 embeddings of NCHW float32 ``x`` through the artifact on its
        engine (and the ``transform``, as the device computes them)."""
        vectors = l2_normalize(artifact_embeddings(artifact.source, x, num_threads=2))
        return vectors if self.transform is None else self.transform(vectors)


def encoder_ladders(model, engines: Sequence[Engine], target: QuantTarget, images: int, *,
                    float_head: bool = False, first_only: bool = False,
                    qat: Optional[QatRung] = None) -> dict[Engine, list[Remedy]]:
    """Each engine's rungs for ``model``: :func:`onnx_remedies` / :func:`tflite_remedies`
    (keeping :func:`sensitive_layers` float in their last rungs), float-head rungs first when
    ``float_head``, then, for ONNX, ``qat``'s rung (:class:`~.qat.QatRung`) last when given;
    only the first rung when ``first_only``. (The fine-tune simulates ORT's int8 scheme; its
    weights quantized for LiteRT measured worse than the untuned ones, so the TFLite ladder
    has no qat rung.)"""
    keep = sensitive_layers(model)
    ladders = {}
    for engine in map(Engine, engines):
        remedies = (onnx_remedies(keep, base=OnnxQuantOptions(target=target), images=images)
                    if engine is Engine.ONNX else tflite_remedies(keep, images=images))
        remedies = float_head_first(remedies) if float_head else remedies
        if qat is not None and engine is Engine.ONNX:
            remedies.append(qat.onnx_remedy())
        ladders[engine] = remedies[:1] if first_only else remedies
    return ladders


def _whitening_of(transform: Optional[Callable[[np.ndarray], np.ndarray]]) -> Optional[Whitening]:
    """The :class:`~edgerec.sdk.Whitening` behind ``transform`` (its bound ``apply``), for the
    fine-tune's objective; ``None`` for no transform or any other callable."""
    owner = getattr(transform, "__self__", None)
    return owner if isinstance(owner, Whitening) else None


def build_artifacts(
    model: Any,
    pre: Preprocessing,
    out_dir: Path,
    *,
    x_val: np.ndarray,
    val_labels: Optional[np.ndarray],
    x_cal: np.ndarray,
    allow_gate_failure: bool = False,
    first_remedy_only: bool = False,
    gate: Optional[EncoderGate] = None,
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    target: Union[QuantTarget, str] = QuantTarget.X86_AVX2,
    int8: Sequence[Engine] = (Engine.ONNX, Engine.TFLITE),
    qat: Optional[QatOptions] = _QAT,
    log: Callable[[str], None] = print,
) -> BuiltArtifacts:
    """Write and check the encoder's fp32 and int8 ONNX and TFLite artifacts into ``out_dir``.

    Args:
        model: the trained torch student (eval mode), (N, 3, S, S) -> (N, D).
        pre: the bundle's preprocessing (S = ``pre.input_size``).
        x_val: (N, 3, S, S) float32 held-out images, preprocessed; ``val_labels`` (N,) or
            None when they have no labels (the gate then checks neighbour overlap).
        x_cal: (M, 3, S, S) float32 calibration images (training images), preprocessed.
        allow_gate_failure: leave out (and record) an int8 artifact that fails its gate.
        first_remedy_only: try only the cheapest rung of each ladder (quick exports).
        transform: unit (N, D) -> unit (N, D) vectors, applied to the student's and every
            artifact's embeddings before they are compared (the bundle's whitening).
        target: the CPU family the int8 ONNX file is made for (:class:`QuantTarget`).
        int8: the engines to build int8 artifacts for.
        qat: the budget of the quantization-aware fine-tuning that ends the ONNX ladder
            (tried only when every post-training rung missed the gate; :mod:`.qat`); ``None``:
            the ladder ends with the post-training rungs. With a ``transform`` that is a
            ``Whitening.apply``, the fine-tune's objective is measured after the whitening.

    Raises:
        ExportError: an fp32 artifact disagrees with torch, or an int8 artifact fails its gate
            (unless ``allow_gate_failure``).
    """
    def device(vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(vectors) if transform is None else transform(l2_normalize(vectors))

    reference = device(torch_embeddings(model, x_val))

    def evaluate(path: Path) -> ParityReport:
        return parity(reference, device(artifact_embeddings(path, x_val, num_threads=2)),
                      val_labels)

    def check_fp32(art: NewArtifact) -> ParityReport:
        report = evaluate(art.source)
        if report.cosine_min < FP32_MIN_COSINE:
            raise ExportError(
                f"{art.source.name} disagrees with the torch student (min cosine "
                f"{report.cosine_min:.5f} < {FP32_MIN_COSINE}): a conversion bug; please report it."
            )
        return report

    gate = gate or EncoderGate()
    io = ModelIO.image(pre.input_size)
    calibration = [x_cal[i : i + CALIBRATION_BATCH]
                   for i in range(0, len(x_cal), CALIBRATION_BATCH)]
    rung = None if qat is None else QatRung(
        model, calibration, io, Path(out_dir), target=QuantTarget(target), options=qat,
        whitening=_whitening_of(transform), log=log)
    ladders = encoder_ladders(model, int8, QuantTarget(target), min(256, len(x_cal)),
                              float_head=transform is not None, first_only=first_remedy_only,
                              qat=rung)
    files = build_model_files(
        model, Path(out_dir), role=Role.ENCODER, io=io, check_fp32=check_fp32,
        evaluate=evaluate, gate=gate, ladders=ladders, calibration=calibration,
        fail_on_gate=not allow_gate_failure, log=log)
    return BuiltArtifacts(**vars(files), transform=transform,
                          gate_checks=gate.applied(val_labels is not None))
