"""``Recommender.for_user`` latency with behaviour signals, on a synthetic catalog.

No data set needed: N items with random unit image vectors (D-d, int8 like a built catalog),
a label per item in the metadata, and random behaviour signals (popularity, K co-occurrence
neighbours, 32-d collaborative vectors, an image mapping) laid over them; histories of 50
purchases of random items. The feed ranks C = 500 candidates (visual 200, collab 200,
co-occurrence, popular 50), k = 20, one BLAS thread expected (set ``OPENBLAS_NUM_THREADS=1``).

    OPENBLAS_NUM_THREADS=1 python benchmarks/feed_latency.py --items 10000 --dims 1024 128

Writes ``results/feed_latency.{json,md}``; ``--profile`` prints the top of a cProfile of the
timed calls instead. ``--real BUNDLE CATALOG EVENTS`` times a built bundle with behaviour
signals instead (e.g. MovieLens: each user's events but the newest, as leave-last-out
evaluates), writing ``results/feed_latency-real.{json,md}`` with a hash of every top-k.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import hashlib
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_info, percentiles, write
from edgerec.sdk import Bundle, Catalog, Event, EventKind, Recommender
from edgerec.sdk.behaviour import BehaviourModel

T0 = 1_700_000_000.0


def synthetic_model(ids: list[str], image_dim: int, seed: int, d: int = 32,
                    k: int = 4) -> BehaviourModel:
    """Random behaviour signals for ``ids``: half the items with events."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    learned = rng.random(n) < 0.5
    return BehaviourModel(
        ids=tuple(ids), popularity=(rng.pareto(1.5, n) * learned).astype(np.float32),
        count=np.floor(rng.pareto(1.5, n) * learned).astype(np.float32),
        neighbours=np.where(learned[:, None], rng.integers(0, n, (n, k)), -1).astype(np.int64),
        neighbour_scores=rng.random((n, k)).astype(np.float32),
        collab=rng.standard_normal((n, d)).astype(np.float32), learned=learned,
        gram=(np.eye(d) * n).astype(np.float32),
        mapping_w=(rng.standard_normal((image_dim, d)) * 0.1).astype(np.float32),
        mapping_b=np.zeros(d, np.float32), regularization=0.1, alpha=1.0)


