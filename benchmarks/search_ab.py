"""Catalog search, this checkout against an earlier commit, in one run: one-query latency and
a big batch's time and memory, over int8 catalogs of 100k items.

Each measurement runs in a fresh worker process started from this small script, with
``edgerec`` imported either from this checkout or from ``--baseline``'s ``sdk/``,
``runtimes/`` and ``export/`` (``git archive`` into a temporary folder, put first on
``PYTHONPATH``); the two alternate within each round (the order flips every round), and
each round's ratio this / baseline is reported with the medians. Two catalogs, built once
by this checkout (the format is the same): ``photos``, jittered copies of the shipped
student's vectors of 32 clothing photos (what ``edgerec bench`` searches: crowds of
near-duplicates, ~1,000 candidates to rescore) and ``random``, random unit vectors (no
crowds). Per worker:

- ``one``: ``Catalog.search(q, k=10)`` p50 over ``--runs`` queries, each after writing a
  32 MB buffer (as the encoder does between two searches of ``similar``, so the codes are
  not all in the caches);
- ``batch``: ``Catalog.search(Q, k=10)`` for ``--batch`` queries at once, seconds, and how
  far that call raised the process's peak RSS (``VmHWM``), MB.

1 BLAS / OpenMP thread. ``python benchmarks/search_ab.py --baseline d412c2d`` (~3 min; writes
results/search_ab.{json,md}).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "clothing-small" / "validation"
SAMPLE = ROOT / "examples" / "sample" / "images"
KINDS = ("photos", "random")


def worker(catalog: Path, queries: Path, runs: int) -> dict:
    """The measurements of one side on one catalog (runs in its own process)."""
    from edgerec.sdk import Catalog
    from edgerec.sdk.bench.machine import peak_rss_mb
    from edgerec.sdk.catalog import prefilter

    q = np.load(queries)
    evict = np.empty(8 << 20, np.float32)  # 32 MB
    with Catalog.open(catalog, readonly=True) as cat:
        for i in range(30):
            cat.search(q[i % len(q)], k=10)
        one = []
        for i in range(runs):
            evict.fill(i)
            t = time.perf_counter()
            cat.search(q[i % len(q)], k=10)
            one.append(time.perf_counter() - t)
        before = peak_rss_mb()
        t = time.perf_counter()
        batch = cat.search(q, k=10)
        seconds = time.perf_counter() - t
        grew = peak_rss_mb() - before
        first = [list(m.ids) for m in list(batch)[:3]]
    return {"one_ms": float(np.median(one) * 1e3), "batch_s": seconds, "batch_rss_mb": grew,
            "first_ids": first, "prefilter": str(Path(prefilter.__file__).parent.parent)}


def _baseline_tree(rev: str, folder: Path) -> Path:
    """``rev``'s three packages under ``folder/edgerec``, importable as ``edgerec``."""
    pkg = folder / "edgerec"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "sdk",
                              "runtimes", "export"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(pkg)], input=archive, check=True)
    return folder


def _catalogs(folder: Path, items: int, batch: int) -> dict[str, tuple[Path, Path]]:
    from edgerec.sdk import Bundle, Encoder, EncoderOptions
    from edgerec.sdk.bench.catalogs import make_catalog

    bundle = Bundle.open(ROOT / "examples" / "models" / "clothing-student")
    images = PHOTOS if PHOTOS.is_dir() else SAMPLE
    photos = sorted(images.rglob("*.jpg"))[:32]
    options = EncoderOptions(engine="onnx", precision="fp32", num_threads=1,
                             use_device_profile=False)
    with Encoder.create_from_bundle(bundle, options) as enc:
        base = enc.embed([str(p) for p in photos])
    rng = np.random.default_rng(1)
    out = {}
    for kind in KINDS:
        path = folder / f"catalog-{kind}"
        make_catalog(path, items, base if kind == "photos" else None,
                     encoder_id=bundle.encoder_id, dim=base.shape[1], seed=2)
        q = rng.standard_normal((batch, base.shape[1])).astype(np.float32)
        if kind == "photos":  # the photos themselves, jittered, as the queries
            q = base[np.arange(batch) % len(base)] + 0.05 * q / np.sqrt(base.shape[1])
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        np.save(folder / f"queries-{kind}.npy", q.astype(np.float32))
        out[kind] = (path, folder / f"queries-{kind}.npy")
    return out


