"""The benchmarks' peak-RSS measurement reads the worker's own memory, not its parent's."""

import subprocess
import sys

import numpy as np
from conftest import ROOT

CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); import resource, _report; "
         "print(_report.peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")


def test_a_worker_started_by_a_big_parent_reports_its_own_peak():
    ballast = np.ones(600 * 2**20 // 8)  # the parent holds ~600 MB, touched
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "benchmarks")],
                         capture_output=True, text=True, check=True)
    ours, maxrss = map(float, out.stdout.split())
    assert ballast.sum() > 0
    # numpy + the report module: tens of MB, where this machine's ru_maxrss of the same child
    # says ~630 MB (it inherits the parent's high-water mark across fork and exec)
    assert ours < 300, (ours, maxrss)


def test_benchmarks_report_the_machine_with_the_bench_commands_facts(monkeypatch):
    """One collector of machine facts: the benchmarks' record is ``edgerec bench``'s, plus the
    ``machine`` field (the architecture) that earlier benchmark results name it by."""
    from edgerec.sdk.bench import machine

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import _report

    assert _report.peak_rss_mb is machine.peak_rss_mb
    assert _report.percentiles is machine.percentiles
    info = _report.machine_info()
    assert set(info) == set(machine.machine_info()) | {"machine"}
    assert {"date", "cpu", "cpu_flags", "cores", "machine", "python", "numpy",
            "engines"} <= set(info)  # every field the benchmark results have carried
    assert info["machine"] == info["arch"] and info["cores"] >= 1
    assert set(info["cpu_flags"]) <= set(machine.CPU_FLAGS)
