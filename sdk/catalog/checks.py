"""Checks for the catalog: of what callers pass in, and of what is stored on disk.

Every failure is a :class:`CatalogError` whose message says what was wrong and what to do.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgerec.sdk.catalog import store
from edgerec.sdk.catalog.store import VectorView
from edgerec.sdk.errors import CatalogError, CatalogLockedError, EncoderMismatchError
from edgerec.sdk.files import sha256_file

__all__ = [
    "check_encoder_match",
    "check_ids",
    "check_metadata",
    "check_queries",
    "check_vectors",
    "dim_and_encoder",
    "find_problems",
    "preview",
    "sqlite_error",
]


def sqlite_error(exc: BaseException, root: Path) -> BaseException:
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return CatalogLockedError(
            f"another process is writing to the catalog at {root} (waited for its lock): "
            "retry later, or open the catalog with a larger lock_timeout"
        )
    if isinstance(exc, FileNotFoundError):
        return CatalogError(f"{exc.filename} is missing; {store._DAMAGED}")
    if isinstance(exc, sqlite3.Error):
        return CatalogError(f"the catalog database at {root} failed ({exc}); {store._DAMAGED}")
    return exc


def preview(ids: Iterable[str], limit: int = 5) -> str:
    ids = list(ids)
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def dim_and_encoder(bundle: Any, dim: int | None, encoder_id: str | None) -> tuple[int, str]:
    if bundle is not None:
        b_dim = getattr(bundle, "embedding_dim", None)
        b_enc = getattr(bundle, "encoder_id", None)
        if b_dim is None or b_enc is None:
            raise CatalogError("bundle= needs an object with .embedding_dim and .encoder_id")
        for name, given, from_bundle in (("dim", dim, b_dim), ("encoder_id", encoder_id, b_enc)):
            if given is not None and given != from_bundle:
                raise CatalogError(
                    f"{name}={given!r} contradicts the bundle's {from_bundle!r}: pass one or "
                    "the other"
                )
        dim, encoder_id = b_dim, b_enc
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise CatalogError(f"dim must be a positive int (the embedding size), got {dim!r}")
    if not isinstance(encoder_id, str) or not encoder_id:
        raise CatalogError(
            "encoder_id must be a non-empty str naming the encoder that makes the vectors "
            f"(e.g. the bundle's encoder_id), got {encoder_id!r}"
        )
    return int(dim), encoder_id


def check_encoder_match(catalog: Any, bundle: Any, purpose: str) -> None:
    """Raise :class:`EncoderMismatchError` unless ``catalog`` (a Catalog) holds vectors of
    ``bundle``'s (a Bundle) encoder; ``purpose`` ends the message (what to do instead)."""
    if catalog.encoder_id != bundle.encoder_id or catalog.dim != bundle.embedding_dim:
        raise EncoderMismatchError(
            f"the catalog at {catalog.path} was built with encoder {catalog.encoder_id!r} "
            f"({catalog.dim}-d) but the bundle {bundle.path} is encoder {bundle.encoder_id!r} "
            f"({bundle.embedding_dim}-d): {purpose}"
        )


def check_ids(ids: Any, what: str, allow_duplicates: bool = False) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise CatalogError(f"{what} must be a list of str ids (for one id, pass [id]), got {ids!r}")
    out = list(ids)
    bad = [i for i in out if not isinstance(i, str) or not i]
    if bad:
        raise CatalogError(f"{what} must be non-empty str, got {preview(map(repr, bad))}")
    if not allow_duplicates:
        dup = [i for i, n in Counter(out).items() if n > 1]
        if dup:
            raise CatalogError(f"{what} repeat within one call: {preview(dup)}; pass each once")
    return out


