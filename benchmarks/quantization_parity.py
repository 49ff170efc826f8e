"""int8 parity per quantization method: cosine of int8 artifacts to the torch fp32 student.

An untrained MobileNetV3-Small student (BatchNorm statistics re-estimated on the calibration
photos, so that images do not all map to one vector) is quantized with each ONNX Runtime and
LiteRT configuration of ``edgerec.export.artifacts.quantize_onnx`` and ``.quantize_tflite``,
calibrated on half of the sample photos
and compared on the other half (cosine mean/min, top-10 neighbour overlap, file size, time).
Untrained weights make this a test of the quantizers, not of retrieval: its mAP is at chance.

    python benchmarks/quantization_parity.py            # ~3 min per seed on 2 vCPUs
    python benchmarks/quantization_parity.py --seeds 0 1 2 --no-tflite --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]


def _photos(size: int, per_label: int):
    from edgerec.sdk import Preprocessing, preprocess

    paths = []
    for label_dir in sorted(p for p in (ROOT / "examples/sample/images").iterdir() if p.is_dir()):
        paths += sorted(label_dir.glob("*.jpg"))[:per_label]
    x = preprocess(paths, Preprocessing(input_size=size))
    return x[0::2], x[1::2]


def _student(seed: int, size: int, width: float, dim: int, calibration):
    import torch
    from edgerec.export.distill.student import create_student

    torch.manual_seed(seed)
    model = create_student("mobilenet_v3_small", image_size=size, width=width, dim=dim, hidden=0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # exact cumulative average in one pass
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(calibration))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def configs(tflite: bool):
    from edgerec.export.artifacts.quantize_onnx import OnnxQuantOptions
    from edgerec.export.artifacts.quantize_tflite import TfliteQuantOptions

    onnx = {
        "onnx u8s8 7-bit weights, minmax": OnnxQuantOptions(),
        "onnx u8s8 8-bit weights (x86-vnni target), minmax": OnnxQuantOptions(target="x86-vnni"),
        "onnx s8s8 (arm target), minmax": OnnxQuantOptions(target="arm"),
        "onnx u8s8 7-bit, percentile": OnnxQuantOptions(calibration="percentile"),
        "onnx u8s8 7-bit, entropy": OnnxQuantOptions(calibration="entropy"),
        "onnx u8s8 7-bit, minmax, 16 images": OnnxQuantOptions(max_samples=16),
        "onnx u8s8 7-bit, minmax, keep_float": "keep",
    }
    lite = {
        "tflite pt2e, histogram": TfliteQuantOptions(),
        "tflite pt2e, minmax": TfliteQuantOptions(calibration="minmax"),
        "tflite pt2e, histogram, keep_float": "keep",
    }
    return onnx, (lite if tflite else {})


def run(seed: int, size: int, width: float, dim: int, per_label: int, tflite: bool) -> list[dict]:
    """One student: every configuration's parity with torch fp32 on held-out photos."""
    from dataclasses import replace

    from edgerec.export.artifacts.convert import ModelIO, to_onnx
    from edgerec.export.artifacts.encoder import sensitive_layers
    from edgerec.export.artifacts.parity import artifact_embeddings, parity, torch_embeddings
    from edgerec.export.artifacts.quantize_onnx import OnnxQuantOptions, quantize_onnx
    from edgerec.export.artifacts.quantize_tflite import TfliteQuantOptions, quantize_tflite

    cal, held = _photos(size, per_label)
    model = _student(seed, size, width, dim, cal)
    batches = [cal[i : i + 20] for i in range(0, len(cal), 20)]
    reference = torch_embeddings(model, held)
    keep = sensitive_layers(model)
    onnx_cfgs, lite_cfgs = configs(tflite)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = to_onnx(model, Path(tmp) / "fp32.onnx", ModelIO.image(size))
        jobs = [(n, o, "onnx") for n, o in onnx_cfgs.items()]
        jobs += [(n, o, "tflite") for n, o in lite_cfgs.items()]
        for i, (name, options, kind) in enumerate(jobs):
            if options == "keep":
                base = OnnxQuantOptions() if kind == "onnx" else TfliteQuantOptions()
                options = replace(base, keep_float=keep)
            out = Path(tmp) / f"{i}.{kind}"
            t = time.perf_counter()
            if kind == "onnx":
                quantize_onnx(fp32, out, batches, options)
            else:
                quantize_tflite(model, out, batches, ModelIO.image(size), options)
            seconds = time.perf_counter() - t
            report = parity(reference, artifact_embeddings(out, held))
            rows.append({"seed": seed, "config": name, "cosine_mean": report.cosine_mean,
                         "cosine_min": report.cosine_min,
                         "top10_overlap": report.neighbour_overlap,
                         "size_kb": round(out.stat().st_size / 1024, 1),
                         "seconds": round(seconds, 1)})
            print(f"seed {seed} {name:40s} {report}", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--width", type=float, default=0.5, help="MobileNetV3 width multiplier")
    parser.add_argument("--dim", type=int, default=32, help="embedding dimension")
    parser.add_argument("--per-label", type=int, default=8,
                        help="sample photos per label; half calibrate, half are held out")
    parser.add_argument("--no-tflite", action="store_true", help="skip the LiteRT configurations")
    parser.add_argument("--json", action="store_true", help="print the JSON result")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        rows += run(seed, args.size, args.width, args.dim, args.per_label, not args.no_tflite)
    payload = {"machine": machine_info(), "args": vars(args), "rows": rows}
    lines = ["| seed | configuration | cosine mean | cosine min | top-10 overlap | KB | s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['config']} | {r['cosine_mean']:.4f} | {r['cosine_min']:.3f} "
              f"| {r['top10_overlap']:.3f} | {r['size_kb']} | {r['seconds']} |" for r in rows]
    md = (f"# int8 parity per quantization method\n\nUntrained student, {args.size} px, width "
          f"{args.width}, {args.dim}-d; cosine to torch fp32 on held-out sample photos. "
          f"Measured {payload['machine']['date']} on {payload['machine']['cpu']} "
          f"({', '.join(payload['machine']['cpu_flags'])}).\n\n" + "\n".join(lines) + "\n")
    js, mdp = write("quantization_parity", payload, md)
    print(json.dumps(payload, indent=2) if args.json else md)
    print(f"wrote {js} and {mdp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
