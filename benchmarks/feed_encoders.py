"""The same device feed with two encoders' vectors, paired on one split: is the feed a shop
gets with its distilled student at least as good as with the teacher?

Each side is a bundle with behaviour signals (``edgerec scorer train --scorer-holdout
leave-last-out``) and the catalog its encoder built from the same items; both are ranked by
the device's ``for_user`` ranking (``behaviour_feed``, as ``edgerec evaluate`` ranks it) on one
leave-last-out split of the events, so every user is scored by both and the margin ``B - A``
is a paired bootstrap CI over users (NDCG@20, Recall@20, HR@10, MRR, AUC; cold and warm
slices). Also each side's pixels-only ranking (``visual_knn``: the user vector's ``u . v``).

    OPENBLAS_NUM_THREADS=1 python benchmarks/feed_encoders.py \\
        --a build/movielens-teacher-behaviour build/movielens-teacher-catalog \\
        --b build/movielens-u8-behaviour build/movielens-u8-catalog \\
        --events build/movielens/events.csv --name feed_u8_vs_teacher
    # ~1 minute; writes results/<name>.{json,md}
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from edgerec.sdk import Catalog
from edgerec.sdk.behaviour.model import load_behaviour
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.evaluation.baselines import make_baselines
from edgerec.sdk.evaluation.behaviour_feed import BehaviourFeedRanker
from edgerec.sdk.evaluation.events import SplitProtocol, read_events
from edgerec.sdk.evaluation.protocol import (
    EvaluateOptions,
    _rank_everyone,
    _recipe,
    _results,
    _Run,
)
from edgerec.sdk.evaluation.provenance import choose_split
from edgerec.sdk.evaluation.ranker import BaselineContext, BaselineOptions
from edgerec.sdk.evaluation.summary import AUC, Bootstrap, margins
from edgerec.sdk.evaluation.task import CatalogData, build_task

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]
OTHER_BASELINES = ("random", "popularity", "label_popularity", "cooccurrence", "item_knn",
                   "ease", "bpr", "als", "vbpr", "visual_knn_mean")


def _side(label: str, bundle_path: str, catalog_path: str, log, options: EvaluateOptions,
          reference_split=None) -> dict[str, Any]:
    bundle = Bundle.open(bundle_path)
    cat = Catalog.open(catalog_path, readonly=True)
    data = CatalogData.load(cat)
    cat.close()
    warnings: list[str] = []
    choice = choose_split(bundle, log, protocol=SplitProtocol.LEAVE_LAST_OUT, seed=None,
                          test_fraction=None, warnings=warnings)
    split = reference_split or choice.split(log)
    recipe, candidates = _recipe(bundle, options)
    task = build_task(split, data, recipe)
    tiebreak = np.random.default_rng([choice.seed, 1]).permutation(len(data.ids))
    behaviour, record, _ = load_behaviour(bundle)
    if behaviour is None or record is None:
        raise SystemExit(f"{bundle_path} has no behaviour signals: train them with `edgerec "
                         "scorer train --scorer-holdout leave-last-out`")
    feed = BehaviourFeedRanker(behaviour, record, task, data, split.train, recipe, candidates,
                               tiebreak)
    feed.name = f"behaviour_feed[{label}]"
    pixels, _ = make_baselines(BaselineContext(
        task, data, tiebreak, choice.seed,
        BaselineOptions(skip=OTHER_BASELINES)))
    for r in pixels:
        r.name = f"{r.name}[{label}]"
    return {"bundle": bundle_path, "catalog": catalog_path, "split": split, "task": task,
            "data": data, "rankers": [feed, *pixels], "dim": int(data.vectors.shape[1]),
            "encoder_id": bundle.manifest.encoder_id, "warnings": warnings}


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
    probe = Catalog.open(args.a[1], readonly=True)
    known = set(probe)
    probe.close()
    log = read_events(args.events, known_items=known)
    a = _side(args.labels[0], *args.a, log, options)
    b = _side(args.labels[1], *args.b, log, options, reference_split=a["split"])
    if a["data"].ids != b["data"].ids:
        raise SystemExit("the two catalogs hold different items (or in another order): build "
                         "both from the same items file")
    if [list(t) for t in a["task"].test] != [list(t) for t in b["task"].test]:
        raise SystemExit("the two sides evaluate different held-out items")
    runs = [_Run(r) for r in a["rankers"] + b["rankers"]]
    _rank_everyone(runs, a["task"], None, None)
    metrics = options.metric_list()
    bootstrap = Bootstrap(options.resamples, options.level, 0)
    results, per_user = _results(runs, a["task"], a["data"], metrics, bootstrap)
    names = [m.name for m in metrics] + [AUC]
    ref_b = f"behaviour_feed[{args.labels[1]}]"
    margin = margins({k: per_user[k] for k in (ref_b, f"behaviour_feed[{args.labels[0]}]")},
                     ref_b, names, bootstrap)
    ref_bp = f"visual_knn[{args.labels[1]}]"
    margin_pixels = margins({k: per_user[k] for k in (ref_bp, f"visual_knn[{args.labels[0]}]")},
                            ref_bp, names, bootstrap)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    payload = {
        "command": "python benchmarks/feed_encoders.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(), "commit": commit,
        "sides": {lab: {"bundle": s["bundle"], "catalog": s["catalog"], "dim": s["dim"],
                        "encoder_id": s["encoder_id"]}
                  for lab, s in zip(args.labels, (a, b))},
        "users": len(a["task"].users),
        "models": {k: v.to_dict() for k, v in results.items()},
        "margin_feed": {m: {k: ci.to_dict() for k, ci in per.items()}
                        for m, per in margin.items()},
        "margin_pixels": {m: {k: ci.to_dict() for k, ci in per.items()}
                          for m, per in margin_pixels.items()},
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
    for label, per in (("behaviour feed", margin), ("pixels only (visual_knn)", margin_pixels)):
        cells = []
        for m in ("NDCG@20", "Recall@20", "HR@10", "MRR"):
            ci = next(iter(per[m].values()))
            cells.append(f"{ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    write(args.name, payload, text)
    print(text)


if __name__ == "__main__":
    main()
