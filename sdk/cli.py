"""The ``edgerec`` command: a thin layer over library calls.

Each subcommand makes one library call, prints a human summary (or JSON with ``--json``),
and turns an :class:`EdgeRecError` into a one-line message and exit code 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..runtimes import Engine, engine_versions
from .bundle import Bundle
from .cli_catalog import add_catalog_parsers, add_recommend_parser, filters_from_args
from .cli_common import add_json as _add_json
from .cli_common import emit as _emit
from .cli_common import expand_images
from .cli_common import progress as _progress
from .cli_common import usage as _usage
from .cli_evaluate import add_evaluate_parser
from .cli_scorer import add_scorer_arguments, add_scorer_parser, scorer_options
from .encoder import Encoder, EncoderOptions
from .errors import EdgeRecError, ExportError, RuntimeUnavailableError
from .importer import ImportOptions, import_model
from .manifest import Precision
from .preprocess import Interpolation, Layout, ResizeMode

__all__ = ["build_parser", "filters_from_args", "main"]



def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_bundle_import(args: argparse.Namespace) -> int:
    options = ImportOptions(
        input_size=args.size,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        raw_pixels=args.raw_pixels,
        crop_pct=args.crop_pct,
        resize=ResizeMode(args.resize),
        interpolation=Interpolation(args.interpolation),
        layout=Layout(args.layout) if args.layout else None,
        output=args.output,
        precision=Precision(args.precision) if args.precision else None,
        name=args.name or "",
    )
    bundle = import_model(args.models, args.out, options, force=args.force)
    keys = ", ".join(a.key for a in bundle.manifest.artifacts)
    _emit(args, bundle.info(), f"wrote {bundle.path}: {bundle.embedding_dim}-d, {keys}")
    return 0


def cmd_bundle_info(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle, verify=False)
    info = bundle.info()
    lines = [
        f"bundle        {info['path']}  ({info['name']})",
        f"format        {info['format_version']}   edgerec {info['edgerec_version']}",
        f"embedding     {info['embedding_dim']}-d   encoder_id {info['encoder_id']}",
        f"preprocessing {json.dumps(info['preprocessing'])}",
    ]
    for a in info["artifacts"]:
        shape = a["input"]["shape"] if a["input"] else None
        lines.append(f"  {a['key']:<22} {a['file']:<24} {a['size_bytes']:>10,} B  input {shape}")
    for w in info.get("weights", []):
        key = f"{w['role']}/weights/{w['precision']}"
        lines.append(f"  {key:<22} {w['file']:<24} {w['size_bytes']:>10,} B  {w['format']}")
    if info["metrics"]:
        lines.append(f"metrics       {json.dumps(info['metrics'])}")
    _emit(args, info, "\n".join(lines))
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle, verify=True)
    n = len(bundle.manifest.artifacts)
    _emit(args, {"path": str(bundle.path), "ok": True, "artifacts": n},
          f"ok: {bundle.path}: {n} artifact(s) match their sha256")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    options = EncoderOptions(
        engine=Engine(args.engine) if args.engine else None,
        precision=Precision(args.precision) if args.precision else None,
        num_threads=args.threads,
        batch_size=args.batch_size,
    )
    paths = expand_images(args.images)
    with Encoder.create_from_bundle_path(args.bundle, options) as encoder:
        update, done = _progress(len(paths), "embed")
        try:
            vectors = encoder.embed(paths, progress=update)
        finally:
            done()
        key = encoder.artifact.key
    out = Path(args.out)
    _save_npy(out, vectors)
    listing = out.with_suffix(".paths.txt")
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    payload = {"out": str(out), "paths": str(listing), "count": len(paths),
               "dim": int(vectors.shape[1]), "artifact": key}
    _emit(args, payload, f"wrote {out}: {vectors.shape[0]} x {vectors.shape[1]} float32 "
          f"({key}); row order in {listing}")
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (Python or C level) to stderr for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _distill_overrides(config: Any, items: Sequence[str]) -> Any:
    """``config`` (a DistillConfig) with ``key=value`` overrides; numbers parsed."""
    from dataclasses import fields, replace

    names = {f.name: f for f in fields(config)}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in names:
            raise ExportError(f"--distill takes KEY=VALUE with KEY one of {sorted(names)}, "
                              f"got {item!r}")
        current = getattr(config, key)
        try:
            if isinstance(current, bool):
                value: Any = {"true": True, "false": False}[text.lower()]
            elif isinstance(current, (int, float)) or current is None:
                value = float(text) if any(c in text for c in ".eE") else int(text)
            else:
                value = text
        except (KeyError, ValueError):
            raise ExportError(f"--distill {key}: cannot read {text!r} as a "
                              f"{type(current).__name__}") from None
        config = replace(config, **{key: value})
    return config


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from dataclasses import replace

        from ..export.distill import DistillConfig
        from ..export.pipeline import ExportOptions, export_bundle
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"`edgerec export` needs the export extra ({exc.name} is missing): "
            "pip install 'edgerec[export]'"
        ) from exc
    distill = DistillConfig()
    if args.epochs is not None:
        distill = replace(distill, epochs=args.epochs)
    if args.max_minutes is not None:
        distill = replace(distill, max_minutes=args.max_minutes)
    distill = _distill_overrides(distill, args.distill)
    options = ExportOptions(
        images=Path(args.images), out=Path(args.out),
        items=Path(args.items) if args.items else None,
        extra_images=tuple(Path(p) for p in args.extra_images),
        eval_unseen=Path(args.eval_unseen) if args.eval_unseen else None,
        teacher=Path(args.teacher) if args.teacher else None,
        teacher_weights=Path(args.teacher_weights) if args.teacher_weights else None,
        teacher_mean=tuple(args.teacher_mean) if args.teacher_mean else None,
        teacher_std=tuple(args.teacher_std) if args.teacher_std else None, student=args.student,
        width=args.width, image_size=args.image_size, dim=args.dim, views=args.views,
        distill=distill, quick=args.quick, resume=args.resume, force=args.force,
        select_fraction=args.select_fraction, whiten=_whiten_value(args.whiten),
        allow_gate_failure=args.allow_gate_failure,
        work_dir=Path(args.work_dir) if args.work_dir else None,
        events=Path(args.events) if args.events else None, scorer=scorer_options(args),
    )
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    with _stdout_to_stderr():  # converters print progress to stdout; keep it for the result
        result = export_bundle(options, log=log)
    payload = {"bundle": str(result.bundle.path), "report": str(result.report),
               "metrics": result.metrics}
    _emit(args, payload, f"wrote {result.bundle.path}; report {result.report}")
    return 0


def _whiten_value(text: str):
    """``auto``/``off`` stay words; anything else must be a number (checked by the export)."""
    if text in ("auto", "off"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ExportError(f"--whiten takes auto, off or a power in (0, 1]; got {text!r}.") \
            from None


def cmd_engines(args: argparse.Namespace) -> int:
    versions = engine_versions()
    text = "\n".join(f"{k:<7} {v or 'not installed'}" for k, v in versions.items())
    _emit(args, versions, text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``edgerec`` argument parser (every command and option has help text)."""
    parser = argparse.ArgumentParser(
        prog="edgerec",
        description="On-device visual recommendation: bundles, embeddings, catalogs, "
        "recommendations.",
    )
    parser.add_argument("--version", action="version", version=f"edgerec {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    bundle = sub.add_parser("bundle", help="create, inspect and verify model bundles",
                            description="Create, inspect and verify model bundles.")
    bsub = bundle.add_subparsers(dest="bundle_command", metavar="ACTION")
    bundle.set_defaults(func=lambda _args: _usage(bundle))

    imp = bsub.add_parser(
        "import", help="wrap existing .onnx/.tflite embedding model(s) as a bundle",
        description="Wrap one or more .onnx/.tflite files of the same image embedding network "
        "as a verified bundle, stating how it wants its pixels.",
    )
    imp.add_argument("models", nargs="+", help=".onnx and/or .tflite files of one network")
    imp.add_argument("--out", required=True, help="bundle directory to create")
    imp.add_argument("--size", type=int, help="square input side in pixels (default: model's)")
    imp.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                     help="per-channel mean on [0,1] pixels, e.g. 0.485 0.456 0.406")
    imp.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                     help="per-channel std on [0,1] pixels, e.g. 0.229 0.224 0.225")
    imp.add_argument("--raw-pixels", action="store_true",
                     help="the model takes raw 0..255 pixels (e.g. uint8 Coral MobileNets)")
    imp.add_argument("--crop-pct", type=float, default=1.0,
                     help="shorter side -> size/crop_pct before the centre crop (default 1.0)")
    imp.add_argument("--resize", choices=[m.value for m in ResizeMode],
                     default=ResizeMode.SHORTER_CENTER_CROP.value, help="resize rule")
    imp.add_argument("--interpolation", choices=[m.value for m in Interpolation],
                     default=Interpolation.BILINEAR.value, help="resampling filter")
    imp.add_argument("--layout", choices=[m.value for m in Layout],
                     help="input layout (default: inferred from the 3-channel axis)")
    imp.add_argument("--output", help="name of the output holding the embedding")
    imp.add_argument("--precision", choices=[p.value for p in Precision],
                     help="precision label (default: detected)")
    imp.add_argument("--name", help="bundle name (default: first model's file name)")
    imp.add_argument("--force", action="store_true", help="replace --out if it exists")
    _add_json(imp)
    imp.set_defaults(func=cmd_bundle_import)

    info = bsub.add_parser("info", help="show a bundle's manifest summary",
                           description="Show a bundle's artifacts, preprocessing and metrics.")
    info.add_argument("bundle", help="bundle directory")
    _add_json(info)
    info.set_defaults(func=cmd_bundle_info)

    ver = bsub.add_parser("verify", help="check every artifact against its sha256",
                          description="Check that every artifact exists and matches its sha256.")
    ver.add_argument("bundle", help="bundle directory")
    _add_json(ver)
    ver.set_defaults(func=cmd_bundle_verify)

    emb = sub.add_parser(
        "embed", help="embed images into an .npy of unit vectors",
        description="Embed images (files or directories) with a bundle's encoder into an "
        "(N, D) float32 .npy; the row order is written beside it as <out>.paths.txt.",
    )
    emb.add_argument("images", nargs="+", help="image files or directories of images")
    emb.add_argument("--bundle", required=True, help="bundle directory")
    emb.add_argument("--out", required=True, help="output .npy path")
    emb.add_argument("--engine", choices=[e.value for e in Engine], help="engine (default: any)")
    emb.add_argument("--precision", choices=[p.value for p in Precision],
                     help="precision (default: fp32 when the bundle has it)")
    emb.add_argument("--threads", type=int, help="engine threads (default: engine's)")
    emb.add_argument("--batch-size", type=int, default=32, help="images per engine call")
    _add_json(emb)
    emb.set_defaults(func=cmd_embed)

    exp = sub.add_parser(
        "export", help="distil a teacher into a small encoder and write a bundle (needs torch)",
        description="Distil an ImageNet teacher into a MobileNetV3 student on your photos, "
        "int8-quantize it with parity gates, convert to ONNX and TFLite and write a verified "
        "bundle with an HTML report. Needs `pip install 'edgerec[export]'`.",
    )
    exp.add_argument("--images", required=True,
                     help="folder with one sub-folder per label (or the root of --items paths)")
    exp.add_argument("--out", required=True, help="bundle directory to create")
    exp.add_argument("--items", help="CSV item_id,path[,label][,split]")
    exp.add_argument("--extra-images", nargs="*", default=[],
                     help="folders of extra photos used for distillation only")
    exp.add_argument("--eval-unseen", help="labelled folder never trained on, for the report")
    exp.add_argument("--teacher", help="teacher .tflite/.onnx, bundle, or torchvision:ARCH "
                     "with --teacher-weights (default: the shipped MobileNetV1)")
    exp.add_argument("--teacher-weights",
                     help="state_dict file of a torchvision:ARCH teacher (never downloaded)")
    exp.add_argument("--teacher-mean", type=float, nargs=3, metavar=("R", "G", "B"),
                     help="mean of a float-input teacher on [0,1] pixels")
    exp.add_argument("--teacher-std", type=float, nargs=3, metavar=("R", "G", "B"),
                     help="std of a float-input teacher on [0,1] pixels")
    exp.add_argument("--student", default="mobilenet_v3_small", help="student recipe name")
    exp.add_argument("--width", type=float, default=1.0, help="student width multiplier")
    exp.add_argument("--image-size", type=int, default=192, help="student input size (px)")
    exp.add_argument("--dim", type=int, default=128, help="embedding dimension")
    exp.add_argument("--views", type=int, default=4, help="augmented views per training image")
    exp.add_argument("--epochs", type=int, help="maximum epochs (default: recipe's)")
    exp.add_argument("--max-minutes", type=float, help="training time budget in minutes")
    exp.add_argument("--distill", nargs="*", default=[], metavar="KEY=VALUE",
                     help="distillation recipe overrides, e.g. ema_decay=0.995 "
                     "label_decay_from=0.6 w_label_end=0 (fields of DistillConfig)")
    exp.add_argument("--select-fraction", type=float, default=0.1,
                     help="share of the training images held out to pick the kept epoch on "
                     "(default 0.1; 0: the validation images, where seen quality is reported)")
    exp.add_argument("--whiten", default="auto", metavar="auto|off|POWER",
                     help="the encoder's whitening (within-label when the images have labels, "
                     "else PCA): auto (default) picks its power on the epoch-selection images "
                     "(within-label: the best mAP@10; PCA: the largest that keeps 99%%); off; "
                     "or a power in (0, 1]")
    exp.add_argument("--quick", action="store_true", help="tiny configuration (minutes)")
    exp.add_argument("--resume", action="store_true", help="continue an interrupted export")
    exp.add_argument("--force", action="store_true", help="replace --out if it exists")
    exp.add_argument("--allow-gate-failure", action="store_true",
                     help="drop an int8 artifact that fails its gate instead of failing")
    exp.add_argument("--work-dir", help="caches and checkpoints (default: <out>.work)")
    add_scorer_arguments(exp, events_required=False)
    _add_json(exp)
    exp.set_defaults(func=cmd_export)

    add_catalog_parsers(sub)  # catalog build|add|remove|info|verify (issue 4)
    add_recommend_parser(sub)  # recommend (issue 4)
    add_scorer_parser(sub)  # scorer train (issue 5)
    add_evaluate_parser(sub)  # evaluate (issue 5)

    eng = sub.add_parser("engines", help="list installed inference engines",
                         description="List the inference engines installed here and versions.")
    _add_json(eng)
    eng.set_defaults(func=cmd_engines)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edgerec")
    except Exception:
        return "unknown"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``edgerec`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeRecError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        else:
            print(f"edgerec: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgerec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
