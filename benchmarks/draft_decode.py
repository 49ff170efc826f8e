"""Reduced-scale JPEG decoding (PIL ``draft()`` at the smallest DCT scale that still covers the
model's input) against full-size decoding: does retrieval quality hold, and what does it save?

Quality: same-label mAP@10 of a bundle's encoder on labelled photo folders (``label/photo``),
every photo embedded from its file through ``Encoder.embed`` both ways; the paired bootstrap
CI over queries of ``AP@10(reduced) - AP@10(full)``; ``cross``: reduced-scale queries
against a full-size gallery (a catalog embedded before the change); the per-photo cosine of
the two vectors.

Speed: per photo, interleaved in one process at 1 engine thread, file -> model input
(``preprocess``: decode, resize, crop, normalise) and file -> unit vector
(``Encoder.embed``), each way; p50 / p90 ms and the median over rounds of the per-round p50
ratio (reduced / full).

    python benchmarks/draft_decode.py            # ~2 min; writes results/draft_decode.{json,md}
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import edgerec.sdk.image as image_module
import numpy as np
from edgerec.sdk import Bundle, Encoder, EncoderOptions
from edgerec.sdk.evaluation import label_retrieval_per_query, paired_bootstrap_ci

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, publish

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FULL, REDUCED = 10**9, 1  # image_module._DRAFT_GAP: never draft / draft to cover the input
SUFFIXES = {".jpg", ".jpeg"}


def _photos(folder: Path) -> tuple[list[Path], list[str]]:
    paths = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in SUFFIXES)
    return paths, [p.parent.name for p in paths]


def _embed(encoder: Encoder, paths: list[Path], gap: int) -> np.ndarray:
    previous, image_module._DRAFT_GAP = image_module._DRAFT_GAP, gap
    try:
        return encoder.embed(paths)
    finally:
        image_module._DRAFT_GAP = previous


def quality(encoder: Encoder, folder: Path) -> dict:
    paths, labels = _photos(folder)
    full, reduced = _embed(encoder, paths, FULL), _embed(encoder, paths, REDUCED)
    a, b = label_retrieval_per_query(full, labels), label_retrieval_per_query(reduced, labels)
    ci = paired_bootstrap_ci(b.ap, a.ap)
    cos = (full * reduced).sum(1)
    return {"folder": str(folder), "photos": len(paths), "full_map@10": float(a.ap.mean()),
            "reduced_map@10": float(b.ap.mean()), "difference": ci.mean,
            "ci95": [ci.low, ci.high],
            "cross_map@10": float(label_retrieval_per_query(reduced, labels,
                                                            gallery=full).ap.mean()),
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def speed(encoder: Encoder, paths: list[Path], rounds: int) -> dict:
    previous = image_module._DRAFT_GAP
    samples: dict[str, list[list[float]]] = {k: [[] for _ in range(rounds)] for k in (
        "preprocess full", "preprocess reduced", "embed full", "embed reduced")}
    for p in paths[:10]:  # warm-up: engine, page cache
        encoder.embed([p])
    for r in range(rounds):
        for p in paths:
            for gap, name in ((FULL, "full"), (REDUCED, "reduced")):
                image_module._DRAFT_GAP = gap
                t0 = time.perf_counter()
                encoder.preprocess([p])
                t1 = time.perf_counter()
                encoder.embed([p])
                t2 = time.perf_counter()
                samples[f"preprocess {name}"][r].append((t1 - t0) * 1e3)
                samples[f"embed {name}"][r].append((t2 - t1) * 1e3)
    image_module._DRAFT_GAP = previous
    out = {}
    for stage in ("preprocess", "embed"):
        for name in ("full", "reduced"):
            pooled = np.concatenate(samples[f"{stage} {name}"])
            out[f"{stage} {name}"] = {"p50_ms": float(np.median(pooled)),
                                      "p90_ms": float(np.percentile(pooled, 90)),
                                      "n": len(pooled)}
        ratios = [np.median(samples[f"{stage} reduced"][r])
                  / np.median(samples[f"{stage} full"][r]) for r in range(rounds)]
        out[f"{stage} ratio"] = {"median": float(np.median(ratios)),
                                 "rounds": [float(x) for x in ratios]}
    return out


def _markdown(payload: dict) -> str:
    m, q, s = payload["machine"], payload["quality"], payload["speed"]
    lines = [
        "# Reduced-scale JPEG decoding against full-size decoding", "",
        f"Bundle `{payload['bundle']}` ({payload['artifact']}, {payload['input_size']} px, "
        f"crop_pct {payload['crop_pct']}). Machine: {m.get('cpu')}, {m.get('cores')} cores; "
        f"load average at start {payload['load_average'][0]:.2f}; {m.get('date')}; commit "
        f"{m.get('commit')}.", "",
        "| photos | n | full mAP@10 | reduced mAP@10 | reduced - full [95% CI] | reduced queries, "
        "full gallery | cosine mean / min |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in q.items():
        lines.append(
            f"| {name} | {r['photos']} | {r['full_map@10']:.4f} | {r['reduced_map@10']:.4f} | "
            f"{r['difference']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | "
            f"{r['cross_map@10']:.4f} | {r['cosine_mean']:.4f} / {r['cosine_min']:.4f} |")
    lines += ["", f"Speed: {payload['speed_photos']} photos x {payload['rounds']} rounds, "
              "interleaved per photo, 1 engine thread.", "",
              "| path | full p50 / p90 ms | reduced p50 / p90 ms | reduced / full (median of "
              "round p50 ratios; rounds) |", "|---|---|---|---|"]
    for stage, label in (("preprocess", "file -> model input"), ("embed", "file -> vector")):
        f, r, ratio = s[f"{stage} full"], s[f"{stage} reduced"], s[f"{stage} ratio"]
        lines.append(f"| {label} | {f['p50_ms']:.2f} / {f['p90_ms']:.2f} | {r['p50_ms']:.2f} / "
                     f"{r['p90_ms']:.2f} | {ratio['median']:.3f} "
                     f"({', '.join(f'{x:.3f}' for x in ratio['rounds'])}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "examples/models/clothing-student")
    ap.add_argument("--sets", nargs="*", default=[
        f"seen={SHARED / 'clothing-small/validation'}",
        f"unseen={SHARED / 'clothing-extra/unseen'}"],
        metavar="NAME=DIR", help="labelled folders (DIR/label/photo.jpg) for the quality table")
    ap.add_argument("--engine", default="onnx")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--speed-images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--name", default="draft_decode")
    args = ap.parse_args(argv)
    bundle = Bundle.open(args.bundle)
    encoder = Encoder.create_from_bundle(bundle, EncoderOptions(
        engine=args.engine, precision=args.precision, num_threads=1, use_device_profile=False))
    try:
        sets = dict(s.split("=", 1) for s in args.sets)
        q = {name: quality(encoder, Path(folder)) for name, folder in sets.items()}
        paths = _photos(Path(next(iter(sets.values()))))[0][: args.speed_images]
        load = list(os.getloadavg())
        payload = {"machine": machine_info(), "bundle": str(args.bundle.relative_to(ROOT)
                                                             if args.bundle.is_relative_to(ROOT)
                                                             else args.bundle),
                   "artifact": encoder.artifact.file,
                   "input_size": int(bundle.preprocessing.input_size),
                   "crop_pct": bundle.preprocessing.crop_pct, "quality": q,
                   "speed_photos": len(paths), "rounds": args.rounds, "load_average": load,
                   "speed": speed(encoder, paths, args.rounds)}
    finally:
        encoder.close()
    publish(args.name, payload, _markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
