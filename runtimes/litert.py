"""LiteRT (TensorFlow Lite) adapter.

The interpreter comes from ``ai_edge_litert`` and falls back to ``tflite_runtime`` and then
``tensorflow.lite``, in that order. XNNPACK is LiteRT's default CPU delegate; ``xnnpack=False``
turns it off. ``Device.GPU`` loads the GPU delegate and raises when it cannot.

Batches larger than the model's fixed batch are run by resizing the input tensor when the
model allows it, else by looping over single items (decided once, on the first batch).

A LiteRT interpreter is not thread-safe (its input and output tensors are shared state), so
one adapter shared by several threads runs one batch at a time under a lock; for parallel
runs, open one adapter per thread.

LiteRT's C++ logger writes ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` straight
to file descriptor 2 the first time a process allocates an interpreter with XNNPACK; neither
``TF_CPP_MIN_LOG_LEVEL`` nor any Python option of ai-edge-litert 2.3 turns it off. So while an
interpreter is created and first allocated, fd 2 points at a temporary file (one creation at a
time, under a process-wide lock); afterwards the ``INFO:`` lines are dropped and everything else
(``WARNING:``, ``ERROR:``, anything another thread wrote meanwhile) is written to
``sys.stderr``, so real errors still reach it. Set ``EDGEREC_LITERT_LOG=1`` to leave fd 2 alone.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

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

__all__ = ["LiteRtRuntime", "litert_backend", "numpy_abi_problem", "open_interpreter",
           "quiet_native_stderr"]

_BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
_GPU_DELEGATES = ("libtensorflowlite_gpu_delegate.so", "libLiteRtGpuAccelerator.so")
_LOG_ENV = "EDGEREC_LITERT_LOG"  # "1": let LiteRT's INFO lines through
_NATIVE_INFO = b"INFO: "  # the prefix of LiteRT's minimal logger at INFO severity
_STDERR_LOCK = threading.RLock()  # fd 2 is process-wide: one redirection at a time


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold back LiteRT's ``INFO:`` lines written to fd 2 inside the block; pass on the rest.

    fd 2 points at a temporary file for the duration (so nothing blocks, however much is
    written); on exit, also when the block raises, it is restored, lines starting with
    ``INFO: `` are dropped and the other bytes are written to ``sys.stderr``. Anything written
    to fd 2 by other threads meanwhile is delayed, not lost. A no-op when
    ``EDGEREC_LITERT_LOG=1``, or when fd 2 or a temporary file is not available.
    """
    if os.environ.get(_LOG_ENV, "") not in ("", "0"):
        yield
        return
    with _STDERR_LOCK, contextlib.ExitStack() as stack:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()  # Python's own pending text goes out before the switch
        try:
            sink = stack.enter_context(tempfile.TemporaryFile())
            saved = os.dup(2)
        except OSError:  # no temporary file, or no fd 2 at all: nothing to silence safely
            saved = -1
        if saved < 0:
            yield
            return
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            _pass_on(sink.read())


def _pass_on(captured: bytes) -> None:
    """Write ``captured`` without its ``INFO: `` lines to ``sys.stderr``."""
    kept = b"".join(line for line in captured.splitlines(keepends=True)
                    if not line.startswith(_NATIVE_INFO))
    if not kept:
        return
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no usable sys.stderr
        sys.stderr.write(kept.decode("utf-8", "replace"))
        sys.stderr.flush()


def numpy_abi_problem(top: str, version: Optional[str], numpy_version: str) -> Optional[str]:
    """Why the interpreter package ``top`` at ``version`` cannot run with this NumPy, or None.

    Every ``tflite-runtime`` wheel (the last is 2.14.0, from 2023) was built against NumPy 1.x;
    under NumPy 2 it imports, or half-imports, and then crashes the process on the first tensor
    it touches. ``ai-edge-litert`` is its successor and is built for NumPy 2.
    """
    if top != "tflite_runtime" or int(numpy_version.split(".")[0]) < 2:
        return None
    try:  # an unknown version may be a build from source for NumPy 2: not refused
        major, minor = (int(x) for x in (version or "").split(".")[:2])
    except ValueError:
        return None
    if (major, minor) >= (2, 15):
        return None
    return (f"tflite-runtime {version} was built for NumPy 1.x and crashes with NumPy "
            f"{numpy_version}; install ai-edge-litert (`pip install ai-edge-litert`) "
            "or NumPy < 2")


