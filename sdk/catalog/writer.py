"""Builds the next generation of a catalog inside one SQLite write transaction.

:class:`GenerationWriter` is used by :class:`edgerec.sdk.catalog.catalog.Catalog` between its
``BEGIN IMMEDIATE`` and ``COMMIT`` (see :mod:`edgerec.sdk.catalog.store` for the protocol).

Vectors live in immutable segments. New vectors never rewrite the whole catalog: they are
written, together with the live rows of the trailing segments that are at most twice as big
as what is being merged, as one new segment (a binary-counter merge: O(log n) segments, each
row rewritten O(log n) times over its life). Removed and re-vectored rows become tombstones in
the generation's dead bitmap; when more than a quarter of the rows are dead, the whole catalog
is rewritten into one segment (compaction). Rewrites renumber the moved rows in ``items.row``
in the same transaction.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgerec.sdk.catalog import store
from edgerec.sdk.catalog.store import Generation, Header, Segment, SegmentRecord, VectorView
from edgerec.sdk.errors import CatalogError
from edgerec.sdk.files import fsync_dir

__all__ = ["GenerationWriter"]

COMPACT_DEAD_FRACTION = 0.25
_SQL_CHUNK = 500


class GenerationWriter:
    """Accumulates one commit's changes; :meth:`finish` records the new generation.

    The caller holds the write transaction; nothing here commits or rolls back.
    """

    def __init__(self, root: Path, header: Header, conn: Any, view: VectorView) -> None:
        self._root = root
        self._header = header
        self._conn = conn
        self.base = view.generation
        self.number = view.generation.gen + 1
        self._segments: list[Segment] = list(view.segments)
        self._dead = view.generation.dead.copy()
        self._count = view.generation.count
        self.written: list[Path] = []

    # ----------------------------------------------------------------- items

    def lookup(self, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``{id: (key, row)}`` for those of ``ids`` that are in the catalog."""
        found: dict[str, tuple[int, int]] = {}
        for i in range(0, len(ids), _SQL_CHUNK):
            chunk = ids[i:i + _SQL_CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT id, key, row FROM items WHERE id IN ({marks})"
            for id_, key, row in self._conn.execute(sql, chunk):
                found[id_] = (key, row)
        return found

    def new_keys(self, n: int) -> list[int]:
        (top,) = self._conn.execute("SELECT COALESCE(MAX(key), 0) FROM items").fetchone()
        return list(range(top + 1, top + 1 + n))

    def insert_items(
        self, keys: list[int], ids: Sequence[str], rows: np.ndarray,
        metadata: Sequence[tuple[str, dict[str, Any]]],
    ) -> None:
        self._conn.executemany(
            "INSERT INTO items (key, id, row, meta) VALUES (?, ?, ?, ?)",
            zip(keys, ids, rows.tolist(), (text for text, _ in metadata)),
        )
        self._index(keys, metadata)
        self._count += len(keys)

    def set_metadata(self, keys: list[int], metadata: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self._conn.executemany(
            "UPDATE items SET meta = ? WHERE key = ?", ((t, k) for k, (t, _) in zip(keys, metadata))
        )
        self._conn.executemany("DELETE FROM attrs WHERE item = ?", ((k,) for k in keys))
        self._index(keys, metadata)

    def set_rows(self, keys: list[int], rows: np.ndarray) -> None:
        self._conn.executemany("UPDATE items SET row = ? WHERE key = ?", zip(rows.tolist(), keys))

    def delete_items(self, keys: list[int]) -> None:
        self._conn.executemany("DELETE FROM items WHERE key = ?", ((k,) for k in keys))
        self._conn.executemany("DELETE FROM attrs WHERE item = ?", ((k,) for k in keys))
        self._count -= len(keys)

    def _index(self, keys: list[int], metadata: Sequence[tuple[str, dict[str, Any]]]) -> None:
        rows = (r for k, (_, m) in zip(keys, metadata) for r in store.attr_rows(k, m))
        self._conn.executemany(
            "INSERT OR IGNORE INTO attrs (key, kind, value, item) VALUES (?, ?, ?, ?)", rows
        )

    # ----------------------------------------------------------------- vectors

    def kill_rows(self, rows: np.ndarray) -> None:
        """Mark rows as tombstones (their items are being removed or re-vectored)."""
        self._dead[np.asarray(rows, dtype=np.int64)] = True

    def append(self, codes: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
        """Store encoded vectors; return their rows ``(n,)`` int64 in the new generation."""
        live = [int(s.rows - self._dead[s.start:s.stop].sum()) for s in self._segments]
        if self._needs_compaction(extra=codes.shape[0]):
            first = 0
        else:
            first, acc = len(live), codes.shape[0]
            while first > 0 and live[first - 1] <= 2 * acc:
                acc += live[first - 1]
                first -= 1
        return self._rewrite(first, codes, scales)

    def compact(self) -> None:
        """Rewrite every live row into one segment and drop all tombstones."""
        self._rewrite(0, None, None)

    def _needs_compaction(self, extra: int = 0) -> bool:
        dead = int(self._dead.sum())
        return dead > 0 and dead > COMPACT_DEAD_FRACTION * (self._dead.shape[0] + extra)

    def _rewrite(
        self, first: int, codes: np.ndarray | None, scales: np.ndarray | None
    ) -> np.ndarray:
        """Replace segments ``first..`` (live rows only) plus new vectors by one segment."""
        segs = self._segments
        start = segs[first].start if first < len(segs) else int(self._dead.shape[0])
        old_live = np.flatnonzero(~self._dead[start:]) + start
        parts_v, parts_s = [], []
        for seg in segs[first:]:
            local = np.flatnonzero(~self._dead[seg.start:seg.stop])
            if local.size:
                parts_v.append(np.asarray(seg.vectors[local]))
                if seg.scales is not None:
                    parts_s.append(np.asarray(seg.scales[local]))
        if codes is not None and codes.shape[0]:
            parts_v.append(codes)
            if scales is not None:
                parts_s.append(scales)
        kept = segs[:first]
        n_rows = sum(p.shape[0] for p in parts_v)
        if n_rows:
            vectors = np.concatenate(parts_v)
            scale_arr = np.concatenate(parts_s) if parts_s else None
            kept.append(Segment(self._write_segment(vectors, scale_arr), start, vectors,
                                scale_arr, None))
        if old_live.size and old_live[-1] != start + old_live.size - 1:
            self._renumber(old_live, start)
        self._segments = kept
        self._dead = np.concatenate([self._dead[:start], np.zeros(n_rows, bool)])
        n_new = n_rows - old_live.size
        return np.arange(start + old_live.size, start + old_live.size + n_new, dtype=np.int64)

    def _renumber(self, old_live: np.ndarray, start: int) -> None:
        """Move the items whose rows are ``old_live`` to ``start, start + 1, ...``."""
        pairs = self._conn.execute("SELECT key, row FROM items WHERE row >= ?", (start,)).fetchall()
        if not pairs:
            return
        keys, rows = (np.array(col, dtype=np.int64) for col in zip(*pairs))
        pos = np.minimum(np.searchsorted(old_live, rows), old_live.size - 1)
        moved = (old_live[pos] == rows) & (start + pos != rows)
        self._conn.executemany(
            "UPDATE items SET row = ? WHERE key = ?",
            zip((start + pos[moved]).tolist(), keys[moved].tolist()),
        )

    def _write_segment(self, vectors: np.ndarray, scales: np.ndarray | None) -> SegmentRecord:
        name = f"seg-{self.number:08d}-{len(self.written)}"
        folder = self._root / store.SEGMENTS_DIR
        vec_path = folder / f"{name}.vec.npy"
        self.written.append(vec_path)
        vec_sha = store.write_npy(vec_path, vectors)
        scale_sha = None
        if scales is not None:
            scale_path = folder / f"{name}.scale.npy"
            self.written.append(scale_path)
            scale_sha = store.write_npy(scale_path, scales.astype(store.SCALE_DTYPE))
        return SegmentRecord(name, int(vectors.shape[0]), vec_sha, scale_sha)

    # ----------------------------------------------------------------- commit

    def finish(self) -> Generation:
        """Compact if due, make new files durable and record the generation (not committed)."""
        if self._needs_compaction():
            self.compact()
        live = int(self._dead.shape[0] - self._dead.sum())
        if live != self._count:
            raise CatalogError(
                f"internal error: generation {self.number} would hold {live} live rows for "
                f"{self._count} items; nothing was written. Please report this as a bug."
            )
        if self.written:
            fsync_dir(self._root / store.SEGMENTS_DIR)
        records = [s.record for s in self._segments]
        store.insert_generation(self._conn, self.number, self._count, records, self._dead,
                                time.time())
        return Generation(self.number, self._count, tuple(records), self._dead)

    def discard_files(self) -> None:
        """Delete the files this writer made (after a rollback)."""
        for path in self.written:
            for p in (path, path.with_name(path.name + ".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
