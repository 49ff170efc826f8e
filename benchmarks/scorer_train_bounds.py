"""Scorer training bounds: wall time and peak RSS of `edgerec scorer train` on a real log.

Runs the command a shop would run (no thread or allocator settings) on ml-latest-small with the
teacher's 1024-d item vectors, once per ``--test-fractions`` value (default ``0``, training on
every event, and ``0.2``, the default, whose held-out split `edgerec evaluate` can score), and
records per run the wall time and the peak resident memory of the command's process, with the
validation comparison the training made (inner-product NDCG@10 against the best trained epoch,
and whether a scorer shipped). The issue's bounds: <= 5 min wall and <= 2 GB peak RSS on this
2-vCPU machine.

How memory is measured: each run is started by a small launcher process (this file with
``--launch``: Python without numpy, ~10 MB) that waits for it with ``os.wait4``: ``ru_maxrss``
of that one child (Linux folds the pre-``exec`` address space into it, which is the launcher's,
not this benchmark's), cross-checked against ``VmHWM`` polled from ``/proc/<pid>/status``.
The machine is shared: the load average at the start and the end of each run and the most
CPU-hungry other processes are recorded, and the report says when the machine was busy.

Inputs (built once under build/ when missing; the MovieLens files must already be there, see
../shared/data/movielens/README.md, and are never committed):

    edgerec bundle import --out build/teacher-bundle --raw-pixels \\
        examples/sample/teacher/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite
    edgerec catalog build --items build/movielens/items.csv --bundle build/teacher-bundle \\
        --out build/movielens-teacher-catalog

    python benchmarks/scorer_train_bounds.py [--test-fractions 0 0.2] [--json]

Writes results/scorer_train_bounds.{json,md} (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
TEACHER = (ROOT / "examples" / "sample" / "teacher"
           / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
BOUNDS = {"wall_s": 300.0, "peak_rss_mb": 2048.0}
BUSY_LOAD = 0.5  # load average (1 min) above which another job shares the 2 cores


# ------------------------------------------------------------------ launcher (no numpy here)


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def launch(command: list[str], out: Path, log: Path) -> None:
    """Run ``command`` (stdout to ``out``'s sibling, stderr to ``log``) and write
    ``{"rc", "wall_s", "maxrss_kb", "vm_hwm_kb", "load_start", "load_end", "load_max"}``
    to ``out``."""
    load_start = os.getloadavg()
    stdout = out.with_suffix(".stdout")
    t0 = time.perf_counter()
    with open(stdout, "wb") as so, open(log, "wb") as se:
        proc = subprocess.Popen(command, stdout=so, stderr=se)
        hwm, load_max = 0, load_start[0]
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, _vm_hwm_kb(proc.pid))
            load_max = max(load_max, os.getloadavg()[0])
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    out.write_text(json.dumps({
        "rc": os.waitstatus_to_exitcode(status), "wall_s": wall,
        "maxrss_kb": usage.ru_maxrss, "vm_hwm_kb": hwm, "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime, "load_start": load_start, "load_end": os.getloadavg(),
        "load_max_1min": load_max}))


# ------------------------------------------------------------------------- benchmark


def _edgerec() -> str:
    exe = Path(sys.executable).with_name("edgerec")
    return str(exe) if exe.exists() else "edgerec"


def _rel(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it (commands run there)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _ensure_inputs(args: argparse.Namespace) -> None:
    """The teacher bundle and the MovieLens teacher catalog (built once)."""
    if not (args.bundle / "manifest.json").is_file():
        print(f"building {args.bundle} ...", file=sys.stderr)
        subprocess.run([_edgerec(), "bundle", "import", str(TEACHER), "--out", str(args.bundle),
                        "--raw-pixels"], check=True)
    if not (args.catalog / "catalog.json").is_file():
        if not args.items.is_file():
            raise SystemExit(f"{args.items} is missing: build the MovieLens data first "
                             "(../shared/data/movielens/README.md)")
        print(f"building {args.catalog} (a few minutes) ...", file=sys.stderr)
        subprocess.run([_edgerec(), "catalog", "build", "--items", str(args.items),
                        "--bundle", str(args.bundle), "--out", str(args.catalog)], check=True)
    if not args.events.is_file():
        raise SystemExit(f"{args.events} is missing: build the MovieLens data first "
                         "(../shared/data/movielens/README.md)")


def _busy_processes(limit: int = 5) -> list[str]:
    """The other processes with the most CPU (ps: pid, %CPU over their lifetime, RSS KB,
    name), to say who else used the machine."""
    try:
        text = subprocess.run(["ps", "-eo", "pid,pcpu,rss,comm", "--sort=-pcpu"], check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    mine = {os.getpid(), os.getppid()}
    rows = [line.split(None, 3) for line in text.splitlines()[1:]]
    return [" ".join(r) for r in rows if len(r) == 4 and int(r[0]) not in mine][:limit]


def run_one(args: argparse.Namespace, fraction: float) -> dict:
    """One `edgerec scorer train` run through the launcher; its measurements and metrics."""
    tag = f"tf{fraction:g}".replace(".", "p")
    work = args.work / tag
    work.mkdir(parents=True, exist_ok=True)
    args_ = ["scorer", "train", "--bundle", _rel(args.bundle), "--catalog", _rel(args.catalog),
             "--events", _rel(args.events), "--scorer-test-fraction", f"{fraction:g}",
             "--out", _rel(work / "bundle"), "--force", "--json"]
    command = [_edgerec(), *args_]
    before = _busy_processes()
    measured = work / "launch.json"
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--launch", str(measured),
                    str(work / "stderr.log"), "--", *command], check=True, cwd=ROOT)
    m = json.loads(measured.read_text())
    row = {"test_fraction": fraction, "command": " ".join(["edgerec", *args_]), "rc": m["rc"],
           "wall_s": round(m["wall_s"], 1), "peak_rss_mb": round(m["maxrss_kb"] / 1024, 1),
           "vm_hwm_mb": round(m["vm_hwm_kb"] / 1024, 1),
           "cpu_s": round(m["user_s"] + m["sys_s"], 1),
           "load_start": [round(x, 2) for x in m["load_start"]],
           "load_end": [round(x, 2) for x in m["load_end"]],
           "load_max_1min": round(m["load_max_1min"], 2), "busy_before": before}
    row["within_bounds"] = (m["rc"] == 0 and row["wall_s"] <= BOUNDS["wall_s"]
                            and row["peak_rss_mb"] <= BOUNDS["peak_rss_mb"])
    # our own run adds ~1 to the load: more than that means another job shared the cores
    row["busy"] = row["load_start"][0] > BUSY_LOAD or row["load_max_1min"] > 1 + BUSY_LOAD
    if m["rc"] != 0:
        row["error"] = (work / "stderr.log").read_text()[-2000:]
        return row
    result = json.loads(measured.with_suffix(".stdout").read_text())
    scorer = result["metrics"]
    training = scorer["training"]
    row.update({
        "shipped": scorer.get("shipped", True), "reason": scorer.get("reason", ""),
        "comparison": scorer.get("comparison"), "best_epoch": training["best_epoch"],
        "stopped": training["stopped"], "training_s": round(training["seconds"], 1),
        "scorer_s": round(scorer["seconds"], 1),
        "examples": training["data"]["examples"], "users": training["data"]["users"],
        "budget": training["data"].get("budget"),
        "folds": [{k: f[k] for k in ("seed", "epochs_run", "stopped", "validation")}
                  for f in training["data"]["validation_split"].get("fold_runs", [])],
        "artifacts": sorted(scorer.get("parity", {})),
        "gate_failures": sorted(scorer.get("gate_failures", {})),
    })
    return row


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "numpy", "onnxruntime", "ai-edge-litert", "litert-torch", "edgerec"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        "# `edgerec scorer train` bounds (ml-latest-small, teacher 1024-d vectors)", "",
        f"{m['date']}, {m['cpu']}, {m['cores']} cores; torch {payload['versions']['torch']}, "
        f"numpy {m['numpy']}. Bounds: <= {BOUNDS['wall_s']:.0f} s wall, "
        f"<= {BOUNDS['peak_rss_mb']:.0f} MB peak RSS.", "",
        "| test fraction | wall s | peak RSS MB | CPU s | load avg at start (1/5/15 min) | "
        "max 1-min load | busy | within bounds | shipped | NDCG@10 u.v -> best trained "
        "(epoch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["runs"]:
        c = r.get("comparison") or {}
        lines.append(
            f"| {r['test_fraction']:g} | {r['wall_s']} | {r['peak_rss_mb']} | {r['cpu_s']} | "
            f"{' / '.join(str(x) for x in r['load_start'])} | {r['load_max_1min']} | "
            f"{'yes' if r['busy'] else 'no'} | {'yes' if r['within_bounds'] else 'NO'} | "
            f"{r.get('shipped', 'error')} | {_fmt(c.get('inner_product'))} -> "
            f"{_fmt(c.get('best_trained'))} ({c.get('best_trained_epoch')}) |")
    lines += ["", "Commands (run from a small launcher; peak RSS is the child's `ru_maxrss` "
              "via `wait4`, cross-checked with polled `VmHWM`):", ""]
    lines += [f"    {r['command']}" for r in payload["runs"]]
    for r in payload["runs"]:
        lines += ["", f"test fraction {r['test_fraction']:g}: "
                  + (f"folds {r['folds']}; budget {r['budget']}; best epoch {r['best_epoch']}, "
                     f"stopped by {r['stopped']}; training {r['training_s']} s of "
                     f"{r['scorer_s']} s in the scorer phase; files {r['artifacts']}"
                     if r["rc"] == 0 else f"failed: {r.get('error', '')[-300:]}")]
        if r.get("busy"):
            lines.append(f"  The machine was busy (other processes at the start: "
                         f"{r['busy_before'][:3]}); re-measure idle before relying on the "
                         "wall time.")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--launch":  # the small launcher
        out, log, sep, *command = sys.argv[2:]
        if sep != "--" or not command:
            raise SystemExit("usage: --launch OUT.json STDERR.log -- COMMAND ...")
        launch(command, Path(out), Path(log))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--bundle", type=Path, default=BUILD / "teacher-bundle",
                        help="teacher bundle (built when missing)")
    parser.add_argument("--catalog", type=Path, default=BUILD / "movielens-teacher-catalog",
                        help="catalog of the items embedded by --bundle (built when missing)")
    parser.add_argument("--items", type=Path, default=BUILD / "movielens" / "items.csv",
                        help="items CSV to build the catalog from")
    parser.add_argument("--events", type=Path, default=BUILD / "movielens" / "events.csv",
                        help="events CSV")
    parser.add_argument("--work", type=Path, default=BUILD / "scorer-train-bounds",
                        help="where the bundles and logs of the runs go")
    parser.add_argument("--test-fractions", type=float, nargs="+", default=[0.0, 0.2],
                        help="one run per value of --scorer-test-fraction")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-write", action="store_true",
                        help="do not write results/scorer_train_bounds.*")
    args = parser.parse_args()
    for name in ("bundle", "catalog", "items", "events", "work"):
        setattr(args, name, getattr(args, name).resolve())
    _ensure_inputs(args)

    sys.path.insert(0, str(Path(__file__).parent))
    from _report import machine_info, write

    runs = []
    for fraction in args.test_fractions:
        print(f"scorer train, test fraction {fraction:g} ...", file=sys.stderr, flush=True)
        runs.append(run_one(args, fraction))
        r = runs[-1]
        print(f"  rc {r['rc']}, {r['wall_s']} s wall, {r['peak_rss_mb']} MB peak RSS, load "
              f"{r['load_start']} at start{' (busy)' if r['busy'] else ''}",
              file=sys.stderr, flush=True)
    payload = {"machine": machine_info(), "versions": _versions(), "bounds": BOUNDS,
               "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                      "MKL_NUM_THREADS")},
               "runs": runs}
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(markdown(payload))
    if not args.no_write:
        paths = write("scorer_train_bounds", payload, markdown(payload))
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)


if __name__ == "__main__":
    main()
