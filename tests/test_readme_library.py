"""The README's library walk-through (model file -> bundle -> catalog from a folder ->
similar, excluding the query photo -> cosine_similarity, int8 output) runs as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


def _walkthrough() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if "items_from_folder" in b and "cosine_similarity" in b]
    return block


def test_the_readme_library_walkthrough_runs_and_leaves_the_query_photo_out(tmp_path):
    code = _walkthrough().replace('"build/', f'"{tmp_path.as_posix()}/')
    assert '"build/' not in code
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "200 ()"  # every sample photo added, none failed
    results = [line.split() for line in lines[1:6]]
    assert len(results) == 5 and all(label == "hat" for _, _, label, *_ in results)
    query = sorted((ROOT / "examples/sample/images/hat").glob("*.jpg"))[0].stem
    assert query not in {item for item, *_ in results}
    assert all(-1.0 <= float(score) <= 1.0 for _, score, *_ in results)
    assert 0.0 < float(lines[6].split()[0]) <= 1.0 and "INFO:" not in done.stderr


def test_what_pip_install_and_the_readme_commands_leave_is_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["build/lib/x.py", "edgerec.egg-info/PKG-INFO", "venv/bin/python",
             "teacher-bundle/manifest.json", "vecs.npy"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.stdout.split() == paths
