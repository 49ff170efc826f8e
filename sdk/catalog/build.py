"""Filling a catalog from photos, batched and resumable.

::

    listing = listing_from_folder("photos/")       # edgerec.sdk.catalog.ingest
    report = build_catalog("bundle/", "shop.catalog", listing.require())  # creates or resumes
    report.added, report.skipped_existing, report.failed, listing.problems

Images are embedded in chunks of ``chunk_size``; each chunk is one catalog generation, so an
interrupted build keeps every finished chunk and a re-run skips the ids already present.
An image that cannot be used (missing, corrupt, too small) is skipped and listed in
``IngestReport.failed`` instead of aborting the build: one bad photo in 100,000 should not cost
the other 99,999. Callers that need all-or-nothing check ``report.failed``. Entries the listing
itself skipped (bad rows, missing files, repeated ids) are in ``listing.problems``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.catalog.catalog import Catalog, VectorDType
from edgerec.sdk.catalog.ingest import SourceItem, _check_unique
from edgerec.sdk.encoder import Encoder, EncoderOptions
from edgerec.sdk.errors import CatalogError, EncoderMismatchError, InvalidImageError

__all__ = ["IngestReport", "add_images", "build_catalog", "embed_items"]

PathLike = Union[str, os.PathLike]


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


def embed_items(
    encoder: Encoder, items: Sequence[SourceItem],
) -> tuple[list[SourceItem], np.ndarray, list[tuple[str, str, str]]]:
    """Decode, preprocess and embed ``items`` with the SDK's own preprocessing: the items that
    worked, their vectors (float32 ``(n, dim)``, in ``encoder.options.batch_size`` engine calls)
    and ``(item_id, path, why)`` for each image that could not be used. The one embedding step of
    a local build and of a Ray build's workers (:mod:`.ray_build`)."""
    good, batches, failed = [], [], []
    for item in items:
        try:
            batches.append(encoder.preprocess([item.image]))
            good.append(item)
        except InvalidImageError as exc:
            failed.append((item.item_id, str(item.image), str(exc.__cause__ or exc)))
    if not good:
        return good, np.zeros((0, encoder.dim), np.float32), failed
    pixels = np.concatenate(batches)
    step = encoder.options.batch_size
    vectors = np.concatenate([encoder.embed_preprocessed(pixels[i:i + step])
                              for i in range(0, len(good), step)])
    return good, vectors, failed


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
        good, vectors, bad = embed_items(encoder, chunk)
        failed.extend(bad)
        if good:
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
        bundle = Bundle.open(bundle)
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