def run(bundle_path: Path, items: int, dim: int, users: int, k: int, profile: bool,
        dtype: str = "int8") -> dict[str, Any]:
    """Median-style samples (ms) of ``for_user`` over ``users`` random histories."""
    bundle = Bundle.open(bundle_path)
    rng = np.random.default_rng(0)
    ids = [f"item-{j}" for j in range(items)]
    vectors = rng.standard_normal((items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [{"label": f"genre-{j % 20}"} for j in range(items)]
    with tempfile.TemporaryDirectory() as tmp:
        with Catalog.create(Path(tmp) / "catalog", dim=dim, encoder_id=bundle.encoder_id,
                            dtype=dtype) as catalog:
            catalog.add(ids, vectors, labels)
        rec = Recommender.create_from_bundle(bundle, Path(tmp) / "catalog")
        with rec:
            # the behaviour signals, set directly (the bundle has none at this dimension)
            rec._behaviour = synthetic_model(ids, dim, 1)
            rec._behaviour_record = None
            rec.lacks = ()
            histories = [[Event(ids[j], EventKind.PURCHASE, T0 + 3600 * n)
                          for n, j in enumerate(rng.choice(items, 50, replace=False))]
                         for _ in range(users)]
            start = time.perf_counter()
            rec.for_user(histories[0], k)  # builds the behaviour index
            build_ms = (time.perf_counter() - start) * 1e3
            samples, tops = time_calls(rec, histories, k, profile)
    return {"items": items, "dim": dim, "dtype": dtype, "users": users, "k": k,
            "index_build_ms": build_ms,
            "latency_ms": percentiles(samples),
            "top_sha256": hashlib.sha256(json.dumps(tops).encode()).hexdigest()}


def time_calls(rec: Recommender, histories: list[list[Event]], k: int,
               profile: bool) -> tuple[list[float], list[list[str]]]:
    """Per-call milliseconds and top-k ids of ``for_user`` over ``histories`` (3 warm-ups)."""
    for h in histories[:3]:
        rec.for_user(h, k)
    samples, tops = [], []
    prof = cProfile.Profile() if profile else None
    for h in histories:
        if prof is not None:
            prof.enable()
        start = time.perf_counter()
        result = rec.for_user(h, k)
        samples.append((time.perf_counter() - start) * 1e3)
        if prof is not None:
            prof.disable()
        tops.append(result.ids)
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    return samples, tops


def run_real(bundle: Path, catalog: Path, events: Path, users: int, k: int,
             profile: bool) -> dict[str, Any]:
    """``for_user`` on a built bundle + catalog, histories: each user's events but the newest."""
    by_user: dict[str, list[Event]] = {}
    with open(events, newline="") as f:
        for row in csv.DictReader(f):
            by_user.setdefault(row["user_id"], []).append(
                Event(row["item_id"], EventKind(row["event"]), float(row["timestamp"])))
    histories = [sorted(e, key=lambda x: x.timestamp)[:-1]
                 for _, e in sorted(by_user.items())][:users]
    with Recommender.create_from_bundle_path(bundle, catalog) as rec:
        start = time.perf_counter()
        index = rec.behaviour_index()
        build_ms = (time.perf_counter() - start) * 1e3
        samples, tops = time_calls(rec, histories, k, profile)
        items, dim = len(index) if index is not None else 0, rec.catalog.dim
    return {"bundle": str(bundle), "items": items, "dim": dim, "users": len(histories), "k": k,
            "index_build_ms": build_ms, "latency_ms": percentiles(samples),
            "top_sha256": hashlib.sha256(json.dumps(tops).encode()).hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=Path, nargs="+",
                        default=[Path("build/demo-dev/teacher-bundle"),
                                 Path("build/shipped/clothing-student")],
                        help="bundles to take the encoder id from (one per --dims value, "
                             "picked by embedding dimension)")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 128])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--dtypes", nargs="+", default=["int8"], choices=["int8", "float16"],
                        help="catalog vector storage")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--label", default="", help="a name for this run in the report")
    parser.add_argument("--name", default="feed_latency", help="results/NAME.{json,md}")
    parser.add_argument("--real", type=Path, nargs=3, metavar=("BUNDLE", "CATALOG", "EVENTS"))
    args = parser.parse_args()
    if args.real:
        r = run_real(*args.real, args.users, args.k, args.profile)
        lat = r["latency_ms"]
        print(f"{r['items']} x {r['dim']} ({r['users']} users): p50 {lat['p50']:.2f} ms, "
              f"p90 {lat['p90']:.2f} ms, top-k {r['top_sha256'][:12]}")
        if not args.profile:
            lines = [f"# `for_user` latency on {r['bundle']}", "", args.label, "",
                     f"{r['users']} users, k = {r['k']}, {r['items']} x {r['dim']}: p50 "
                     f"{lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms; "
                     f"top-k sha256 `{r['top_sha256'][:12]}`"]
            write(args.name, {"machine": machine_info(), "label": args.label, "run": r},
                  "\n".join(lines) + "\n")
        return
    by_dim = {Bundle.open(b).manifest.embedding_dim: b for b in args.bundles}
    missing = [d for d in args.dims if d not in by_dim]
    if missing:
        parser.error(f"no --bundles of dimension {missing}")
    runs = [run(by_dim[d], args.items, d, args.users, args.k, args.profile, t)
            for t in args.dtypes for d in args.dims]
    for r in runs:
        lat = r["latency_ms"]
        print(f"{r['items']} x {r['dim']} {r['dtype']}: p50 {lat['p50']:.2f} ms, "
              f"p90 {lat['p90']:.2f} ms (index build {r['index_build_ms']:.0f} ms), "
              f"top-k {r['top_sha256'][:12]}")
    if args.profile:
        return
    lines = ["# `for_user` latency with behaviour signals (synthetic catalog)", "",
             f"{args.label}", "",
             "C = 500 candidates, k = 20, 50-purchase histories; "
             "`OPENBLAS_NUM_THREADS=1 python benchmarks/feed_latency.py`.", "",
             "| items | dim | dtype | p50 ms | p90 ms | p99 ms | index build ms | top-k sha256 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lat = r["latency_ms"]
        lines.append(f"| {r['items']} | {r['dim']} | {r['dtype']} | {lat['p50']:.2f} | "
                     f"{lat['p90']:.2f} | {lat['p99']:.2f} | {r['index_build_ms']:.0f} | "
                     f"`{r['top_sha256'][:12]}` |")
    write(args.name, {"machine": machine_info(), "label": args.label, "runs": runs},
          "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
