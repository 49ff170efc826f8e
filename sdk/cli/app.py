"""The ``edgerec`` command: a thin layer over library calls.

Each subcommand makes one library call, prints a human summary (or JSON with ``--json``),
and turns an :class:`EdgeRecError` into a one-line message and exit code 1 (2 for usage).
The device's commands are registered here; other layers add theirs through the
``edgerec.cli`` entry-point group (the export's ``edgerec export`` and ``edgerec scorer
train``: :func:`edgerec.export.cli.register`), so this package never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Optional

from edgerec.sdk.cli.bench import add_bench_parser
from edgerec.sdk.cli.bundle import add_bundle_parsers, add_embed_parser, add_engines_parser
from edgerec.sdk.cli.catalog import add_catalog_parsers
from edgerec.sdk.cli.common import OneLineParser, usage
from edgerec.sdk.cli.evaluate import add_evaluate_parser
from edgerec.sdk.cli.recommend import add_recommend_parser
from edgerec.sdk.errors import EdgeRecError

__all__ = ["ENTRY_POINT_GROUP", "build_parser", "main"]

ENTRY_POINT_GROUP = "edgerec.cli"
"""Entry points in this group are called with the sub-parsers object to add commands."""


def _register_plugins(sub: argparse._SubParsersAction) -> None:
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        entry.load()(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``edgerec`` argument parser (every command and option has help text)."""
    parser = OneLineParser(
        prog="edgerec",
        description="On-device visual recommendation: bundles, embeddings, catalogs, "
        "recommendations.",
    )
    parser.add_argument("--version", action="version", version=f"edgerec {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(func=lambda _args: usage(parser))
    add_bundle_parsers(sub)
    add_embed_parser(sub)
    add_catalog_parsers(sub)
    add_recommend_parser(sub)
    add_evaluate_parser(sub)
    add_engines_parser(sub)
    add_bench_parser(sub)
    _register_plugins(sub)
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
