"""Embedding latency per engine, precision and thread count, measured as ratios in one run.

Each configuration runs in its own process (two multi-threaded engines in one process steal
each other's cores on a 2-vCPU machine), configurations are interleaved over rounds, and the
report gives the median over rounds of each round's median plus the ratio to the baseline
(first configuration) taken within each round. Engine time is batch 1 on a preprocessed real
photo; JPEG decode + resize + normalise is timed separately.

Models: the MobileNetV1 uint8 teacher (TFLite, shipped) and the MobileNetV3-Small 128-d
student architecture (random weights, BatchNorm statistics untouched: latency does not depend
on weights) exported to ONNX and TFLite fp32. Needs the export extra to build the student.

    python benchmarks/embed_latency.py            # ~3 min; writes results/embed_latency.*
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import RESULTS, machine_info, percentiles, write

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample"
TEACHER = SAMPLE / "teacher" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
WORK = ROOT / "build" / "bench"

CONFIGS = [  # (model, engine, precision); the first is the ratio baseline
    ("teacher", "tflite", "int8"),
    ("student", "onnx", "fp32"),
    ("student", "tflite", "fp32"),
]
EXPORTED = ROOT / "build" / "clothing-bundle-192"  # the default `edgerec export` bundle, if present
EXPORTED_CONFIGS = [(f"exported-{e}-{p}", e, p)
                    for e in ("onnx", "tflite") for p in ("fp32", "int8")]


def prepare(exported: Path = EXPORTED) -> dict[str, Path]:
    """Bundles for the teacher and the student architecture (built once under build/bench)."""
    from edgerec.sdk import Bundle, ImportOptions, import_model

    bundles = {"teacher": WORK / "teacher", "student": WORK / "student"}
    if not (bundles["teacher"] / "manifest.json").exists():
        import_model([TEACHER], bundles["teacher"], ImportOptions(raw_pixels=True), force=True)
    if not (bundles["student"] / "manifest.json").exists():
        import torch
        from edgerec.export.artifacts.convert import ModelIO, to_onnx, to_tflite
        from edgerec.export.distill.student import create_student

        torch.manual_seed(0)
        model = create_student("mobilenet_v3_small").eval()
        WORK.mkdir(parents=True, exist_ok=True)
        onnx_path = to_onnx(model, WORK / "student.onnx", ModelIO.image(224))
        tflite_path = to_tflite(model, WORK / "student.tflite", ModelIO.image(224))
        import_model([onnx_path, tflite_path], bundles["student"], ImportOptions(
            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), name="student-arch"),
            force=True)
    if (exported / "manifest.json").is_file():
        for name, _, _ in EXPORTED_CONFIGS:
            bundles[name] = exported
    for b in set(bundles.values()):
        Bundle.open(b)
    return bundles


def run(bundle: str, engine: str, precision: str, threads: int, iters: int) -> dict:
    """One configuration in this process: engine samples and preprocessing samples (ms)."""
    from edgerec.sdk import Encoder, EncoderOptions

    photos = sorted((SAMPLE / "images").glob("*/*.jpg"))[::20]
    options = EncoderOptions(engine=engine, precision=precision, num_threads=threads)
    with Encoder.create_from_bundle_path(bundle, options) as enc:
        batch = enc.preprocess(photos[:1])
        for _ in range(10):
            enc.embed_preprocessed(batch)
        engine_ms = []
        for _ in range(iters):
            t = time.perf_counter()
            enc.embed_preprocessed(batch)
            engine_ms.append((time.perf_counter() - t) * 1e3)
        pre_ms = []
        for photo in photos:
            t = time.perf_counter()
            enc.preprocess([photo])
            pre_ms.append((time.perf_counter() - t) * 1e3)
    return {"engine_ms": engine_ms, "preprocess_ms": pre_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--iters", type=int, default=60, help="timed runs per process")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts")
    parser.add_argument("--json", action="store_true", help="print the result JSON")
    parser.add_argument("--exported", default=str(EXPORTED),
                        help="a bundle `edgerec export` wrote, timed beside the others if present")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run(**json.loads(args.worker))))
        return

    bundles = prepare(Path(args.exported))
    extra = [c for c in EXPORTED_CONFIGS if c[0] in bundles]
    configs = [(*c, t) for t in args.threads for c in CONFIGS + extra]
    names = [f"{m} {e} {p} {t}t" for m, e, p, t in configs]
    rounds: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = list(range(len(configs)))
        order = order[r % len(order):] + order[: r % len(order)]  # rotate who goes first
        for i in order:
            m, e, p, t = configs[i]
            spec = {"bundle": str(bundles[m]), "engine": e, "precision": p, "threads": t,
                    "iters": args.iters}
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                 capture_output=True, text=True, check=True)
            rounds[names[i]].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    base = names[0]
    results = {}
    for n in names:
        per_round = [float(np.median(x["engine_ms"])) for x in rounds[n]]
        ratios = [a / float(np.median(b["engine_ms"])) for a, b in zip(per_round, rounds[base])]
        pooled = [v for x in rounds[n] for v in x["engine_ms"]]
        pre = [v for x in rounds[n] for v in x["preprocess_ms"]]
        results[n] = {"engine_p50_ms": float(np.median(per_round)),
                      "engine": percentiles(pooled),
                      "ratio_to_baseline": float(np.median(ratios)),
                      "preprocess": percentiles(pre)}
    payload = {"benchmark": "embed_latency", "machine": machine_info(), "baseline": base,
               "rounds": args.rounds, "iters": args.iters, "results": results,
               "command": "python benchmarks/embed_latency.py " + shlex.join(sys.argv[1:])}
    lines = [
        "# Embedding latency (batch 1)", "",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores, flags "
        f"{', '.join(payload['machine']['cpu_flags'])}; engines {payload['machine']['engines']}; "
        f"{payload['machine']['date']}.", "",
        f"Median over {args.rounds} interleaved rounds (one process per configuration and "
        f"round, {args.iters} timed runs each). Ratio: to `{base}` within each round.", "",
        "| model | engine | precision | threads | engine p50 ms | p90 ms | ratio | "
        "preprocess p50 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (m, e, p, t), n in zip(configs, names):
        r = results[n]
        lines.append(f"| {m} | {e} | {p} | {t} | {r['engine_p50_ms']:.2f} | "
                     f"{r['engine']['p90']:.2f} | {r['ratio_to_baseline']:.3f} | "
                     f"{r['preprocess']['p50']:.2f} |")
    lines += ["", "teacher: MobileNetV1 1.0 uint8 (Coral), 1024-d, 224 px; student: "
              "MobileNetV3-Small + 128-d head at 224 px (architecture only; weights do not "
              f"change latency); exported-*: {_describe(Path(args.exported))}.",
              "preprocess: JPEG decode (~400x533) + resize + crop + normalise, one photo.",
              ""]
    js, md = write("embed_latency", payload, "\n".join(lines))
    _plot(configs, names, results)
    print(json.dumps(payload, indent=2) if args.json else "\n".join(lines))
    print(f"wrote {js} and {md}", file=sys.stderr)


def _describe(bundle: Path) -> str:
    """'the trained 192 px bundle from `edgerec export` (path)', read through the sdk."""
    from edgerec.sdk import Bundle, EdgeRecError

    try:
        size = Bundle.open(bundle).preprocessing.input_size
    except EdgeRecError:
        return f"not measured ({bundle} is not a readable bundle)"
    where = bundle.resolve()
    where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
    return f"the trained {size} px bundle from `edgerec export` ({where})"


def _plot(configs, names, results) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 3.8))
    p50 = [results[n]["engine_p50_ms"] for n in names]
    p90 = [results[n]["engine"]["p90"] for n in names]
    ax.barh(names, p50, xerr=[np.zeros(len(p50)), np.subtract(p90, p50)], color=[
        "#888" if c[0] == "teacher" else ("#3a7" if c[1] == "onnx" else "#37c") for c in configs])
    ax.invert_yaxis()
    ax.set_xlabel("ms per image, batch 1 (bar p50, whisker p90)")
    ax.set_title("Embedding latency on this CPU")
    fig.tight_layout()
    fig.savefig(RESULTS / "embed_latency.png", dpi=120)


if __name__ == "__main__":
    main()
