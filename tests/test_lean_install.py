"""A device install: `pip install edgerec[tflite]` (no torch, no ONNX) embeds through the CLI.

Builds and installs the real wheel into a fresh virtual environment, so it also checks the
packaging (package-dir mapping, console script, py.typed). Needs the package registry (or
pip's cache); it takes ~30 s.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SAMPLE, TEACHER

pytestmark = pytest.mark.slow


def _run(*cmd, **kw):
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)


def test_tflite_only_install_embeds_images_through_the_cli(tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, check=True)
    py, edgerec = venv / "bin" / "python", venv / "bin" / "edgerec"
    install = _run(py, "-m", "pip", "install", "-q", f"{ROOT}[tflite]", cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]

    probe = _run(py, "-c", "import importlib.util as u, json; print(json.dumps({m: bool("
                 "u.find_spec(m)) for m in ['torch', 'onnxruntime', 'onnx', 'ai_edge_litert']}))",
                 cwd=tmp_path, check=True)
    assert json.loads(probe.stdout) == {"torch": False, "onnxruntime": False, "onnx": False,
                                        "ai_edge_litert": True}

    bundle, out = tmp_path / "teacher", tmp_path / "v.npy"
    r = _run(edgerec, "bundle", "import", TEACHER, "--out", bundle, "--raw-pixels", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _run(edgerec, "embed", "--bundle", bundle, SAMPLE / "images" / "shoes", "--out", out,
             "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["artifact"] == "encoder/tflite/int8"
    vectors = np.load(out, allow_pickle=False)
    assert vectors.shape == (20, 1024)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    r = _run(edgerec, "embed", "--bundle", bundle, "--engine", "onnx", SAMPLE / "images" / "hat",
             "--out", tmp_path / "w.npy", cwd=tmp_path)
    assert r.returncode == 1 and "no encoder/onnx" in r.stderr  # says what the bundle has
    r = _run(edgerec, "export", "--images", SAMPLE / "images", "--out", tmp_path / "x",
             cwd=tmp_path)
    assert r.returncode == 1 and "pip install 'edgerec[export]'" in r.stderr
    site = Path(_run(py, "-c", "import edgerec.sdk as s; print(s.__file__)", cwd=tmp_path,
                     check=True).stdout.strip()).parent
    assert (site / "py.typed").exists() and str(ROOT) not in str(site)
