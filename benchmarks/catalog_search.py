"""Catalog scaling: open time, exact top-k latency and small-add cost, one thread, per dtype.

Builds catalogs of N random unit vectors (default 100k and 1M x 128) in a temporary folder,
then times, per catalog: ``Catalog.open``; one query's exact top-10 (median over repeats,
after a warm-up that pages the vectors in); a batch of queries (per query); adding 1,000
items; and, as the reference, numpy float32 ``X @ q`` + ``argpartition`` on the same vectors.
BLAS and OpenMP are pinned to one thread before numpy is imported.

    python benchmarks/catalog_search.py                   # ~1-2 min; results/catalog_search.*
    python benchmarks/catalog_search.py --sizes 100000 --json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, percentiles, write  # noqa: E402


def _unit(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _ms(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def run(n: int, dim: int, dtype: str, k: int, repeats: int, batch: int, folder: Path) -> dict:
    """Build one catalog and time it; returns samples in milliseconds."""
    from edgerec.sdk.catalog.catalog import Catalog

    rng = np.random.default_rng(0)
    x = _unit(n, dim, rng)
    queries = _unit(max(repeats, batch), dim, rng)
    path = folder / f"{dtype}-{n}"
    t = time.perf_counter()
    with Catalog.create(path, dim=dim, encoder_id="bench", dtype=dtype) as cat:
        step = 250_000
        for i in range(0, n, step):
            cat.add([f"i{j}" for j in range(i, min(i + step, n))], x[i:i + step])
    build_s = time.perf_counter() - t
    open_ms = []
    for _ in range(5):
        t = time.perf_counter()
        cat = Catalog.open(path, readonly=True)
        open_ms.append((time.perf_counter() - t) * 1e3)
        cat.close()
    with Catalog.open(path) as cat:
        cat.search(queries[0], k=k)  # page the vectors in
        it = iter(range(10**9))
        single = _ms(lambda: cat.search(queries[next(it) % len(queries)], k=k), repeats)
        batched = [s / batch for s in _ms(lambda: cat.search(queries[:batch], k=k), 3)]
        extra = _unit(1000, dim, rng)
        add_ms = _ms(lambda: cat.add([f"x{next(it)}" for _ in range(1000)], extra), 3)
        info = cat.info()
    it = iter(range(10**9))

    def numpy_f32() -> None:
        s = x @ queries[next(it) % len(queries)]
        np.argpartition(s, -k)[-k:]

    numpy_f32()
    reference = _ms(numpy_f32, repeats)
    return {
        "n": n, "dim": dim, "dtype": dtype, "k": k, "build_s": build_s,
        "bytes_on_disk": info.bytes_on_disk, "open_ms": open_ms, "search_ms": single,
        "search_batch_per_query_ms": batched, "batch": batch, "add_1000_ms": add_ms,
        "numpy_float32_ms": reference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="catalog sizes (items)")
    parser.add_argument("--dim", type=int, default=128, help="vector dimension")
    parser.add_argument("--dtypes", nargs="+", default=["int8", "float16"],
                        choices=["int8", "float16"], help="storage dtypes")
    parser.add_argument("--k", type=int, default=10, help="top-k")
    parser.add_argument("--repeats", type=int, default=30, help="timed single queries")
    parser.add_argument("--batch", type=int, default=32, help="queries per batched call")
    parser.add_argument("--json", action="store_true", help="print the result JSON")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgerec-bench-") as tmp:
        for n in args.sizes:
            for dtype in args.dtypes:
                r = run(n, args.dim, dtype, args.k, args.repeats, args.batch, Path(tmp))
                rows.append(r)
                print(f"{dtype:8s} n={n:>9,} open {np.median(r['open_ms']):6.2f} ms  "
                      f"search {np.median(r['search_ms']):7.2f} ms  "
                      f"batch/query {np.median(r['search_batch_per_query_ms']):6.2f} ms  "
                      f"add 1k {np.median(r['add_1000_ms']):6.1f} ms  "
                      f"numpy f32 {np.median(r['numpy_float32_ms']):6.2f} ms", flush=True)
    results = [
        {**{key: r[key] for key in ("n", "dim", "dtype", "k", "batch", "build_s",
                                    "bytes_on_disk")},
         **{key: percentiles(r[key]) for key in ("open_ms", "search_ms",
                                                 "search_batch_per_query_ms", "add_1000_ms",
                                                 "numpy_float32_ms")}}
        for r in rows
    ]
    payload = {"benchmark": "catalog_search", "threads": 1, "machine": machine_info(),
               "results": results}
    lines = ["# Catalog search (exact top-k, 1 thread, median ms)", "",
             "| dtype | N | open | search | batch/query | add 1k | numpy f32 |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['dtype']} | {r['n']:,} | {r['open_ms']['p50']:.2f} | "
            f"{r['search_ms']['p50']:.2f} | {r['search_batch_per_query_ms']['p50']:.2f} | "
            f"{r['add_1000_ms']['p50']:.1f} | {r['numpy_float32_ms']['p50']:.2f} |"
        )
    js, md = write("catalog_search", payload, "\n".join(lines) + "\n")
    if args.json:
        print(json.dumps(payload, indent=2))
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
