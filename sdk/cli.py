"""The ``edgerec`` command: a thin layer over library calls.

Each subcommand makes one library call, prints a human summary (or JSON with ``--json``),
and turns an :class:`EdgeRecError` into a one-line message and exit code 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..runtimes import Engine, engine_versions
from .bundle import Bundle
from .catalog import Catalog, VectorDType
from .catalog_build import (
    IngestReport,
    SourceItem,
    add_images,
    build_catalog,
    items_from_csv,
    items_from_folder,
    parse_value,
)
from .encoder import Encoder, EncoderOptions
from .errors import CatalogError, EdgeRecError, InvalidImageError, RuntimeUnavailableError
from .importer import ImportOptions, import_model
from .manifest import Precision
from .preprocess import Interpolation, Layout, ResizeMode
from .profile import Event, EventKind, ProfileError
from .recommender import Recommender, RecommenderOptions

__all__ = ["build_parser", "main"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, indent=2) if getattr(args, "json", False) else text)


def _progress(total: int, desc: str) -> tuple[Optional[Callable[[int], None]], Callable[[], None]]:
    """A tqdm bar when tqdm is installed and stderr is a terminal, else nothing."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=total, desc=desc, unit="img", disable=None, file=sys.stderr)

    def update(done: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def expand_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given; directories replaced by their image files, recursively, sorted."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InvalidImageError(f"{p} holds no image files ({sorted(IMAGE_SUFFIXES)}).")
            paths.extend(found)
        else:
            paths.append(p)
    return paths


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
    options = ExportOptions(
        images=Path(args.images), out=Path(args.out),
        items=Path(args.items) if args.items else None,
        extra_images=tuple(Path(p) for p in args.extra_images),
        eval_unseen=Path(args.eval_unseen) if args.eval_unseen else None,
        teacher=Path(args.teacher) if args.teacher else None, student=args.student,
        width=args.width, image_size=args.image_size, dim=args.dim, views=args.views,
        distill=distill, quick=args.quick, resume=args.resume, force=args.force,
        allow_gate_failure=args.allow_gate_failure,
        work_dir=Path(args.work_dir) if args.work_dir else None,
    )
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    with _stdout_to_stderr():  # converters print progress to stdout; keep it for the result
        result = export_bundle(options, log=log)
    payload = {"bundle": str(result.bundle.path), "report": str(result.report),
               "metrics": result.metrics}
    _emit(args, payload, f"wrote {result.bundle.path}; report {result.report}")
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    versions = engine_versions()
    text = "\n".join(f"{k:<7} {v or 'not installed'}" for k, v in versions.items())
    _emit(args, versions, text)
    return 0


# ============================================================ catalog commands (issue 4) ====
# `edgerec catalog build | add | remove | info | verify`: each one library call.


def _encoder_options(args: argparse.Namespace) -> EncoderOptions:
    return EncoderOptions(
        engine=Engine(args.engine) if args.engine else None,
        precision=Precision(args.precision) if args.precision else None,
        num_threads=args.threads,
        batch_size=args.batch_size,
    )


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, parse_value(value)


def _ingest_output(args: argparse.Namespace, report: IngestReport, verb: str) -> int:
    payload = report.to_dict(max_failed=20)
    text = (f"{verb} {report.catalog}: added {report.added}, {report.skipped_existing} already "
            f"present, {len(report.failed)} bad image(s) skipped; {report.count} items")
    for item_id, path, why in report.failed[:5]:
        text += f"\n  skipped {item_id} ({path}): {why}"
    if len(report.failed) > 5:
        text += f"\n  ... and {len(report.failed) - 5} more (--json lists 20)"
    _emit(args, payload, text)
    return 0


def cmd_catalog_build(args: argparse.Namespace) -> int:
    items = items_from_folder(args.images) if args.images else items_from_csv(args.items)
    update, done = _progress(len(items), "catalog build")
    try:
        report = build_catalog(args.bundle, args.out, items, encoder_options=_encoder_options(args),
                               dtype=args.dtype, chunk_size=args.chunk_size, progress=update)
    finally:
        done()
    return _ingest_output(args, report, "built")


def cmd_catalog_add(args: argparse.Namespace) -> int:
    sources = [bool(args.images), bool(args.items), bool(args.files)]
    if sum(sources) != 1:
        raise CatalogError("give exactly one of --images DIR, --items CSV or image files")
    if args.images:
        items = items_from_folder(args.images)
    elif args.items:
        items = items_from_csv(args.items)
    else:
        items = [SourceItem(p.stem, p, {"path": str(p)}) for p in expand_images(args.files)]
    extra = dict(args.meta)
    items = [SourceItem(s.item_id, s.image, {**s.metadata, **extra}) for s in items]
    with Catalog.open(args.catalog) as catalog, \
            Encoder.create_from_bundle_path(args.bundle, _encoder_options(args)) as encoder:
        update, done = _progress(len(items), "catalog add")
        try:
            report = add_images(catalog, encoder, items, skip_existing=False,
                                chunk_size=args.chunk_size, progress=update)
        finally:
            done()
    return _ingest_output(args, report, "added to")


def cmd_catalog_remove(args: argparse.Namespace) -> int:
    with Catalog.open(args.catalog) as catalog:
        catalog.remove(args.ids)
        if args.compact:
            catalog.compact()
        count = len(catalog)
    _emit(args, {"catalog": args.catalog, "removed": len(args.ids), "count": count},
          f"removed {len(args.ids)} item(s) from {args.catalog}; {count} items")
    return 0


def cmd_catalog_info(args: argparse.Namespace) -> int:
    with Catalog.open(args.catalog, readonly=True) as catalog:
        info = catalog.info()
    payload = {**info.__dict__, "path": str(info.path)}
    text = "\n".join(f"{k:<15} {v}" for k, v in payload.items())
    _emit(args, payload, text)
    return 0


def cmd_catalog_verify(args: argparse.Namespace) -> int:
    with Catalog.open(args.catalog, readonly=True) as catalog:
        catalog.verify()
        count, gen = len(catalog), catalog.generation
    _emit(args, {"catalog": args.catalog, "ok": True, "count": count, "generation": gen},
          f"ok: {args.catalog}: {count} items, generation {gen}")
    return 0


def _add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=[e.value for e in Engine], help="engine (default: any)")
    p.add_argument("--precision", choices=[x.value for x in Precision],
                   help="encoder precision (default: fp32 when the bundle has it)")
    p.add_argument("--threads", type=int, help="engine threads (default: engine's)")
    p.add_argument("--batch-size", type=int, default=32, help="images per engine call")


