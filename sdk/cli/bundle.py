"""``edgerec bundle import|info|verify``, ``edgerec embed`` and ``edgerec engines``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from edgerec.runtimes import Engine, EngineStatus, probe_engines
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.importer import ImportOptions, import_model
from edgerec.sdk.bundle.manifest import Interpolation, Layout, Precision, ResizeMode
from edgerec.sdk.bundle.writer import subset_bundle
from edgerec.sdk.cli.common import (
    add_json,
    emit,
    expand_images,
    option,
    positive_int,
    progress,
    usage,
)
from edgerec.sdk.encoder import Encoder, EncoderOptions
from edgerec.sdk.errors import OutputError
from edgerec.sdk.files import atomic_write

__all__ = ["add_bundle_parsers", "add_embed_parser", "add_engines_parser", "engines_text"]


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.save(f, array, allow_pickle=False)


def _writable_npy(out: Path) -> Path:
    """``out`` checked before any work: not a folder, and in a folder that exists or can be
    made and written to."""
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; give a file name such as "
                          f"{out / 'vectors.npy'}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: cannot write in {parent}; choose a writable place")
    return out


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
    emit(args, bundle.info(), f"wrote {bundle.path}: {bundle.embedding_dim}-d, {keys}")
    return 0


def cmd_bundle_info(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle, verify=False)
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
    emit(args, info, "\n".join(lines))
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle, verify=True)
    n = len(bundle.manifest.artifacts)
    emit(args, {"path": str(bundle.path), "ok": True, "artifacts": n},
          f"ok: {bundle.path}: {n} artifact(s) match their sha256")
    return 0


def cmd_bundle_subset(args: argparse.Namespace) -> int:
    bundle = subset_bundle(Bundle.open(args.bundle), args.out, args.keep, force=args.force)
    keys = [a.key for a in bundle.manifest.artifacts]
    emit(args, bundle.info(), f"wrote {bundle.path}: {', '.join(keys)} "
         f"(encoder_id {bundle.manifest.encoder_id})")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    options = EncoderOptions(
        engine=Engine(args.engine) if args.engine else None,
        precision=Precision(args.precision) if args.precision else None,
        num_threads=args.threads,
        batch_size=args.batch_size,
    )
    out = _writable_npy(Path(args.out))
    paths = expand_images(args.images)
    with Encoder.create_from_bundle_path(args.bundle, options) as encoder:
        update, done = progress(len(paths), "embed")
        try:
            vectors = encoder.embed(paths, progress=update)
        finally:
            done()
        key = encoder.artifact.key
    _save_npy(out, vectors)
    listing = out.with_suffix(".paths.txt")
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    payload = {"out": str(out), "paths": str(listing), "count": len(paths),
               "dim": int(vectors.shape[1]), "artifact": key}
    emit(args, payload, f"wrote {out}: {vectors.shape[0]} x {vectors.shape[1]} float32 "
          f"({key}); row order in {listing}")
    return 0


def engines_text(statuses: list[EngineStatus]) -> str:
    """One line per engine: name, package and version, ``usable`` or why not."""
    width = max((len(s.version or "") for s in statuses), default=0)
    lines = []
    for s in statuses:
        if s.usable:
            lines.append(f"{s.engine.value:<7} {s.version:<{width}}  usable")
        elif s.version is None:
            lines.append(f"{s.engine.value:<7} {s.reason}")
        else:
            lines.append(f"{s.engine.value:<7} {s.version:<{width}}  unusable: {s.reason}")
    return "\n".join(lines)


_NO_ENGINE = ("no inference engine is usable here; install one: "
              "pip install 'edgerec[onnx]' or pip install 'edgerec[tflite]'")
"""The one line ``edgerec engines`` adds on stderr (exit code 1) when no engine works."""


def cmd_engines(args: argparse.Namespace) -> int:
    statuses = probe_engines()
    payload = {s.engine.value: {k: v for k, v in s.to_dict().items() if k != "engine"}
               for s in statuses}
    emit(args, payload, engines_text(statuses))
    if any(s.usable for s in statuses):
        return 0
    # The listing (or its JSON) says why each engine failed; this line says what to do, in
    # the form and with the exit code of every other failed command (edgerec.sdk.cli.app).
    print(f"edgerec: error: {_NO_ENGINE}", file=sys.stderr)
    return 1



def add_bundle_parsers(sub: Any) -> None:
    """``edgerec bundle import|info|verify|subset``."""
    bundle = sub.add_parser("bundle", help="create, inspect and verify model bundles",
                            description="Create, inspect and verify model bundles.")
    bsub = bundle.add_subparsers(dest="bundle_command", metavar="ACTION")
    bundle.set_defaults(func=lambda _args: usage(bundle))

    imp = bsub.add_parser(
        "import", help="wrap existing .onnx/.tflite embedding model(s) as a bundle",
        description="Wrap one or more .onnx/.tflite files of the same image embedding network "
        "as a verified bundle, stating how it wants its pixels.",
    )
    imp.add_argument("models", nargs="+", help=".onnx and/or .tflite files of one network")
    imp.add_argument("--out", required=True, help="bundle directory to create")
    imp.add_argument("--size", type=positive_int,
                     help="square input side in pixels (default: model's)")
    imp.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                     help="per-channel mean on [0,1] pixels, e.g. 0.485 0.456 0.406")
    imp.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                     help="per-channel std on [0,1] pixels, e.g. 0.229 0.224 0.225")
    imp.add_argument("--raw-pixels", action="store_true",
                     help="the model takes raw 0..255 pixels (e.g. uint8 Coral MobileNets)")
    option(imp, "--crop-pct", type=float, source=ImportOptions, name="crop_pct",
           help="shorter side -> size/crop_pct before the centre crop")
    option(imp, "--resize", choices=[m.value for m in ResizeMode], source=ImportOptions,
           name="resize", help="resize rule")
    option(imp, "--interpolation", choices=[m.value for m in Interpolation],
           source=ImportOptions, name="interpolation", help="resampling filter")
    imp.add_argument("--layout", choices=[m.value for m in Layout],
                     help="input layout (default: inferred from the 3-channel axis)")
    imp.add_argument("--output", help="name of the output holding the embedding")
    imp.add_argument("--precision", choices=[p.value for p in Precision],
                     help="precision label (default: detected)")
    imp.add_argument("--name", help="bundle name (default: first model's file name)")
    imp.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_json(imp)
    imp.set_defaults(func=cmd_bundle_import)

    info = bsub.add_parser("info", help="show a bundle's manifest summary",
                           description="Show a bundle's artifacts, preprocessing and metrics.")
    info.add_argument("bundle", help="bundle directory")
    add_json(info)
    info.set_defaults(func=cmd_bundle_info)

    ver = bsub.add_parser("verify", help="check every artifact against its sha256",
                          description="Check that every artifact exists and matches its sha256.")
    ver.add_argument("bundle", help="bundle directory")
    add_json(ver)
    ver.set_defaults(func=cmd_bundle_verify)

    sub_ = bsub.add_parser(
        "subset", help="write a bundle with some of another's artifacts",
        description="Write a new bundle with only the named artifacts of BUNDLE (what one "
        "device needs, or a smaller file to ship); weights, records, metrics and the report "
        "are carried over. Leaving out an encoder file changes the encoder_id: build catalogs "
        "with the new bundle.")
    sub_.add_argument("bundle", help="bundle directory to take the artifacts from")
    sub_.add_argument("--keep", nargs="+", required=True, metavar="KEY",
                      help="artifact keys to keep, e.g. encoder/onnx/int8 (see `bundle info`)")
    sub_.add_argument("--out", required=True, help="bundle directory to create")
    sub_.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_json(sub_)
    sub_.set_defaults(func=cmd_bundle_subset)



def add_embed_parser(sub: Any) -> None:
    """``edgerec embed``."""
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
    emb.add_argument("--threads", type=positive_int, help="engine threads (default: engine's)")
    option(emb, "--batch-size", type=positive_int, source=EncoderOptions, name="batch_size",
           help="images per engine call")
    add_json(emb)
    emb.set_defaults(func=cmd_embed)



def add_engines_parser(sub: Any) -> None:
    """``edgerec engines``."""
    eng = sub.add_parser(
        "engines", help="list the inference engines and whether they work here",
        description="Run a tiny model on each inference engine, each in its own process, and "
                    "list the engines with their versions: usable, or why not (not installed, "
                    "built for another NumPy, crashed). Exits 0 when at least one engine is "
                    "usable, else 1 with what to install on stderr (stdout still lists them).")
    add_json(eng)
    eng.set_defaults(func=cmd_engines)
