"""MediaPipe Tasks ``ImageEmbedder`` beside edgerec's ``Encoder``: the same model, the same
photos, one process, whole pipeline (file path -> unit vector), 1 thread each.

The model is the shipped uint8 teacher (MobileNetV1 224, 1024-d, no TFLite metadata), which
MediaPipe accepts as it is: without metadata it feeds the uint8 input raw 0..255 pixels and
stretches the whole photo to 224x224. edgerec opens the same network through two bundles made
with :func:`edgerec.sdk.bundle.importer.import_model`: ``crop`` (its default geometry,
shorter side to 224 then centre crop) and ``stretch`` (``--resize stretch``, MediaPipe's
geometry). Each holds the ``.tflite`` file itself and its ``edgerec convert`` rewrite as ONNX
(the same integers as ``QLinearConv``; :mod:`edgerec.export.artifacts.tflite_onnx`), made
once in the project's venv before the peer venv runs (the rewrite needs ``onnx``; running it
needs only ``onnxruntime``).

Five paths, interleaved per photo (the order rotates with photo and round), after warm-up:
``mediapipe`` (``mp.Image.create_from_file`` + ``ImageEmbedder.embed``, ``l2_normalize``),
``edgerec-crop`` and ``edgerec-stretch`` (``Encoder.embed([path])``, LiteRT + XNNPACK, int8,
``num_threads=1``), ``edgerec-onnx-crop`` and ``edgerec-onnx-stretch`` (the same, ONNX Runtime
on the rewrite, ``num_threads=1``). MediaPipe has no thread option; on desktop Linux its
XNNPACK delegate defaults to 1 thread (``GetXnnpackDefaultNumThreads`` in
``inference_calculator_utils.cc``), which the report checks as process CPU time / wall time
per path.

Agreement: cosine of the two unit vectors per photo, MediaPipe against edgerec-stretch (same
geometry: what is left is JPEG decoder, resampling filter and engine) and against
edgerec-crop (what users get from each by default); then the same 224x224 pixels through both
engines (engine parity alone) and the decoders' pixel difference.

MediaPipe is never installed in the project's venv: the first run creates
``build/peers/mediapipe-venv`` (``python -m venv``; mediapipe, ai-edge-litert and this
checkout, editable, without extras, plus onnxruntime) and re-runs itself there.

    nice python benchmarks/peers/mediapipe_embedder.py [--images 200] [--rounds 3]
    # ~1.5 min on 2 shared vCPUs (+ ~1 min the first time, for the venv); writes
    # benchmarks/results/mediapipe_embedder.{json,md}
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "build" / "peers" / "mediapipe-venv"
BUNDLES = ROOT / "build" / "peers" / "mediapipe-bundles"
TEACHER = ROOT / "examples" / "sample" / "teacher" / (
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
PHOTOS = ROOT.parent / "shared" / "data" / "clothing-small"
SAMPLE = ROOT / "examples" / "sample" / "images"
REQUIREMENTS = ("mediapipe==1.2.3", "ai-edge-litert==2.3.0", "onnxruntime==1.32.0")
"""What the peer venv gets besides this checkout (its numpy is whatever mediapipe accepts)."""
PATHS = ("mediapipe", "edgerec-crop", "edgerec-stretch", "edgerec-onnx-crop",
         "edgerec-onnx-stretch")
CONVERTED = BUNDLES / "teacher.onnx"
"""The teacher rewritten as ONNX (``edgerec convert``), made by :func:`ensure_converted`."""
NAME = "mediapipe_embedder"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="MediaPipe Tasks ImageEmbedder vs edgerec's Encoder on the shipped uint8 "
        "teacher: latency (file path -> unit vector, 1 thread) and cosine agreement. Runs "
        "itself inside build/peers/mediapipe-venv, which it creates when missing.")
    p.add_argument("--images", type=int, default=200,
                   help="clothing-small validation photos, spread over the labels (default 200)")
    p.add_argument("--sample", type=int, default=8,
                   help="more photos from examples/sample/images (default 8)")
    p.add_argument("--rounds", type=int, default=3,
                   help="timed rounds over all photos, each path once per photo (default 3)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per path (default 10)")
    p.add_argument("--name", default=NAME, help=f"results file stem (default {NAME})")
    args = p.parse_args(argv)
    if args.images < 1 or args.rounds < 1 or args.sample < 0 or args.warmup < 0:
        p.error("--images and --rounds must be >= 1, --sample and --warmup >= 0")
    return args


# ------------------------------------------------------------------------------ the peer venv

def _venv_python() -> Path:
    return VENV / "bin" / "python"


def in_peer_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv() -> Path:
    """Create ``build/peers/mediapipe-venv`` with :data:`REQUIREMENTS` and this checkout
    (editable, no extras) unless a finished install of the same requirements is there;
    returns its python."""
    ready = VENV / ".edgerec-peer-ready"
    want = "\n".join((*REQUIREMENTS, str(ROOT))) + "\n"
    if ready.is_file() and ready.read_text() == want and _venv_python().is_file():
        return _venv_python()
    steps = [[sys.executable, "-m", "venv", str(VENV)]] if not _venv_python().is_file() else []
    steps.append([str(_venv_python()), "-m", "pip", "install", "--quiet", *REQUIREMENTS,
                  "-e", str(ROOT)])
    for cmd in steps:
        print("$ " + shlex.join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    ready.write_text(want)
    return _venv_python()


# ----------------------------------------------------------------------------------- inputs

def select_images(n: int, sample: int) -> list[Path]:
    """``n`` clothing-small validation photos taken evenly from the sorted list (so every label
    is there), then up to ``sample`` from examples/sample/images that are not already in."""
    pool = sorted((PHOTOS / "validation").glob("*/*.jpg"))
    if not pool:
        raise SystemExit(f"No photos under {PHOTOS / 'validation'}; see shared/data/README.")
    n = min(n, len(pool))
    chosen = [pool[round(i * len(pool) / n)] for i in range(n)]
    names = {p.name for p in chosen}
    extra = [p for p in sorted(SAMPLE.glob("*/*.jpg")) if p.name not in names]
    step = max(1, len(extra) // max(sample, 1))
    return chosen + extra[::step][:sample]


def ensure_converted() -> dict[str, Any]:
    """The teacher rewritten as ONNX at :data:`CONVERTED` (in the project's venv, which has
    ``onnx``), checked on every 20th sample photo; returns the conversion's record."""
    import json

    record = CONVERTED.with_suffix(".json")
    if record.is_file() and CONVERTED.is_file():
        done = json.loads(record.read_text())
        if "target" in done:  # a rewrite from before --target is made again
            return done
    import shutil

    from edgerec.export.artifacts.tflite_onnx import ConversionOptions, tflite_to_onnx

    for name in ("crop", "stretch"):  # the bundles hold the rewrite: made again with it
        shutil.rmtree(BUNDLES / f"{name}-tflite-onnx", ignore_errors=True)

    probes = sorted(SAMPLE.glob("*/*.jpg"))[::20]
    result = tflite_to_onnx(TEACHER, CONVERTED, ConversionOptions(probe_images=probes,
                                                                  force=True))
    record.write_text(json.dumps(result.to_dict(), indent=2))
    return result.to_dict()


