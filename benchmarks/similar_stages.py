"""Where the time of ``Recommender.similar(photo file)`` goes: each stage of the path and the
whole call, timed in the same loop iteration, so that the sum of the stages can be checked
against the whole (``edgerec bench`` times each stage in its own run of many calls, whose
medians need not add up to the whole path's).

Per photo, in this order, interleaved: read the file; decode to the model's input size
(reduced-scale decode, resize, crop); normalise into the model's layout; the engine (with L2
norm and whitening); ``Catalog.search`` top-k; then ``similar(path, k)`` itself. The catalog
holds ``--items`` jittered copies of the photos' own vectors, int8, as ``edgerec bench`` builds
it. 1 engine thread. p50 / p90 ms of each, and the p50 of the per-iteration difference
``similar - sum of stages``.

    python benchmarks/similar_stages.py       # ~1 min; writes results/similar_stages.{json,md}
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from edgerec.sdk import (
    Bundle,
    Catalog,
    Encoder,
    EncoderOptions,
    Recommender,
    RecommenderOptions,
)
from edgerec.sdk.bench.catalogs import make_catalog
from edgerec.sdk.catalog import prefilter
from edgerec.sdk.image import _load, preprocess  # the encoder's own fused decode + resize

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, publish

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "clothing-small" / "validation"
STAGES = ("read", "decode", "preprocess", "encode", "search")


def measure(bundle: Bundle, photos: list[Path], items: int, runs: int, warmup: int, k: int,
            engine: str, precision: str, folder: Path) -> dict:
    """Samples (ms) of each stage, their sum and ``similar`` per iteration."""
    options = EncoderOptions(engine=engine, precision=precision, num_threads=1,
                             use_device_profile=False)
    with Encoder.create_from_bundle(bundle, options) as enc:
        base = enc.embed([str(p) for p in photos])
    path = make_catalog(folder / f"catalog-{items}", items, base, encoder_id=bundle.encoder_id)
    samples: dict[str, list[float]] = {s: [] for s in (*STAGES, "sum", "similar", "gap")}
    with Catalog.open(path, readonly=True) as catalog, Recommender.create_from_bundle(
            bundle, catalog, RecommenderOptions(use_behaviour=False),
            encoder_options=options) as rec:
        enc = rec.encoder()
        pre, layout, limits = bundle.preprocessing, enc.artifact.layout, options.limits
        for i in range(warmup + runs):
            photo = str(photos[i % len(photos)])
            t = [time.perf_counter()]
            data = Path(photo).read_bytes()
            t.append(time.perf_counter())
            img = _load(data, limits, pre)
            t.append(time.perf_counter())
            x = preprocess([img], pre, layout, limits=limits)
            t.append(time.perf_counter())
            v = enc.embed_preprocessed(x)[0]
            t.append(time.perf_counter())
            catalog.search(v, k=k)
            t.append(time.perf_counter())
            rec.similar(photo, k=k)
            t.append(time.perf_counter())
            if i < warmup:
                continue
            ms = np.diff(t) * 1e3
            for name, value in zip(STAGES, ms[:5]):
                samples[name].append(float(value))
            samples["sum"].append(float(ms[:5].sum()))
            samples["similar"].append(float(ms[5]))
            samples["gap"].append(float(ms[5] - ms[:5].sum()))
        artifact = enc.artifact.file
    return {"artifact": artifact, "layout": prefilter.active_layout(int(base.shape[1])).value,
            "samples": samples}


def _markdown(p: dict) -> str:
    m = p["machine"]
    lines = [
        "# Where `similar(photo file)` spends its time",
        "",
        f"Bundle `{p['bundle']}` ({p['artifact']}, 1 thread), catalog of {p['items']:,} int8 "
        f"items (search layout `{p['layout']}`), top-{p['k']}, {p['photos']} photos, "
        f"{p['runs']} iterations after {p['warmup']} warm-up. Machine: {m.get('cpu')}, "
        f"{m.get('cores')} cores; load average at start {p['load_average'][0]:.2f}; "
        f"{m.get('date')}; commit {m.get('commit')}.",
        "",
        "| step | p50 ms | p90 ms |",
        "|---|---|---|",
    ]
    for name, stats in p["stats"].items():
        lines.append(f"| {name} | {stats['p50']:.3f} | {stats['p90']:.3f} |")
    lines += ["", "Each iteration times the stages, then `similar` on the same photo; `gap` is "
              "`similar` minus the stages' sum in that iteration (its own p50).",
              "", f"Command: `{p['command']}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "examples/models/clothing-student")
    ap.add_argument("--images", type=Path, default=PHOTOS,
                    help="photos (searched recursively for .jpg)")
    ap.add_argument("--photos", type=int, default=32, help="photos used (default 32)")
    ap.add_argument("--items", type=int, default=100_000, help="catalog size (default 100k)")
    ap.add_argument("--runs", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--engine", default="onnx")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--name", default="similar_stages")
    args = ap.parse_args(argv)
    photos = sorted(args.images.rglob("*.jpg"))[: args.photos]
    if not photos:
        raise SystemExit(f"No .jpg photos under {args.images}.")
    bundle = Bundle.open(args.bundle)
    load = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        out = measure(bundle, photos, args.items, args.runs, args.warmup, args.k, args.engine,
                      args.precision, Path(tmp))
    stats = {name: {"n": len(v), "p50": float(np.median(v)), "p90": float(np.percentile(v, 90))}
             for name, v in out["samples"].items()}
    given = argv if argv is not None else sys.argv[1:]
    payload = {"machine": machine_info(),
               "command": "python " + shlex.join([os.path.relpath(__file__, ROOT), *given]),
               "bundle": str(args.bundle.relative_to(ROOT) if args.bundle.is_relative_to(ROOT)
                             else args.bundle),
               "artifact": out["artifact"], "layout": out["layout"], "items": args.items,
               "k": args.k, "photos": len(photos), "runs": args.runs, "warmup": args.warmup,
               "load_average": load, "stats": stats}
    publish(args.name, payload, _markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