def check_vectors(vectors: Any, ids: list[str], dim: int) -> np.ndarray:
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"vectors must be a float32 array ({len(ids)}, {dim}): {exc}") from None
    if arr.shape != (len(ids), dim):
        raise CatalogError(
            f"vectors must have shape ({len(ids)}, {dim}) (one row of the catalog's dimension "
            f"per id), got {arr.shape}"
        )
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = [ids[i] for i in np.flatnonzero(~finite)]
        raise CatalogError(f"vectors of {preview(bad)} contain NaN or inf; fix the encoder input")
    return np.ascontiguousarray(arr)


def check_metadata(metadata: Any, ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    if metadata is None:
        return [("{}", {})] * len(ids)
    if isinstance(metadata, Mapping) or not isinstance(metadata, Sequence):
        raise CatalogError("metadata must be a list with one dict (or None) per id")
    if len(metadata) != len(ids):
        raise CatalogError(f"metadata has {len(metadata)} entries for {len(ids)} ids")
    out = []
    for item_id, meta in zip(ids, metadata):
        if meta is None:
            out.append(("{}", {}))
            continue
        if not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta):
            raise CatalogError(f"metadata of {item_id!r} must be a dict with str keys")
        try:
            text = json.dumps(meta, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise CatalogError(
                f"metadata of {item_id!r} is not JSON-serialisable ({exc}); use str, numbers, "
                "bools, None, lists and dicts"
            ) from None
        out.append((text, json.loads(text)))
    return out


def check_queries(query: Any, dim: int) -> tuple[np.ndarray, bool]:
    try:
        arr = np.asarray(query, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"query must be a float32 array ({dim},) or (Q, {dim}): {exc}") from None
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise CatalogError(
            f"query must have shape ({dim},) or (Q, {dim}), got {np.shape(query)}"
        )
    if not np.isfinite(arr).all():
        raise CatalogError("query contains NaN or inf: check the image and the encoder output")
    return np.ascontiguousarray(arr), single


def find_problems(root: Path, conn: sqlite3.Connection, view: VectorView) -> list[str]:
    """Everything wrong with the generation ``view`` shows (inside the caller's read snapshot).

    Checks the SQLite file, every segment's sha256, that item rows are unique, live and in
    range, that the item count matches the generation, and that the metadata is valid JSON.
    """
    problems: list[str] = []
    check = [r[0] for r in conn.execute("PRAGMA quick_check")]
    if check != ["ok"]:
        problems.append(f"SQLite quick_check: {'; '.join(check[:3])}")
    folder = root / store.SEGMENTS_DIR
    for rec in view.generation.segments:
        hashes = [(f"{rec.name}.vec.npy", rec.vec_sha256)]
        if rec.scale_sha256:
            hashes.append((f"{rec.name}.scale.npy", rec.scale_sha256))
        for name, sha in hashes:
            try:
                if sha256_file(folder / name) != sha:
                    problems.append(f"{name} does not match its recorded sha256")
            except OSError as exc:
                problems.append(f"{name} is unreadable ({exc})")
    rows = np.fromiter((r for (r,) in conn.execute("SELECT row FROM items")), np.int64)
    gen = view.generation
    if rows.size != gen.count:
        problems.append(f"{rows.size} items but the generation records {gen.count}")
    if rows.size and (rows.min() < 0 or rows.max() >= gen.total_rows):
        problems.append("some items point outside the stored vectors")
    elif np.unique(rows).size != rows.size:
        problems.append("several items share one vector row")
    elif rows.size and gen.dead[rows].any():
        problems.append("some items point at removed (dead) vector rows")
    if gen.total_rows - int(gen.dead.sum()) != gen.count:
        problems.append("the dead-row bitmap disagrees with the item count")
    (bad_json,) = conn.execute(
        "SELECT COUNT(*) FROM items WHERE NOT json_valid(meta)"
    ).fetchone()
    if bad_json:
        problems.append(f"{bad_json} items have invalid JSON metadata")
    (orphans,) = conn.execute(
        "SELECT COUNT(*) FROM attrs WHERE item NOT IN (SELECT key FROM items)"
    ).fetchone()
    if orphans:
        problems.append(f"{orphans} filter-index entries belong to no item")
    return problems