def _dist_version(top: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version({"ai_edge_litert": "ai-edge-litert",
                        "tflite_runtime": "tflite-runtime"}.get(top, top))
    except PackageNotFoundError:
        return None


def _import_backend() -> tuple[str, Any]:
    errors = []
    for name in _BACKENDS:
        top = name.split(".")[0]
        if top == "tflite_runtime" and importlib.util.find_spec(top) is not None:
            problem = numpy_abi_problem(top, _dist_version(top), np.__version__)
            if problem:  # checked before the import, which can itself crash
                errors.append(f"{name}: {problem}")
                continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # also numpy-ABI failures, which raise ImportError
            errors.append(f"{name}: {exc}")
            continue
        return name, module
    raise RuntimeUnavailableError(
        "No LiteRT interpreter is installed; install it with `pip install edgerec[tflite]` "
        "(or `pip install ai-edge-litert`), or use the onnx engine. Tried: " + "; ".join(errors)
    )


def litert_backend() -> Optional[str]:
    """``"<module> <version>"`` of the interpreter that would be used, or ``None``."""
    try:
        name, _ = _import_backend()
    except RuntimeUnavailableError:
        return None
    top = name.split(".")[0]
    version = _dist_version(top)
    return f"{top} {version}" if version else top


def open_interpreter(path: str | os.PathLike[str], *, allocate: bool = True) -> Any:
    """A bare LiteRT ``Interpreter`` of ``path`` for tools that read a model's tensors and ops
    (the export's MAC count, its weight reader and ``edgerec convert``); models are run by
    :class:`LiteRtRuntime`. The first allocation's XNNPACK INFO line is held back.

    Raises :class:`RuntimeUnavailableError` without a LiteRT interpreter, and LiteRT's own
    ``ValueError`` / ``RuntimeError`` for a file it cannot read (the caller names the file).
    """
    _, module = _import_backend()
    with quiet_native_stderr():
        interpreter = module.Interpreter(model_path=str(path))
        if allocate:
            interpreter.allocate_tensors()
    return interpreter


def _spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"]).name
    signature = detail.get("shape_signature", detail["shape"])
    shape = tuple(None if int(d) < 0 else int(d) for d in signature)
    if scale:
        return TensorSpec(detail["name"], shape, dtype, float(scale), int(zero_point))
    return TensorSpec(detail["name"], shape, dtype)


class LiteRtRuntime(Runtime):
    """A ``.tflite`` model in a LiteRT interpreter."""

    engine = Engine.TFLITE

    def __init__(self, path: str | os.PathLike | bytes, options: Optional[RuntimeOptions] = None,
                 *, name: Optional[str] = None):
        """``path`` is a ``.tflite`` file or its bytes (loaded as given, never re-read)."""
        self.backend, module = _import_backend()
        content = path if isinstance(path, bytes) else None
        path = Path(name or "model bytes") if content is not None else Path(path)
        options = options or RuntimeOptions()
        if options.device not in (Device.CPU, Device.GPU):
            raise RuntimeUnavailableError(
                f"LiteRT cannot run on device {options.device.value!r}; use 'cpu' or 'gpu'."
            )
        kwargs: dict[str, Any] = {"num_threads": options.num_threads}
        if content is not None:
            kwargs["model_content"] = content
        else:
            kwargs["model_path"] = str(path)
        if options.device is Device.GPU:
            kwargs["experimental_delegates"] = [self._gpu_delegate(module)]
        if not options.xnnpack:
            resolver = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            kwargs["experimental_op_resolver_type"] = resolver
        if content is None and not path.is_file():
            raise ModelError(f"No model file at {path}; check the path.")
        try:
            with quiet_native_stderr():  # the first allocation logs XNNPACK's INFO line
                interpreter = module.Interpreter(**kwargs)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"LiteRT could not load {path.name}: {exc}. Is it a valid .tflite model "
                "(and are its ops supported by this interpreter version)?"
            ) from exc
        self._interpreter = interpreter
        self.path = path
        self.options = options
        self._in_details = interpreter.get_input_details()
        self._inputs = [_spec(d) for d in self._in_details]
        self._outputs = [_spec(d) for d in interpreter.get_output_details()]
        self._batch = int(self._in_details[0]["shape"][0]) if self._in_details else 1
        self._resizable: Optional[bool] = None
        self._lock = threading.Lock()  # one run at a time: the interpreter is shared state

    @staticmethod
    def _gpu_delegate(module: Any) -> Any:
        errors = []
        for lib in _GPU_DELEGATES:
            try:
                return module.load_delegate(lib)
            except (ValueError, OSError, RuntimeError) as exc:
                errors.append(f"{lib}: {exc}")
        raise RuntimeUnavailableError(
            "The LiteRT GPU delegate could not be loaded (" + "; ".join(errors) + "); install "
            "it for this device or run on device='cpu'."
        )

    def input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def _resize(self, batch: int) -> bool:
        """Make the interpreter take ``batch`` items at once; False when the model refuses."""
        if batch == self._batch:
            return True
        it = self._interpreter
        try:
            for d in self._in_details:
                it.resize_tensor_input(d["index"], [batch, *d["shape"][1:]], strict=False)
            it.allocate_tensors()
        except (ValueError, RuntimeError):
            for d in self._in_details:  # back to the shape the model was saved with
                it.resize_tensor_input(d["index"], list(d["shape"]), strict=False)
            it.allocate_tensors()
            self._batch = int(self._in_details[0]["shape"][0])
            return False
        self._batch = batch
        return True

    def _invoke(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self._interpreter
        for spec, d in zip(self._inputs, self._in_details):
            it.set_tensor(d["index"], quantize(inputs[spec.name], spec))
        it.invoke()
        outs = it.get_output_details()
        return {s.name: dequantize(it.get_tensor(d["index"]).copy(), s)
                for s, d in zip(self._outputs, outs)}

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._interpreter is None:
                raise InferenceError("This runtime is closed; open the model again to run it.")
            return self._run_locked(inputs)

    def _run_locked(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(inputs.values())).shape[0]
        try:
            if self._resizable is not False and self._resize(batch):
                result = self._invoke(inputs)
                if all(v.shape[0] == batch for v in result.values()):
                    self._resizable = True
                    return result
                self._resizable = False  # e.g. a Reshape with a baked-in batch of 1
            if not self._resize(1):
                raise InferenceError(f"{self.path.name} cannot run with a batch of 1.")
            parts = [self._invoke({k: v[i : i + 1] for k, v in inputs.items()})
                     for i in range(batch)]
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"LiteRT failed on {self.path.name}: {exc}") from exc
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    @property
    def closed(self) -> bool:
        return self._interpreter is None

    def close(self) -> None:
        with self._lock:
            self._interpreter = None
