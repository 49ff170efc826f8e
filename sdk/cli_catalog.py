"""``edgerec catalog ...`` and ``edgerec recommend``: thin layers over catalog and recommender."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from ..runtimes import Engine
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
from .cli_common import add_json as _add_json
from .cli_common import emit as _emit
from .cli_common import expand_images
from .cli_common import progress as _progress
from .cli_common import usage as _usage
from .encoder import Encoder, EncoderOptions
from .errors import CatalogError
from .manifest import Precision
from .profile import Event, EventKind, ProfileError
from .recommender import Recommender, RecommenderOptions

__all__ = ["add_catalog_parsers", "add_recommend_parser", "filters_from_args"]


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


def add_catalog_parsers(sub: Any) -> None:
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


def add_recommend_parser(sub: Any) -> None:
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
    rec.add_argument("--candidates", type=int, default=500,
                     help="candidates the scorer re-ranks for --history (default 500)")
    rec.add_argument("--no-scorer", action="store_true",
                     help="rank --history by inner product even if the bundle has a scorer")
    _add_encoder_arguments(rec)
    _add_json(rec)
    rec.set_defaults(func=cmd_recommend)
