"""The same quantized network on ONNX Runtime: a uint8/int8 TFLite CNN rewritten as ONNX.

A quantized ``.tflite`` such as the shipped MobileNetV1 teacher runs on LiteRT only. ONNX
Runtime's integer kernels are often faster on x86 (on a VNNI Xeon the shipped teacher takes
about half of LiteRT's time), so :func:`tflite_to_onnx` writes the *same* integers as ONNX
``QLinearConv`` nodes: each convolution keeps its weights, bias, scales and zero points.
Nothing is re-quantized or re-calibrated:

- the graph input is float32 ``(N, 3, H, W)`` holding the TFLite input's real values
  (``scale * (q - zero_point)``), quantized inside the graph by ``QuantizeLinear`` with the
  TFLite input's own scale and zero point;
- ``CONV_2D`` (weights OHWI -> OIHW) and ``DEPTHWISE_CONV_2D`` (1HWC -> C1HW, depth multiplier
  1) become ``QLinearConv``. For an ARM or a VNNI x86 CPU (``target``) uint8 weights are
  shifted to int8 together with their zero point (``q - 128``, ``zp - 128``: the same
  ``q - zp``), so ONNX Runtime uses its fast u8s8 kernels; for x86 without VNNI they stay
  uint8 (u8u8), because ORT's AVX2 u8s8 kernels add pairs of products in int16 and saturate
  on full-range 8-bit weights (the export's int8 files use 7-bit weights there for the same
  reason; TOOLCHAIN.md). The target is recorded in the model's metadata;
- a global ``AVERAGE_POOL_2D`` becomes ``DequantizeLinear`` + ``GlobalAveragePool`` in float
  (the TFLite model rounds the mean to uint8; this keeps it exact); ``RESHAPE``/``SQUEEZE``
  at the end become ``Flatten``. The output is float32 ``(N, D)``.

LiteRT's Python API lists ops and tensors but not their options, so strides and padding are
read off the tensor shapes (TF ``SAME``: extra pad after; ``VALID``) and fused activations
are taken as the uint8 range's saturation (ReLU6 layers quantized on [0, 6]). That is why
every conversion is checked, on the CPU it runs on: both files run on the same probe inputs
through :mod:`edgerec.runtimes`, and a conversion whose cosine falls below ``min_cosine`` on
any probe is refused and nothing is written. Graphs that branch (residual ``ADD``) or use
other ops are refused with the ops named.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from edgerec.export.artifacts.quantize_onnx import QuantTarget
from edgerec.export.errors import ExportError
from edgerec.runtimes.litert import open_interpreter

__all__ = ["ConversionOptions", "ConversionResult", "tflite_to_onnx"]

PathLike = Union[str, os.PathLike]

_CONV = ("CONV_2D", "DEPTHWISE_CONV_2D")
_POOL = "AVERAGE_POOL_2D"
_FLAT = ("RESHAPE", "SQUEEZE")
_SUPPORTED = (*_CONV, _POOL, *_FLAT)


@dataclass(frozen=True)
class ConversionOptions:
    """How to convert and how closely the result must agree.

    Attributes:
        target: the CPU family the file is for (see the module doc); ``None`` is the CPU this
            runs on (:meth:`QuantTarget.for_this_cpu`).
        probe_images: photos to check agreement on (stretched to the model's input); empty
            uses ``synthetic_probes`` generated images (smooth colour fields with noise).
        synthetic_probes: how many generated probes when no photos are given.
        min_cosine: the least cosine between the two outputs on any probe; below it the
            conversion is refused.
        opset: ONNX opset of the written graph.
        force: replace an existing output file.
    """

    target: Optional[QuantTarget] = None
    probe_images: Sequence[PathLike] = ()
    synthetic_probes: int = 8
    min_cosine: float = 0.9999
    opset: int = 17
    force: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in (0, 1], got {self.min_cosine}")
        if self.synthetic_probes < 1:
            raise ValueError(f"synthetic_probes must be >= 1, got {self.synthetic_probes}")


@dataclass(frozen=True)
class ConversionResult:
    """What was written and how well it agrees with the source.

    Attributes:
        path: the ``.onnx`` file written.
        source: the ``.tflite`` it was converted from.
        ops: TFLite op names converted, in graph order.
        input_size: square input side in pixels.
        mean, std: per-channel normalisation on [0, 1] pixels that feeds the model its
            quantized input's real values (what ``edgerec bundle import --mean/--std`` takes
            for both files).
        probes: how many inputs the agreement was measured on (``"photos"`` or
            ``"synthetic"`` in ``probe_kind``).
        min_cosine, mean_cosine: cosine of the two float outputs, over the probes.
        max_abs_diff: largest absolute output difference, in the TFLite output's
            quantization steps (0 for a float output).
        seconds: wall time of the conversion and its check.
        target: the CPU family the file is for; ``weights``: ``"int8"`` (u8s8 kernels) or
            ``"uint8"`` (u8u8).
    """

    path: Path
    source: Path
    ops: tuple[str, ...]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    probes: int
    probe_kind: str
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    seconds: float
    target: str = QuantTarget.X86_AVX2.value
    weights: str = "uint8"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"path": str(self.path), "source": str(self.source), "ops": list(self.ops),
                "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "probes": self.probes, "probe_kind": self.probe_kind,
                "min_cosine": self.min_cosine, "mean_cosine": self.mean_cosine,
                "max_abs_diff_steps": self.max_abs_diff, "seconds": self.seconds,
                "target": self.target, "weights": self.weights}


@dataclass(frozen=True)
class _Quant:
    scale: np.ndarray  # float32, () per tensor or (C,) per channel
    zero: np.ndarray  # int, same shape
    dtype: np.dtype


def _quant(detail: dict, what: str) -> _Quant:
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), np.float32)
    zeros = np.asarray(params.get("zero_points", ()), np.int64)
    if scales.size == 0:
        raise ExportError(f"{what} ({detail['name']!r}) is not quantized; edgerec convert "
                          "rewrites quantized (uint8/int8) TFLite models only. Export a float "
                          "model to ONNX from its source framework.")
    if scales.size == 1:
        scales, zeros = scales.reshape(()), zeros.reshape(())
    return _Quant(scales, zeros, np.dtype(detail["dtype"]))


def _read(path: Path) -> tuple[Any, dict[int, dict], list[dict]]:
    """LiteRT's view of ``path``: the interpreter, tensor details by index, ops in order."""
    try:
        it = open_interpreter(path)
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"LiteRT cannot read {path.name}: {str(exc).strip()}. Give a "
                          ".tflite model file.") from None
    details = {int(d["index"]): d for d in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details()  # graph order; LiteRT has no public listing
           if op["op_name"] != "DELEGATE"]
    return it, details, ops


