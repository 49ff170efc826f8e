"""The one reader of item listings: a folder of photos or an items CSV -> :class:`SourceItem` s.

Both the catalog build (``edgerec catalog build``) and the export (``edgerec export``, through
``edgerec.export.data.scan``) read items through this module, so the ids a scorer trains on are
the ids the catalog holds::

    listing = listing_from_folder("photos/")     # ItemListing: .items and .problems
    listing = listing_from_csv("items.csv")      # item_id,path[,label][,...]
    items = items_from_folder("photos/")         # the items; raises if an entry was dropped

The rules, the same on both sides:

- Folder: walked recursively (links to folders followed once); names starting with ``.`` are
  left out silently. Label = the first-level sub-folder (none for files directly in the
  folder). Id = the file stem when no other image in the listing has that stem, else the path
  relative to the folder without its suffix (``hat/img``, posix). Files without an image suffix
  (:data:`IMAGE_SUFFIXES`), folders that cannot be listed and broken links are reported.
- CSV: a header with ``item_id`` and ``path`` (then ``label`` and any other columns). ``path``
  is relative to ``base`` (by default the CSV's folder) or absolute; an empty ``item_id`` is
  derived from the path the way a folder derives it (the stem, or the path as written without
  its suffix when another listed path or an explicit id has that stem). ``label`` stays a
  string; every other non-empty cell becomes metadata through :func:`parse_value`.
- Either: a row without a path, a missing file or an id that an earlier entry already has is
  reported with its line and skipped, never fatal; the first entry with an id keeps it.
"""

from __future__ import annotations

import csv
import enum
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Optional, Union

from edgerec.sdk.errors import CatalogError

