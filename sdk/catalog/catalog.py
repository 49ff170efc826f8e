"""The on-device catalog cache: item vectors, ids and metadata, versioned by generation.

::

    with Catalog.create("shop.catalog", dim=128, encoder_id=bundle.encoder_id) as catalog:
        catalog.add(ids, vectors, [{"label": "shoes", "price": 39.0}, ...])
    catalog = Catalog.open("shop.catalog", readonly=True)
    hits = catalog.search(query, k=10, filters={"price": {"lt": 50}}, exclude=["sku-1"])

Vectors are stored int8 (symmetric, one float32 scale per item: ``max|x| / 127``) or float16,
in immutable memory-mapped ``.npy`` segments; ids, metadata (JSON objects), an index of
metadata scalars for filters, and the generation records live in SQLite (WAL). Every
``add``/``update``/``remove``/``compact`` is one atomic generation: a crash at any point leaves
the last committed generation intact, and readers see either the old or the new generation,
never a mix. The file layout and the commit protocol are described in
:mod:`edgerec.sdk.catalog.store`; how vectors are appended and compacted in
:mod:`edgerec.sdk.catalog.writer`; the search kernel and filter language in
:mod:`edgerec.sdk.catalog.scan`.

A catalog object is safe to share between threads (calls are serialised); any number of
processes may read while one writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from edgerec.sdk.catalog import store
from edgerec.sdk.catalog.checks import (
    check_ids,
    check_metadata,
    check_queries,
    check_vectors,
    dim_and_encoder,
    find_problems,
    preview,
    sqlite_error,
)
from edgerec.sdk.catalog.filters import check_filter_keys, compile_filters
from edgerec.sdk.catalog.matches import BatchMatches, Matches, make_matches
from edgerec.sdk.catalog.scan import exact_top_k, mmr_select
from edgerec.sdk.catalog.store import Header, VectorView
from edgerec.sdk.catalog.writer import GenerationWriter
from edgerec.sdk.errors import CatalogError, EncoderMismatchError
from edgerec.sdk.files import fsync_dir

__all__ = ["Catalog", "CatalogInfo", "CatalogItem", "VectorDType"]

MMR_POOL_FACTOR = 5
MMR_MIN_POOL = 50
_FILTER_CACHE_SIZE = 16
_SQL_CHUNK = 500


class VectorDType(str, Enum):
    """How a catalog stores its vectors."""

    INT8 = "int8"  # int8 codes + one float32 scale per item (1 byte per dimension)
    FLOAT16 = "float16"  # IEEE half precision (2 bytes per dimension)


@dataclass(frozen=True)
class CatalogInfo:
    """A summary of a catalog's current generation. ``bytes_on_disk`` counts every file."""

    path: Path
    count: int
    dim: int
    dtype: str
    generation: int
    encoder_id: str
    format_version: int
    bytes_on_disk: int
    segments: int
    dead_rows: int


@dataclass(frozen=True)
class CatalogItem:
    """One item: ``vector`` is float32 ``(dim,)`` (dequantised, read-only)."""

    id: str
    vector: np.ndarray
    metadata: dict[str, Any]


_TOKEN = object()


