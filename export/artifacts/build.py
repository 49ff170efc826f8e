"""Export step 6: fp32 ONNX + TFLite, int8 ONNX + TFLite through the gated ladders, parity.

Every artifact is compared with the torch fp32 student on the same preprocessed held-out
images (:func:`.parity.parity`). fp32 artifacts must match the student (cosine >= 0.999);
int8 artifacts climb :func:`.quantize.quantize_with_ladder` until they pass the gate
(int8/fp32 mAP@10 >= 0.99, mean cosine >= 0.98) or the export fails, unless
``allow_gate_failure``, which leaves the failing int8 artifact out and records why. With a
``transform`` (the bundle's whitening) every comparison is made on the vectors the device ends
with, after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from edgerec.export.artifacts.convert import to_onnx, to_tflite
from edgerec.export.artifacts.parity import (
    ParityReport,
    artifact_embeddings,
    parity,
    torch_embeddings,
)
from edgerec.export.artifacts.quantize import (
    Gate,
    float_head_first,
    onnx_remedies,
    quantize_onnx,
    quantize_tflite,
    quantize_with_ladder,
    sensitive_layers,
    tflite_remedies,
)
from edgerec.export.errors import ExportError
from edgerec.runtimes import Engine, RuntimeOptions, open_runtime
from edgerec.sdk import Layout, Precision, Preprocessing, Role, l2_normalize
from edgerec.sdk.bundle.writer import NewArtifact

__all__ = ["BuiltArtifacts", "build_artifacts"]

FP32_MIN_COSINE = 0.999


@dataclass
class BuiltArtifacts:
    """The artifacts, their parity with the torch student, and the ladders' records."""

    artifacts: list[NewArtifact] = field(default_factory=list)
    parity: dict[str, ParityReport] = field(default_factory=dict)
    ladder_records: dict[str, Any] = field(default_factory=dict)
    gate_failures: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None

    def embed(self, artifact: NewArtifact, x: np.ndarray) -> np.ndarray:
        """Unit embeddings of NCHW float32 ``x`` through the artifact on its engine (and the
        ``transform``, as the device computes them)."""
        vectors = l2_normalize(artifact_embeddings(artifact.source, x, num_threads=2))
        return vectors if self.transform is None else self.transform(vectors)


def _describe(path: Path, precision: Precision) -> NewArtifact:
    with open_runtime(path, options=RuntimeOptions(num_threads=1)) as rt:
        inputs, outputs = tuple(rt.input_specs()), tuple(rt.output_specs())
        engine = rt.engine
    shape = inputs[0].shape
    layout = Layout.NHWC if shape[-1] == 3 and shape[1] != 3 else Layout.NCHW
    return NewArtifact(source=path, role=Role.ENCODER, precision=precision, inputs=inputs,
                       outputs=outputs, output=outputs[0].name, layout=layout, engine=engine)


def build_artifacts(
    model: Any,
    pre: Preprocessing,
    out_dir: Path,
    *,
    x_val: np.ndarray,
    val_labels: np.ndarray,
    x_cal: np.ndarray,
    allow_gate_failure: bool = False,
    first_remedy_only: bool = False,
    gate: Optional[Gate] = None,
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    log: Callable[[str], None] = print,
) -> BuiltArtifacts:
    """Write and check all four encoder artifacts into ``out_dir``.

    Args:
        model: the trained torch student (eval mode), (N, 3, S, S) -> (N, D).
        pre: the bundle's preprocessing (S = ``pre.input_size``).
        x_val: (N, 3, S, S) float32 held-out images, preprocessed; ``val_labels`` (N,).
        x_cal: (M, 3, S, S) float32 calibration images (training images), preprocessed.
        first_remedy_only: try only the cheapest rung of each ladder (quick exports).
        transform: unit (N, D) -> unit (N, D) vectors, applied to the student's and every
            artifact's embeddings before they are compared (the bundle's whitening).

    Raises:
        ExportError: an fp32 artifact disagrees with torch, or an int8 artifact fails its gate
            (unless ``allow_gate_failure``).
    """
    gate = gate or Gate()
    size = int(pre.input_size)
    out_dir = Path(out_dir)
    built = BuiltArtifacts(transform=transform)

    def device(vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(vectors) if transform is None else transform(l2_normalize(vectors))

    reference = device(torch_embeddings(model, x_val))
    calibration = [x_cal[i : i + 16] for i in range(0, len(x_cal), 16)]

    def evaluate(path: Path) -> ParityReport:
        return parity(reference, device(artifact_embeddings(path, x_val, num_threads=2)),
                      val_labels)

    def add(path: Path, precision: Precision, report: ParityReport) -> None:
        art = _describe(path, precision)
        built.artifacts.append(art)
        built.parity[art.key] = report
        built.sizes[art.key] = path.stat().st_size
        log(f"  {art.key}: {report}")

    log("converting fp32 ONNX and TFLite ...")
    for engine, convert in ((Engine.ONNX, to_onnx), (Engine.TFLITE, to_tflite)):
        path = convert(model, out_dir / f"encoder.fp32{engine.suffix}", size)
        report = evaluate(path)
        if report.cosine_min < FP32_MIN_COSINE:
            raise ExportError(
                f"encoder.fp32{engine.suffix} disagrees with the torch student (min cosine "
                f"{report.cosine_min:.5f} < {FP32_MIN_COSINE}): a conversion bug; please report it."
            )
        add(path, Precision.FP32, report)

    keep = sensitive_layers(model)
    fp32_onnx = out_dir / "encoder.fp32.onnx"
    ladders = {
        Engine.ONNX: (onnx_remedies(keep, images=min(256, len(x_cal))),
                      lambda r: quantize_onnx(fp32_onnx, out_dir / f"int8-{r.name}.onnx",
                                              calibration, r.options)),
        Engine.TFLITE: (tflite_remedies(keep, images=min(256, len(x_cal))),
                        lambda r: quantize_tflite(model, out_dir / f"int8-{r.name}.tflite",
                                                  calibration, size, r.options)),
    }
    for engine, (remedies, quantize) in ladders.items():
        if transform is not None:
            remedies = float_head_first(remedies)
        remedies = remedies[:1] if first_remedy_only else remedies
        name = f"encoder.int8{engine.suffix}"
        log(f"quantizing {name} ...")
        try:
            result = quantize_with_ladder(remedies, quantize, evaluate, gate, artifact=name)
        except ExportError as exc:
            if not allow_gate_failure:
                raise
            built.gate_failures[f"encoder/{engine.value}/int8"] = str(exc)
            log(f"  left out: {exc}")
            continue
        final = out_dir / name
        result.artifact.replace(final)
        built.ladder_records[f"encoder/{engine.value}/int8"] = result.to_dict()
        add(final, Precision.INT8, result.report)
    return built

