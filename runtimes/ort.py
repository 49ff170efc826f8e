"""ONNX Runtime adapter.

Providers are chosen explicitly from :class:`~edgerec.runtimes.base.Device`: ``CPU`` runs
``CPUExecutionProvider``; ``CUDA`` runs ``CUDAExecutionProvider`` (with CPU only for the
nodes CUDA cannot take) and raises when CUDA is not installed or the session did not get it:
ONNX Runtime itself silently falls back to CPU in that case (its issues #23372, #17801).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
from edgerec.runtimes.base import (
    Device,
    Engine,
    Runtime,
    RuntimeOptions,
    TensorSpec,
    dequantize,
    quantize,
)
from edgerec.runtimes.errors import InferenceError, ModelError, RuntimeUnavailableError

__all__ = ["OnnxRuntime", "onnxruntime_version"]

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}

_PROVIDERS = {
    Device.CPU: ["CPUExecutionProvider"],
    Device.CUDA: ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "ONNX Runtime is not installed; install it with `pip install edgerec[onnx]` "
            "(or `pip install onnxruntime`), or use the tflite engine."
        ) from exc
    return onnxruntime


def onnxruntime_version() -> Optional[str]:
    """Installed onnxruntime version, or ``None`` when it is not installed."""
    try:
        return _import_ort().__version__
    except RuntimeUnavailableError:
        return None


def _spec(node) -> TensorSpec:
    dtype = _ORT_TYPES.get(node.type)
    if dtype is None:
        raise ModelError(f"Tensor {node.name!r} has type {node.type}, which edgerec cannot feed.")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape)
    return TensorSpec(name=node.name, shape=shape, dtype=dtype)


class OnnxRuntime(Runtime):
    """An ``.onnx`` model in an ``onnxruntime.InferenceSession``."""

    engine = Engine.ONNX

    def __init__(self, path: str | os.PathLike | bytes, options: Optional[RuntimeOptions] = None,
                 *, name: Optional[str] = None):
        """``path`` is an ``.onnx`` file or its bytes (loaded as given, never re-read)."""
        ort = _import_ort()
        model = path if isinstance(path, bytes) else str(path)
        path = Path(name or "model bytes") if isinstance(path, bytes) else Path(path)
        options = options or RuntimeOptions()
        if options.device not in _PROVIDERS:
            raise RuntimeUnavailableError(
                f"ONNX Runtime cannot run on device {options.device.value!r}; use 'cpu' or 'cuda'."
            )
        wanted = _PROVIDERS[options.device]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            raise RuntimeUnavailableError(
                f"{wanted[0]} is not available in this onnxruntime (available: {available}); "
                "install onnxruntime-gpu with a matching CUDA, or run on device='cpu'."
            )
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if options.num_threads is not None:
            so.intra_op_num_threads = options.num_threads
            so.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(model, sess_options=so, providers=wanted)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            if isinstance(model, str) and not path.is_file():
                raise ModelError(f"No model file at {path}; check the path.") from exc
            raise ModelError(
                f"ONNX Runtime could not load {path.name}: {exc}. Is it a valid .onnx model?"
            ) from exc
        if wanted[0] not in self._session.get_providers():
            got = self._session.get_providers()
            self._session = None
            raise RuntimeUnavailableError(
                f"ONNX Runtime fell back to {got} instead of {wanted[0]} (missing CUDA/cuDNN "
                "libraries?); fix the GPU install or run on device='cpu'."
            )
        self.path = path
        self.options = options
        self._inputs = [_spec(n) for n in self._session.get_inputs()]
        self._outputs = [_spec(n) for n in self._session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses, most preferred first."""
        return list(self._session.get_providers()) if self._session is not None else []

    def input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {s.name: quantize(inputs[s.name], s) for s in self._inputs}
        try:
            values = self._session.run(None, feed)
        except Exception as exc:
            raise InferenceError(f"ONNX Runtime failed on {self.path.name}: {exc}") from exc
        return {s.name: dequantize(np.asarray(v), s) for s, v in zip(self._outputs, values)}

    @property
    def closed(self) -> bool:
        return self._session is None

    def close(self) -> None:
        self._session = None
