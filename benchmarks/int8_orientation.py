"""Which way round should the int8 catalog scan call ONNX Runtime's ``MatMulInteger`` on this
CPU? The search pre-filter (:mod:`edgerec.sdk.catalog.prefilter`) has two layouts
(:class:`~edgerec.sdk.catalog.prefilter.SearchLayout`), chosen per CPU by timing one query;
this times both at two levels, 1 thread, interleaved per run:

- **product**: the graph alone (:class:`edgerec.runtimes.int8_matmul.Int8MatMul`), random
  codes: ``columns``, queries uint8 ``(Q, D)`` x codes^T int8 ``(D, N)`` with the per-row
  offset and scales; ``rows``, codes + 128 uint8 ``(N, D)`` with zero point 128 x queries
  int8 ``(D, Q)`` x scales (the same scores: checked). Q = 1, and the batch shapes the
  pre-filter groups queries into (``--queries``, at catalogs up to ``--batch-items``), to
  check that the one-query timing behind ``auto`` also holds for batches;
- **search**: ``Catalog.search(q, k=10)`` on an int8 catalog of N random unit vectors with the
  onnxruntime kernel in each layout (same ids: checked), and with the numpy kernel;

p50 ms and the median over rounds of the per-round ratio ``rows / columns``; also the layout
``auto`` picks here.

    python benchmarks/int8_orientation.py     # ~2 min; writes results/int8_orientation.{json,md}
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from edgerec.runtimes.int8_matmul import Int8MatMul
from edgerec.sdk import Catalog
from edgerec.sdk.catalog import prefilter

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

LAYOUTS = ("columns", "rows")


def _interleaved(calls: dict, runs: int, rounds: int) -> dict:
    """p50 ms per call and the per-round ratios rows / columns (5 warm-up calls each)."""
    for call in calls.values():
        for _ in range(5):
            call(0)
    samples = {name: [[] for _ in range(rounds)] for name in calls}
    for r in range(rounds):
        for i in range(runs):
            for name, call in calls.items():
                t0 = time.perf_counter()
                call(i)
                samples[name][r].append((time.perf_counter() - t0) * 1e3)
    out = {name: float(np.median(np.concatenate(samples[name]))) for name in calls}
    ratios = [float(np.median(samples["rows"][r]) / np.median(samples["columns"][r]))
              for r in range(rounds)]
    return {**out, "ratio": float(np.median(ratios)), "ratio_rounds": ratios}


def product(n: int, dim: int, runs: int, rounds: int, queries: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    codes = rng.integers(-128, 128, (n, dim), dtype=np.int8)
    engine = Int8MatMul.create()
    codes_t, sums = engine.prepare(codes)
    offset = prefilter.columns_offset(sums)
    scales = np.full(n, 1e-2, np.float32)
    levels = rng.integers(-63, 64, (queries, dim), dtype=np.int8)
    u = (levels.astype(np.int16) + prefilter.QUERY_OFFSET).astype(np.uint8)
    shifted, q = engine.shift(codes), np.ascontiguousarray(levels.T)
    a = engine.scaled_product(u, codes_t, offset, scales)
    b = engine.scaled_product_rows(shifted, q, scales[:, None]).T
    assert np.array_equal(a, b), "the two layouts disagree"
    return {"items": n, "dim": dim, "queries": queries, **_interleaved({
        "columns": lambda i: engine.scaled_product(u, codes_t, offset, scales),
        "rows": lambda i: engine.scaled_product_rows(shifted, q, scales[:, None])},
        runs, rounds)}


def search(n: int, dim: int, runs: int, rounds: int, folder: Path, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((64, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with Catalog.create(folder / f"c{n}", dim=dim, encoder_id="bench", dtype="int8") as cat:
        for start in range(0, n, 65536):
            x = rng.standard_normal((min(65536, n - start), dim)).astype(np.float32)
            cat.add([f"i{j}" for j in range(start, start + len(x))],
                    x / np.linalg.norm(x, axis=1, keepdims=True))
        cat.compact()
    prefilter.set_search_kernel("onnxruntime")
    with Catalog.open(folder / f"c{n}", readonly=True) as cat:
        def call(layout: str):
            def run(i: int):
                prefilter.set_search_layout(layout)
                return cat.search(queries[i % len(queries)], k=10)
            return run

        calls = {layout: call(layout) for layout in LAYOUTS}
        same = [[m.id for m in calls[layout](i)] for layout in LAYOUTS for i in range(8)]
        assert same[:8] == same[8:], "the two layouts found different items"
        out = _interleaved(calls, runs, rounds)
        prefilter.set_search_kernel("numpy")
        numpy_ms = float(np.median([_timed(lambda q=q: cat.search(q, k=10))
                                    for q in queries[np.arange(runs) % len(queries)]]))
    prefilter.set_search_kernel("auto")
    prefilter.set_search_layout("auto")
    return {"items": n, "dim": dim, **out, "numpy": numpy_ms}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _table(title: str, rows: list[dict], extra: str = "") -> list[str]:
    head = ("| items x dim | queries | columns p50 ms | rows p50 ms "
            "| rows / columns (median; rounds) |")
    lines = [f"## {title}", "", head + (" numpy kernel p50 ms |" if extra else ""),
             "|---|---|---|---|---|" + ("---|" if extra else "")]
    for r in rows:
        line = (f"| {r['items']:,} x {r['dim']} | {r.get('queries', 1)} | {r['columns']:.3f} | "
                f"{r['rows']:.3f} | "
                f"{r['ratio']:.2f} ({', '.join(f'{x:.2f}' for x in r['ratio_rounds'])}) |")
        lines.append(line + (f" {r[extra]:.3f} |" if extra else ""))
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, nargs="*", default=[prefilter.GROUP_MIN,
                                                                 prefilter.MAX_GROUP],
                    help="batch shapes for the product table, besides one query (default: "
                         "the pre-filter's smallest and largest group)")
    ap.add_argument("--batch-items", type=int, default=100_000,
                    help="largest catalog the batch products run on (default 100k)")
    ap.add_argument("--name", default="int8_orientation")
    args = ap.parse_args(argv)
    products = [product(n, args.dim, args.runs, args.rounds) for n in args.sizes]
    products += [product(n, args.dim, args.runs, args.rounds, queries=nq)
                 for nq in args.queries for n in args.sizes if n <= args.batch_items]
    with tempfile.TemporaryDirectory() as tmp:
        searches = [search(n, args.dim, args.runs, args.rounds, Path(tmp)) for n in args.sizes]
    chosen = prefilter.active_layout(args.dim).value
    info = machine_info()
    md = ["# int8 catalog scan: the pre-filter's two layouts", "",
          f"Machine: {info.get('cpu')}, {info.get('cores')} cores, flags "
          f"{', '.join(info.get('cpu_flags') or [])}; onnxruntime {ort.__version__}; "
          f"{info.get('date')}; commit {info.get('commit')}. 1 thread, "
          f"{args.rounds} rounds x {args.runs} runs, interleaved. `auto` chose **{chosen}** "
          "here.", "",
          *_table("The integer product alone (random codes)", products),
          *_table("Catalog.search top-10, one query (random unit vectors, onnxruntime kernel)",
                  searches,
                  extra="numpy")]
    text = "\n".join(md)
    write(args.name, {"machine": info, "products": products, "searches": searches,
                      "auto_chose": chosen, "runs": args.runs, "rounds": args.rounds}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
