"""Same-label mAP@10 of two encoders on the held-out photos of an export, paired per query:
is one measurably better than the other, or is the difference inside the noise?

Each side is a bundle (``--a-precision``/``--b-precision`` pick its artifact) or a model file
(wrapped as a teacher bundle, as the export does; ``--a-output TENSOR`` picks an inner tensor of
a ``.tflite``). The photos are the held-out images of the export that ``EXPORT_ARGS`` describe
(its own scan, split and seed), embedded through ``Encoder.embed`` from their files, as a
device would. The margin is the paired bootstrap CI over queries of ``AP@10(b) - AP@10(a)``.

``--whole`` adds the split ``catalog``: every scanned photo of the collection queries all the
others. For an export without labels that is the measure of a shop distilling on its own
catalog: the student saw these photos' pixels in training, never their labels, and will rank
this very catalog; with about ten times the held-out queries its interval is about three
times narrower. (For a labelled export it would measure the training labels: not offered.)

    python benchmarks/encoder_paired_map.py --name posters_u10_vs_v1 \\
        --a ../shared/models/teachers/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite \\
        --a-label "V1 teacher" --b build/u18/movielens-u10 --b-label "student u10" \\
        -- --images build/movielens --items build/movielens/items.csv --ignore-labels
    # writes results/<name>.{json,md}
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from edgerec.export.cli import _export_options
from edgerec.export.distill.teacher import Teacher
from edgerec.export.distill.tflite_output import with_output
from edgerec.export.pipeline import _read_data
from edgerec.sdk import Bundle, Encoder, EncoderOptions
from edgerec.sdk.cli.app import build_parser
from edgerec.sdk.evaluation import label_retrieval_per_query, paired_bootstrap_ci

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "cache"


def _encoder(model: str, output: str | None, precision: str) -> Encoder:
    """A bundle's encoder at ``precision``, or a model file wrapped as the export wraps a
    teacher (raw 0..255 pixels for a quantized input)."""
    path = Path(model)
    if path.is_dir():
        return Encoder.create_from_bundle(
            Bundle.open(path), EncoderOptions(precision=precision, num_threads=2))
    WORK.mkdir(parents=True, exist_ok=True)
    if output:
        path = with_output(path, output, WORK / f"{path.stem}-{output.replace('/', '_')}.tflite")
    return Teacher.load(path, WORK, num_threads=2).encoder


def _side(parser: argparse.ArgumentParser, which: str) -> None:
    parser.add_argument(f"--{which}", required=True, help="bundle directory or model file")
    parser.add_argument(f"--{which}-output", help="a tensor of a .tflite model file")
    parser.add_argument(f"--{which}-precision", default="fp32", choices=["fp32", "int8"],
                        help="a bundle's artifact (default fp32)")
    parser.add_argument(f"--{which}-label", help="its name in the table")


def main() -> None:
    at = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="encoder_paired_map", help="results/<name>.{json,md}")
    _side(parser, "a")
    _side(parser, "b")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--whole", action="store_true",
                        help="also the whole collection as one split ('catalog'; exports "
                             "without labels only)")
    args = parser.parse_args(sys.argv[1:at])
    export_args = sys.argv[at + 1:]
    if "--out" not in export_args:  # the export's parser needs one; nothing is written there
        export_args += ["--out", str(ROOT / "build" / "paired-map-unused")]
    options = _export_options(build_parser().parse_args(["export", *export_args]))
    data, _ = _read_data(options, log=lambda m: None)
    start = time.perf_counter()
    sides = {}
    for which in ("a", "b"):
        model = getattr(args, which)
        label = getattr(args, f"{which}_label") or Path(model).name
        sides[which] = {"label": label, "model": model,
                        "output": getattr(args, f"{which}_output"),
                        "precision": getattr(args, f"{which}_precision")}
    payload = {"command": "python benchmarks/encoder_paired_map.py " + shlex.join(sys.argv[1:]),
               "machine": machine_info(), "sides": sides, "splits": {}}
    splits = [("seen", data.val), ("unseen", data.unseen)]
    if args.whole:
        if data.labelled:
            parser.error("--whole measures an export without labels (add --ignore-labels or "
                         "give an unlabelled collection)")
        splits.append(("catalog", list(data.dataset.records)))
    for split, records in splits:
        if not records:
            continue
        labels = np.asarray(data.measured(records))
        keep = np.array([lab is not None for lab in labels])
        paths = [r.path for r, k in zip(records, keep) if k]
        per = {}
        for which, side in sides.items():
            encoder = _encoder(side["model"], side["output"], side["precision"])
            try:
                per[which] = label_retrieval_per_query(encoder.embed(paths),
                                                       labels[keep].astype(str), k=10)
                side["file"] = encoder.artifact.file  # the artifact the encoder ran
            finally:
                encoder.close()
        ci = paired_bootstrap_ci(per["b"].ap, per["a"].ap, resamples=args.resamples)
        payload["splits"][split] = {
            "images": len(paths), "queries": len(per["a"].ap),
            "map@10": {w: float(per[w].ap.mean()) for w in per},
            "b_minus_a": {"mean": ci.mean, "low": ci.low, "high": ci.high, "level": ci.level},
            "b_wins_queries": int((per["b"].ap > per["a"].ap).sum()),
            "a_wins_queries": int((per["a"].ap > per["b"].ap).sum())}
    payload["seconds"] = round(time.perf_counter() - start, 1)
    a, b = sides["a"]["label"], sides["b"]["label"]
    lines = [f"# Paired same-label mAP@10: {b} against {a} ({payload['seconds']} s)", "",
             f"`{payload['command']}`", "",
             f"Files: {a} `{sides['a'].get('file')}`, {b} `{sides['b'].get('file')}`.", "",
             f"| split | photos | {a} | {b} | {b} minus {a} [95% CI] | queries "
             f"{b} / {a} higher |", "|---|---:|---:|---:|---|---|"]
    for split, row in payload["splits"].items():
        d = row["b_minus_a"]
        lines.append(f"| {split} | {row['images']} | {row['map@10']['a']:.4f} | "
                     f"{row['map@10']['b']:.4f} | {d['mean']:+.4f} [{d['low']:+.4f}, "
                     f"{d['high']:+.4f}] | {row['b_wins_queries']} / {row['a_wins_queries']} |")
    lines += ["", "Photos embedded from their files with `Encoder.embed` (each side's own "
              "preprocessing); AP@10 per query, the margin a paired bootstrap over queries.", ""]
    if "catalog" in payload["splits"]:
        lines += ["`catalog`: every photo of the collection against all the others; the "
                  "student trained on these photos' pixels (never their labels).", ""]
    text = "\n".join(lines)
    write(args.name, payload, text)
    shutil.rmtree(ROOT / "build" / "paired-map-unused", ignore_errors=True)
    print(text)


if __name__ == "__main__":
    main()
