"""The same device feed with two encoders' vectors, paired on one split: is the feed a shop
gets with its distilled student at least as good as with the teacher?

A thin script over :func:`edgerec.sdk.evaluation.compare.compare_encoders` (``edgerec evaluate
--against`` on the command line) that writes the result beside the other benchmarks. Each side
is a bundle with behaviour signals (``edgerec scorer train --scorer-holdout leave-last-out``)
and the catalog its encoder built from the same items; both are ranked by the device's
``for_user`` ranking on one leave-last-out split of the events, so every user is scored by
both and the margin ``B - A`` is a paired bootstrap CI over users (NDCG@20, Recall@20, HR@10,
MRR, AUC; cold and warm slices). Also each side's pixels-only ranking (``visual_knn``).

    OPENBLAS_NUM_THREADS=1 python benchmarks/feed_encoders.py \\
        --a build/movielens-teacher-behaviour build/movielens-teacher-catalog \\
        --b build/movielens-u8-behaviour build/movielens-u8-catalog \\
        --events build/movielens/events.csv --name feed_u8_vs_teacher
    # ~1 minute; writes results/<name>.{json,md}
"""

from __future__ import annotations

import os
import shlex

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import subprocess
import sys
import time
from pathlib import Path

from edgerec.sdk import Catalog
from edgerec.sdk.evaluation.compare import compare_encoders
from edgerec.sdk.evaluation.events import SplitProtocol, read_events
from edgerec.sdk.evaluation.protocol import EvaluateOptions
from edgerec.sdk.evaluation.summary import AUC

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", nargs=2, metavar=("BUNDLE", "CATALOG"), required=True,
                        help="the reference side (e.g. the teacher's)")
    parser.add_argument("--b", nargs=2, metavar=("BUNDLE", "CATALOG"), required=True,
                        help="the side measured against it (e.g. the student's)")
    parser.add_argument("--labels", nargs=2, default=("teacher", "student"),
                        help="names of the two sides")
    parser.add_argument("--events", default=str(ROOT / "build/movielens/events.csv"))
    parser.add_argument("--name", default="feed_encoders", help="results/<name>.{json,md}")
    args = parser.parse_args()

    start = time.perf_counter()
    options = EvaluateOptions(protocol=SplitProtocol.LEAVE_LAST_OUT)
    with Catalog.open(args.a[1], readonly=True) as probe:
        known = set(probe)
    log = read_events(args.events, known_items=known)
    result = compare_encoders(tuple(args.a), tuple(args.b), log, options,
                              labels=tuple(args.labels))
    results = result.models
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    payload = {
        "command": "python benchmarks/feed_encoders.py " + shlex.join(sys.argv[1:]),
        "machine": machine_info(), "commit": commit,
        "sides": {lab: {"bundle": side[0], "catalog": side[1]}
                  for lab, side in zip(args.labels, (args.a, args.b))},
        "users": result.split["evaluated_users"], **result.to_dict(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    lines = [f"# The device feed with two encoders, paired ({payload['users']} users, "
             "leave-last-out)", "",
             f"`{payload['command']}`, commit {commit}; {payload['seconds']} s.", "",
             "| model | NDCG@20 [95% CI] | Recall@20 | HR@10 | MRR | AUC | cold NDCG@20 | "
             "warm NDCG@20 |", "|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        al = res.all.metrics
        n = al["NDCG@20"]
        cold = f"{res.cold.metrics['NDCG@20'].mean:.4f}" if res.cold else "-"
        warm = f"{res.warm.metrics['NDCG@20'].mean:.4f}" if res.warm else "-"
        lines.append(f"| {name} | {n.mean:.4f} [{n.low:.4f}, {n.high:.4f}] | "
                     f"{al['Recall@20'].mean:.4f} | {al['HR@10'].mean:.4f} | "
                     f"{al['MRR'].mean:.4f} | {al[AUC].mean:.3f} | {cold} | {warm} |")
    lines += ["", f"Paired margins, {args.labels[1]} minus {args.labels[0]} (95% CI over users):",
              "", "| ranking | NDCG@20 | Recall@20 | HR@10 | MRR |", "|---|---|---|---|---|"]
    for label, ranking in (("device feed", "device"), ("pixels only (visual_knn)", "visual_knn")):
        cells = []
        for m in ("NDCG@20", "Recall@20", "HR@10", "MRR"):
            ci = result.margins[ranking][m]
            cells.append(f"{ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "What the margins are made of: held-out items whose rank differs, "
              f"{args.labels[0]} -> {args.labels[1]} (moved: places, among items inside "
              f"{result.primary}'s cut-off on either side; crossed: inside it on one side "
              "only):", "",
              "| ranking | items | changed | up | down | in the top k | moved 1 | 2 | 3-5 | >5 "
              "| crossed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, ranking in (("device feed", "device"), ("pixels only (visual_knn)", "visual_knn")):
        mv = result.moves[ranking]
        lines.append(f"| {label} | {mv.items} | {mv.changed} | {mv.up} | {mv.down} | "
                     f"{mv.within_k} | " + " | ".join(str(c) for c in mv.by_size.values())
                     + f" | {mv.crossed_k} |")
    lines += ["", "Device rankings: " + ", ".join(f"{k}: {v}" for k, v in
                                                 result.device_models.items())]
    lines += [f"Warning: {w}" for w in result.warnings]
    text = "\n".join(lines) + "\n"
    write(args.name, payload, text)
    print(text)


if __name__ == "__main__":
    main()
