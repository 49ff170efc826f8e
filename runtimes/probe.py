"""Is an engine usable here? Run a tiny model on it, in a separate process, and say why not.

Importing an engine is not proof that it works: a ``tflite-runtime`` wheel built for NumPy 1.x
imports under NumPy 2 and then crashes the interpreter process on its first tensor, and an
engine's shared library can abort on a CPU it was not built for. :func:`probe_engines` runs,
for each engine, a child Python process that opens the real adapter on a model embedded here
(LiteRT: a 312-byte ``ADD`` graph; ONNX Runtime: the int8 ``MatMulInteger`` graph of
:mod:`edgerec.runtimes.int8_matmul`), runs it and checks the numbers, so a crash, an abort or
an ``ImportError`` becomes a reason in an :class:`EngineStatus` instead of taking the caller
down. It costs about a second per engine, so it serves ``edgerec engines``; opening a model
(:func:`edgerec.runtimes.open_runtime`) does not probe.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
from edgerec.runtimes.base import Engine
from edgerec.runtimes.errors import RuntimeUnavailableError

__all__ = ["EngineStatus", "probe_engine", "probe_engines", "run_probe", "status_from_run"]

# A TFLite flatbuffer: y = x + x, x and y float32 (1, 4). Built once with the flatbuffers
# object API of ai_edge_litert.schema_py_generated (one ADD operator, no weights).
_TFLITE_ADD = base64.b64decode(
    "CAAAAFRGTDO+////FAAAABwAAAAsAAAAEAEAAAMAAAABAAAABAAAAPj+//8NAAAAZWRnZXJlYyBwcm9iZQAAAAEA"
    "AAAUAAAAAAAOABgAFAAQAAwACAAEAA4AAAAUAAAAHAAAAFwAAABgAAAAZAAAAAUAAABwcm9iZQAAAAEAAAAUAAAA"
    "AAAOABQAAAAQAAwACwAEAA4AAAAQAAAAAAAACwwAAAAQAAAAeP///wEAAAABAAAAAgAAAAAAAAAAAAAAAQAAAAEA"
    "AAABAAAAAAAAAAIAAAA0AAAABAAAAOD///8IAAAADAAAAAEAAAB5AAAAAgAAAAEAAAAEAAAADAAMAAgAAAAAAAQA"
    "DAAAAAgAAAAMAAAAAQAAAHgAAAACAAAAAQAAAAQAAAABAAAACAAAAAQABAAEAAAA"
)
_PREFIX = "edgerec-probe:"  # the child's one result line on stdout


@dataclass(frozen=True)
class EngineStatus:
    """What a probe found out about one engine.

    Attributes:
        engine: the engine probed.
        version: ``"onnxruntime 1.32.0"``, ``"ai_edge_litert 2.3.0"``...; ``None`` when no
            package for it could be imported.
        usable: the engine ran the probe model and gave the right numbers.
        reason: why it is not usable (a sentence that says what to do); ``""`` when usable.
    """

    engine: Engine
    version: Optional[str]
    usable: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"engine": "tflite", "version": ..., "usable": ..., "reason": ...}``."""
        return {**asdict(self), "engine": self.engine.value}


def _check_tflite() -> str:
    from edgerec.runtimes.litert import LiteRtRuntime, litert_backend

    with LiteRtRuntime(_TFLITE_ADD, name="probe.tflite") as rt:
        x = np.arange(4, dtype=np.float32)[None]
        y = rt.run({"x": x})["y"]
    if not np.array_equal(y, 2 * x):
        raise RuntimeError(f"the probe model gave {y.tolist()} instead of {(2 * x).tolist()}")
    return litert_backend() or "litert"


def _check_onnx() -> str:
    from edgerec.runtimes.int8_matmul import Int8MatMul
    from edgerec.runtimes.ort import _import_ort, onnxruntime_version

    _import_ort()  # the adapter's own "not installed" error, naming the extra to install
    codes = np.array([[1, -2, 3], [4, 5, -6]], np.int8)
    transposed, sums = Int8MatMul.create().prepare(codes)
    if not (np.array_equal(transposed, codes.T) and np.array_equal(sums, [[2, 3]])):
        raise RuntimeError("the probe model gave wrong numbers")
    return f"onnxruntime {onnxruntime_version()}"


