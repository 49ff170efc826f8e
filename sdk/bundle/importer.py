"""Bring your own model: wrap existing ``.onnx``/``.tflite`` embedding models as a bundle.

The models are inspected through :mod:`edgerec.runtimes` (one image input, 4-D, 3 channels;
one output chosen as the embedding), probed once on real pixels to learn the embedding
dimension, and written with :func:`~edgerec.sdk.bundle.bundle.write_bundle` together with the
preprocessing the caller states.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from edgerec.runtimes import Engine, Runtime, TensorSpec, engine_for_path, open_runtime
from edgerec.sdk.bundle.bundle import Bundle, sha256_file
from edgerec.sdk.bundle.manifest import Precision, Role
from edgerec.sdk.bundle.writer import NewArtifact, write_bundle
from edgerec.sdk.errors import ModelError
from edgerec.sdk.image import Interpolation, Layout, Preprocessing, ResizeMode

__all__ = ["ImportOptions", "import_model", "raw_pixel_normalization"]

PathLike = Union[str, os.PathLike]

# op types whose presence makes an ONNX graph an 8-bit model
_ONNX_INT8_OPS = (b"QuantizeLinear", b"QLinearConv", b"QLinearMatMul", b"ConvInteger",
                  b"MatMulInteger", b"DynamicQuantizeLinear")


@dataclass(frozen=True)
class ImportOptions:
    """How the imported model(s) want their pixels.

    Attributes:
        input_size: side of the square input; ``None`` takes it from the model.
        mean, std: per-channel (R, G, B) on pixels scaled to [0, 1]; both ``None`` with
            ``raw_pixels`` to feed 0..255 pixel values as the model's stored input values.
        raw_pixels: derive mean/std so the model's input tensor receives raw 0..255 pixels
            (for uint8 models such as the Coral MobileNets: see :func:`raw_pixel_normalization`).
        crop_pct, resize, interpolation: see :class:`~edgerec.sdk.Preprocessing`.
        layout: image input layout; ``None`` infers it from where the 3-channel axis is.
        output: the output tensor holding the embedding; ``None`` needs a single-output model.
        precision: ``None`` detects it (quantized tensors or int8 ops mean ``int8``).
        name: free-text bundle name.
    """

    input_size: Optional[int] = None
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    raw_pixels: bool = False
    crop_pct: float = 1.0
    resize: ResizeMode = ResizeMode.SHORTER_CENTER_CROP
    interpolation: Interpolation = Interpolation.BILINEAR
    layout: Optional[Layout] = None
    output: Optional[str] = None
    precision: Optional[Precision] = None
    name: str = ""


def raw_pixel_normalization(spec: TensorSpec) -> tuple[float, float]:
    """(mean, std) on [0, 1] pixels that make ``spec``'s stored input value equal the pixel.

    A quantized input holds ``q`` with real value ``scale * (q - zero_point)``; preprocessing
    makes ``(p / 255 - mean) / std``; equal for ``q = p`` when ``std = 1 / (255 * scale)`` and
    ``mean = zero_point / 255``. Float or plain integer inputs use scale 1, zero point 0.
    """
    scale = spec.scale or 1.0
    zero_point = spec.zero_point or 0
    return zero_point / 255.0, 1.0 / (255.0 * scale)


def _layout(spec: TensorSpec, asked: Optional[Layout], where: str) -> Layout:
    if len(spec.shape) != 4:
        raise ModelError(
            f"{where}: input {spec.name!r} has shape {spec.shape}; an image encoder takes a "
            "4-D batch (N, 3, H, W) or (N, H, W, 3)."
        )
    if asked is not None:
        channel = spec.shape[1] if Layout(asked) is Layout.NCHW else spec.shape[3]
        if channel not in (3, None):
            raise ModelError(f"{where}: layout {asked.value} gives {channel} input channels.")
        return Layout(asked)
    nchw, nhwc = spec.shape[1] == 3, spec.shape[3] == 3
    if nchw == nhwc:
        raise ModelError(
            f"{where}: cannot tell the layout of input shape {spec.shape}; pass --layout."
        )
    return Layout.NCHW if nchw else Layout.NHWC


def _precision(path: Path, rt: Runtime) -> Precision:
    tensors = rt.input_specs() + rt.output_specs()
    if any(t.quantized or np.dtype(t.dtype).kind in "iu" for t in tensors):
        return Precision.INT8
    if rt.engine is Engine.ONNX:
        data = path.read_bytes()
        if any(op in data for op in _ONNX_INT8_OPS):
            return Precision.INT8
    return Precision.FP32


def _probe(rt: Runtime, spec: TensorSpec, layout: Layout, size: int, output: str) -> int:
    """Run two different real-valued inputs; return the output's per-item size."""
    rng = np.random.default_rng(0)
    shape = (2, 3, size, size) if layout is Layout.NCHW else (2, size, size, 3)
    x = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    try:
        y = rt.run({spec.name: x})[output]
    except Exception as exc:
        raise ModelError(f"The model failed on a {shape} input: {exc}") from exc
    if not np.isfinite(y).all():
        raise ModelError("The model outputs NaN or infinity on a plain input.")
    return int(np.prod(y.shape[1:]))


