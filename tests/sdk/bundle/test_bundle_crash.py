"""Crashes while writing a bundle (issue 16): ``write_bundle`` killed at chosen points leaves
either no bundle, the last one that returned, or the one in flight, complete and verified, and
the next write sweeps every leftover (``benchmarks/crash_faults.py`` runs hundreds)."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from edgerec.sdk import ImportOptions, import_model

WORKER_PATH = Path(__file__).with_name("bundle_crash_worker.py")
_spec = importlib.util.spec_from_file_location("bundle_crash_worker", WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)
TINY = Path(__file__).parents[2] / "fixtures"


def _kill_at(src: Path, out: Path, start: int, die_at: str) -> tuple[list[int], int]:
    """Runs the worker until it kills itself at ``die_at``: ``(writes that returned, pid)``."""
    proc = subprocess.Popen([sys.executable, str(WORKER_PATH), str(src), str(out), str(start),
                             "--die-at", die_at], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, stderr
    return [int(x.split()[1]) for x in stdout.splitlines() if x.startswith("done")], proc.pid


@pytest.mark.parametrize("die_at, writes, how", [
    ("copy:1", [], "absent"),          # inside the first write: nothing at out
    ("rename:2", [], "verified"),      # the first write moved into place, not yet returned
    ("copy:3", [0], "verified"),       # inside the second write: the first is still there
    ("rename:4", [0], "aside"),        # between the swap's renames: the first waits aside
    ("rename:5", [0], "verified"),     # the second moved into place, not yet returned
])
def test_killed_write_bundle_leaves_no_bundle_or_a_whole_verified_one(tmp_path, die_at,
                                                                       writes, how):
    src = tmp_path / "src"
    import_model([TINY / "tiny_embedder.onnx", TINY / "tiny_embedder.tflite"], src,
                 ImportOptions(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="tiny"))
    out = tmp_path / "out" / "bundle"
    done, pid = _kill_at(src, out, 0, die_at)
    assert done == writes
    last = done[-1] if done else None
    n, found = worker.check(out, last, {pid})
    assert found == how
    # the next writer sweeps the leftovers and puts an aside bundle back before its own write
    after, pid2 = _kill_at(src, out, (last if last is not None else -1) + 1, "copy:1")
    assert after == []
    assert worker.check(out, last, {pid2}) == (n, "absent" if n is None else "verified")
    leftovers = [p.name for p in out.parent.iterdir() if p != out]
    assert len(leftovers) == 1 and f".tmp-{pid2}-" in leftovers[0]  # the second writer's own
