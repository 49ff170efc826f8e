"""``edgerec catalog build|add|remove|info|verify``: each one catalog library call."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from edgerec.runtimes import Engine
from edgerec.sdk.bundle.manifest import Precision
from edgerec.sdk.catalog.build import IngestReport, add_images, build_catalog
from edgerec.sdk.catalog.catalog import Catalog, VectorDType
from edgerec.sdk.catalog.ingest import (
    ItemListing,
    ListingProblem,
    SourceItem,
    listing_from_csv,
    listing_from_folder,
    parse_value,
)
from edgerec.sdk.catalog.ray_build import RayBuildOptions, build_catalog_on_ray
from edgerec.sdk.cli.common import (
    add_json,
    add_ray_arguments,
    emit,
    expand_images,
    option,
    positive_int,
    progress,
    usage,
)
from edgerec.sdk.encoder import Encoder, EncoderOptions
from edgerec.sdk.errors import CatalogError

__all__ = ["add_catalog_parsers", "add_encoder_arguments", "encoder_options"]


# `edgerec catalog build | add | remove | info | verify`: each one library call.


def encoder_options(args: argparse.Namespace) -> EncoderOptions:
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


def _listing(args: argparse.Namespace) -> ItemListing:
    """The items of ``--images`` or ``--items``; rows it skips are reported, not fatal."""
    return listing_from_folder(args.images) if args.images else listing_from_csv(args.items)


def _ingest_output(args: argparse.Namespace, report: IngestReport, verb: str,
                   problems: Sequence[ListingProblem] = ()) -> int:
    """Print what a build or add did: its report plus the listing's skipped entries."""
    payload = {**report.to_dict(max_failed=20), "listing_problem_count": len(problems),
               "listing_problems": [p.to_dict() for p in problems[:20]]}
    text = (f"{verb} {report.catalog}: added {report.added}, {report.skipped_existing} already "
            f"present, {len(report.failed)} bad image(s) skipped, {len(problems)} listing "
            f"entr{'y' if len(problems) == 1 else 'ies'} skipped; {report.count} items")
    lines = [f"skipped {i} ({p}): {why}" for i, p, why in report.failed]
    lines += [f"skipped {p.where}: {p.detail}" for p in problems]
    for line in lines[:5]:
        text += f"\n  {line}"
    if len(lines) > 5:
        text += f"\n  ... and {len(lines) - 5} more (--json lists 20 of each)"
    emit(args, payload, text)
    return 0


def cmd_catalog_build(args: argparse.Namespace) -> int:
    listing = _listing(args)
    items = listing.require()
    if args.ray is not None:
        return _build_on_ray(args, listing, items)
    update, done = progress(len(items), "catalog build")
    try:
        report = build_catalog(args.bundle, args.out, items, encoder_options=encoder_options(args),
                               dtype=args.dtype, chunk_size=args.chunk_size, progress=update)
    finally:
        done()
    return _ingest_output(args, report, "built", listing.problems)


def _build_on_ray(args: argparse.Namespace, listing: ItemListing,
                  items: list[SourceItem]) -> int:
    options = RayBuildOptions(address=args.ray or None, workers=args.ray_workers,
                              batch_size=args.ray_batch_size,
                              cpus_per_worker=args.ray_cpus_per_worker)
    enc = encoder_options(args)
    if enc.num_threads is None:  # one engine thread per CPU Ray reserves for an actor
        enc = dataclasses.replace(enc, num_threads=max(1, int(options.cpus_per_worker)))
    update, done = progress(len(items), "catalog build (ray)")
    try:
        report = build_catalog_on_ray(args.bundle, args.out, items, options, encoder_options=enc,
                                      dtype=args.dtype, progress=update)
    finally:
        done()
    return _ingest_output(args, report, "built", listing.problems)


def cmd_catalog_add(args: argparse.Namespace) -> int:
    sources = [bool(args.images), bool(args.items), bool(args.files)]
    if sum(sources) != 1:
        raise CatalogError("give exactly one of --images DIR, --items CSV or image files")
    problems: Sequence[ListingProblem] = ()
    if args.files:
        items = [SourceItem(p.stem, p, {"path": str(p)}) for p in expand_images(args.files)]
    else:
        listing = _listing(args)
        items, problems = listing.require(), listing.problems
    extra = dict(args.meta)
    items = [SourceItem(s.item_id, s.image, {**s.metadata, **extra}) for s in items]
    with Catalog.open(args.catalog) as catalog, \
            Encoder.create_from_bundle_path(args.bundle, encoder_options(args)) as encoder:
        update, done = progress(len(items), "catalog add")
        try:
            report = add_images(catalog, encoder, items, skip_existing=False,
                                chunk_size=args.chunk_size, progress=update)
        finally:
            done()
    return _ingest_output(args, report, "added to", problems)


