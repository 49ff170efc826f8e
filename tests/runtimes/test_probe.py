"""Engines are probed for real: a tiny model runs in a child process, and a failure says why.

The engines installed here work, so the failure paths use stand-in engine packages written to
a temporary folder: a ``tflite_runtime`` that raises on import, one that kills its process on
import (as a NumPy-1.x wheel does under NumPy 2), and the real adapter choosing among them.
"""

import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT
from edgerec.runtimes import Engine, EngineStatus, probe_engines
from edgerec.runtimes.litert import numpy_abi_problem
from edgerec.runtimes.probe import run_probe
from edgerec.sdk.cli.bundle import engines_text

# In the child: hide the real LiteRT packages so the adapter falls to tflite_runtime.
_ONLY_TFLITE_RUNTIME = (
    "import sys; sys.modules['ai_edge_litert'] = None; sys.modules['tensorflow'] = None; "
    "from edgerec.runtimes.probe import _child; _child('tflite')"
)


def _fake_tflite_runtime(root, body, version=None):
    pkg = root / "tflite_runtime"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "interpreter.py").write_text(textwrap.dedent(body))
    if version:
        info = root / f"tflite_runtime-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: tflite-runtime\nVersion: {version}\n")
    return {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}


def test_both_installed_engines_run_the_probe_model():
    statuses = probe_engines()
    assert [s.engine for s in statuses] == [Engine.ONNX, Engine.TFLITE]
    assert all(s.usable and s.reason == "" for s in statuses), statuses
    assert statuses[0].version.startswith("onnxruntime ")
    assert statuses[1].version.startswith("ai_edge_litert ")


def test_an_engine_that_fails_on_import_is_unusable_with_its_error(tmp_path):
    env = _fake_tflite_runtime(tmp_path, """
        raise ImportError("numpy.core.multiarray failed to import")
    """, version="2.16.1")
    status = run_probe(Engine.TFLITE, [sys.executable, "-c", _ONLY_TFLITE_RUNTIME], env=env)
    assert not status.usable
    assert status.reason.startswith("RuntimeUnavailableError: No LiteRT interpreter")
    assert "numpy.core.multiarray failed to import" in status.reason


def test_an_engine_that_crashes_its_process_is_reported_with_the_signal(tmp_path):
    env = _fake_tflite_runtime(tmp_path, """
        import os, signal, sys
        print("A module that was compiled using NumPy 1.x cannot be run in NumPy 2",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    """, version="2.16.1")
    status = run_probe(Engine.TFLITE, [sys.executable, "-c", _ONLY_TFLITE_RUNTIME], env=env)
    assert not status.usable
    assert "crashed the process (SIGSEGV)" in status.reason
    assert "compiled using NumPy 1.x" in status.reason


def test_a_numpy_1_tflite_runtime_is_refused_under_numpy_2_before_it_can_crash(tmp_path):
    env = _fake_tflite_runtime(tmp_path, """
        import os, signal
        os.kill(os.getpid(), signal.SIGSEGV)
    """, version="2.14.0")
    status = run_probe(Engine.TFLITE, [sys.executable, "-c", _ONLY_TFLITE_RUNTIME], env=env)
    assert not status.usable and "SIGSEGV" not in status.reason
    assert "tflite-runtime 2.14.0 was built for NumPy 1.x" in status.reason
    assert "pip install ai-edge-litert" in status.reason


def test_a_probe_that_never_reports_gives_its_last_stderr_line(tmp_path):
    status = run_probe(Engine.ONNX, [sys.executable, "-c", "raise SystemExit('engine gone')"])
    assert status == EngineStatus(Engine.ONNX, status.version, False, "engine gone")


@pytest.mark.parametrize(("top", "version", "numpy", "refused"), [
    ("tflite_runtime", "2.14.0", "2.4.6", True),
    ("tflite_runtime", "2.13.1", "2.0.0", True),
    ("tflite_runtime", "2.14.0", "1.26.4", False),
    ("tflite_runtime", "2.15.0", "2.4.6", False),
    ("tflite_runtime", None, "2.4.6", False),
    ("ai_edge_litert", "2.3.0", "2.4.6", False),
])
def test_numpy_abi_problem_names_only_numpy_1_tflite_runtime_under_numpy_2(
        top, version, numpy, refused):
    assert bool(numpy_abi_problem(top, version, numpy)) is refused


def test_engines_text_says_usable_or_why_not():
    text = engines_text([
        EngineStatus(Engine.ONNX, None, False, "not installed; install it with `pip ...`"),
        EngineStatus(Engine.TFLITE, "tflite_runtime 2.14.0", False, "it crashed (SIGSEGV)"),
    ])
    assert text.splitlines() == [
        "onnx    not installed; install it with `pip ...`",
        "tflite  tflite_runtime 2.14.0  unusable: it crashed (SIGSEGV)",
    ]


def test_engines_command_lists_each_engine_as_usable():
    exe = [sys.executable, "-m", "edgerec.sdk.cli", "engines"]
    done = subprocess.run(exe, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["onnx", "tflite"]
    assert all(line.endswith("  usable") for line in lines)


def test_a_missing_engine_is_reported_with_what_to_install():
    code = ("import sys; sys.modules['onnxruntime'] = None; "
            "from edgerec.runtimes.probe import _child; _child('onnx')")
    status = run_probe(Engine.ONNX, [sys.executable, "-c", code])
    assert not status.usable
    assert "ONNX Runtime is not installed" in status.reason
    assert "pip install edgerec[onnx]" in status.reason