class Catalog:
    """A catalog directory opened for reading (``readonly=True``) or reading and writing.

    Make one with :meth:`create` or :meth:`open`; close it with :meth:`close` or a ``with``
    block. Writers take SQLite's write lock for the duration of each change; a second writer
    waits up to ``lock_timeout`` seconds, then gets :class:`CatalogLockedError`.
    """

    def __init__(self, token: object, root: Path, header: Header, conn: sqlite3.Connection,
                 readonly: bool, lock_timeout: float) -> None:
        if token is not _TOKEN:
            raise TypeError("use Catalog.create(...) or Catalog.open(...)")
        self._root = root
        self._header = header
        self._conn: sqlite3.Connection | None = conn
        self._readonly = readonly
        self._lock_timeout = lock_timeout
        self._mutex = threading.RLock()
        self._maps: dict[str, tuple[Any, Any, Any]] = {}
        self._view: VectorView | None = None
        self._filter_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        bundle: Any = None,
        *,
        dim: int | None = None,
        encoder_id: str | None = None,
        dtype: str | VectorDType = VectorDType.INT8,
        lock_timeout: float = 10.0,
    ) -> Catalog:
        """Create an empty catalog at ``path`` (a new or empty folder) and open it for writing.

        ``dim`` and ``encoder_id`` come from the arguments or from ``bundle`` (any object with
        ``.embedding_dim`` and ``.encoder_id``). The folder appears complete or not at all.
        """
        dim, encoder_id = dim_and_encoder(bundle, dim, encoder_id)
        try:
            dtype = VectorDType(dtype).value
        except ValueError:
            raise CatalogError(
                f"dtype must be one of {[d.value for d in VectorDType]}, got {dtype!r}"
            ) from None
        root = Path(path)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise CatalogError(
                f"{root} already exists and is not an empty folder: open it with "
                "Catalog.open, or create the catalog at a new path"
            )
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = root.parent / f".{root.name}.creating-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            (tmp / store.SEGMENTS_DIR).mkdir(parents=True)
            header = Header(dim=dim, dtype=dtype, encoder_id=encoder_id)
            with open(tmp / store.HEADER_FILE, "w", encoding="utf-8") as f:
                f.write(header.to_json())
                f.flush()
                os.fsync(f.fileno())
            conn = sqlite3.connect(tmp / store.DB_FILE, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(store.SCHEMA)
                conn.execute("BEGIN IMMEDIATE")
                store.insert_generation(conn, 0, 0, [], np.zeros(0, bool), time.time())
                conn.execute("COMMIT")
            finally:
                conn.close()
            fsync_dir(tmp / store.SEGMENTS_DIR)
            fsync_dir(tmp)
            os.rename(tmp, root)
            fsync_dir(root.parent)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CatalogError(f"could not create a catalog at {root}: {exc}") from exc
        return cls.open(root, lock_timeout=lock_timeout)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, readonly: bool = False, lock_timeout: float = 10.0
    ) -> Catalog:
        """Open an existing catalog; cheap (maps files, reads no vectors).

        ``readonly=True`` opens SQLite read-only and refuses every change. A writer's open
        also deletes files that a crashed writer left behind, unless a writer is active.
        """
        root = Path(path)
        header = store.read_header(root)
        db = root / store.DB_FILE
        if not db.is_file():
            raise CatalogError(f"{db} is missing; {store._DAMAGED}")
        uri = f"file:{urllib.parse.quote(str(db.resolve()))}?mode={'ro' if readonly else 'rw'}"
        if readonly and not os.access(root, os.W_OK):
            # Read-only media: SQLite cannot create the WAL index, and nothing can change it.
            uri += "&immutable=1"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=lock_timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open {db} ({exc}); {store._DAMAGED}") from exc
        catalog = cls(_TOKEN, root, header, conn, readonly, lock_timeout)
        try:
            if readonly:
                conn.execute("PRAGMA query_only=1")
            else:
                conn.execute("PRAGMA synchronous=FULL")
                catalog._collect_garbage()
            with catalog._reading():
                pass
        except BaseException:
            catalog.close()
            raise
        return catalog

    def close(self) -> None:
        """Release the database and the mapped files. Safe to call more than once."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._view = None
            self._maps.clear()
            self._filter_cache.clear()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self._readonly else "writable")
        return f"Catalog({str(self._root)!r}, dim={self.dim}, dtype={self.dtype!r}, {state})"

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        return self._root

    @property
    def dim(self) -> int:
        return self._header.dim

    @property
    def dtype(self) -> str:
        return self._header.dtype

    @property
    def encoder_id(self) -> str:
        return self._header.encoder_id

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def generation(self) -> int:
        """Number of the newest committed generation (re-read on each call)."""
        with self._reading() as view:
            return view.generation.gen

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        with self._reading() as view:
            return view.count

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        with self._reading():
            sql = "SELECT 1 FROM items WHERE id = ?"
            return self._db().execute(sql, (item_id,)).fetchone() is not None

    def __iter__(self) -> Iterator[str]:
        """The ids of one generation, in insertion order."""
        with self._reading():
            ids = [r[0] for r in self._db().execute("SELECT id FROM items ORDER BY key")]
        return iter(ids)

    def get(self, item_id: str) -> CatalogItem:
        """The item's float32 vector ``(dim,)`` and metadata; :class:`CatalogError` if unknown."""
        with self._reading() as view:
            row = self._db().execute(
                "SELECT row, meta FROM items WHERE id = ?", (item_id,)
            ).fetchone()
            if row is None:
                raise CatalogError(f"no item {item_id!r} in the catalog at {self._root}")
            vector = view.dequantize(np.array([row[0]]))[0]
        vector.flags.writeable = False
        return CatalogItem(item_id, vector, json.loads(row[1]))

    def vectors(self, ids: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
        """The float32 vectors ``(n, dim)`` of those of ``ids`` that are in the catalog, and
        those ids (in the order given; repeats kept). Unknown ids are left out, not an error:
        compare the ids returned with the ids asked for. One query, one snapshot."""
        ids = check_ids(ids, "ids", allow_duplicates=True)
        with self._reading() as view:
            rows = self._lookup(list(dict.fromkeys(ids)))
            found = tuple(i for i in ids if i in rows)
            vectors = view.dequantize(np.array([rows[i] for i in found], dtype=np.int64))
        return found, vectors

    def info(self) -> CatalogInfo:
        with self._reading() as view:
            gen = view.generation
        size = sum(
            p.stat().st_size for p in self._root.rglob("*") if p.is_file()
        )
        return CatalogInfo(
            path=self._root, count=gen.count, dim=self.dim, dtype=self.dtype,
            generation=gen.gen, encoder_id=self.encoder_id,
            format_version=self._header.format_version, bytes_on_disk=size,
            segments=len(gen.segments), dead_rows=int(gen.dead.sum()),
        )

    def verify(self) -> None:
        """Re-check the current generation end to end; raise :class:`CatalogError` if damaged.

        Checks the SQLite file, every segment's header, size and sha256, that item rows are
        unique, live and in range, that the item count matches the generation, and that the
        metadata is valid JSON. Reads every vector once (slow on large catalogs).
        """
        with self._reading() as view:
            problems = find_problems(self._root, self._db(), view)
        if problems:
            raise CatalogError(
                f"the catalog at {self._root} (generation {view.generation.gen}) failed "
                f"verification: {'; '.join(problems)}. Restore it from a backup or rebuild it "
                "(Catalog.create + add)."
            )

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: np.ndarray,
        k: int = 10,
        *,
        filters: Mapping[str, Any] | None = None,
        exclude: Iterable[str] | None = None,
        diversity: float | None = None,
        encoder_id: str | None = None,
    ) -> Matches | BatchMatches:
        """Exact top-``k`` items by inner product with ``query``.

        ``query``: float32 ``(dim,)`` -> :class:`Matches`, or ``(Q, dim)`` ->
        :class:`BatchMatches`. ``filters``: metadata conditions (see
        :func:`edgerec.sdk.catalog.filters.compile_filters`), e.g. ``{"label": {"in": ["shoes"]},
        "price": {"lt": 50}, "in_stock": True}``; a positive condition on a key no item has
        raises :class:`~edgerec.sdk.errors.UnknownFilterKeyError` naming the keys items have.
        ``exclude``: ids never returned. ``diversity``: MMR trade-off in [0, 1] over a pool of
        ``max(5k, 50)`` candidates (0 or None: plain relevance order). ``encoder_id``: if given,
        must be the catalog's.
        """
        self._check_encoder(encoder_id)
        queries, single = check_queries(query, self.dim)
        _check_k(k)
        if diversity is not None and not (
            isinstance(diversity, (int, float))
            and not isinstance(diversity, bool)
            and 0.0 <= diversity <= 1.0
        ):
            raise CatalogError(f"diversity must be a number in [0, 1] or None, got {diversity!r}")
        excluded = [] if exclude is None else check_ids(exclude, "exclude", allow_duplicates=True)
        mmr = bool(diversity)
        pool = max(int(k) * MMR_POOL_FACTOR, MMR_MIN_POOL) if mmr else int(k)
        with self._reading() as view:
            rows, scores = self._exact_top(view, queries, pool, filters, excluded)
            if mmr:
                for i, (r, s) in enumerate(zip(rows, scores)):
                    picks = mmr_select(s, view.dequantize(r), int(k), float(diversity))
                    rows[i], scores[i] = r[picks], s[picks]
            described = self._describe(np.concatenate(rows) if rows else np.zeros(0, np.int64))
        results = tuple(
            make_matches(
                np.array([described[x][0] for x in r], dtype=str), s,
                tuple(json.loads(described[x][1]) for x in r),
            )
            for r, s in zip(rows, scores)
        )
        return results[0] if single else BatchMatches(results)

    def search_ids(
        self,
        query: np.ndarray,
        k: int = 10,
        *,
        filters: Mapping[str, Any] | None = None,
        exclude: Iterable[str] | None = None,
        encoder_id: str | None = None,
    ) -> tuple[tuple[str, ...], np.ndarray]:
        """:meth:`search` of one ``(dim,)`` query without the metadata: the ids of the exact
        top-``k`` (best first) and their float32 scores ``(n,)``. For callers that rank the
        hits further and read the metadata of the few they return (:meth:`metadata_of`)."""
        with self._reading() as view:
            rows, scores = self._top_rows(view, query, k, filters, exclude, encoder_id)
            return self._ids_at(rows), scores

    def search_rows(
        self,
        query: np.ndarray,
        k: int = 10,
        *,
        filters: Mapping[str, Any] | None = None,
        exclude: Iterable[str] | None = None,
        encoder_id: str | None = None,
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """:meth:`search_ids` giving storage rows: the generation searched, the rows ``(n,)``
        int64 of the exact top-``k`` (best first) and their float32 scores ``(n,)``. The rows
        name items through :meth:`item_rows` of the same generation only."""
        with self._reading() as view:
            rows, scores = self._top_rows(view, query, k, filters, exclude, encoder_id)
            return view.generation.gen, rows, scores

    def _top_rows(self, view: VectorView, query: np.ndarray, k: int,
                  filters: Mapping[str, Any] | None, exclude: Iterable[str] | None,
                  encoder_id: str | None) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-``k`` storage rows and float32 scores of one query (checked)."""
        self._check_encoder(encoder_id)
        queries, single = check_queries(query, self.dim)
        if not single:
            raise CatalogError("search_ids and search_rows take one query (dim,); use search "
                               "for a batch")
        _check_k(k)
        excluded = [] if exclude is None else check_ids(exclude, "exclude", allow_duplicates=True)
        rows, scores = self._exact_top(view, queries, int(k), filters, excluded)
        return np.asarray(rows[0], np.int64), np.asarray(scores[0], np.float32)

    def _exact_top(self, view: VectorView, queries: np.ndarray, k: int,
                   filters: Mapping[str, Any] | None, excluded: Sequence[str]
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """:func:`exact_top_k` of ``queries`` over the rows ``filters`` allow, without the
        ``excluded`` ids (the one search :meth:`search` and :meth:`_top_rows` share)."""
        no_filter = filters is None or (isinstance(filters, Mapping) and not filters)
        allowed = None if no_filter else self._filter_rows(filters, view)
        banned = np.unique(list(self._lookup(excluded).values())) if excluded else None
        return exact_top_k(view, queries, k, allowed=allowed, banned=banned)

    def item_rows(self) -> tuple[int, tuple[str, ...], np.ndarray]:
        """One snapshot's generation, ids (insertion order, like iterating the catalog) and
        their storage rows ``(n,)`` int64, for :meth:`vectors_at`."""
        with self._reading() as view:
            pairs = self._db().execute("SELECT id, row FROM items ORDER BY key").fetchall()
            gen = view.generation.gen
        ids = tuple(i for i, _ in pairs)
        return gen, ids, np.fromiter((r for _, r in pairs), np.int64, len(pairs))

    def vectors_at(self, rows: np.ndarray, generation: int) -> np.ndarray | None:
        """Float32 vectors ``(len(rows), dim)`` of storage ``rows`` read by
        :meth:`item_rows` at ``generation``; None when the catalog has moved to another
        generation since (rows may then name other items: read :meth:`item_rows` again)."""
        with self._reading() as view:
            if view.generation.gen != generation:
                return None
            return view.dequantize(np.asarray(rows, np.int64))

    def _ids_at(self, rows: np.ndarray) -> tuple[str, ...]:
        """The ids of storage ``rows`` (in that order), without their metadata."""
        found: dict[int, str] = {}
        unique = np.unique(rows).tolist()
        for i in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[i:i + _SQL_CHUNK]
            sql = f"SELECT row, id FROM items WHERE row IN ({', '.join('?' * len(chunk))})"
            found.update(self._db().execute(sql, chunk))
        return tuple(found[int(r)] for r in rows)

    def metadata_of(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The metadata of those of ``ids`` that are in the catalog (one snapshot; unknown ids
        are left out), by id."""
        ids = list(dict.fromkeys(check_ids(ids, "ids", allow_duplicates=True)))
        out: dict[str, dict[str, Any]] = {}
        with self._reading():
            for i in range(0, len(ids), _SQL_CHUNK):
                chunk = ids[i:i + _SQL_CHUNK]
                sql = f"SELECT id, meta FROM items WHERE id IN ({', '.join('?' * len(chunk))})"
                out.update((k, json.loads(m)) for k, m in self._db().execute(sql, chunk))
        return out

    def filter_ids(self, filters: Mapping[str, Any]) -> frozenset[str]:
        """The ids of the items that match ``filters`` (the language of :meth:`search`)."""
        with self._reading() as view:
            rows = self._filter_rows(filters, view)
            return frozenset(i for i, _ in self._describe(rows).values())

    def _filter_rows(self, filters: Mapping[str, Any], view: VectorView) -> np.ndarray:
        sql, params = compile_filters(filters)
        key = json.dumps([view.generation.gen, sql, params], default=repr)
        rows = self._filter_cache.get(key)
        if rows is None:
            check_filter_keys(filters, self._db())  # a key no item has: an error, not nothing
            rows = np.fromiter((r for (r,) in self._db().execute(sql, params)), np.int64)
            rows.flags.writeable = False
            self._filter_cache[key] = rows
            while len(self._filter_cache) > _FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        else:
            self._filter_cache.move_to_end(key)
        return rows

    def _lookup(self, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for i in range(0, len(ids), _SQL_CHUNK):
            chunk = list(ids[i:i + _SQL_CHUNK])
            sql = f"SELECT id, row FROM items WHERE id IN ({', '.join('?' * len(chunk))})"
            found.update(self._db().execute(sql, chunk))
        return found

    def _describe(self, rows: np.ndarray) -> dict[int, tuple[str, str]]:
        out: dict[int, tuple[str, str]] = {}
        unique = np.unique(rows).tolist()
        for i in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[i:i + _SQL_CHUNK]
            sql = f"SELECT row, id, meta FROM items WHERE row IN ({', '.join('?' * len(chunk))})"
            out.update((r, (id_, meta)) for r, id_, meta in self._db().execute(sql, chunk))
        return out

    # ------------------------------------------------------------------ writing

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        encoder_id: str | None = None,
    ) -> None:
        """Add new items: ``ids`` (n str, new and distinct), ``vectors`` float32 ``(n, dim)``
        (finite), ``metadata`` n JSON-serialisable dicts (or None). One atomic generation."""
        self._check_writable()
        self._check_encoder(encoder_id)
        ids = check_ids(ids, "ids")
        if not ids:
            return
        codes, scales = store.encode_vectors(check_vectors(vectors, ids, self.dim), self.dtype)
        metas = check_metadata(metadata, ids)
        with self._writing() as w:
            present = w.lookup(ids)
            if present:
                raise CatalogError(
                    f"{len(present)} ids are already in the catalog ({preview(present)}): use "
                    "update() to change existing items; nothing was added"
                )
            rows = w.append(codes, scales)
            w.insert_items(w.new_keys(len(ids)), ids, rows, metas)

    def update(
        self,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        encoder_id: str | None = None,
    ) -> None:
        """Replace the vectors and/or the metadata (whole dicts) of existing items, atomically."""
        self._check_writable()
        self._check_encoder(encoder_id)
        if vectors is None and metadata is None:
            raise CatalogError("update() needs vectors, metadata or both")
        ids = check_ids(ids, "ids")
        if not ids:
            return
        encoded = None
        if vectors is not None:
            encoded = store.encode_vectors(check_vectors(vectors, ids, self.dim), self.dtype)
        metas = check_metadata(metadata, ids) if metadata is not None else None
        with self._writing() as w:
            keys = self._existing_keys(w, ids)
            if encoded is not None:
                w.kill_rows(np.array([w_row for _, w_row in keys.values()], dtype=np.int64))
                rows = w.append(*encoded)
                w.set_rows([keys[i][0] for i in ids], rows)
            if metas is not None:
                w.set_metadata([keys[i][0] for i in ids], metas)

    def remove(self, ids: Sequence[str]) -> None:
        """Remove existing items (all or nothing); unknown ids raise :class:`CatalogError`."""
        self._check_writable()
        ids = check_ids(ids, "ids")
        if not ids:
            return
        with self._writing() as w:
            keys = self._existing_keys(w, ids)
            w.kill_rows(np.array([row for _, row in keys.values()], dtype=np.int64))
            w.delete_items([key for key, _ in keys.values()])

    def compact(self) -> None:
        """Rewrite all live vectors into one segment, dropping removed rows (one generation)."""
        self._check_writable()
        with self._writing() as w:
            w.compact()

    def _existing_keys(self, w: GenerationWriter, ids: list[str]) -> dict[str, tuple[int, int]]:
        found = w.lookup(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise CatalogError(
                f"{len(missing)} ids are not in the catalog ({preview(missing)}); add() them "
                "first; nothing was changed"
            )
        return found

    # ------------------------------------------------------------------ transactions

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CatalogError(f"the catalog at {self._root} is closed; open it again")
        return self._conn

    def _check_writable(self) -> None:
        self._db()
        if self._readonly:
            raise CatalogError(
                f"the catalog at {self._root} was opened read-only; open it with "
                "readonly=False to change it"
            )

    def _check_encoder(self, encoder_id: str | None) -> None:
        if encoder_id is not None and encoder_id != self.encoder_id:
            raise EncoderMismatchError(
                f"the catalog at {self._root} was built with encoder {self.encoder_id!r} but "
                f"these vectors or queries come from {encoder_id!r}: rebuild the catalog with this "
                "bundle, or use the bundle that built it"
            )

    def _collect_garbage(self) -> None:
        """Delete segment files no kept generation references (superseded, or left by a
        crashed writer), unless another writer holds the lock right now (it will do it)."""
        conn = self._db()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._lock_timeout * 1000)}")
        try:
            store.remove_unreferenced(self._root, store.referenced_files(conn))
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[VectorView]:
        """One consistent snapshot: the newest generation's view plus a SQLite read txn."""
        with self._mutex:
            conn = self._db()
            for attempt in range(3):
                try:
                    conn.execute("BEGIN")
                    (gen,) = conn.execute("SELECT MAX(gen) FROM generations").fetchone()
                    if self._view is None or self._view.generation.gen != gen:
                        generation = store.load_generation(conn, gen)
                        self._view = store.map_generation(
                            self._root, self._header, generation, self._maps
                        )
                        self._filter_cache.clear()
                except FileNotFoundError as exc:
                    # A writer may have dropped this snapshot's files since: retry on a new one.
                    conn.execute("ROLLBACK")
                    if attempt == 2:
                        raise CatalogError(
                            f"segment file {exc.filename} is missing; {store._DAMAGED}"
                        ) from None
                    continue
                except BaseException as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise sqlite_error(exc, self._root) from None
                try:
                    yield self._view
                except sqlite3.Error as exc:
                    raise sqlite_error(exc, self._root) from None
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
                return

    @contextmanager
    def _writing(self) -> Iterator[GenerationWriter]:
        """One write transaction producing exactly one new generation, or nothing."""
        with self._mutex:
            self._check_writable()
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise sqlite_error(exc, self._root) from None
            writer = None
            try:
                store.remove_unreferenced(self._root, store.referenced_files(conn))
                generation = store.load_generation(conn)
                view = store.map_generation(self._root, self._header, generation, self._maps)
                writer = GenerationWriter(self._root, self._header, conn, view)
                yield writer
                writer.finish()
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if writer is not None:
                    writer.discard_files()
                if isinstance(exc, (sqlite3.Error, FileNotFoundError)):
                    raise sqlite_error(exc, self._root) from None
                raise
            finally:
                self._view = None
            with contextlib.suppress(OSError, sqlite3.Error):
                self._collect_garbage()  # the commit stands even if this fails


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CatalogError(f"k must be a positive int, got {k!r}")
