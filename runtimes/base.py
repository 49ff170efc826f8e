"""The small protocol every engine adapter implements, and the value types it speaks.

An adapter loads one model file, describes its inputs and outputs as :class:`TensorSpec`, and
runs a batch: ``run({name: float32 array}) -> {name: float32 array}``. Quantized inputs and
outputs are (de)quantized inside the adapter from each tensor's scale and zero point, so
callers always pass and receive float32 real values. Engine objects never leave the adapter.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import numpy as np
from edgerec.runtimes.errors import InferenceError

__all__ = ["Device", "Engine", "Runtime", "RuntimeOptions", "TensorSpec"]


class Engine(str, enum.Enum):
    """An inference engine, named by the file format it runs."""

    ONNX = "onnx"  # ONNX Runtime, runs .onnx
    TFLITE = "tflite"  # LiteRT (ai_edge_litert / tflite_runtime / tensorflow.lite), runs .tflite

    @property
    def suffix(self) -> str:
        """File suffix of the engine's model format, e.g. ``".onnx"``."""
        return "." + self.value


class Device(str, enum.Enum):
    """Where the engine runs the model. A device that is not available raises, never falls back."""

    CPU = "cpu"
    CUDA = "cuda"  # ONNX Runtime CUDAExecutionProvider
    GPU = "gpu"  # LiteRT GPU delegate


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model.

    Attributes:
        num_threads: intra-op threads; ``None`` leaves the engine's default (all cores).
        device: :class:`Device` to run on; unavailable devices raise ``RuntimeUnavailableError``.
        xnnpack: LiteRT only: use the XNNPACK CPU delegate (the default in LiteRT).
    """

    num_threads: Optional[int] = None
    device: Device = Device.CPU
    xnnpack: bool = True

    def __post_init__(self) -> None:
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}.")
        object.__setattr__(self, "device", Device(self.device))


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a model.

    Attributes:
        name: tensor name in the model.
        shape: dimensions; ``None`` marks a dynamic dimension (usually the batch).
        dtype: numpy dtype name of the tensor *inside* the model (``"float32"``, ``"uint8"``,
            ``"int8"``, ...). Callers still pass and receive float32.
        scale: quantization scale when the tensor is quantized (real = scale * (q - zero_point)),
            else ``None``.
        zero_point: quantization zero point, else ``None``.
    """

    name: str
    shape: tuple[Optional[int], ...]
    dtype: str
    scale: Optional[float] = None
    zero_point: Optional[int] = None

    @property
    def quantized(self) -> bool:
        """True when the tensor holds integers with a scale and zero point."""
        return self.scale is not None

    def to_dict(self) -> dict:
        """JSON-ready form (used in bundle manifests)."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float32 real values -> the tensor's storage dtype (round, clip to the dtype's range).

    Integer tensors without quantization parameters are treated as scale 1, zero point 0.
    """
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return np.ascontiguousarray(x, dtype=dtype)
    scale = spec.scale if spec.scale else 1.0
    zero_point = spec.zero_point or 0
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The tensor's storage dtype -> float32 real values."""
    if q.dtype.kind == "f":
        return q.astype(np.float32, copy=False)
    if spec.scale is None:
        return q.astype(np.float32)
    return (q.astype(np.float32) - np.float32(spec.zero_point or 0)) * np.float32(spec.scale)


class Runtime(ABC):
    """One loaded model on one engine. Use as a context manager or call :meth:`close`."""

    engine: Engine

    @abstractmethod
    def input_specs(self) -> list[TensorSpec]:
        """The model's inputs, in order."""

    @abstractmethod
    def output_specs(self) -> list[TensorSpec]:
        """The model's outputs, in order."""

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Engine-specific run on validated float32 inputs; returns float32 outputs."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine's session or interpreter; idempotent."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch.

        Args:
            inputs: one float32 array per input name, each with the batch as its first axis
                and the other dimensions as in :meth:`input_specs`.

        Returns:
            One float32 array per output name, batch first.

        Raises:
            InferenceError: a missing or unknown input, a wrong rank or shape, a closed runtime,
                or an engine failure.
        """
        if self.closed:
            raise InferenceError("This runtime is closed; open the model again to run it.")
        specs = {s.name: s for s in self.input_specs()}
        missing = sorted(set(specs) - set(inputs))
        unknown = sorted(set(inputs) - set(specs))
        if missing or unknown:
            raise InferenceError(
                f"Inputs do not match the model: missing {missing}, unknown {unknown}; "
                f"the model takes {sorted(specs)}."
            )
        checked: dict[str, np.ndarray] = {}
        batch = None
        for name, spec in specs.items():
            x = np.asarray(inputs[name])
            fixed = [(d, n) for d, n in zip(spec.shape[1:], x.shape[1:]) if d is not None]
            if x.ndim != len(spec.shape) or any(d != n for d, n in fixed):
                raise InferenceError(
                    f"Input {name!r} has shape {x.shape}, the model expects {spec.shape} "
                    "(None = any); reshape the input (batch first)."
                )
            if batch is None:
                batch = x.shape[0]
            elif x.shape[0] != batch:
                raise InferenceError("All inputs must have the same batch size.")
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                raise InferenceError(f"Input {name!r} contains NaN or infinity.")
            checked[name] = np.asarray(x, dtype=np.float32)
        if batch == 0:
            return {s.name: np.zeros((0, *[d or 0 for d in s.shape[1:]]), np.float32)
                    for s in self.output_specs()}
        return self._run(checked)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.shape)}:{s.dtype}" for s in self.input_specs())
        return f"{type(self).__name__}({ins})"