def cmd_catalog_remove(args: argparse.Namespace) -> int:
    with Catalog.open(args.catalog) as catalog:
        catalog.remove(args.ids)
        if args.compact:
            catalog.compact()
        count = len(catalog)
    emit(args, {"catalog": args.catalog, "removed": len(args.ids), "count": count},
          f"removed {len(args.ids)} item(s) from {args.catalog}; {count} items")
    return 0


def cmd_catalog_info(args: argparse.Namespace) -> int:
    with Catalog.open(args.catalog, readonly=True) as catalog:
        info = catalog.info()
    payload = {**info.__dict__, "path": str(info.path)}
    text = "\n".join(f"{k:<15} {v}" for k, v in payload.items())
    emit(args, payload, text)
    return 0


def cmd_catalog_verify(args: argparse.Namespace) -> int:
    with Catalog.open(args.catalog, readonly=True) as catalog:
        catalog.verify()
        count, gen = len(catalog), catalog.generation
    emit(args, {"catalog": args.catalog, "ok": True, "count": count, "generation": gen},
          f"ok: {args.catalog}: {count} items, generation {gen}")
    return 0


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=[e.value for e in Engine], help="engine (default: any)")
    p.add_argument("--precision", choices=[x.value for x in Precision],
                   help="encoder precision (default: fp32 when the bundle has it)")
    p.add_argument("--threads", type=positive_int, help="engine threads (default: engine's)")
    option(p, "--batch-size", type=positive_int, source=EncoderOptions, name="batch_size",
           help="images per engine call")


def add_catalog_parsers(sub: Any) -> None:
    """``edgerec catalog build|add|remove|info|verify``."""
    cat = sub.add_parser("catalog", help="build, update, inspect and verify catalogs",
                         description="Build, update, inspect and verify on-device catalogs "
                         "(item vectors + metadata).")
    csub = cat.add_subparsers(dest="catalog_command", metavar="ACTION")
    cat.set_defaults(func=lambda _args: usage(cat))
    _add_build_parser(csub)
    _add_add_parser(csub)
    _add_small_parsers(csub)


def _add_build_parser(csub: Any) -> None:
    build = csub.add_parser(
        "build", help="embed photos into a catalog (resumable)",
        description="Embed a folder of photos (searched recursively; label = first-level "
        "sub-folder; id = file stem, or the relative path without suffix where stems repeat) "
        "or the photos of an items CSV (item_id,path[,label][,...]; an empty item_id is "
        "derived from the path; other columns become metadata) into a catalog. A re-run adds "
        "only the ids not yet present; bad images, rows without a path, missing files and "
        "repeated ids are skipped and reported, not fatal.",
    )
    src = build.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images, one sub-folder per label")
    src.add_argument("--items", help="CSV item_id,path[,label][,...] (paths relative to it)")
    build.add_argument("--bundle", required=True, help="bundle directory whose encoder to use")
    build.add_argument("--out", required=True, help="catalog directory (created or resumed)")
    build.add_argument("--dtype", choices=[d.value for d in VectorDType],
                       help="vector storage of a new catalog (default int8; a resumed catalog "
                       "keeps its own)")
    option(build, "--chunk-size", type=positive_int, source=build_catalog, name="chunk_size",
           help="images per catalog commit (the unit of resumption)")
    add_encoder_arguments(build)
    add_ray_arguments(build, RayBuildOptions, work="embed", then="one commit at the end",
                      actors="embedding", batch="images per actor call and per staged block")
    add_json(build)
    build.set_defaults(func=cmd_catalog_build)


def _add_add_parser(csub: Any) -> None:
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
    option(add, "--chunk-size", type=positive_int, source=add_images, name="chunk_size",
           help="images per catalog commit")
    add_encoder_arguments(add)
    add_json(add)
    add.set_defaults(func=cmd_catalog_add)


def _add_small_parsers(csub: Any) -> None:
    rem = csub.add_parser("remove", help="remove items by id",
                          description="Remove items by id, all or nothing (unknown ids fail).")
    rem.add_argument("catalog", help="catalog directory")
    rem.add_argument("ids", nargs="+", help="item ids to remove")
    rem.add_argument("--compact", action="store_true",
                     help="then rewrite the vectors without the removed rows")
    add_json(rem)
    rem.set_defaults(func=cmd_catalog_remove)

    info = csub.add_parser("info", help="show a catalog's summary",
                           description="Show a catalog's size, dimension, dtype, generation and "
                           "encoder id.")
    info.add_argument("catalog", help="catalog directory")
    add_json(info)
    info.set_defaults(func=cmd_catalog_info)

    ver = csub.add_parser("verify", help="check a catalog end to end",
                          description="Check the catalog's database, every segment's sha256 "
                          "and the item rows; fails with what is damaged.")
    ver.add_argument("catalog", help="catalog directory")
    add_json(ver)
    ver.set_defaults(func=cmd_catalog_verify)
