"""The one reader of item listings: a folder of photos or an items CSV -> :class:`SourceItem` s.

Both the catalog build (``edgerec catalog build``) and the export (``edgerec export``) read items
through this module, so the ids a scorer trains on are the ids the catalog holds.

::

    items = items_from_folder("photos/")           # id = file stem, label = sub-folder
    items = items_from_csv("items.csv")             # item_id,path[,label][,...]
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from edgerec.sdk.errors import CatalogError

__all__ = ["IMAGE_SUFFIXES", "SourceItem", "items_from_csv", "items_from_folder", "parse_value"]

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
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
    """One item to embed: its id, its photo and its metadata (JSON-able dict)."""

    item_id: str
    image: Path
    metadata: Mapping[str, Any] = field(default_factory=dict)


def items_from_folder(root: PathLike) -> list[SourceItem]:
    """Every image under ``root`` (recursively, sorted): id = file stem, metadata ``label`` =
    the first-level sub-folder (none for files directly in ``root``) and ``path`` (relative).

    Raises:
        CatalogError: no such folder, no images, or two images with the same stem.
    """
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(f"{root} is not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CatalogError(f"{root} holds no image files ({sorted(IMAGE_SUFFIXES)})")
    items = []
    for path in files:
        rel = path.relative_to(root)
        meta: dict[str, Any] = {"path": rel.as_posix()}
        if len(rel.parts) > 1:
            meta["label"] = rel.parts[0]
        items.append(SourceItem(path.stem, path, meta))
    _check_unique(items, f"{root} (ids are file stems; rename one of each pair)")
    return items


def items_from_csv(path: PathLike) -> list[SourceItem]:
    """Rows of a CSV with a header ``item_id,path[,label][,...]``: ``path`` relative to the
    CSV's folder (or absolute); every other non-empty column becomes metadata, values parsed by
    :func:`parse_value`; ``path`` is kept in the metadata as written.

    Raises:
        CatalogError: unreadable file, missing columns, empty or repeated ids.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in ("item_id", "path") if c not in columns]
            if missing:
                raise CatalogError(
                    f"{path} lacks the column(s) {missing}; the header must start "
                    "item_id,path (then label and any other metadata columns)"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CatalogError(f"cannot read {path} as a UTF-8 CSV: {exc}") from exc
    items = []
    for line, row in enumerate(rows, start=2):
        item_id, image = (row.get("item_id") or "").strip(), (row.get("path") or "").strip()
        if not item_id or not image:
            raise CatalogError(f"{path} line {line}: item_id and path must not be empty")
        meta: dict[str, Any] = {"path": image}
        for key, value in row.items():
            if key in ("item_id", "path") or key is None or value is None or not value.strip():
                continue
            meta[key] = parse_value(value)
        items.append(SourceItem(item_id, path.parent / image, meta))
    if not items:
        raise CatalogError(f"{path} has a header but no rows")
    _check_unique(items, str(path))
    return items


def _check_unique(items: Sequence[SourceItem], where: str) -> None:
    repeated = [i for i, n in Counter(s.item_id for s in items).items() if n > 1]
    if repeated:
        raise CatalogError(f"ids repeat in {where}: {', '.join(repeated[:5])}")