def _check_ops(path: Path, ops: list[dict], first_input: int) -> None:
    """Every op supported, and the graph a chain from the input."""
    unsupported = sorted({op["op_name"] for op in ops} - set(_SUPPORTED))
    if unsupported:
        raise ExportError(
            f"{path.name} uses {', '.join(unsupported)}, which edgerec convert does not "
            f"rewrite (it takes chains of {', '.join(_SUPPORTED)}, e.g. MobileNetV1); run "
            "this model on LiteRT as it is.")
    previous = first_input
    for op in ops:
        if int(op["inputs"][0]) != previous:
            raise ExportError(f"{path.name} is not a chain of ops ({op['op_name']} does not "
                              "read the previous op's output); edgerec convert takes "
                              "sequential CNNs only. Run this model on LiteRT as it is.")
        previous = int(op["outputs"][0])


def _stride_and_pads(in_hw: tuple[int, int], out_hw: tuple[int, int], kernel: tuple[int, int],
                     what: str) -> tuple[list[int], list[int]]:
    """Strides and ONNX pads (top, left, bottom, right) that map ``in_hw`` to ``out_hw``:
    TF ``SAME`` (extra pixel after) tried before ``VALID``, strides 1 to 4."""
    strides, before, after = [], [], []
    for size, out, k in zip(in_hw, out_hw, kernel):
        for s in (1, 2, 3, 4):
            if math.ceil(size / s) == out:  # SAME
                total = max((out - 1) * s + k - size, 0)
                strides.append(s)
                before.append(total // 2)
                after.append(total - total // 2)
                break
            if math.ceil((size - k + 1) / s) == out:  # VALID
                strides.append(s)
                before.append(0)
                after.append(0)
                break
        else:
            raise ExportError(f"{what}: cannot tell the stride and padding that take {in_hw} "
                              f"to {out_hw} with a {kernel} kernel; run this model on LiteRT.")
    return strides, before + after


class _Graph:
    """ONNX nodes and initializers under construction."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _weights(q: np.ndarray, quant: _Quant, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """The weights and zero point(s) to write: uint8 ones shifted by 128 to int8 with their
    zero point when ``signed``, else kept; int8 ones as they are."""
    if q.dtype == np.uint8 and not signed:
        return q, quant.zero.astype(np.uint8)
    if q.dtype == np.uint8:
        return ((q.astype(np.int16) - 128).astype(np.int8),
                (quant.zero - 128).astype(np.int8))
    return q.astype(np.int8), quant.zero.astype(np.int8)


def _conv(g: _Graph, k: int, op: dict, it: Any, details: dict[int, dict], x: str,
          x_q: _Quant, what: str, signed: bool) -> tuple[str, _Quant]:
    ins, out = [int(i) for i in op["inputs"]], int(op["outputs"][0])
    x_d, w_d, y_d = details[ins[0]], details[ins[1]], details[out]
    w_q, y_q = _quant(w_d, f"{what}: the weights"), _quant(y_d, f"{what}: the output")
    w = it.get_tensor(ins[1])
    channels = int(x_d["shape"][3])
    if op["op_name"] == "CONV_2D":
        w, group = w.transpose(0, 3, 1, 2), 1
    else:
        if w.shape[3] != channels:
            raise ExportError(f"{what}: depth multiplier {w.shape[3] // channels} is not "
                              "rewritten (only 1); run this model on LiteRT.")
        w, group = w.transpose(3, 0, 1, 2), channels
    w, w_zero = _weights(np.ascontiguousarray(w), w_q, signed)
    in_hw = (int(x_d["shape"][1]), int(x_d["shape"][2]))
    out_hw = (int(y_d["shape"][1]), int(y_d["shape"][2]))
    kernel = (int(w.shape[2]), int(w.shape[3]))
    strides, pads = _stride_and_pads(in_hw, out_hw, kernel, what)
    args = [x, g.const(f"x_scale_{k}", x_q.scale),
            g.const(f"x_zero_{k}", x_q.zero.astype(x_q.dtype)),
            g.const(f"w_{k}", w), g.const(f"w_scale_{k}", w_q.scale),
            g.const(f"w_zero_{k}", w_zero), g.const(f"y_scale_{k}", y_q.scale),
            g.const(f"y_zero_{k}", y_q.zero.astype(y_q.dtype))]
    if len(ins) > 2 and ins[2] >= 0:
        args.append(g.const(f"bias_{k}", it.get_tensor(ins[2]).astype(np.int32)))
    y = g.node("QLinearConv", args, f"conv_{k}", strides=strides, pads=pads, group=group,
               kernel_shape=list(kernel))
    return y, y_q


def _dequantize(g: _Graph, x: str, x_q: _Quant) -> str:
    return g.node("DequantizeLinear", [x, g.const("out_scale", x_q.scale),
                                       g.const("out_zero", x_q.zero.astype(x_q.dtype))],
                  "dequantized")


def _build(path: Path, opset: int, target: QuantTarget
           ) -> tuple[bytes, tuple[str, ...], int, _Quant, _Quant]:
    """The ONNX model's bytes, the ops converted, input side, input and output quantization."""
    from onnx import TensorProto, checker, helper

    it, details, ops = _read(path)
    inputs, outputs = it.get_input_details(), it.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"{path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                          "edgerec convert takes one image input and one embedding output.")
    inp = inputs[0]
    shape = [int(v) for v in inp["shape"]]
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
        raise ExportError(f"{path.name} takes {shape}; edgerec convert takes a square NHWC "
                          "RGB input.")
    in_q = _quant(inp, f"{path.name}'s input")
    if in_q.scale.ndim:
        raise ExportError(f"{path.name}'s input is quantized per channel; give a model with "
                          "one input scale.")
    _check_ops(path, ops, int(inp["index"]))
    g = _Graph()
    x = g.node("QuantizeLinear", ["pixels", g.const("in_scale", in_q.scale),
                                  g.const("in_zero", in_q.zero.astype(in_q.dtype))], "quantized")
    x_q: Optional[_Quant] = in_q
    for k, op in enumerate(ops):
        name, what = op["op_name"], f"{path.name} op {k} ({op['op_name']})"
        out_d = details[int(op["outputs"][0])]
        if name in _CONV:
            if x_q is None:
                raise ExportError(f"{what} follows the float pooling; edgerec convert "
                                  "rewrites convolutions before the global pool only.")
            x, x_q = _conv(g, k, op, it, details, x, x_q, what, _signed(target))
        elif name == _POOL:
            if x_q is None or [int(v) for v in out_d["shape"][1:3]] != [1, 1]:
                raise ExportError(f"{what} is not a global average pool; edgerec convert "
                                  "rewrites the global pool only. Run this model on LiteRT.")
            x = g.node("GlobalAveragePool", [_dequantize(g, x, x_q)], "pooled")
            x_q = None
        else:  # RESHAPE / SQUEEZE: the flatten below
            if len([d for d in out_d["shape"] if int(d) != 1]) > 1:
                raise ExportError(f"{what} keeps more than one axis; edgerec convert rewrites "
                                  "a final flatten only.")
    if x_q is not None:
        x = _dequantize(g, x, x_q)
    dim = int(np.prod(outputs[0]["shape"][1:]))
    g.node("Flatten", [x], "embedding", axis=1)
    scales = (outputs[0].get("quantization_parameters") or {}).get("scales", ())
    out_q = (_quant(outputs[0], f"{path.name}'s output") if len(scales)
             else _Quant(np.float32(0.0), np.int64(0), np.dtype(np.float32)))
    graph = helper.make_graph(
        g.nodes, path.stem,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, shape[1],
                                                                     shape[2]])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edgerec convert")
    model.ir_version = 8
    helper.set_model_props(model, {
        "edgerec.convert.source": path.name,
        "edgerec.convert.target": target.value,
        "edgerec.convert.weights": "int8" if _signed(target) else "uint8"})
    checker.check_model(model)
    return (model.SerializeToString(), tuple(op["op_name"] for op in ops), shape[1], in_q,
            out_q)


def _signed(target: QuantTarget) -> bool:
    """int8 weights (u8s8 kernels) everywhere but x86 without VNNI (see the module doc)."""
    return target is not QuantTarget.X86_AVX2


def _probes(options: ConversionOptions, size: int, in_q: _Quant) -> Iterator[np.ndarray]:
    """One ``(size, size, 3)`` float32 array of real input values at a time (so any number of
    photos takes the memory of one): photos stretched to ``size``, or smooth random colour
    fields with noise. Pixel values sit on the input's integer grid, so both engines quantize
    them exactly."""
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = [Path(p) for p in options.probe_images]
    for i in range(len(photos) or options.synthetic_probes):
        if photos:
            from edgerec.sdk.image import ImageLimits, load_image

            image = load_image(photos[i], ImageLimits())
            q = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.float32)
        else:
            cells = -(-size // 8)
            coarse = np.repeat(np.repeat(rng.uniform(0, 255, (8, 8, 3)), cells, axis=0),
                               cells, axis=1)[:size, :size]
            q = np.clip(np.rint(coarse + rng.normal(0, 12, coarse.shape)), 0, 255)
        if in_q.dtype == np.int8:
            q = q - 128.0
        yield (float(in_q.scale) * (q - float(in_q.zero))).astype(np.float32)


def _agreement(source: Path, converted: bytes, probes: Iterable[np.ndarray], out_q: _Quant
               ) -> tuple[int, float, float, float]:
    """(probes, min cosine, mean cosine, max |diff| in output steps) of the two models on
    ``probes`` (``(H, W, 3)`` each), one at a time (the TFLite file has a fixed batch of 1)."""
    from edgerec.runtimes import Engine, open_runtime

    cosines, worst = [], 0.0
    step = float(out_q.scale) if float(out_q.scale) > 0 else 1.0
    with (open_runtime(source) as tfl,
          open_runtime(converted, Engine.ONNX, name=f"{source.stem} as ONNX") as onx):
        t_in, o_in = tfl.input_specs()[0].name, onx.input_specs()[0].name
        t_out = tfl.output_specs()[0].name
        for x in probes:
            a = np.asarray(tfl.run({t_in: x[None]})[t_out], np.float64).reshape(-1)
            b = np.asarray(onx.run({o_in: x.transpose(2, 0, 1)[None].copy()})["embedding"],
                           np.float64).reshape(-1)
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cosines.append(float(a @ b / (na * nb)) if na > 0 and nb > 0
                           else float(na == nb))
            worst = max(worst, float(np.abs(a - b).max()) / step)
    return len(cosines), min(cosines), float(np.mean(cosines)), worst


def tflite_to_onnx(source: PathLike, out: PathLike,
                   options: ConversionOptions = ConversionOptions()) -> ConversionResult:
    """Rewrite the quantized TFLite CNN ``source`` as ONNX at ``out`` (see the module doc).

    The model is checked against ``source`` from memory and written (atomically: a temporary
    file renamed into place) only when every probe's cosine reaches ``options.min_cosine``.

    Raises:
        ExportError: ``source`` is missing, unreadable, not quantized, or uses ops or shapes
            this does not rewrite; ``out`` exists without ``force``; the two disagree.
    """
    from edgerec.sdk.files import atomic_write_bytes

    started = time.perf_counter()
    source, out = Path(source), Path(out)
    if not source.is_file():
        raise ExportError(f"{source} does not exist; give the .tflite model to convert.")
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"--out {out} must end in .onnx.")
    if out.exists() and not options.force:
        raise ExportError(f"{out} exists; pass --force to replace it.")
    target = QuantTarget(options.target) if options.target else QuantTarget.for_this_cpu()
    data, ops, size, in_q, out_q = _build(source, options.opset, target)
    kind = "photos" if options.probe_images else "synthetic"
    probes, low, mean, worst = _agreement(source, data, _probes(options, size, in_q), out_q)
    if low < options.min_cosine:
        raise ExportError(
            f"the ONNX rewrite of {source.name} disagrees with it (cosine {low:.6f} < "
            f"{options.min_cosine} on {kind} probes): its layers use options this rewrite "
            "cannot see (dilation, activations other than the uint8 range). Run this model "
            "on LiteRT as it is.")
    atomic_write_bytes(out, data)
    mean_px, std_px = float(in_q.zero) / 255.0, 1.0 / (255.0 * float(in_q.scale))
    if in_q.dtype == np.int8:
        mean_px = (float(in_q.zero) + 128.0) / 255.0
    return ConversionResult(
        path=out, source=source, ops=ops, input_size=size, mean=(mean_px,) * 3,
        std=(std_px,) * 3, probes=probes, probe_kind=kind, min_cosine=low,
        mean_cosine=mean, max_abs_diff=worst, seconds=time.perf_counter() - started,
        target=target.value, weights="int8" if _signed(target) else "uint8")
