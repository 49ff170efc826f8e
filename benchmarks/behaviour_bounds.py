"""Wall time, peak RSS and size of the behaviour signals' export part on MovieLens.

For each image dimension (the teacher's 1024-d poster vectors, and a 128-d PCA projection of
them standing in for a 128-d student), a fresh child process runs what ``edgerec scorer
train`` runs for the behaviour part (:func:`edgerec.export.behaviour.build_behaviour`: the
signals learned on each validation cut for the fusion fit and once on all training events;
the fusion fit, cross-validated between the linear and the MLP fusion, over every validation
user's candidates) on the leave-last-out
training events, and reports its wall time and peak RSS (``ru_maxrss`` of the child, imports
included) and the bytes it adds to the bundle. The scorer's own bounds are
``benchmarks/scorer_train_bounds.py``; the whole command's are in the README.

    OPENBLAS_NUM_THREADS=1 python benchmarks/behaviour_bounds.py
    # ~1-2 minutes on 2 shared vCPUs; writes results/behaviour_bounds.{json,md}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
import numpy as np
from edgerec.sdk import Catalog
from edgerec.sdk.evaluation.events import SplitProtocol, holdout_split, read_events
from edgerec.export.behaviour import build_behaviour
from edgerec.export.options import BehaviourOptions
from edgerec.sdk.bundle.manifest import UserVectorRecipe
dim, work = int(sys.argv[1]), Path(sys.argv[2])
with Catalog.open(sys.argv[3], readonly=True) as cat:
    ids = list(cat)
    _, v = cat.vectors(ids)
if dim < v.shape[1]:
    centred = v - v.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[np.random.default_rng(0).permutation(len(v))[:4000]],
                             full_matrices=False)
    v = centred @ vt[:dim].T
    v /= np.linalg.norm(v, axis=1, keepdims=True)
log = read_events(sys.argv[4], known_items=set(ids))
split = holdout_split(log, protocol=SplitProtocol.LEAVE_LAST_OUT)
t1 = time.perf_counter()
build = build_behaviour(split.train, ids, v.astype(np.float32), work, BehaviourOptions(),
                        recipe=UserVectorRecipe(), candidates=500, log=lambda m: None)
t2 = time.perf_counter()
print(json.dumps({"dim": dim, "load_s": t1 - t0, "behaviour_s": t2 - t1,
                  "metrics": {k: v for k, v in build.metrics.items() if k != "fusion"},
                  "fusion_validation": build.record.fusion.validation}))
"""


def run_one(dim: int) -> dict:
    work = BUILD / f"behaviour-bounds-{dim}"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(dim), str(work),
                             str(BUILD / "movielens-teacher-catalog"),
                             str(BUILD / "movielens" / "events.csv")],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the {dim}-d run failed ({proc.returncode})")
    wall = time.perf_counter() - start
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


def markdown(payload: dict) -> str:
    lines = ["# Behaviour signals' export part on MovieLens (`benchmarks/behaviour_bounds.py`)",
             "", f"`{payload['command']}`, {payload['machine']['date']}, "
             f"{payload['machine']['cpu']} ({payload['machine']['cores']} cores), load average "
             f"{payload['load_before']:.2f} before / {payload['load_after']:.2f} after.", "",
             "| image dim | wall s (child) | of which behaviour s | CPU s | peak RSS MB | "
             "bytes per item | model bytes | file bytes | fusion validation NDCG@20 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        m = r["metrics"]
        lines.append(f"| {r['dim']} | {r['wall_s']} | {r['behaviour_s']:.1f} | {r['cpu_s']} | "
                     f"{r['peak_rss_mb']} | {m['bytes_per_item']} | {m['model_bytes']} | "
                     f"{m['file_bytes']} | {r['fusion_validation']['ndcg@20']['fused']} |")
    lines += ["", "Peak RSS: the child's own `ru_maxrss` (`os.wait4`), imports and data "
              "included. Bytes per item: the per-item signals without the item ids (the keys, "
              "which the catalog holds too)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    before = os.getloadavg()[0]
    runs = [run_one(dim) for dim in (1024, 128)]
    payload = {"command": "OPENBLAS_NUM_THREADS=1 python benchmarks/behaviour_bounds.py",
               "machine": machine_info(), "load_before": before,
               "load_after": os.getloadavg()[0], "runs": runs}
    text = markdown(payload)
    paths = write("behaviour_bounds", payload, text)
    print(text)
    print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in paths))


if __name__ == "__main__":
    main()
