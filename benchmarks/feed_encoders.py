"""The same device feed with two encoders' vectors, paired on one split: is the feed a shop
gets with its distilled student at least as good as with the teacher?

A thin script over :func:`edgerec.sdk.evaluation.compare.compare_encoders` (``edgerec evaluate
--against`` on the command line) that writes the result beside the other benchmarks. Each side
is a bundle with behaviour signals (``edgerec scorer train --scorer-holdout leave-last-out``)
and the catalog its encoder built from the same items; both are ranked by the device's
``for_user`` ranking on one leave-last-out split of the events, so every user is scored by
both and the margin ``B - A`` is a paired bootstrap CI over users (NDCG@20, Recall@20, HR@10,
MRR, AUC; cold and warm slices). Also each side's pixels-only ranking (``visual_knn``).

A margin is read against a **refit band** (``--band NAME BUNDLE CATALOG``, repeatable): side
``a``'s own vectors changed without adding information (``benchmarks/catalog_variant.py
--noise 0.99 --seed S``, or its PCA cut to a narrower bundle's width), each with its
behaviour signals retrained the same way and compared with ``a`` like ``b`` is. The paired CI
holds each side's fitted feed fixed, so it does not cover how far a refit alone moves the
feed; the band (the refits' margins and 0, ``a`` against itself) does. ``b`` is *above*,
*within* or *below* it.

    OPENBLAS_NUM_THREADS=1 python benchmarks/feed_encoders.py \\
        --a build/movielens-teacher-behaviour build/movielens-teacher-catalog \\
        --b build/movielens-u8-behaviour build/movielens-u8-catalog \\
        --events build/movielens/events.csv --name feed_u8_vs_teacher \\
        --band noise0 build/movielens-tnoise0-behaviour build/movielens-tnoise0-catalog
    # ~1 minute per pair; writes results/<name>.{json,md}
"""

from __future__ import annotations

import os
import shlex

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edgerec.sdk import Bundle, Catalog
from edgerec.sdk.evaluation.compare import compare_encoders
from edgerec.sdk.evaluation.events import SplitProtocol, read_events
from edgerec.sdk.evaluation.protocol import EvaluateOptions
from edgerec.sdk.evaluation.summary import AUC

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]
BAND_METRIC = ("device", "NDCG@20")


def fusion_kind(bundle: str) -> str:
    """How the bundle's device feed fuses its signals (``linear`` / ``mlp``), ``-`` without
    behaviour signals."""
    record = Bundle.open(bundle, verify=False).manifest.behaviour
    return record.fusion.kind if record is not None and record.fusion is not None else "-"


def band_verdict(margin: float, refits: Sequence[float]) -> tuple[str, float, float]:
    """Where ``margin`` (``b - a``, a mean) lies against the refits' margins: ``("above" |
    "within" | "below", low, high)``, the band ``[low, high]`` spanning the refits and 0 (``a``
    against itself). A margin on an edge is within."""
    low, high = min(0.0, *refits), max(0.0, *refits)
    verdict = "above" if margin > high else "below" if margin < low else "within"
    return verdict, low, high


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
    parser.add_argument("--band", nargs=3, action="append", default=[],
                        metavar=("NAME", "BUNDLE", "CATALOG"),
                        help="a refit of side a (its vectors changed without new information, "
                             "behaviour retrained); repeat for the band b is read against")
    args = parser.parse_args()

    start = time.perf_counter()
    options = EvaluateOptions(protocol=SplitProtocol.LEAVE_LAST_OUT)
    with Catalog.open(args.a[1], readonly=True) as probe:
        known = set(probe)
    log = read_events(args.events, known_items=known)
    result = compare_encoders(tuple(args.a), tuple(args.b), log, options,
                              labels=tuple(args.labels))
    results = result.models
    band_ranking, band_metric = BAND_METRIC
    band = {}
    for name, bundle, catalog in args.band:
        refit = compare_encoders(tuple(args.a), (bundle, catalog), log, options,
                                 labels=(args.labels[0], name))
        ci = refit.margins[band_ranking][band_metric]
        band[name] = {"bundle": bundle, "catalog": catalog, "mean": ci.mean, "low": ci.low,
                      "high": ci.high, "crossed": refit.moves[band_ranking].crossed_k,
                      "fusion": fusion_kind(bundle)}
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
    if band:
        margin = result.margins[band_ranking][band_metric].mean
        verdict, low, high = band_verdict(margin, [r["mean"] for r in band.values()])
        payload["band"] = {"metric": f"{band_ranking} {band_metric}", "refits": band, "low": low,
                           "high": high, "margin": margin, "verdict": verdict}
        lines += ["", f"Refit band: {args.labels[0]}'s vectors changed without new information, "
                  f"behaviour retrained, against {args.labels[0]} (device feed {band_metric}):", "",
                  "| refit | margin [95% CI] | crossed | fusion |", "|---|---|---|---|"]
        for name, r in band.items():
            lines.append(f"| {name} | {r['mean']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] | "
                         f"{r['crossed']} | {r['fusion']} |")
        lines += ["", f"**{args.labels[1]}: {margin:+.4f}, {verdict} the band "
                  f"[{low:+.4f}, {high:+.4f}]** (the refits' margins and 0); fusion: "
                  + ", ".join(f"{lab} {fusion_kind(side[0])}"
                              for lab, side in zip(args.labels, (args.a, args.b))) + "."]
    lines += ["", "Device rankings: " + ", ".join(f"{k}: {v}" for k, v in
                                                 result.device_models.items())]
    lines += [f"Warning: {w}" for w in result.warnings]
    text = "\n".join(lines) + "\n"
    write(args.name, payload, text)
    print(text)


if __name__ == "__main__":
    main()