__all__ = [
    "IMAGE_SUFFIXES",
    "ItemListing",
    "ListingProblem",
    "ProblemKind",
    "SourceItem",
    "items_from_csv",
    "items_from_folder",
    "listing_from_csv",
    "listing_from_folder",
    "parse_value",
]

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""File suffixes (lower case) that a folder listing treats as images; other files are reported."""

_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?[0-9]+[eE][+-]?[0-9]+")


def parse_value(text: str) -> Any:
    """A CSV cell or a CLI value as JSON-able metadata: ``true``/``false`` -> bool, canonical
    integers -> int (``"0042"`` stays a str), decimals -> float, anything else the str."""
    s = text.strip()
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s) and math.isfinite(float(s)):
        return float(s)
    return text


@dataclass(frozen=True)
class SourceItem:
    """One item to embed: its id, its photo and its metadata (JSON-able dict; ``label`` and
    ``path`` when a listing made it)."""

    item_id: str
    image: Path
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> Optional[str]:
        """The metadata ``label`` as a string, or None when there is none."""
        value = self.metadata.get("label")
        return None if value is None else str(value)


class ProblemKind(str, enum.Enum):
    """Why an entry of a listing was skipped (see :attr:`ListingProblem.drops_item`)."""

    NOT_AN_IMAGE = "not_an_image"  # a file without an image suffix (folders)
    UNREADABLE = "unreadable"  # a folder that cannot be listed, a broken link (folders)
    BAD_ROW = "bad_row"  # a row without a path, or with more cells than the header (CSV)
    MISSING = "missing"  # a row whose file does not exist (CSV)
    DUPLICATE_ID = "duplicate_id"  # an id an earlier entry already has (either)


@dataclass(frozen=True)
class ListingProblem:
    """One skipped entry of a listing.

    Attributes:
        where: ``items.csv:LINE`` for a CSV row, the file or folder for a folder entry.
        kind: a :class:`ProblemKind`.
        detail: a sentence saying what was found and what to do.
        path: the file concerned (for a CSV row, the file it points to), or None.
        duplicate_of: for a repeated id, the file of the entry that kept it.
    """

    where: str
    kind: ProblemKind
    detail: str
    path: Optional[str] = None
    duplicate_of: Optional[str] = None

    @property
    def drops_item(self) -> bool:
        """Whether a listed item was left out (everything but a non-image file)."""
        return self.kind is not ProblemKind.NOT_AN_IMAGE

    def to_dict(self) -> dict[str, Any]:
        out = {"where": self.where, "kind": self.kind.value, "detail": self.detail}
        out.update({k: v for k, v in (("path", self.path), ("duplicate_of", self.duplicate_of))
                    if v is not None})
        return out


@dataclass(frozen=True)
class ItemListing:
    """What a reader found in ``source``: the items (folder: sorted by relative path; CSV: in
    row order), each id once, and every skipped entry."""

    source: Path
    items: tuple[SourceItem, ...]
    problems: tuple[ListingProblem, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[SourceItem]:
        return iter(self.items)

    def __getitem__(self, index: int) -> SourceItem:
        return self.items[index]

    def __repr__(self) -> str:
        return (f"ItemListing({len(self.items)} items, {len(self.problems)} problems, "
                f"source={str(self.source)!r})")

    def require(self, *, strict: bool = False) -> list[SourceItem]:
        """The items as a list.

        Raises:
            CatalogError: there are none, or (``strict``) an entry was dropped: a bad row, a
                missing file, a repeated id or an unreadable folder.
        """
        dropped = [p for p in self.problems if p.drops_item]
        if not self.items:
            raise CatalogError(
                f"{self.source} lists no usable items: a folder needs image files "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}), a CSV rows item_id,path[,label]"
                + _first(self.problems)
            )
        if strict and dropped:
            kinds = dict(sorted(Counter(p.kind.value for p in dropped).items()))
            raise CatalogError(
                f"{len(dropped)} entries of {self.source} were skipped {kinds}" + _first(dropped)
                + "; fix them, or read it with listing_from_folder/listing_from_csv, which skip "
                "and report them"
            )
        return list(self.items)


def _first(problems: Sequence[ListingProblem]) -> str:
    return "".join(f"; {p.where}: {p.detail}" for p in problems[:3])


def items_from_folder(root: PathLike) -> list[SourceItem]:
    """The items of :func:`listing_from_folder`, all or nothing (non-image files are ignored).

    Raises:
        CatalogError: no such folder, no images, or an entry was dropped (see
            :meth:`ItemListing.require`).
    """
    return listing_from_folder(root).require(strict=True)


def items_from_csv(path: PathLike, *, base: Optional[PathLike] = None) -> list[SourceItem]:
    """The items of :func:`listing_from_csv`, all or nothing.

    Raises:
        CatalogError: unreadable file, missing columns, no rows, or a row was dropped (see
            :meth:`ItemListing.require`).
    """
    return listing_from_csv(path, base=base).require(strict=True)


# --------------------------------------------------------------------------- folders


def listing_from_folder(root: PathLike) -> ItemListing:
    """Every image under ``root`` (see the module's rules), with metadata ``path`` (relative,
    posix) and ``label`` (the first-level sub-folder, when there is one).

    Raises:
        CatalogError: ``root`` is not a folder or cannot be listed.
    """
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(f"{root} is not a folder; pass the folder that holds the images "
                           "(or an items CSV)")
    problems: list[ListingProblem] = []
    rels = sorted((p.relative_to(root) for p in _walk(root, problems)), key=lambda r: r.parts)
    stems = Counter(r.stem for r in rels)
    items: list[SourceItem] = []
    first: dict[str, str] = {}
    for rel in rels:
        item_id = rel.stem if stems[rel.stem] == 1 else rel.with_suffix("").as_posix()
        meta = {"path": rel.as_posix(), **({"label": rel.parts[0]} if len(rel.parts) > 1 else {})}
        item = SourceItem(item_id, root / rel, meta)
        if _claim(first, item, str(root / rel), problems):
            items.append(item)
    return ItemListing(root, tuple(items), tuple(problems))


def _walk(root: Path, problems: list[ListingProblem]) -> list[Path]:
    """Image files under ``root``, recursively; each real folder walked once."""
    found: list[Path] = []
    stack, seen = [root], set()
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:  # a link back to a folder already walked
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if folder == root:
                raise CatalogError(f"cannot list {root} ({exc}); check its permissions") from exc
            problems.append(_unreadable(folder, f"Cannot list this folder ({exc}); its images "
                                                "were left out. Fix its permissions."))
            continue
        for entry in entries:
            if not entry.name.startswith("."):
                _visit(entry, found, stack, problems)
    return found


def _visit(entry: os.DirEntry, found: list[Path], stack: list[Path],
           problems: list[ListingProblem]) -> None:
    path = Path(entry.path)
    try:
        is_dir, is_file = entry.is_dir(), entry.is_file()
    except OSError as exc:
        problems.append(_unreadable(path, f"Cannot read this entry ({exc}); check it."))
        return
    if is_dir:
        stack.append(path)
    elif path.suffix.lower() not in IMAGE_SUFFIXES:
        problems.append(ListingProblem(
            str(path), ProblemKind.NOT_AN_IMAGE,
            f"Not read: '{path.suffix or path.name}' is not an image suffix "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); rename it if it is an image.",
            path=str(path),
        ))
    elif is_file:
        found.append(path)
    else:
        problems.append(_unreadable(path, "Not a regular file (a broken link?); fix or remove "
                                          "it."))


def _unreadable(path: Path, detail: str) -> ListingProblem:
    return ListingProblem(str(path), ProblemKind.UNREADABLE, detail, path=str(path))


def _claim(first: dict[str, str], item: SourceItem, where: str,
           problems: list[ListingProblem]) -> bool:
    """Record ``item``'s id; False (and a problem) when an earlier entry already has it."""
    if item.item_id not in first:
        first[item.item_id] = str(item.image)
        return True
    problems.append(ListingProblem(
        where, ProblemKind.DUPLICATE_ID,
        f"The id {item.item_id!r} already belongs to {first[item.item_id]}; this entry was "
        "skipped. Give every item its own id (rename the file or fix the item_id).",
        path=str(item.image), duplicate_of=first[item.item_id],
    ))
    return False