def ensure_bundles() -> dict[str, Path]:
    """The teacher as two bundles, ``crop`` (edgerec's default resize) and ``stretch``
    (MediaPipe's), each with the .tflite and its ONNX rewrite, made once under
    ``build/peers/mediapipe-bundles``; the normalisation feeds the uint8 input raw pixels."""
    from edgerec.sdk.bundle.importer import ImportOptions, import_model
    from edgerec.sdk.bundle.manifest import ResizeMode

    out = {}
    for name, mode in (("crop", ResizeMode.SHORTER_CENTER_CROP), ("stretch", ResizeMode.STRETCH)):
        path = BUNDLES / f"{name}-tflite-onnx"
        if not (path / "manifest.json").is_file():
            norm = (128 / 255,) * 3  # the teacher's input: real = (q - 128) / 128
            import_model([TEACHER, CONVERTED], path,
                         ImportOptions(mean=norm, std=norm, resize=mode, name=f"teacher-{name}"),
                         force=True)
        out[name] = path
    return out


def exif_rotated(paths: Sequence[Path]) -> int:
    """How many of ``paths`` carry an EXIF orientation other than 1 (MediaPipe's decoder does
    not apply it, edgerec's does)."""
    from PIL import Image

    count = 0
    for p in paths:
        with Image.open(p) as img:
            count += img.getexif().get(0x0112, 1) not in (1, None)
    return count


