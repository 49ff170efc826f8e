"""``edgerec recommend``: one :meth:`Recommender.similar` or :meth:`Recommender.for_user` call."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from edgerec.sdk.catalog.ingest import parse_value
from edgerec.sdk.cli.catalog import add_encoder_arguments, encoder_options
from edgerec.sdk.cli.common import add_json, emit, option, positive_int
from edgerec.sdk.errors import CatalogError, ProfileError
from edgerec.sdk.profile import Event, EventKind
from edgerec.sdk.recommender import Recommender, RecommenderOptions

__all__ = ["add_recommend_parser", "filters_from_args"]

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
    candidates = None if args.candidates is None else max(args.candidates, args.k)
    options = RecommenderOptions(candidates=candidates,
                                 use_scorer=not args.no_scorer)
    with Recommender.create_from_bundle_path(args.bundle, args.catalog, options,
                                             encoder_options(args)) as rec:
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
    if recs.note and not args.json:  # on stderr, so that a pipe gets the results only
        print(f"note: {recs.note}", file=sys.stderr)
    emit(args, recs.to_dict(), "\n".join(lines) if lines else "no results")
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
    option(rec, "-k", "--k", type=positive_int, source=Recommender.for_user, name="k",
           help="number of results")
    rec.add_argument("--filter", type=_filter_arg, action="append", default=[],
                     metavar="KEY=VALUE",
                     help="metadata condition, repeatable: key=v (repeat for any of several), "
                     "key!=v, key<v, key<=v, key>v, key>=v; numbers and true/false are parsed")
    rec.add_argument("--exclude", action="append", default=[], metavar="ID",
                     help="item id never to return (repeatable)")
    rec.add_argument("--diversity", type=float,
                     help="MMR trade-off in [0, 1] for --image/--item (default: none)")
    option(rec, "--candidates", type=positive_int, source=RecommenderOptions, name="candidates",
           help="candidates the scorer re-ranks for --history",
           none_means="the C the bundle's scorer records")
    rec.add_argument("--no-scorer", action="store_true",
                     help="rank --history by inner product even if the bundle has a scorer")
    add_encoder_arguments(rec)
    add_json(rec)
    rec.set_defaults(func=cmd_recommend)