def _add_catalog_parsers(sub: Any) -> None:
    cat = sub.add_parser("catalog", help="build, update, inspect and verify catalogs",
                         description="Build, update, inspect and verify on-device catalogs "
                         "(item vectors + metadata).")
    csub = cat.add_subparsers(dest="catalog_command", metavar="ACTION")
    cat.set_defaults(func=lambda _args: _usage(cat))

    build = csub.add_parser(
        "build", help="embed photos into a catalog (resumable)",
        description="Embed a folder of photos (one sub-folder per label; id = file stem) or the "
        "photos of an items CSV (item_id,path[,label][,...]; other columns become metadata) "
        "into a catalog. A re-run adds only the ids not yet present; bad images are skipped "
        "and reported, not fatal.",
    )
    src = build.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images, one sub-folder per label")
    src.add_argument("--items", help="CSV item_id,path[,label][,...] (paths relative to it)")
    build.add_argument("--bundle", required=True, help="bundle directory whose encoder to use")
    build.add_argument("--out", required=True, help="catalog directory (created or resumed)")
    build.add_argument("--dtype", choices=[d.value for d in VectorDType],
                       help="vector storage of a new catalog (default int8; a resumed catalog "
                       "keeps its own)")
    build.add_argument("--chunk-size", type=int, default=256,
                       help="images per catalog commit (the unit of resumption)")
    _add_encoder_arguments(build)
    _add_json(build)
    build.set_defaults(func=cmd_catalog_build)

    add = csub.add_parser("add", help="add new items to a catalog",
                          description="Embed new photos and add them to an existing catalog; "
                          "ids already present are refused before any work.")
    add.add_argument("catalog", help="catalog directory")
    add.add_argument("files", nargs="*", help="image files or folders (id = file stem)")
    add.add_argument("--bundle", required=True, help="bundle directory that built the catalog")
    add.add_argument("--images", help="folder of images, one sub-folder per label")
    add.add_argument("--items", help="CSV item_id,path[,label][,...] (paths relative to it)")
    add.add_argument("--meta", type=_key_value, action="append", default=[],
                     metavar="KEY=VALUE", help="metadata for every added item (repeatable)")
    add.add_argument("--chunk-size", type=int, default=256, help="images per catalog commit")
    _add_encoder_arguments(add)
    _add_json(add)
    add.set_defaults(func=cmd_catalog_add)

    rem = csub.add_parser("remove", help="remove items by id",
                          description="Remove items by id, all or nothing (unknown ids fail).")
    rem.add_argument("catalog", help="catalog directory")
    rem.add_argument("ids", nargs="+", help="item ids to remove")
    rem.add_argument("--compact", action="store_true",
                     help="then rewrite the vectors without the removed rows")
    _add_json(rem)
    rem.set_defaults(func=cmd_catalog_remove)

    info = csub.add_parser("info", help="show a catalog's summary",
                           description="Show a catalog's size, dimension, dtype, generation and "
                           "encoder id.")
    info.add_argument("catalog", help="catalog directory")
    _add_json(info)
    info.set_defaults(func=cmd_catalog_info)

    ver = csub.add_parser("verify", help="check a catalog end to end",
                          description="Check the catalog's database, every segment's sha256 "
                          "and the item rows; fails with what is damaged.")
    ver.add_argument("catalog", help="catalog directory")
    _add_json(ver)
    ver.set_defaults(func=cmd_catalog_verify)