def _child(engine: str) -> None:
    """Run in the child process: print one result line; exit 0 only when the engine works."""
    check = _check_onnx if engine == Engine.ONNX.value else _check_tflite
    try:
        result = {"version": check()}
    except Exception as exc:  # reported to the parent, which decides what it means
        result = {"error": f"{type(exc).__name__}: {exc}",
                  "unavailable": isinstance(exc, RuntimeUnavailableError)}
    print(_PREFIX + json.dumps(result), flush=True)
    sys.exit(0 if "version" in result else 1)


def _installed_version(engine: Engine) -> Optional[str]:
    """The installed package's version, read without running it (for a crashed probe)."""
    from importlib.metadata import PackageNotFoundError, version

    names = (("onnxruntime", "onnxruntime"),) if engine is Engine.ONNX else (
        ("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"),
        ("tensorflow", "tensorflow"))
    for top, dist in names:
        try:
            return f"{top} {version(dist)}"
        except PackageNotFoundError:
            continue
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def status_from_run(engine: Engine, returncode: int, stdout: str, stderr: str) -> EngineStatus:
    """Read a probe child's exit status and output into an :class:`EngineStatus`.

    A result line with a version and exit 0: usable. A result line with an error: that error
    is the reason. Killed by a signal (a negative ``returncode``): the engine crashed the
    process. Anything else (no result line): the child's last stderr line is the reason.
    """
    result = next((json.loads(line[len(_PREFIX):]) for line in stdout.splitlines()
                   if line.startswith(_PREFIX)), None)
    if result is not None and "version" in result and returncode == 0:
        return EngineStatus(engine, result["version"], True)
    installed = _installed_version(engine)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        detail = _last_line(stderr)
        reason = (f"it crashed the process ({name}) while running a tiny model"
                  + (f" (last message: {detail})" if detail else "")
                  + "; reinstall it for this Python and NumPy (for LiteRT: ai-edge-litert)")
        return EngineStatus(engine, installed, False, reason)
    if result is not None and "error" in result:
        if result.get("unavailable") and installed is None:
            return EngineStatus(engine, None, False, "not installed; " + _install_hint(engine))
        return EngineStatus(engine, installed, False, result["error"])
    detail = _last_line(stderr) or f"the probe exited with status {returncode}"
    return EngineStatus(engine, installed, False, detail)


def _install_hint(engine: Engine) -> str:
    extra = "onnx" if engine is Engine.ONNX else "tflite"
    return f"install it with `pip install 'edgerec[{extra}]'`"


def run_probe(engine: Engine, command: Sequence[str], *, timeout: float = 120.0,
              env: Optional[dict[str, str]] = None) -> EngineStatus:
    """Run one probe ``command`` (a child process) and read its result for ``engine``."""
    child_env = dict(os.environ if env is None else env)
    paths = [child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []
    child_env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in sys.path if p])  # this edgerec
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout,
                              env=child_env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return EngineStatus(engine, _installed_version(engine), False,
                            f"it did not run a tiny model within {timeout:g} s")
    except OSError as exc:
        return EngineStatus(engine, None, False, f"the probe could not start: {exc}")
    return status_from_run(engine, done.returncode, done.stdout, done.stderr)


def probe_engine(engine: Engine, *, timeout: float = 120.0) -> EngineStatus:
    """Open ``engine``'s adapter on a tiny model in a child process and run it."""
    engine = Engine(engine)
    code = f"from edgerec.runtimes.probe import _child; _child({engine.value!r})"
    return run_probe(engine, [sys.executable, "-c", code], timeout=timeout)


def probe_engines(*, timeout: float = 120.0) -> list[EngineStatus]:
    """:func:`probe_engine` for every engine, ONNX Runtime first."""
    return [probe_engine(engine, timeout=timeout) for engine in Engine]
