"""Filling a catalog from photos: a labelled folder or an items CSV, batched and resumable.

::

    items = items_from_folder("photos/")           # id = file stem, label = sub-folder
    items = items_from_csv("items.csv")             # item_id,path[,label][,...]
    report = build_catalog("bundle/", "shop.catalog", items)    # creates or resumes
    report.added, report.skipped_existing, report.failed

Images are embedded in chunks of ``chunk_size``; each chunk is one catalog generation, so an
interrupted build keeps every finished chunk and a re-run skips the ids already present.
An image that cannot be used (missing, corrupt, too small) is skipped and listed in
``IngestReport.failed`` instead of aborting the build: one bad photo in 100,000 should not cost
the other 99,999. Callers that need all-or-nothing check ``report.failed``.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from .bundle import Bundle
from .catalog import Catalog, VectorDType
from .encoder import Encoder, EncoderOptions
from .errors import CatalogError, EncoderMismatchError, InvalidImageError

__all__ = [
    "IngestReport",
    "SourceItem",
    "add_images",
    "build_catalog",
    "items_from_csv",
    "items_from_folder",
]  # parse_value and IMAGE_SUFFIXES are for the CLI

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PathLike = Union[str, os.PathLike]
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


@dataclass(frozen=True)
class IngestReport:
    """What a build or add did. ``failed``: ``(item_id, path, why)`` for each skipped image."""

    catalog: Path
    added: int
    skipped_existing: int
    failed: tuple[tuple[str, str, str], ...]
    count: int  # items in the catalog afterwards

    def to_dict(self, max_failed: Optional[int] = None) -> dict[str, Any]:
        failed = self.failed if max_failed is None else self.failed[:max_failed]
        return {
            "catalog": str(self.catalog), "added": self.added,
            "skipped_existing": self.skipped_existing, "failed_count": len(self.failed),
            "failed": [{"item_id": i, "path": p, "error": e} for i, p, e in failed],
            "count": self.count,
        }


def add_images(
    catalog: Catalog,
    encoder: Encoder,
    items: Iterable[SourceItem],
    *,
    skip_existing: bool = True,
    chunk_size: int = 256,
    progress: Optional[Callable[[int], None]] = None,
) -> IngestReport:
    """Embed ``items`` and add them to an open, writable ``catalog``, ``chunk_size`` per
    generation. Existing ids are skipped (``skip_existing``) or refused before any work.
    ``progress`` gets the number of items done (existing ones count as done at once).

    Raises:
        EncoderMismatchError: the catalog was built with another encoder.
        CatalogError: repeated ids, or existing ids with ``skip_existing=False``.
    """
    if encoder.encoder_id != catalog.encoder_id:
        raise EncoderMismatchError(
            f"the catalog at {catalog.path} was built with encoder {catalog.encoder_id!r}, but "
            f"this bundle's encoder is {encoder.encoder_id!r}: use the bundle that built it, or "
            "build a new catalog"
        )
    if chunk_size < 1:
        raise CatalogError(f"chunk_size must be >= 1, got {chunk_size}")
    items = list(items)
    _check_unique(items, "the items to add")
    present = set(catalog) & {s.item_id for s in items}
    if present and not skip_existing:
        raise CatalogError(
            f"{len(present)} ids are already in the catalog ({', '.join(sorted(present)[:5])}); "
            "remove them first, or resume with `edgerec catalog build`; nothing was added"
        )
    todo = [s for s in items if s.item_id not in present]
    done = len(items) - len(todo)
    if progress is not None:
        progress(done)
    added, failed = 0, []
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        good, batches = [], []
        for item in chunk:
            try:
                batches.append(encoder.preprocess([item.image]))
                good.append(item)
            except InvalidImageError as exc:
                failed.append((item.item_id, str(item.image), str(exc.__cause__ or exc)))
        if good:
            pixels = np.concatenate(batches)
            step = encoder.options.batch_size
            vectors = np.concatenate([encoder.embed_preprocessed(pixels[i:i + step])
                                      for i in range(0, len(good), step)])
            catalog.add([s.item_id for s in good], vectors, [dict(s.metadata) for s in good],
                        encoder_id=encoder.encoder_id)
            added += len(good)
        done += len(chunk)
        if progress is not None:
            progress(done)
    return IngestReport(catalog.path, added, len(present), tuple(failed), len(catalog))


def build_catalog(
    bundle: Union[Bundle, PathLike],
    out: PathLike,
    items: Iterable[SourceItem],
    *,
    encoder_options: Optional[EncoderOptions] = None,
    dtype: Union[str, VectorDType, None] = None,
    chunk_size: int = 256,
    progress: Optional[Callable[[int], None]] = None,
) -> IngestReport:
    """Create the catalog ``out`` for ``bundle`` (or resume it if it exists), add every item not
    already in it (see :func:`add_images`), then compact it into one segment. ``dtype``: vector
    storage of a new catalog (None: int8); a resumed catalog keeps its own.

    Raises:
        EncoderMismatchError: ``out`` exists and was built with another encoder.
        CatalogError: ``out`` exists with another ``dtype`` than the one asked for.
    """
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    out = Path(out)
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if exists:
        catalog = Catalog.open(out)
        if dtype is not None and str(getattr(dtype, "value", dtype)) != catalog.dtype:
            catalog.close()
            raise CatalogError(
                f"the catalog at {out} stores {catalog.dtype} vectors, not {dtype!s}: resume it "
                "without a dtype, or build a new catalog elsewhere"
            )
    else:
        catalog = Catalog.create(out, bundle, dtype=dtype or VectorDType.INT8)
    options = encoder_options or EncoderOptions()
    with catalog, Encoder.create_from_bundle(bundle, options) as encoder:
        report = add_images(catalog, encoder, items, chunk_size=chunk_size, progress=progress)
        if catalog.info().segments > 1:
            catalog.compact()
    return report