# ============================================================ end of catalog commands ========


# ============================================================ recommend command (issue 4) ====
# `edgerec recommend`: one Recommender.similar or Recommender.for_user call.

_FILTER_OPS = {"<=": "lte", ">=": "gte", "!=": "ne", "=": "eq", "<": "lt", ">": "gt"}
_FILTER_RE = re.compile(r"([^=<>!]+)(<=|>=|!=|=|<|>)(.*)")


def _filter_arg(text: str) -> tuple[str, str, Any]:
    match = _FILTER_RE.fullmatch(text)
    if not match or not match.group(1).strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE, KEY!=VALUE, KEY<VALUE, KEY<=VALUE, KEY>VALUE or KEY>=VALUE, "
            f"got {text!r}"
        )
    key, op, value = match.groups()
    return key.strip(), _FILTER_OPS[op], parse_value(value)


def filters_from_args(terms: Sequence[tuple[str, str, Any]]) -> Optional[dict[str, Any]]:
    """``--filter`` terms -> the catalog's filter mapping. Terms on different keys must all
    hold; ``=`` repeated on one key means any of the values (``!=`` repeated: none of them)."""
    ops: dict[str, dict[str, Any]] = {}
    for key, op, value in terms:
        cond = ops.setdefault(key, {})
        if op in ("eq", "ne"):
            cond.setdefault("in" if op == "eq" else "nin", []).append(value)
        else:
            cond[op] = value
    out: dict[str, Any] = {}
    for key, cond in ops.items():
        if list(cond) == ["in"] and len(cond["in"]) == 1:
            out[key] = cond["in"][0]
        else:
            out[key] = cond
    return out or None


def _history_arg(text: str) -> list[Event]:
    now = time.time()
    events = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        item, _, kind = part.partition(":")
        try:
            events.append(Event(item, kind or EventKind.PURCHASE, now))
        except ProfileError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not events:
        raise argparse.ArgumentTypeError("expected ID[:KIND],ID[:KIND],...")
    return events


