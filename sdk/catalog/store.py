"""On-disk layer of the catalog cache: header, SQLite schema, vector segments, generations.

A catalog is a directory::

    catalog.json              immutable header: format, format_version, dim, dtype, encoder_id
    catalog.sqlite (+-wal)    ids, JSON metadata, attribute index, generation records (WAL mode)
    segments/
        seg-00000042.vec.npy      (rows, dim) int8 or float16, immutable once committed
        seg-00000042.scale.npy    (rows,) float32 per-item scale (int8 catalogs only)

**One commit point.** The current generation is the newest row of the SQLite table
``generations``: the ordered list of segment files (name, row count, sha256 of each file) and a
zlib-compressed bitmap of dead rows (tombstones). A vector's *row* is its position in the
concatenation of the generation's segments; ``items.row`` points into it. A write:

1. takes SQLite's write lock (``BEGIN IMMEDIATE``; a second writer waits ``lock_timeout``);
2. writes any new segment as ``*.tmp``, fsyncs it, renames it into place, fsyncs the folder;
3. changes ``items``/``attrs`` and inserts the new ``generations`` row in the same transaction,
   drops all but the two newest generation rows, and commits (``synchronous=FULL``);
4. after the commit, deletes segment files that no kept generation references (under the
   write lock again, skipped if another writer has it; every write and every writer's open
   also sweeps such files first, so files left by a crashed writer go away).

This is the ``CURRENT`` pointer of a log-structured store, except that the pointer switch and
the id/metadata changes are a single SQLite commit, so they can never disagree. A crash before
step 3's commit leaves the previous generation untouched (SQLite rolls the transaction back;
the new files are referenced by nothing and the next writer deletes them); a crash after it
leaves the new generation complete. Readers wrap every operation in one SQLite read
transaction (a WAL snapshot) and map the files of the generation that snapshot names, so they
see the old or the new generation, never a mix. Segment files are never modified; a segment
that a reader still maps may be unlinked (POSIX keeps the mapping valid), and a reader whose
snapshot names files already swept retries on a newer snapshot.

Segments are ``.npy`` files (version 1 header, little-endian, C order, no pickle). Before mapping
one, the header's dtype and shape are checked against the generation record and the file's
size against the header, so a truncated or swapped file is refused instead of mapped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import tokenize
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgerec.sdk.errors import CatalogError
from edgerec.sdk.files import HashingWriter, atomic_write, fsync_dir

__all__ = [
    "FORMAT_VERSION",
    "Generation",
    "Header",
    "Segment",
    "SegmentRecord",
    "VectorView",
]

FORMAT_NAME = "edgerec-catalog"
FORMAT_VERSION = 1
HEADER_FILE = "catalog.json"
MAX_DIM = 65_536  # a header claiming more is damaged (vectors are allocated from it)
DB_FILE = "catalog.sqlite"
SEGMENTS_DIR = "segments"
DTYPES = {"int8": np.dtype("<i1"), "float16": np.dtype("<f2")}
SCALE_DTYPE = np.dtype("<f4")
KEEP_GENERATIONS = 2

_DAMAGED = (
    "the catalog is damaged: run Catalog.verify() for a full report, then restore it from a "
    "backup or rebuild it (Catalog.create + add)"
)

SCHEMA = """
CREATE TABLE items (
    key  INTEGER PRIMARY KEY,
    id   TEXT NOT NULL UNIQUE,
    row  INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX items_row ON items(row);
CREATE TABLE attrs (
    key   TEXT NOT NULL,
    kind  INTEGER NOT NULL,
    value NOT NULL,
    item  INTEGER NOT NULL,
    PRIMARY KEY (key, kind, value, item)
) WITHOUT ROWID;
CREATE INDEX attrs_item ON attrs(item);
CREATE TABLE generations (
    gen        INTEGER PRIMARY KEY,
    created    REAL NOT NULL,
    count      INTEGER NOT NULL,
    total_rows INTEGER NOT NULL,
    segments   TEXT NOT NULL,
    dead       BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Header:
    """The immutable ``catalog.json`` of a catalog."""

    dim: int
    dtype: str
    encoder_id: str
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_NAME,
                "format_version": self.format_version,
                "dim": self.dim,
                "dtype": self.dtype,
                "encoder_id": self.encoder_id,
            },
            indent=2,
        )


