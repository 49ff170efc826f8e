"""Engine adapters behind one small protocol (:class:`Runtime`).

``open_runtime(path)`` picks the adapter from the file suffix (``.onnx`` -> ONNX Runtime,
``.tflite`` -> LiteRT); engines are imported only when a model is opened, so importing this
package costs nothing and needs neither engine installed. ``open_runtime(data, engine)`` loads
the model from bytes already in memory, so a caller that verified those bytes (a bundle's
sha256) runs exactly them: nothing re-reads the file between the check and the use.

:func:`available_engines` says which engines *import*; :func:`probe_engines` (what
``edgerec engines`` shows) runs a tiny model on each in a child process and says which
engines *work*, and why the others do not (a ``tflite-runtime`` built for NumPy 1.x imports
under NumPy 2 and then crashes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from edgerec.runtimes.base import (
    Device,
    Engine,
    Runtime,
    RuntimeOptions,
    TensorSpec,
    dequantize,
    quantize,
)
from edgerec.runtimes.errors import ModelError
from edgerec.runtimes.probe import EngineStatus, probe_engines

__all__ = [
    "Device",
    "Engine",
    "EngineStatus",
    "Runtime",
    "RuntimeOptions",
    "TensorSpec",
    "available_engines",
    "dequantize",
    "engine_for_path",
    "engine_versions",
    "open_runtime",
    "probe_engines",
    "quantize",
]


def engine_for_path(path: Union[str, os.PathLike]) -> Engine:
    """The engine that runs a model file, from its suffix (``.onnx`` or ``.tflite``)."""
    suffix = Path(path).suffix.lower()
    for engine in Engine:
        if suffix == engine.suffix:
            return engine
    raise ModelError(
        f"{Path(path).name} is neither .onnx nor .tflite; edgerec runs ONNX and TFLite models."
    )


def open_runtime(
    path: Union[str, os.PathLike, bytes],
    engine: Optional[Engine] = None,
    options: Optional[RuntimeOptions] = None,
    *,
    name: Optional[str] = None,
) -> Runtime:
    """Load a model on an engine, from a file or from its bytes.

    Args:
        path: ``.onnx`` or ``.tflite`` file, or the model file's bytes (then ``engine`` is
            required: bytes have no suffix).
        engine: engine to use; by default the one matching the suffix.
        options: threads, device, delegates.
        name: what messages call the model (default: the file name, or "model bytes").

    Raises:
        RuntimeUnavailableError: the engine, provider or delegate is not installed here.
        ModelError: the file is missing or is not a model the engine can load; bytes without
            an engine.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        if engine is None:
            raise ModelError("open_runtime() got model bytes without an engine; pass "
                             "engine=Engine.ONNX or Engine.TFLITE.")
        path = bytes(path)
    engine = Engine(engine) if engine is not None else engine_for_path(path)
    options = options or RuntimeOptions()
    if engine is Engine.ONNX:
        from edgerec.runtimes.ort import OnnxRuntime

        return OnnxRuntime(path, options, name=name)
    from edgerec.runtimes.litert import LiteRtRuntime

    return LiteRtRuntime(path, options, name=name)


def engine_versions() -> dict[str, Optional[str]]:
    """Installed engine versions, e.g. ``{"onnx": "1.32.0", "tflite": "ai_edge_litert 2.3.0"}``."""
    from edgerec.runtimes.litert import litert_backend
    from edgerec.runtimes.ort import onnxruntime_version

    return {Engine.ONNX.value: onnxruntime_version(), Engine.TFLITE.value: litert_backend()}


def available_engines() -> list[Engine]:
    """Engines that can be imported on this machine, ONNX Runtime first (cheap: no model is
    run; a LiteRT package known to crash with this NumPy does not count, see
    :func:`edgerec.runtimes.litert.numpy_abi_problem`; :func:`probe_engines` runs one)."""
    return [Engine(name) for name, version in engine_versions().items() if version]