# ------------------------------------------------------------------------------------ paths

def open_paths(bundles: dict[str, Path]) -> tuple[dict[str, Callable[[str], Any]], list[Any]]:
    """Each path as ``fn(file path) -> (D,) float32 unit vector``, and the objects to close."""
    import mediapipe as mp
    import numpy as np
    from edgerec.sdk import Encoder, EncoderOptions
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import ImageEmbedder, ImageEmbedderOptions

    embedder = ImageEmbedder.create_from_options(ImageEmbedderOptions(
        base_options=BaseOptions(model_asset_path=str(TEACHER),
                                 delegate=BaseOptions.Delegate.CPU),
        l2_normalize=True, quantize=False))
    options = EncoderOptions(engine="tflite", precision="int8", num_threads=1, batch_size=1,
                             use_device_profile=False)
    crop = Encoder.create_from_bundle_path(bundles["crop"], options)
    stretch = Encoder.create_from_bundle_path(bundles["stretch"], options)
    ort = replace(options, engine="onnx")
    onnx_crop = Encoder.create_from_bundle_path(bundles["crop"], ort)
    onnx_stretch = Encoder.create_from_bundle_path(bundles["stretch"], ort)

    def mediapipe(path: str) -> Any:
        result = embedder.embed(mp.Image.create_from_file(path))
        return np.asarray(result.embeddings[0].embedding, dtype=np.float32)

    fns = {"mediapipe": mediapipe,
           "edgerec-crop": lambda path: crop.embed([path])[0],
           "edgerec-stretch": lambda path: stretch.embed([path])[0],
           "edgerec-onnx-crop": lambda path: onnx_crop.embed([path])[0],
           "edgerec-onnx-stretch": lambda path: onnx_stretch.embed([path])[0]}
    return fns, [embedder, crop, stretch, onnx_crop, onnx_stretch]


