"""Helpers shared by the ``edgerec`` subcommand modules (output, progress, JSON flag)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

from edgerec.sdk.catalog.ingest import IMAGE_SUFFIXES
from edgerec.sdk.errors import InvalidImageError
from edgerec.sdk.progress import ProgressBar

__all__ = ["add_json", "emit", "expand_images", "progress", "stdout_to_stderr", "usage"]


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, indent=2) if getattr(args, "json", False) else text)


def progress(total: int, desc: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A progress bar on stderr (shown on a terminal): ``(update(done), close())``."""
    bar = ProgressBar(total, desc)
    return bar.update_to, bar.close


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


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


def usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
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
