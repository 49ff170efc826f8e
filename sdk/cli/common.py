"""Helpers shared by the ``edgerec`` subcommand modules (output, progress, JSON flag)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import inspect
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Union

from edgerec.sdk.catalog.ingest import IMAGE_SUFFIXES
from edgerec.sdk.errors import InvalidImageError
from edgerec.sdk.progress import ProgressBar

__all__ = [
    "OneLineParser",
    "add_json",
    "add_ray_arguments",
    "default_of",
    "emit",
    "expand_images",
    "option",
    "positive_int",
    "progress",
    "stdout_to_stderr",
    "usage",
]

SOURCES_ATTR = "_edgerec_default_sources"
"""Parser attribute: ``{dest: (source, name)}`` of options whose default comes from code."""


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


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr and exit code 2 (the
    full usage only with ``--help``); its sub-parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def usage(parser: argparse.ArgumentParser) -> int:
    """A command group run without its action: one line naming the actions; exit code 2."""
    actions = [name for a in parser._actions if isinstance(a, argparse._SubParsersAction)
               for name in a.choices]
    print(f"{parser.prog}: error: choose one of {', '.join(actions)} "
          f"(see `{parser.prog} --help`)", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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


def default_of(source: Any, name: Union[str, tuple[str, ...]]) -> Any:
    """The default of field ``name`` of dataclass ``source``, or of parameter ``name`` of the
    function ``source`` (a tuple of names: the tuple of their defaults): the one place a CLI
    default is read from."""
    if isinstance(name, tuple):
        return tuple(default_of(source, n) for n in name)
    if dataclasses.is_dataclass(source):
        for f in dataclasses.fields(source):
            if f.name == name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
        raise KeyError(f"{source.__name__} has no defaulted field {name!r}")
    value = inspect.signature(source).parameters[name].default
    if value is inspect.Parameter.empty:
        raise KeyError(f"{source.__name__} has no default for {name!r}")
    return value


def _shown(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (tuple, list)):
        return " ".join(_shown(v) for v in value)
    return str(value)


def option(parser: argparse.ArgumentParser, *flags: str, source: Any,
           name: Union[str, tuple[str, ...]], help: str,
           none_means: Optional[str] = None, **kwargs: Any) -> argparse.Action:
    """An option whose default is :func:`default_of` ``(source, name)``, stated in its help as
    ``(default: VALUE)``; a None default is described by ``none_means`` instead. Enum defaults
    become their values. The parser records the source, so a test can check help and code
    agree."""
    value = default_of(source, name)
    if value is None:
        if none_means is None:
            raise ValueError(f"{flags[0]}: a None default needs none_means")
        text = f"{help} (default: {none_means})"
    else:
        text = f"{help} (default: {_shown(value).replace('%', '%%')})"
    if isinstance(value, enum.Enum):
        value = value.value
    action = parser.add_argument(*flags, default=value, help=text, **kwargs)
    if not hasattr(parser, SOURCES_ATTR):
        setattr(parser, SOURCES_ATTR, {})
    getattr(parser, SOURCES_ATTR)[action.dest] = (source, name)
    return action


def add_ray_arguments(parser: argparse.ArgumentParser, source: Any, *, work: str, then: str,
                      actors: str, batch: str) -> None:
    """``--ray [ADDRESS]``, ``--ray-workers``, ``--ray-batch-size``, ``--ray-cpus-per-worker``:
    the Ray flags of the commands that scale out, their defaults read from ``source`` (an
    options dataclass with ``workers``, ``batch_size``, ``cpus_per_worker``). ``--ray`` alone
    gives ``""`` (a local Ray), absent None; ``work``, ``then``, ``actors``, ``batch`` complete
    the help texts."""
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help=f"{work} on Ray (needs pip install 'edgerec[scale]'): a cluster's "
                        f"HOST:PORT, auto, or nothing for a local Ray; {then}")
    option(parser, "--ray-workers", type=positive_int, source=source, name="workers",
           help=f"{actors} actors on Ray")
    option(parser, "--ray-batch-size", type=positive_int, source=source, name="batch_size",
           help=batch)
    option(parser, "--ray-cpus-per-worker", type=float, source=source, name="cpus_per_worker",
           help="CPUs Ray reserves per actor")
