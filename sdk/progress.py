"""Progress bars for long work (tqdm), the one way edgerec shows them.

A bar draws on stderr when stderr is a terminal (tqdm's ``disable=None``), so pipes, logs and
``--json`` output stay clean; ``update_to(done)`` takes absolute counts, as the library
functions' ``progress`` callbacks report them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Optional, TypeVar

from tqdm import tqdm

__all__ = ["ProgressBar", "track"]

T = TypeVar("T")


class ProgressBar:
    """``with ProgressBar(total, "embed") as bar: ...; bar.update_to(done)``.

    ``total`` may be None until known (set it with :meth:`update_to`'s ``total``)."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "img", *,
                 enabled: Optional[bool] = None) -> None:
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                         disable=None if enabled is None else not enabled, leave=True)

    def update_to(self, done: int, total: Optional[int] = None) -> None:
        """Show ``done`` items finished (of ``total``, when given)."""
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], desc: str, unit: str = "img", *, total: Optional[int] = None,
          enabled: Optional[bool] = None) -> Iterator[T]:
    """Iterate ``items`` with a bar (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    yield from tqdm(items, desc=desc, unit=unit, total=total, file=sys.stderr,
                    disable=None if enabled is None else not enabled)