def _run_worker(side_path: Path | None, catalog: Path, queries: Path, runs: int) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if side_path is not None:
        env["PYTHONPATH"] = str(side_path)
    cmd = [sys.executable, __file__, "--worker", str(catalog), str(queries), str(runs)]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _markdown(p: dict) -> str:
    m = p["machine"]
    lines = [
        f"# Catalog search: this checkout against {p['baseline']}",
        "",
        f"int8 catalogs of {p['items']:,} items, {p['dim']}-d, top-10, 1 thread; {p['rounds']} "
        f"rounds, the two sides alternating in fresh processes. Machine: {m.get('cpu')}, "
        f"{m.get('cores')} cores; load average at start {p['load_average'][0]:.2f}; "
        f"{m.get('date')}; commit {m.get('commit')} (working tree "
        f"{'clean' if not p['dirty'] else 'with changes'}).",
        "",
        "| catalog | measure | baseline (median) | this (median) | this / baseline, per round |",
        "|---|---|---|---|---|",
    ]
    names = {"one_ms": "one query, p50 ms", "batch_s": f"{p['batch']} queries at once, s",
             "batch_rss_mb": f"{p['batch']} queries: peak RSS growth, MB"}
    for kind, rows in p["results"].items():
        for key, name in names.items():
            a = [r["baseline"][key] for r in rows]
            b = [r["this"][key] for r in rows]
            ratios = ", ".join(f"{y / x:.2f}" if x > 0 else "-" for x, y in zip(a, b))
            lines.append(f"| {kind} | {name} | {np.median(a):.3f} | {np.median(b):.3f} | "
                         f"{ratios} |")
    lines += ["", "Both sides return the same ids for the batch's first queries: "
              f"{p['same_ids']}.", "", f"Command: `{p['command']}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="HEAD", help="the commit to compare with")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="queries in the batch search")
    ap.add_argument("--runs", type=int, default=300, help="one-query searches per worker")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default="search_ab")
    ap.add_argument("--worker", nargs=3, metavar=("CATALOG", "QUERIES", "RUNS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(Path(args.worker[0]), Path(args.worker[1]),
                                int(args.worker[2]))))
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    from _report import machine_info, publish

    load = list(os.getloadavg())
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "sdk",
                                 "runtimes"], capture_output=True, text=True).stdout.strip())
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        base_path = _baseline_tree(args.baseline, Path(tmp) / "baseline")
        catalogs = _catalogs(Path(tmp), args.items, args.batch)
        dim = int(np.load(catalogs["random"][1]).shape[1])
        for r in range(args.rounds):
            for kind, (catalog, queries) in catalogs.items():
                sides = [("baseline", base_path), ("this", None)]
                row = {}
                for name, path in (sides if r % 2 == 0 else sides[::-1]):
                    row[name] = _run_worker(path, catalog, queries, args.runs)
                same &= row["baseline"]["first_ids"] == row["this"]["first_ids"]
                results[kind].append(row)
                print(f"round {r + 1} {kind}: " + ", ".join(
                    f"{n} {row[n]['one_ms']:.2f} ms / {row[n]['batch_s']:.2f} s / "
                    f"{row[n]['batch_rss_mb']:.0f} MB" for n in ("baseline", "this")),
                    file=sys.stderr)
    given = argv if argv is not None else sys.argv[1:]
    payload = {"machine": machine_info(), "baseline": args.baseline, "dirty": dirty,
               "command": "python " + shlex.join([os.path.relpath(__file__, ROOT), *given]),
               "items": args.items, "dim": dim, "batch": args.batch, "runs": args.runs,
               "rounds": args.rounds, "load_average": load, "same_ids": same,
               "results": results}
    publish(args.name, payload, _markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