def _cos(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def agreement(paths: list[str], fns: dict[str, Callable[[str], Any]],
              stretch_encoder: Any, embedder: Any) -> tuple[dict[str, Any], list[str]]:
    """Per-photo cosines between the paths' vectors, the engines on identical pixels and the
    decoders' pixel difference; photos MediaPipe refuses are dropped (returned second)."""
    import mediapipe as mp
    import numpy as np
    from edgerec.sdk.image import load_image, resize_and_crop

    pre = stretch_encoder.bundle.preprocessing
    try:
        import cv2  # comes with mediapipe (opencv-contrib-python)
    except ImportError:
        cv2 = None
    rows: dict[str, list[float]] = {k: [] for k in (
        "mediapipe~edgerec-stretch", "mediapipe~edgerec-crop", "edgerec-crop~edgerec-stretch",
        "mediapipe~edgerec-onnx-stretch", "edgerec-stretch~edgerec-onnx-stretch",
        "edgerec-crop~edgerec-onnx-crop", "same_pixels", "opencv_resize", "decode_mean_abs",
        "decode_identical")}
    kept, refused = [], []
    for path in paths:
        try:
            vec = {name: fn(path) for name, fn in fns.items()}
        except Exception as exc:  # one photo MediaPipe (or edgerec) cannot take: list it
            refused.append(f"{path}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        kept.append(path)
        for pair in [k for k in rows if "~" in k]:
            first, second = pair.split("~")
            rows[pair].append(_cos(vec[first], vec[second]))
        upright = load_image(path)
        pixels = np.ascontiguousarray(np.asarray(resize_and_crop(upright, pre)))
        ours = stretch_encoder.embed([pixels])[0]
        theirs = embedder.embed(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
        rows["same_pixels"].append(_cos(ours, np.asarray(theirs.embeddings[0].embedding)))
        mp_image = mp.Image.create_from_file(path)  # keep alive: numpy_view() is a view
        decoded = np.array(mp_image.numpy_view()[..., :3])
        if cv2 is not None:  # MediaPipe's decode and resampling, by hand
            side = int(pre.input_size)
            h, w = decoded.shape[:2]
            # pixel i of the output samples x = i * W / side: corner-aligned, no half-pixel
            # offset and no antialiasing (what MediaPipe's CPU image-to-tensor gives here)
            warp = np.float32([[side / w, 0, 0], [0, side / h, 0]])
            small = cv2.warpAffine(decoded, warp, (side, side), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
            rows["opencv_resize"].append(_cos(stretch_encoder.embed([small])[0],
                                              vec["mediapipe"]))
        decoded = decoded.astype(np.int16)
        pil = np.asarray(upright, dtype=np.int16)
        if decoded.shape == pil.shape:
            diff = np.abs(decoded - pil)
            rows["decode_mean_abs"].append(float(diff.mean()))
            rows["decode_identical"].append(float((diff == 0).mean()))
    return {k: _summary(v) for k, v in rows.items()}, refused


def _summary(values: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "p50": float(np.median(a)),
            "p10": float(np.percentile(a, 10)), "min": float(a.min()), "max": float(a.max())}


# ---------------------------------------------------------------------------------- timing

def run(paths: list[str], fns: dict[str, Callable[[str], Any]], rounds: int,
        warmup: int) -> dict[str, Any]:
    """Interleaved timing: per round and photo every path once, the order rotated with
    ``round + photo``. Returns ``ms[path][round]`` (one sample per photo, in photo order) and
    ``cpu_over_wall[path]`` (process CPU time / wall time over all its calls) and
    ``cpu_ms_per_call[path]`` (process CPU time, all threads, per call)."""
    for fn in fns.values():
        for path in (paths * warmup)[:warmup]:
            fn(path)
    names = list(fns)
    ms: dict[str, list[list[float]]] = {n: [[] for _ in range(rounds)] for n in names}
    cpu = dict.fromkeys(names, 0.0)
    wall = dict.fromkeys(names, 0.0)
    for r in range(rounds):
        for i, path in enumerate(paths):
            k = (r + i) % len(names)
            for name in names[k:] + names[:k]:
                c0, t0 = time.process_time(), time.perf_counter()
                fns[name](path)
                t1, c1 = time.perf_counter(), time.process_time()
                ms[name][r].append((t1 - t0) * 1e3)
                cpu[name] += c1 - c0
                wall[name] += t1 - t0
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    calls = rounds * len(paths)
    return {"ms": ms, "cpu_over_wall": {n: cpu[n] / wall[n] for n in names},
            "cpu_ms_per_call": {n: 1e3 * cpu[n] / calls for n in names}}


def _thread_ticks() -> dict[int, tuple[int, str]]:
    """CPU clock ticks (user + system) so far and name of each thread of this process."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12]), name)
    return out


def busy_threads(fns: dict[str, Callable[[str], Any]], path: str,
                 calls: int = 40) -> dict[str, Any]:
    """Per path, ``calls`` runs on one photo alone: the threads of this process that did at
    least 10% of the CPU work, by name (the caller is ``python``; MediaPipe's graph executor
    threads are ``drishti``; an engine thread pool would add unnamed workers), and the ticks
    of every thread that ran."""
    out = {}
    for name, fn in fns.items():
        before = _thread_ticks()
        for _ in range(calls):
            fn(path)
        after = _thread_ticks()
        grew = sorted(((t - before.get(tid, (0, ""))[0], comm)
                       for tid, (t, comm) in after.items()), reverse=True)
        total = sum(g for g, _ in grew)
        out[name] = {"busy": [comm for g, comm in grew if total and g >= 0.1 * total],
                     "ticks": [[comm, g] for g, comm in grew if g > 0],
                     "threads_in_process": len(after)}
    return out


def stages(paths: list[str], embedder: Any, crop: Any, stretch: Any,
           onnx_stretch: Any) -> dict[str, Any]:
    """Where each path's CPU goes, one untimed-order pass over ``paths``: process CPU ms (all
    threads) per call of each stage, median and mean over photos. MediaPipe: ``decode``
    (``Image.create_from_file``, in the caller) and ``embed`` (resize, inference, embedding,
    on its graph threads); edgerec: ``preprocess`` (decode, resize, normalise to float32 in
    the engine's layout) per bundle and ``engine`` (``embed_preprocessed``: quantize,
    inference, dequantize, L2) on LiteRT and on ONNX Runtime (the rewrite)."""
    import mediapipe as mp
    import numpy as np

    cpu: dict[str, list[float]] = {k: [] for k in (
        "mediapipe decode", "mediapipe embed", "edgerec preprocess (crop)",
        "edgerec preprocess (stretch)", "edgerec engine", "edgerec preprocess (stretch, NCHW)",
        "edgerec engine (ONNX Runtime, rewrite)")}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        c0 = time.process_time()
        out = fn()
        cpu[key].append((time.process_time() - c0) * 1e3)
        return out

    for path in paths:
        image = timed("mediapipe decode", lambda p=path: mp.Image.create_from_file(p))
        timed("mediapipe embed", lambda im=image: embedder.embed(im))
        timed("edgerec preprocess (crop)", lambda p=path: crop.preprocess([p]))
        batch = timed("edgerec preprocess (stretch)", lambda p=path: stretch.preprocess([p]))
        timed("edgerec engine", lambda b=batch: stretch.embed_preprocessed(b))
        batch = timed("edgerec preprocess (stretch, NCHW)",
                      lambda p=path: onnx_stretch.preprocess([p]))
        timed("edgerec engine (ONNX Runtime, rewrite)",
              lambda b=batch: onnx_stretch.embed_preprocessed(b))
    return {k: {"p50": float(np.median(v)), "mean": float(np.mean(v)), "n": len(v)}
            for k, v in cpu.items()}


def summarise(samples: dict[str, Any]) -> dict[str, Any]:
    """Percentiles over all rounds per path; per round, each edgerec path's p50 / MediaPipe's
    p50 and the median of the per-photo ratios; the median over rounds of both."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import percentiles

    ms = samples["ms"]
    out: dict[str, Any] = {"latency": {n: percentiles([x for rnd in ms[n] for x in rnd])
                                       for n in ms},
                           "ratios": {}}
    base = ms["mediapipe"]
    for name in ms:
        if name == "mediapipe":
            continue
        p50 = [float(np.median(ours) / np.median(theirs)) for ours, theirs in zip(ms[name], base)]
        paired = [float(np.median(np.asarray(ours) / np.asarray(theirs)))
                  for ours, theirs in zip(ms[name], base)]
        out["ratios"][name] = {"per_round_p50_ratio": p50, "per_round_paired_median": paired,
                               "median_p50_ratio": float(np.median(p50)),
                               "median_paired": float(np.median(paired))}
    out["round_p50"] = {n: [float(np.median(rnd)) for rnd in ms[n]] for n in ms}
    out["cpu_over_wall"] = samples["cpu_over_wall"]
    out["cpu_ms_per_call"] = samples["cpu_ms_per_call"]
    return out


# ---------------------------------------------------------------------------------- report

def markdown(payload: dict[str, Any]) -> str:
    m, s, agree = payload["machine"], payload["summary"], payload["agreement"]
    v = payload["versions"]
    lines = [
        "# MediaPipe Tasks ImageEmbedder vs edgerec Encoder (`benchmarks/peers/"
        "mediapipe_embedder.py`)",
        "",
        f"`{payload['command']}`, {m['date']}, {m['cpu']} ({m['cores']} cores), load average "
        f"{payload['load_before']:.2f} before / {payload['load_after']:.2f} after; "
        f"mediapipe {v['mediapipe']}, edgerec's engines {v['edgerec_engine']} and "
        f"{v.get('edgerec_onnx_engine')}, "
        f"numpy {v['numpy']}, pillow {v['pillow']}; commit {m.get('commit')}.",
        "",
        f"Model: the shipped uint8 teacher `{payload['model']}` (sha256 "
        f"{payload['model_sha256'][:12]}, no TFLite metadata; MediaPipe accepts it as is). "
        f"{payload['photos']} photos ("
        + ", ".join(f"{n} from {where}" for where, n in payload["photo_sources"].items())
        + f"; {payload['photos_refused']} refused by a path), "
        f"{payload['exif_rotated']} with an EXIF rotation; {payload['rounds']} interleaved "
        f"rounds after {payload['warmup']} warm-up runs per path; one process, 1 thread each.",
        "",
        "## Latency: file path -> unit vector (decode, resize, inference, L2)",
        "",
        "| path | p50 ms | p90 ms | p99 ms | mean ms | n | CPU ms / call | CPU / wall | "
        "threads doing >= 10% of its CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in s["latency"].items():
        busy = payload["busy_threads"][name]["busy"]
        lines.append(f"| {name} | {p['p50']:.2f} | {p['p90']:.2f} | {p['p99']:.2f} | "
                     f"{p['mean']:.2f} | {p['n']} | {s['cpu_ms_per_call'][name]:.2f} | "
                     f"{s['cpu_over_wall'][name]:.2f} | {len(busy)}: {', '.join(busy)} |")
    lines += ["", "| ratio to mediapipe | median over rounds of p50/p50 | per round | "
              "median over rounds of the per-photo median |", "|---|---|---|---|"]
    for name, r in s["ratios"].items():
        lines.append(f"| {name} | {r['median_p50_ratio']:.3f} | "
                     + ", ".join(f"{x:.3f}" for x in r["per_round_p50_ratio"])
                     + f" | {r['median_paired']:.3f} |")
    if payload.get("stages_cpu_ms"):
        lines += ["", "Where the CPU goes (process CPU ms per call, all threads, one pass over "
                  "the photos; MediaPipe's embed includes its resize):", "",
                  "| stage | p50 | mean |", "|---|---|---|"]
        lines += [f"| {k} | {v['p50']:.2f} | {v['mean']:.2f} |"
                  for k, v in payload["stages_cpu_ms"].items()]
    conv = payload.get("conversion")
    if conv:
        lines += ["", f"The ONNX rewrite (`edgerec convert`, target "
                  f"{conv.get('target', 'x86-vnni')}, {conv.get('weights', 'int8')} weights): "
                  f"{len(conv['ops'])} TFLite ops, "
                  f"checked against the .tflite on {conv['probes']} probes ({conv['probe_kind']}): "
                  f"cosine min {conv['min_cosine']:.6f}, largest difference "
                  f"{conv['max_abs_diff_steps']:.2f} output quantization steps."]
    lines += [
        "",
        "## Agreement: cosine of the two unit vectors per photo",
        "",
        "| pair | mean | p50 | p10 | min | n |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "mediapipe~edgerec-stretch": "MediaPipe vs edgerec, both stretch (same geometry)",
        "mediapipe~edgerec-crop": "MediaPipe (stretch) vs edgerec (centre crop, its default)",
        "mediapipe~edgerec-onnx-stretch": "MediaPipe vs edgerec on ONNX Runtime, both stretch",
        "edgerec-stretch~edgerec-onnx-stretch": "edgerec LiteRT vs ONNX Runtime (the rewrite), "
                                                "same preprocessing (engine and rewrite alone)",
        "edgerec-crop~edgerec-onnx-crop": "the same, centre crop",
        "edgerec-crop~edgerec-stretch": "edgerec crop vs edgerec stretch (geometry alone)",
        "same_pixels": "same 224x224 pixels into both (engine parity alone)",
        "opencv_resize": "MediaPipe vs edgerec's engine on MediaPipe's decode and resampling "
                         "redone by hand (`cv2.warpAffine` bilinear, corner-aligned, no "
                         "antialiasing; not an edgerec option)",
    }
    for key, label in labels.items():
        a = agree[key]
        if not a.get("n"):
            continue
        lines.append(f"| {label} | {a['mean']:.4f} | {a['p50']:.4f} | {a['p10']:.4f} | "
                     f"{a['min']:.4f} | {a['n']} |")
    d, same = agree["decode_mean_abs"], agree["decode_identical"]
    if d.get("n"):
        lines += ["", f"Decoders: MediaPipe's `Image.create_from_file` vs PIL on the same JPEG, "
                  f"mean |difference| {d['mean']:.3f} levels (max over photos {d['max']:.3f}); "
                  f"{100 * same['mean']:.1f}% of samples identical ({d['n']} photos)."]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in payload["notes"]]
    if payload["refused"]:
        lines += ["", "Refused:", ""] + [f"- `{r}`" for r in payload["refused"]]
    return "\n".join(lines) + "\n"


NOTES = [
    "MediaPipe without metadata feeds the uint8 input raw pixels and stretches the whole photo "
    "to the input size (no aspect ratio kept); edgerec's bundle import with `--resize stretch` "
    "does the same, so `edgerec-stretch` is the like-for-like pipeline and `edgerec-crop` is "
    "what `edgerec bundle import --raw-pixels` gives by default.",
    "MediaPipe has no thread option (`BaseOptions` has none); its XNNPACK delegate defaults to "
    "1 thread on desktop Linux. edgerec: `EncoderOptions(engine='tflite', precision='int8', "
    "num_threads=1, batch_size=1, use_device_profile=False)`, LiteRT with XNNPACK. Threads: "
    "those of the process that did >= 10% of a path's CPU time over 40 calls on one photo "
    "(/proc/self/task): `python` is the caller, `drishti` MediaPipe's graph executor, which "
    "hands each image from stage to stage (decode in the caller, then resize, inference and "
    "embedding on its threads), one stage at a time in IMAGE mode; no engine worker pool "
    "appears for either. CPU ms / call is process CPU time (all threads) per call, the figure "
    "least moved by other jobs; CPU / wall under 1.0 is time spent waiting for a core.",
    "The examples/sample photos are clothing-small train photos (the same files), so they add "
    "more of the same kind of picture, not another kind.",
    "`edgerec-onnx-*` run the same network on ONNX Runtime: `edgerec convert` rewrites the "
    "uint8 .tflite as ONNX `QLinearConv` nodes with the same weights, biases, scales and zero "
    "points (uint8 weights shifted to int8 with their zero point, so ORT uses its u8s8 "
    "kernels; the global average pool in float; the rewrite's `--target` is this CPU's, "
    "recorded with it). Both files are in one bundle; "
    "`EncoderOptions(engine='onnx')` picks the rewrite. Its agreement with the .tflite on the "
    "same preprocessing is the `edgerec-stretch~edgerec-onnx-stretch` row.",
    "Stretch vs stretch is not 1.0: the resampling differs. edgerec (PIL) resizes with a "
    "bilinear filter widened to antialias when shrinking (~2x here), pixel centres aligned; "
    "MediaPipe's CPU image-to-tensor samples 4 neighbours with a corner-aligned grid (a "
    "half-pixel shift) and no antialiasing. The last two agreement rows take the pipeline "
    "apart: the same 224x224 pixels into both engines, and MediaPipe's decode and resampling "
    "redone by hand in front of edgerec's engine.",
]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Everything inside the peer venv: bundles, photos, agreement, timing, payload."""
    from importlib.metadata import version

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import machine_info, peak_rss_mb
    from edgerec.runtimes import engine_versions

    os.environ.setdefault("GLOG_minloglevel", "2")
    load_before = os.getloadavg()[0]
    import json

    conversion = json.loads(CONVERTED.with_suffix(".json").read_text())
    bundles = ensure_bundles()
    photos = select_images(args.images, args.sample)
    fns, handles = open_paths(bundles)
    embedder, crop, stretch, _onnx_crop, onnx_stretch = handles
    try:
        agree, refused = agreement([str(p) for p in photos], fns, stretch, embedder)
        kept = [str(p) for p in photos if not any(r.startswith(f"{p}:") for r in refused)]
        samples = run(kept, fns, args.rounds, args.warmup)
        threads = busy_threads(fns, kept[0])
        split = stages(kept, embedder, crop, stretch, onnx_stretch)
    finally:
        for h in handles:
            h.close()
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    return {
        "command": f"nice python benchmarks/peers/mediapipe_embedder.py {argv}".strip(),
        "machine": machine_info(),
        "versions": {"mediapipe": version("mediapipe"),
                     "edgerec_engine": engine_versions().get("tflite"),
                     "edgerec_onnx_engine": engine_versions().get("onnx"),
                     "numpy": version("numpy"), "pillow": version("pillow"),
                     "edgerec": version("edgerec")},
        "model": str(TEACHER.relative_to(ROOT)),
        "model_sha256": hashlib.sha256(TEACHER.read_bytes()).hexdigest(),
        "photos": len(photos), "photos_refused": len(refused), "refused": refused,
        "photo_sources": {
            "clothing-small/validation": sum(PHOTOS in p.parents for p in photos),
            "examples/sample/images": sum(SAMPLE in p.parents for p in photos)},
        "exif_rotated": exif_rotated(photos), "rounds": args.rounds, "warmup": args.warmup,
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "peak_rss_mb": peak_rss_mb(),
        "conversion": conversion,
        "agreement": agree, "summary": summarise(samples), "busy_threads": threads,
        "stages_cpu_ms": split,
        "samples_ms": samples["ms"],
        "photo_paths": [str(Path(p).relative_to(ROOT.parent)) for p in kept],
        "notes": NOTES,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not in_peer_venv():
        ensure_converted()
        python = ensure_venv()
        cmd = [str(python), str(Path(__file__).resolve()),
               *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(cmd).returncode
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import write

    payload = measure(args)
    js, md = write(args.name, payload, markdown(payload))
    print(markdown(payload))
    print(f"wrote {js} and {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