@dataclass(frozen=True)
class _Inspected:
    """One model file as an encoder: its artifact, square input side, output size and the
    normalisation its quantized input implies."""

    artifact: NewArtifact
    size: int
    dim: int
    raw_norm: tuple[float, float]


def _input_size(hw: tuple, asked: Optional[int], where: str) -> int:
    if asked is None:
        if hw[0] is None or hw[0] != hw[1]:
            raise ModelError(f"{where}: input is {hw}; pass --size for the square side.")
        return int(hw[0])
    if any(d is not None and d != asked for d in hw):
        raise ModelError(f"{where} takes {hw[0]}x{hw[1]} images, not {asked}; fix --size.")
    return asked


def _inspect(path: Path, options: ImportOptions) -> _Inspected:
    """Open ``path`` on its engine and check it is an image encoder (one 4-D image input, an
    embedding output); probe it once for the embedding size."""
    engine_for_path(path)
    with open_runtime(path) as rt:
        where = path.name
        inputs, outputs = rt.input_specs(), rt.output_specs()
        if len(inputs) != 1:
            raise ModelError(f"{where} takes {len(inputs)} inputs; an image encoder takes one.")
        spec = inputs[0]
        layout = _layout(spec, options.layout, where)
        hw = spec.shape[2:4] if layout is Layout.NCHW else spec.shape[1:3]
        size = _input_size(hw, options.input_size, where)
        names = [o.name for o in outputs]
        output = options.output or (names[0] if len(names) == 1 else None)
        if output not in names:
            raise ModelError(f"{where} has outputs {names}; pass --output with the embedding's "
                             "name.")
        dim = _probe(rt, spec, layout, size, output)
        precision = options.precision or _precision(path, rt)
        artifact = NewArtifact(source=path, role=Role.ENCODER, precision=Precision(precision),
                               inputs=tuple(inputs), outputs=tuple(outputs), output=output,
                               layout=layout)
    return _Inspected(artifact, size, dim, raw_pixel_normalization(spec))


def _normalisation(options: ImportOptions, models: Sequence[_Inspected]
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if options.raw_pixels:
        norms = {m.raw_norm for m in models}
        if len(norms) > 1:
            raise ModelError("--raw-pixels means different scalings for these models; import "
                             "them separately or give --mean/--std.")
        mean, std = norms.pop()
        return (mean,) * 3, (std,) * 3
    if options.mean is not None and options.std is not None:
        return tuple(options.mean), tuple(options.std)
    raise ModelError("State the model's pixel normalisation: --mean and --std (on [0, 1] "
                     "pixels), or --raw-pixels for models that take 0..255 pixel values.")


def import_model(
    models: Sequence[PathLike], out: PathLike, options: ImportOptions, *, force: bool = False
) -> Bundle:
    """Wrap one or more model files of the same network as a bundle.

    Several files (e.g. the ``.onnx`` and ``.tflite`` of one network, or fp32 and int8) become
    one bundle; they must agree on input size, embedding dimension and preprocessing.

    Raises:
        ModelError: a file is not an image embedding model (with what to pass instead).
        BundleError: ``out`` exists without ``force``; two files with the same engine/precision.
    """
    if not models:
        raise ModelError("Give at least one .onnx or .tflite model to import.")
    inspected = [_inspect(Path(m), options) for m in models]
    sizes, dims = {m.size for m in inspected}, {m.dim for m in inspected}
    if len(sizes) > 1 or len(dims) > 1:
        raise ModelError(f"The models disagree: input sizes {sizes}, embedding sizes {dims}.")
    mean, std = _normalisation(options, inspected)
    pre = Preprocessing(input_size=sizes.pop(), crop_pct=options.crop_pct, resize=options.resize,
                        interpolation=options.interpolation, mean=mean, std=std)
    sources = [{"file": Path(m).name, "sha256": sha256_file(m)} for m in models]
    return write_bundle(
        out, artifacts=[m.artifact for m in inspected], preprocessing=pre,
        embedding_dim=dims.pop(), name=options.name or Path(models[0]).stem,
        recipe={"kind": "imported", "sources": sources}, force=force,
    )
