"""Same-label mAP@10 of MobileNet bodies fed at several input sizes, on the held-out images of
an export (its own scan, split and seed): how much of a teacher's quality is its resolution?

Each body is run in torch, its pooled features L2-normalised: the MobileNetV1 teacher and the
MobileNetV2 classifier as their ``.tflite`` weights load into a student body
(:func:`edgerec.export.distill.tflite_weights.load_tflite_body`, no training; at 224 px the V1
body gives the teacher's own embedding at cosine 0.999), and optionally a trained student's
checkpoint (``--student NAME --checkpoint best.pt``, its head's embedding).

    python benchmarks/resolution_probe.py --name resolution_posters \\
        --student mobilenet_v1_160 --checkpoint build/u18/movielens-u8.work/checkpoints/best.pt \\
        -- --images build/movielens --items build/movielens/items.csv --ignore-labels
    # ~5 minutes for 951 posters; writes results/<name>.{json,md}
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from edgerec.export.cli import _export_options
from edgerec.export.data.views import make_views
from edgerec.export.distill.mobilenet_v1 import mobilenet_v1
from edgerec.export.distill.student import create_student
from edgerec.export.distill.tflite_weights import load_tflite_body, tf_same_padding
from edgerec.export.pipeline import _label_map, _read_data
from edgerec.sdk import load_image
from edgerec.sdk.cli.app import build_parser
from torchvision.models import mobilenet_v2

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = ROOT.parent / "shared" / "models" / "teachers"
V1 = TEACHERS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
V2 = TEACHERS / "mobilenet_v2_1.0_224_quant.tflite"
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _pooled(body: torch.nn.Module) -> torch.nn.Module:
    """``body`` then a global average pool: (N, 3, S, S) -> (N, C)."""
    return torch.nn.Sequential(body, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()


def _embed(model: torch.nn.Module, records, size: int) -> np.ndarray:
    x = np.concatenate([make_views(load_image(r.path), 1, size, 0) for r in records])
    x = ((x.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    with torch.no_grad():
        z = torch.cat([model(torch.from_numpy(x[i:i + 64])) for i in range(0, len(x), 64)])
    z = z.numpy()
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def main() -> None:
    at = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="resolution_probe", help="results/<name>.{json,md}")
    parser.add_argument("--sizes", default="128,160,192,224", help="input sizes (px)")
    parser.add_argument("--student", help="a registered student recipe (with --checkpoint)")
    parser.add_argument("--checkpoint", help="its best.pt from an export's work dir")
    args = parser.parse_args(sys.argv[1:at])
    export_args = sys.argv[at + 1:]
    if "--out" not in export_args:  # the export's parser needs one; nothing is written there
        export_args += ["--out", str(ROOT / "build" / "resolution-probe-unused")]
    torch.set_num_threads(2)
    options = _export_options(build_parser().parse_args(["export", *export_args]))
    data, _ = _read_data(options, log=lambda m: None)
    start = time.perf_counter()
    models = {}
    v1 = tf_same_padding(mobilenet_v1().features)
    load_tflite_body(v1, V1, arch="MobileNetV1")
    models["MobileNetV1 teacher (weights loaded, no training)"] = _pooled(v1)
    v2 = tf_same_padding(mobilenet_v2(weights=None).features)
    load_tflite_body(v2, V2)
    models["MobileNetV2 classifier's pooled features (weights loaded)"] = _pooled(v2)
    if args.student:
        student = create_student(args.student)
        student.load_state_dict(torch.load(args.checkpoint, weights_only=True)["model"])
        models[f"student {args.student} ({args.checkpoint})"] = student.eval()
    sizes = [int(s) for s in args.sizes.split(",")]
    table: dict[str, dict[str, dict[int, float]]] = {}
    for split, records in (("seen", data.val), ("unseen", data.unseen)):
        if not records:
            continue
        labels = data.measured(records)
        for name, model in models.items():
            table.setdefault(split, {})[name] = {
                s: round(_label_map(_embed(model, records, s), labels), 4) for s in sizes}
    payload = {"command": "python benchmarks/resolution_probe.py " + shlex.join(sys.argv[1:]),
               "machine": machine_info(), "images": {"seen": len(data.val),
                                                     "unseen": len(data.unseen)},
               "map@10": table, "seconds": round(time.perf_counter() - start, 1)}
    lines = [f"# mAP@10 by input size ({payload['seconds']} s)", "",
             f"`{payload['command']}`", ""]
    for split, rows in table.items():
        lines += [f"{split} ({payload['images'][split]} held-out images):", "",
                  "| body | " + " | ".join(f"{s} px" for s in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        lines += [f"| {n} | " + " | ".join(f"{v[s]:.4f}" for s in sizes) + " |"
                  for n, v in rows.items()]
        lines.append("")
    text = "\n".join(lines)
    write(args.name, payload, text)
    print(text)


if __name__ == "__main__":
    main()
