"""Scorer latency: re-ranking C candidates for one query, folded numpy vs the engines.

``Scorer.score(u, V)`` for a (D,) user vector and (C, D) candidate vectors (C = 500, D = 128 by
default), timed end to end as the recommender calls it (the engine paths include building the
(C, 3D) ``[u, v, u*v]`` input). Configurations: the folded numpy path (first layer folded into
one GEMM per query) and the scorer artifacts in ONNX Runtime and LiteRT, fp32 and int8. Each
configuration runs in its own process per round with 1 thread (``OPENBLAS_NUM_THREADS`` /
``OMP_NUM_THREADS`` and the engine's ``num_threads``), rounds are interleaved, and the report
gives medians over rounds plus the ratio to the folded path within each round. The issue's
target: 500 candidates in <= 0.5 ms.

Bundle: ``--bundle`` (default ``build/clothing-bundle-scorer``, the real trained scorer, when it
exists; else an untrained 128-d scorer of the default shape is exported to ``build/bench``:
latency does not depend on the weights). Candidates: rows of ``--catalog`` (default
``build/clothing-catalog`` when it exists, else random unit vectors).

    python benchmarks/scorer_latency.py            # ~1 min; writes results/scorer_latency.*
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, percentiles, write

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench"
REAL_BUNDLE = ROOT / "build" / "clothing-bundle-scorer"
REAL_CATALOG = ROOT / "build" / "clothing-catalog"
CONFIGS = [  # (mode, engine, precision); the first is the ratio baseline
    ("folded", None, "fp32"),
    ("engine", "onnx", "fp32"),
    ("engine", "onnx", "int8"),
    ("engine", "tflite", "fp32"),
    ("engine", "tflite", "int8"),
]


def synthetic_bundle(dim: int = 128) -> Path:
    """A bundle whose scorer is an untrained default-shape network (built once)."""
    out = WORK / f"scorer-{dim}"
    if (out / "manifest.json").is_file():
        return out
    import torch
    from edgerec.export.artifacts.convert import ModelIO, to_onnx, to_tflite
    from edgerec.export.artifacts.quantize_onnx import quantize_onnx
    from edgerec.export.artifacts.quantize_tflite import quantize_tflite
    from edgerec.export.options import ScorerConfig
    from edgerec.export.scorer.artifacts import (
        CALIBRATION_BATCH,
        onnx_remedies,
        tflite_remedies,
    )
    from edgerec.export.scorer.train import ScorerNet
    from edgerec.runtimes import open_runtime
    from edgerec.sdk import Precision, Preprocessing, Role
    from edgerec.sdk.bundle.manifest import MLP_WEIGHTS_FORMAT
    from edgerec.sdk.bundle.writer import NewArtifact, NewWeights, write_bundle

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2048, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = np.concatenate([v[::-1], v, v[::-1] * v], axis=1)
    model = ScorerNet(dim, ScorerConfig().hidden, 0.0, rows.mean(0), rows.std(0)).eval()
    model.init_inner_product_prior(10.0, 0.0)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    WORK.mkdir(parents=True, exist_ok=True)
    io = ModelIO.rows(3 * dim)
    files = {
        (Precision.FP32, "onnx"): to_onnx(model, WORK / "scorer.fp32.onnx", io),
        (Precision.FP32, "tflite"): to_tflite(model, WORK / "scorer.fp32.tflite", io),
    }
    batches = [rows[i : i + CALIBRATION_BATCH] for i in range(0, len(rows), CALIBRATION_BATCH)]
    # the first rung of the export's ladders: what a bundle ships when it passes its gate
    files[(Precision.INT8, "onnx")] = quantize_onnx(
        files[(Precision.FP32, "onnx")], WORK / "scorer.int8.onnx", batches,
        onnx_remedies()[0].options)
    files[(Precision.INT8, "tflite")] = quantize_tflite(
        model, WORK / "scorer.int8.tflite", batches, io, tflite_remedies()[0].options)
    model.to_weights().save(WORK / "scorer.fp32.npz")
    artifacts = []  # a scorer-only bundle: enough for Scorer, not for an Encoder
    for (precision, _), path in files.items():
        with open_runtime(path) as rt:
            artifacts.append(NewArtifact(path, Role.SCORER, precision, tuple(rt.input_specs()),
                                         tuple(rt.output_specs()), rt.output_specs()[0].name))
    write_bundle(out, artifacts=artifacts, preprocessing=Preprocessing(input_size=8),
                 embedding_dim=dim, name="scorer-latency", force=True,
                 weights=[NewWeights(WORK / "scorer.fp32.npz", Role.SCORER, Precision.FP32,
                                     MLP_WEIGHTS_FORMAT)])
    return out


def candidates(catalog: str | None, dim: int, n: int = 4096) -> np.ndarray:
    """float32 (n, D) unit vectors: catalog rows when a catalog is given, else random."""
    if catalog:
        from edgerec.sdk import Catalog

        with Catalog.open(catalog, readonly=True) as cat:
            ids = list(cat)[:n]
            _, v = cat.vectors(ids)
        return np.ascontiguousarray(v, dtype=np.float32)
    v = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def run(bundle: str, catalog: str | None, mode: str, engine: str | None, precision: str,
        threads: int, candidates_per_query: int, iters: int) -> dict:
    """One configuration in this process: ms per ``score(u, V)`` call."""
    from edgerec.sdk import Bundle, Scorer, ScorerOptions

    b = Bundle.open(bundle)
    pool = candidates(catalog, b.embedding_dim)
    rng = np.random.default_rng(1)
    queries = []
    for _ in range(16):  # real-looking queries: mean of a few items, their neighbours first
        u = pool[rng.choice(len(pool), 5, replace=False)].mean(0)
        u /= np.linalg.norm(u)
        top = np.argsort(-(pool @ u))[:candidates_per_query]
        queries.append((u.astype(np.float32), np.ascontiguousarray(pool[top])))
    options = ScorerOptions(mode=mode, engine=engine, precision=precision, num_threads=threads)
    with Scorer.create_from_bundle(b, options) as scorer:
        key = scorer.key
        for q in range(20):
            scorer.score(*queries[q % len(queries)])
        ms = []
        for q in range(iters):
            u, v = queries[q % len(queries)]
            t = time.perf_counter()
            scorer.score(u, v)
            ms.append((time.perf_counter() - t) * 1e3)
    return {"key": key, "ms": ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", help="bundle with a scorer (default: see the docstring)")
    parser.add_argument("--catalog", help="catalog whose vectors are the candidates")
    parser.add_argument("--candidates", type=int, default=500, help="C per query")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--iters", type=int, default=400, help="timed calls per process")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts")
    parser.add_argument("--json", action="store_true", help="print the result JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run(**json.loads(args.worker))))
        return

    bundle = args.bundle or (str(REAL_BUNDLE) if (REAL_BUNDLE / "manifest.json").is_file()
                             else str(synthetic_bundle()))
    catalog = args.catalog or (str(REAL_CATALOG) if (REAL_CATALOG / "catalog.json").is_file()
                               and bundle == str(REAL_BUNDLE) else None)
    from edgerec.sdk import Bundle, Role

    have = {(a.engine.value, a.precision.value) for a in Bundle.open(bundle).artifacts(Role.SCORER)}
    configs = [(*c, t) for t in args.threads for c in CONFIGS
               if c[0] == "folded" or (c[1], c[2]) in have]
    names = [f"{'folded numpy' if m == 'folded' else e} {p} {t}t" for m, e, p, t in configs]
    rounds: dict[str, list[dict]] = {n: [] for n in names}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        order = list(range(len(configs)))
        order = order[r % len(order):] + order[: r % len(order)]  # rotate who goes first
        for i in order:
            m, e, p, t = configs[i]
            spec = {"bundle": bundle, "catalog": catalog, "mode": m, "engine": e,
                    "precision": p, "threads": t, "candidates_per_query": args.candidates,
                    "iters": args.iters}
            env = {**os.environ, "OPENBLAS_NUM_THREADS": str(t), "OMP_NUM_THREADS": str(t),
                   "MKL_NUM_THREADS": str(t)}
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                 capture_output=True, text=True, check=True, env=env)
            rounds[names[i]].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    load_after = os.getloadavg()

    base = names[0]
    results = {}
    for n in names:
        per_round = [float(np.median(x["ms"])) for x in rounds[n]]
        ratios = [a / float(np.median(b["ms"])) for a, b in zip(per_round, rounds[base])]
        pooled = [v for x in rounds[n] for v in x["ms"]]
        results[n] = {"key": rounds[n][0]["key"], "p50_ms": float(np.median(per_round)),
                      "p90_ms": float(np.median([np.percentile(x["ms"], 90)
                                                  for x in rounds[n]])),
                      "pooled": percentiles(pooled),
                      "ratio_to_folded": float(np.median(ratios)),
                      "meets_target": bool(np.median(per_round) <= 0.5)}
    machine = machine_info()
    payload = {"benchmark": "scorer_latency", "machine": machine, "bundle": bundle,
               "catalog": catalog, "candidates": args.candidates, "baseline": base,
               "rounds": args.rounds, "iters": args.iters, "target_ms": 0.5,
               "load_average": {"before": load_before, "after": load_after},
               "results": results,
               "command": "python benchmarks/scorer_latency.py " + shlex.join(sys.argv[1:])}
    busy = max(load_before[0], load_after[0]) > 0.5
    lines = [
        f"# Scorer latency ({args.candidates} candidates per query)", "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, flags "
        f"{', '.join(machine['cpu_flags'])}; numpy {machine['numpy']}; engines "
        f"{machine['engines']}; {machine['date']}. Load average before/after "
        f"{load_before[0]:.2f}/{load_after[0]:.2f}"
        + (" (**the machine was busy**: absolute times are inflated; ratios within a round "
           "hold better)." if busy else " (idle)."), "",
        f"`Scorer.score(u, V)`, V = {args.candidates} x D candidate vectors (the 500 nearest "
        f"catalog items of a query), end to end. Median over {args.rounds} interleaved rounds "
        f"(one process per configuration and round, {args.iters} timed calls each). Ratio: to "
        f"`{base}` within each round. Target: <= 0.5 ms.", "",
        "| configuration | scorer | p50 ms | p90 ms | ratio | <= 0.5 ms |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        r = results[n]
        lines.append(f"| {n} | {r['key']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
                     f"{r['ratio_to_folded']:.2f} | {'yes' if r['meets_target'] else 'no'} |")
    lines += ["", f"Bundle: `{Path(bundle).name}`"
              + (f"; candidates from `{Path(catalog).name}`." if catalog else
                 "; random unit candidate vectors."),
              "folded numpy: `h1 = relu(V (W_v + W_uv * u)^T + W_u u + b)`, then the small "
              "layers in numpy (one GEMM over the candidates). Engines get the (C, 3D) "
              "`[u, v, u*v]` rows built in numpy, as `Scorer` does.", ""]
    js, md = write("scorer_latency", payload, "\n".join(lines))
    print(json.dumps(payload, indent=2) if args.json else "\n".join(lines))
    print(f"wrote {js} and {md}", file=sys.stderr)


if __name__ == "__main__":
    main()