# --------------------------------------------------------------------------- CSV


def listing_from_csv(path: PathLike, *, base: Optional[PathLike] = None) -> ItemListing:
    """The rows of an items CSV (see the module's rules). Metadata: ``path`` as written,
    ``label`` (a string) and every other non-empty cell parsed by :func:`parse_value`.

    Args:
        path: the CSV (UTF-8, optionally with a BOM).
        base: the folder relative paths start from; None: the CSV's folder.

    Raises:
        CatalogError: the file cannot be read as a CSV, or it lacks ``item_id`` or ``path``.
    """
    path = Path(path)
    base = path.parent if base is None else Path(base)
    header, rows = _read_rows(path)
    derived = _derived_ids(rows)
    items: list[SourceItem] = []
    problems: list[ListingProblem] = []
    first: dict[str, str] = {}
    for line, cells, extra in rows:
        where = f"{path}:{line}"
        problem = _row_problem(where, cells, extra, len(header))
        if problem is not None:
            problems.append(problem)
            continue
        item = _row_item(cells, derived, base)
        if not _claim(first, item, where, problems):
            continue
        if not item.image.is_file():
            problems.append(ListingProblem(
                where, ProblemKind.MISSING,
                f"No file for item {item.item_id!r}; fix the path (relative to {base}).",
                path=str(item.image),
            ))
            continue
        items.append(item)
    return ItemListing(path, tuple(items), tuple(problems))


_Row = tuple[int, dict[str, str], list[str]]  # (line, stripped cells by column, extra cells)


def _read_rows(path: Path) -> tuple[list[str], list[_Row]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CatalogError(f"Cannot read the items CSV {path} ({exc}); check the path and that "
                           "it is UTF-8 text") from exc
    missing = [c for c in ("item_id", "path") if c not in header]
    if missing:
        raise CatalogError(
            f"The items CSV {path} has no {' or '.join(missing)} column (it has "
            f"{', '.join(header) or 'none'}); its header must name item_id and path (then "
            "label and any other metadata columns)"
        )
    n = len(header)
    return header, [(line, dict(zip(header, (c.strip() for c in row))), row[n:])
                    for line, row in rows]


def _derived_ids(rows: Sequence[_Row]) -> dict[str, str]:
    """Id for each path of a row with an empty item_id: its stem when unique among the listed
    paths and the explicit ids, else the path as written without its suffix (posix)."""
    paths = {PurePath(c["path"]) for _, c, _ in rows if c.get("path")}
    explicit = {c["item_id"] for _, c, _ in rows if c.get("item_id")}
    stems = Counter(p.stem for p in paths)
    return {
        str(p): p.stem if stems[p.stem] == 1 and p.stem not in explicit
        else p.with_suffix("").as_posix()
        for p in paths
    }


def _row_problem(where: str, cells: Mapping[str, str], extra: Sequence[str],
                 width: int) -> Optional[ListingProblem]:
    if any(c.strip() for c in extra):
        return ListingProblem(where, ProblemKind.BAD_ROW,
                              f"The row has {width + len(extra)} cells but the header has "
                              f"{width}; quote values that contain commas.")
    if not cells.get("path"):
        return ListingProblem(where, ProblemKind.BAD_ROW, "The row has no path; fill it in.")
    return None


def _row_item(cells: Mapping[str, str], derived: Mapping[str, str], base: Path) -> SourceItem:
    rel = cells["path"]
    item_id = cells.get("item_id") or derived[str(PurePath(rel))]
    meta: dict[str, Any] = {"path": rel}
    for key, value in cells.items():
        if key and value and key not in ("item_id", "path"):
            meta[key] = value if key == "label" else parse_value(value)
    image = Path(rel) if Path(rel).is_absolute() else base / rel
    return SourceItem(item_id, image, meta)


def _check_unique(items: Sequence[SourceItem], where: str) -> None:
    """Raise CatalogError when two of ``items`` share an id (for items not from a listing)."""
    repeated = [i for i, n in Counter(s.item_id for s in items).items() if n > 1]
    if repeated:
        raise CatalogError(f"ids repeat in {where}: {', '.join(repeated[:5])}")