def cmd_recommend(args: argparse.Namespace) -> int:
    filters = filters_from_args(args.filter)
    options = RecommenderOptions(candidates=max(args.candidates, args.k),
                                 use_scorer=not args.no_scorer)
    with Recommender.create(args.bundle, args.catalog, options, _encoder_options(args)) as rec:
        if args.history is not None:
            recs = rec.for_user(args.history, args.k, filters=filters, exclude=args.exclude)
            asked = {e.item_id for e in args.history}
            if set(recs.ignored) == asked:
                raise CatalogError(
                    f"none of the --history ids is in the catalog ({', '.join(sorted(asked))}); "
                    "check the ids (the item ids the catalog was built with)"
                )
        else:
            image = Path(args.image) if args.image else None
            recs = rec.similar(image, args.k, item_id=args.item, filters=filters,
                               exclude=args.exclude, diversity=args.diversity)
    lines = []
    for rank, r in enumerate(recs, start=1):
        label = r.metadata.get("label")
        lines.append(f"{rank:>3}. {r.item_id}  {r.score:.4f}"
                     f"{f'  [{label}]' if label is not None else ''}  {r.reason}")
    if recs.note:
        lines.append(f"note: {recs.note}")
    _emit(args, recs.to_dict(), "\n".join(lines) if lines else "no results")
    return 0


def _add_recommend_parser(sub: Any) -> None:
    rec = sub.add_parser(
        "recommend", help="items like a photo, like an item, or for a history",
        description="Recommend catalog items that look like a photo (--image) or an item "
        "(--item), or that a person with this history would like (--history; ranked by the "
        "bundle's scorer when it has one, else by inner product). Every result says why.",
    )
    rec.add_argument("--bundle", required=True, help="bundle directory")
    rec.add_argument("--catalog", required=True, help="catalog directory built with the bundle")
    query = rec.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="photo to find look-alikes of")
    query.add_argument("--item", help="catalog item id to find look-alikes of")
    query.add_argument("--history", type=_history_arg, metavar="ID[:KIND],...",
                       help="the person's items, each with an event kind "
                       f"({', '.join(k.value for k in EventKind)}; default purchase); all "
                       "count as equally recent")
    rec.add_argument("-k", "--k", type=int, default=10, help="number of results")
    rec.add_argument("--filter", type=_filter_arg, action="append", default=[],
                     metavar="KEY=VALUE",
                     help="metadata condition, repeatable: key=v (repeat for any of several), "
                     "key!=v, key<v, key<=v, key>v, key>=v; numbers and true/false are parsed")
    rec.add_argument("--exclude", action="append", default=[], metavar="ID",
                     help="item id never to return (repeatable)")
    rec.add_argument("--diversity", type=float,
                     help="MMR trade-off in [0, 1] for --image/--item (default: none)")
    rec.add_argument("--candidates", type=int, default=200,
                     help="candidates the scorer re-ranks for --history")
    rec.add_argument("--no-scorer", action="store_true",
                     help="rank --history by inner product even if the bundle has a scorer")
    _add_encoder_arguments(rec)
    _add_json(rec)
    rec.set_defaults(func=cmd_recommend)


# ============================================================ end of recommend command =======


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


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
    exp.add_argument("--teacher", help="teacher .tflite/.onnx or bundle (default: shipped)")
    exp.add_argument("--student", default="mobilenet_v3_small", help="student recipe name")
    exp.add_argument("--width", type=float, default=1.0, help="student width multiplier")
    exp.add_argument("--image-size", type=int, default=160, help="student input size (px)")
    exp.add_argument("--dim", type=int, default=128, help="embedding dimension")
    exp.add_argument("--views", type=int, default=4, help="augmented views per training image")
    exp.add_argument("--epochs", type=int, help="maximum epochs (default: recipe's)")
    exp.add_argument("--max-minutes", type=float, help="training time budget in minutes")
    exp.add_argument("--quick", action="store_true", help="tiny configuration (minutes)")
    exp.add_argument("--resume", action="store_true", help="continue an interrupted export")
    exp.add_argument("--force", action="store_true", help="replace --out if it exists")
    exp.add_argument("--allow-gate-failure", action="store_true",
                     help="drop an int8 artifact that fails its gate instead of failing")
    exp.add_argument("--work-dir", help="caches and checkpoints (default: <out>.work)")
    _add_json(exp)
    exp.set_defaults(func=cmd_export)

    _add_catalog_parsers(sub)  # catalog build|add|remove|info|verify (issue 4)
    _add_recommend_parser(sub)  # recommend (issue 4)

    eng = sub.add_parser("engines", help="list installed inference engines",
                         description="List the inference engines installed here and versions.")
    _add_json(eng)
    eng.set_defaults(func=cmd_engines)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


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