def read_header(root: Path) -> Header:
    """Read and check ``catalog.json``; raise :class:`CatalogError` saying what to do."""
    path = root / HEADER_FILE
    if not root.is_dir():
        raise CatalogError(f"no catalog at {root}: build one with `edgerec catalog build "
                           f"--images PHOTOS --bundle BUNDLE --out {root}` (in Python: "
                           "edgerec.sdk.build_catalog or Catalog.create)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(
            f"{root} is not a catalog ({HEADER_FILE} is missing): pass the folder that "
            "`edgerec catalog build --out` (or Catalog.create) made"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:  # also non-UTF-8, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise CatalogError(f"{path} is unreadable ({reason}); {_DAMAGED}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise CatalogError(f"{path} is not an edgerec catalog header; {_DAMAGED}")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CatalogError(f"{path} has no integer format_version; {_DAMAGED}")
    if version > FORMAT_VERSION:
        raise CatalogError(
            f"the catalog at {root} has format_version {version}, newer than the "
            f"{FORMAT_VERSION} this edgerec reads: upgrade edgerec to open it"
        )
    dim, dtype, encoder_id = raw.get("dim"), raw.get("dtype"), raw.get("encoder_id")
    if (not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= MAX_DIM
            or not isinstance(dtype, str) or dtype not in DTYPES
            or not isinstance(encoder_id, str)):
        raise CatalogError(f"{path} has an invalid dim, dtype or encoder_id; {_DAMAGED}")
    return Header(dim=dim, dtype=dtype, encoder_id=encoder_id, format_version=version)


# --------------------------------------------------------------------------- durability


def write_npy(path: Path, array: np.ndarray) -> str:
    """Write ``array`` durably to ``path`` (:func:`edgerec.sdk.files.atomic_write`); return the
    sha256 of the bytes written. The caller fsyncs the folder once after all renames of a
    commit."""
    with atomic_write(path, sync_dir=False) as f:
        writer = HashingWriter(f)
        np.lib.format.write_array(writer, np.ascontiguousarray(array), version=(1, 0),
                                  allow_pickle=False)
    return writer.sha256.hexdigest()


def map_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Memory-map a ``.npy`` file read-only after checking its header and size.

    Raises :class:`FileNotFoundError` if the file is missing and :class:`CatalogError` if its
    header disagrees with ``dtype``/``shape`` or its size with its header.
    """
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, OSError, EOFError, SyntaxError, TypeError, LookupError,
                RecursionError, tokenize.TokenError) as exc:  # numpy parses the header text
            raise CatalogError(f"{path} has no valid .npy header ({str(exc)[:200]}); "
                               f"{_DAMAGED}") from None
        offset = f.tell()
        size = os.fstat(f.fileno()).st_size
    if got_dtype != dtype or tuple(got_shape) != tuple(shape) or fortran:
        raise CatalogError(
            f"{path} holds {got_dtype} {tuple(got_shape)} but the catalog expects {dtype} "
            f"{tuple(shape)}; {_DAMAGED}"
        )
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if size != expected:
        raise CatalogError(
            f"{path} is {size} bytes but its header needs {expected} (truncated or overwritten); "
            f"{_DAMAGED}"
        )
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    # a plain ndarray over the mapping (it keeps the map alive): np.memmap's own __getitem__
    # and __array_finalize__ cost more than the gather itself on a search's few hundred rows
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape).view(np.ndarray)


# --------------------------------------------------------------------------- generations


@dataclass(frozen=True)
class SegmentRecord:
    """One immutable segment as a generation lists it."""

    name: str
    rows: int
    vec_sha256: str
    scale_sha256: str | None

    def files(self) -> tuple[str, ...]:
        names = (f"{self.name}.vec.npy",)
        return names + ((f"{self.name}.scale.npy",) if self.scale_sha256 else ())


@dataclass(frozen=True, eq=False)
class Generation:
    """One committed state: its segments, its tombstones and its item count."""

    gen: int
    count: int
    segments: tuple[SegmentRecord, ...]
    dead: np.ndarray  # (total_rows,) bool, True where a row belongs to no item

    @property
    def total_rows(self) -> int:
        return int(self.dead.shape[0])


def encode_dead(dead: np.ndarray) -> bytes:
    return zlib.compress(np.packbits(dead).tobytes(), 1)


def load_generation(conn: sqlite3.Connection, gen: int | None = None) -> Generation:
    """Load generation ``gen`` (default: the newest) inside the caller's transaction."""
    if gen is None:
        row = conn.execute(
            "SELECT gen, count, total_rows, segments, dead FROM generations "
            "ORDER BY gen DESC LIMIT 1"
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT gen, count, total_rows, segments, dead FROM generations WHERE gen = ?",
            (gen,),
        ).fetchone()
    if row is None:
        raise CatalogError(f"the catalog database has no generation record; {_DAMAGED}")
    number, count, total, segments_json, blob = row
    try:
        segments = tuple(SegmentRecord(**s) for s in json.loads(segments_json))
        bits = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
        dead = np.unpackbits(bits, count=total).astype(bool)
    except (ValueError, TypeError, zlib.error) as exc:
        raise CatalogError(f"generation {number} record is malformed ({exc}); {_DAMAGED}") from None
    if sum(s.rows for s in segments) != total or dead.shape[0] != total:
        raise CatalogError(f"generation {number} record is inconsistent; {_DAMAGED}")
    return Generation(gen=number, count=count, segments=segments, dead=dead)


def insert_generation(
    conn: sqlite3.Connection,
    gen: int,
    count: int,
    segments: Iterable[SegmentRecord],
    dead: np.ndarray,
    created: float,
) -> None:
    """Record generation ``gen`` and drop all but the newest ``KEEP_GENERATIONS`` records."""
    segs = [dataclasses.asdict(s) for s in segments]
    conn.execute(
        "INSERT INTO generations (gen, created, count, total_rows, segments, dead) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (gen, created, count, int(dead.shape[0]), json.dumps(segs), encode_dead(dead)),
    )
    conn.execute("DELETE FROM generations WHERE gen <= ?", (gen - KEEP_GENERATIONS,))


def referenced_files(conn: sqlite3.Connection) -> set[str]:
    """Names of every segment file that a kept generation record references."""
    names: set[str] = set()
    for (segments_json,) in conn.execute("SELECT segments FROM generations"):
        for s in json.loads(segments_json):
            names.update(SegmentRecord(**s).files())
    return names


def remove_unreferenced(root: Path, keep: set[str]) -> int:
    """Delete files in ``segments/`` that are not in ``keep`` (stale or uncommitted); count."""
    folder = root / SEGMENTS_DIR
    removed = 0
    for entry in os.scandir(folder):
        if entry.is_file() and entry.name not in keep:
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    if removed:
        fsync_dir(folder)
    return removed


# --------------------------------------------------------------------------- mapped view


@dataclass(frozen=True, eq=False)
class Segment:
    """A mapped segment inside one generation: rows ``start .. start + rows`` of the view."""

    record: SegmentRecord
    start: int
    vectors: np.ndarray  # (rows, dim) int8 or float16, read-only, mapped from the file
    scales: np.ndarray | None  # (rows,) float32 for int8, else None
    dead: np.ndarray | None  # (rows,) bool, None when the segment has no dead rows
    decoded: np.ndarray | None = None  # (rows, dim) float32 int8 codes, small catalogs only

    @property
    def rows(self) -> int:
        return self.record.rows

    @property
    def stop(self) -> int:
        return self.start + self.record.rows


@dataclass(frozen=True, eq=False)
class VectorView:
    """The vectors of one generation, ready to search: an ordered tuple of mapped segments."""

    generation: Generation
    dim: int
    dtype: str
    segments: tuple[Segment, ...]

    @property
    def count(self) -> int:
        return self.generation.count

    @property
    def total_rows(self) -> int:
        return self.generation.total_rows

    def dequantize(self, rows: np.ndarray) -> np.ndarray:
        """Float32 vectors ``(len(rows), dim)`` of the given global rows (any order)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(self.segments) == 1:  # the common case: no segment lookup
            return _dequantize(self.segments[0], rows - self.segments[0].start)
        out = np.empty((rows.shape[0], self.dim), np.float32)
        starts = np.array([s.start for s in self.segments], dtype=np.int64)
        which = np.searchsorted(starts, rows, side="right") - 1
        for i in np.unique(which):
            seg = self.segments[int(i)]
            pick = np.flatnonzero(which == i)
            out[pick] = _dequantize(seg, rows[pick] - seg.start)
        return out


def _dequantize(seg: Segment, local: np.ndarray) -> np.ndarray:
    """Float32 vectors ``(len(local), dim)`` of ``seg``'s rows ``local``."""
    block = (seg.decoded[local] if seg.decoded is not None
             else seg.vectors[local].astype(np.float32))
    if seg.scales is not None:
        block *= seg.scales[local][:, None]
    return block

DECODED_BYTES = 16 << 20
"""The most float32 bytes of decoded int8 codes one open catalog keeps (16 MiB: e.g. 32,768
items at 128-d); larger catalogs decode per query, block by block."""


def map_generation(
    root: Path, header: Header, generation: Generation, cache: dict[str, tuple[Any, Any, Any]]
) -> VectorView:
    """Map every segment of ``generation`` (reusing ``cache`` by segment name).

    int8 segments also keep their codes as float32 (``Segment.decoded``, decoded once and
    cached with the mapping) while the view's decoded total stays within
    :data:`DECODED_BYTES`: the scan then skips its per-query int8 -> float32 conversion
    (same products, same scores)."""
    dtype = DTYPES[header.dtype]
    segments = []
    start = 0
    budget = DECODED_BYTES
    folder = root / SEGMENTS_DIR
    for rec in generation.segments:
        maps = cache.get(rec.name)
        size = rec.rows * header.dim * 4
        if maps is not None and maps[2] is None and header.dtype == "int8" and size <= budget:
            maps = None  # mapped before the budget allowed decoding it: decode now
        if maps is None:
            vectors = map_npy(folder / f"{rec.name}.vec.npy", dtype, (rec.rows, header.dim))
            scales = None
            if header.dtype == "int8":
                if not rec.scale_sha256:
                    raise CatalogError(f"segment {rec.name} has no scale file; {_DAMAGED}")
                scales = map_npy(folder / f"{rec.name}.scale.npy", SCALE_DTYPE, (rec.rows,))
            decoded = None
            if header.dtype == "int8" and size <= budget:
                decoded = np.asarray(vectors, np.float32)
                decoded.flags.writeable = False
            maps = cache[rec.name] = (vectors, scales, decoded)
        if maps[2] is not None:
            budget -= size
        dead = generation.dead[start:start + rec.rows]
        segments.append(Segment(rec, start, maps[0], maps[1], dead if dead.any() else None,
                                maps[2]))
        start += rec.rows
    names = {rec.name for rec in generation.segments}
    for name in [n for n in cache if n not in names]:
        del cache[name]
    return VectorView(generation, header.dim, header.dtype, tuple(segments))


# --------------------------------------------------------------------------- encoding


def encode_vectors(vectors: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Encode float32 ``(n, dim)`` vectors for storage.

    int8: symmetric per-item quantisation, ``scale = max|x| / 127`` (float32 ``(n,)``),
    ``code = round(x / scale)`` in [-127, 127]. float16: a plain cast (values must fit).
    """
    if dtype == "float16":
        if vectors.size and float(np.abs(vectors).max()) > float(np.finfo(np.float16).max):
            raise CatalogError(
                "vector values exceed the float16 range (65504): normalise the vectors or use "
                "a dtype='int8' catalog"
            )
        return vectors.astype(DTYPES["float16"]), None
    scales = (np.abs(vectors).max(axis=1) / np.float32(127.0)).astype(SCALE_DTYPE)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    codes = np.clip(np.rint(vectors / safe[:, None]), -127, 127).astype(DTYPES["int8"])
    return codes, scales


# --------------------------------------------------------------------------- attribute index

KIND_BOOL, KIND_NUMBER, KIND_TEXT = 1, 2, 3
_INT64 = (-(2**63), 2**63 - 1)


def attr_value(value: Any) -> tuple[int, Any] | None:
    """``(kind, sql value)`` for a filterable scalar, None for anything else (None, dicts)."""
    if isinstance(value, bool):
        return KIND_BOOL, int(value)
    if isinstance(value, int):
        return KIND_NUMBER, value if _INT64[0] <= value <= _INT64[1] else float(value)
    if isinstance(value, float):
        return KIND_NUMBER, value
    if isinstance(value, str):
        return KIND_TEXT, value
    return None


def attr_rows(item_key: int, meta: dict[str, Any]) -> list[tuple[str, int, Any, int]]:
    """Index rows for one item: each top-level scalar, and each scalar of a top-level list."""
    out = []
    for key, value in meta.items():
        for v in value if isinstance(value, list) else (value,):
            kv = attr_value(v)
            if kv is not None:
                out.append((key, kv[0], kv[1], item_key))
    return out
