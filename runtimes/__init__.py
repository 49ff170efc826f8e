"""Engine adapters behind one small protocol (:class:`Runtime`).

``open_runtime(path)`` picks the adapter from the file suffix (``.onnx`` -> ONNX Runtime,
``.tflite`` -> LiteRT); engines are imported only when a model is opened, so importing this
package costs nothing and needs neither engine installed.
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

__all__ = [
    "Device",
    "Engine",
    "Runtime",
    "RuntimeOptions",
    "TensorSpec",
    "available_engines",
    "dequantize",
    "engine_for_path",
    "engine_versions",
    "open_runtime",
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
    path: Union[str, os.PathLike],
    engine: Optional[Engine] = None,
    options: Optional[RuntimeOptions] = None,
) -> Runtime:
    """Load a model file on an engine.

    Args:
        path: ``.onnx`` or ``.tflite`` file.
        engine: engine to use; by default the one matching the suffix.
        options: threads, device, delegates.

    Raises:
        RuntimeUnavailableError: the engine, provider or delegate is not installed here.
        ModelError: the file is missing or is not a model the engine can load.
    """
    engine = Engine(engine) if engine is not None else engine_for_path(path)
    options = options or RuntimeOptions()
    if engine is Engine.ONNX:
        from edgerec.runtimes.ort import OnnxRuntime

        return OnnxRuntime(path, options)
    from edgerec.runtimes.litert import LiteRtRuntime

    return LiteRtRuntime(path, options)


def engine_versions() -> dict[str, Optional[str]]:
    """Installed engine versions, e.g. ``{"onnx": "1.32.0", "tflite": "ai_edge_litert 2.3.0"}``."""
    from edgerec.runtimes.litert import litert_backend
    from edgerec.runtimes.ort import onnxruntime_version

    return {Engine.ONNX.value: onnxruntime_version(), Engine.TFLITE.value: litert_backend()}


def available_engines() -> list[Engine]:
    """Engines that can be imported on this machine, ONNX Runtime first."""
    return [Engine(name) for name, version in engine_versions().items() if version]
