"""Facts a benchmark result needs to be read later: the machine, versions, percentiles, memory.

``peak_rss_mb`` reads ``VmHWM`` from ``/proc/self/status``, not ``ru_maxrss``: Linux carries a
parent's high-water mark into a child across fork and exec, so a worker started by a parent
that holds 1.7 GB would report at least 1.7 GB; ``VmHWM`` belongs to the process's own address
space, which exec creates afresh.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
from edgerec.sdk.bench.profile import machine_identity

__all__ = [
    "CPU_FLAGS",
    "cpu_flags",
    "git_commit",
    "machine_info",
    "memory_bandwidth_gbs",
    "peak_rss_mb",
    "percentiles",
    "rss_mb",
]

CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp",
             "i8mm", "sve")
"""SIMD flags that decide int8 and float16 speed (x86 and Arm names)."""


def cpu_flags() -> list[str]:
    """The :data:`CPU_FLAGS` that ``/proc/cpuinfo`` lists for this CPU (empty if unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    return []


def git_commit(root: Optional[Path] = None) -> Optional[str]:
    """The checkout's commit (with ``+dirty`` when files changed), or None outside git."""
    where = root or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, SIMD flags, cores, memory, OS, Python, numpy and engine versions, date."""
    from edgerec.runtimes import engine_versions

    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    faiss_version = None
    try:
        import faiss  # optional: the bench extra

        faiss_version = faiss.__version__
    except ImportError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **machine_identity(),
        "cpu_flags": cpu_flags(),
        "memory_gb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "engines": engine_versions(),
        "faiss": faiss_version,
        "commit": git_commit(),
    }


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """``n``, ``min``, ``p50``, ``p90``, ``p99``, ``mean`` of a list of milliseconds (NaN when
    empty). ``min`` is the least disturbed run: on a shared machine, the figure to compare when
    one path must cost more than another."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        nan = float("nan")
        return {"n": 0, "min": nan, "p50": nan, "p90": nan, "p99": nan, "mean": nan}
    return {"n": int(a.size), "min": float(a.min()), "p50": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean())}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (``VmHWM``); NaN where ``/proc`` is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    """This process's current resident memory in MB (``VmRSS``); NaN where absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best-of-``repeats`` read bandwidth in GB/s: a float32 sum over ``megabytes`` of memory
    (one pass, read only, as a catalog scan reads), from this process, one thread."""
    n = megabytes * (1 << 20) // 4
    x = np.ones(n, dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.add.reduce(x, dtype=np.float32)
        best = min(best, time.perf_counter() - t)
    return x.nbytes / best / 1e9

