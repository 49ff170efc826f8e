"""A faster exact scan for int8 catalogs on ONNX Runtime's integer matrix product (optional).

numpy has no int8 matrix product, so :mod:`edgerec.sdk.catalog.scan` decodes int8 codes to
float32 and calls BLAS. ONNX Runtime's ``MatMulInteger`` (MLAS;
:mod:`edgerec.runtimes.int8_matmul`) runs it near memory speed, but which way round is fast
depends on the CPU: on an AVX2 machine a one-row ``uint8 (1, D) x int8 (D, N)`` product was
fast and ``(N, D) x (D, 1)`` or a zero point took a much slower path; on an AVX-512 VNNI Xeon
the codes as rows with a zero point were the faster (``benchmarks/int8_orientation.py``).
So this kernel keeps, per mapped segment and in memory, a copy of the codes in one of two
**layouts** (:class:`SearchLayout`; one more byte per dimension and item, plus 4 bytes per
item for ``columns``), built on the first search and dropped with the mapping; ``auto`` (the
default) times both on a synthetic block of the kernel's own shape (at most 8 MB) once per
process and dimension and keeps the faster (``columns`` unless ``rows`` takes under 0.8x its
time). The kernel answers with a short
list of candidate rows that :func:`edgerec.sdk.catalog.scan.exact_top_k` then scores exactly
with the numpy kernel, so the results are the numpy kernel's whichever layout runs:

1. The query is quantized: ``s = max|q| / 63``, ``q^ = rint(q / s)`` in [-63, 63].
   ``columns`` feeds it as ``u = q^ + 64`` in [1, 127] against the transposed codes in
   [-128, 127] and removes the offset as ``64 * sum(c)``, precomputed per item; ``rows`` feeds
   the codes as ``c + 128`` in [0, 255] with zero point 128 against ``q^`` as int8. Either
   way any pair of products fits int16 (127 * 128 * 2 and 255 * 63 * 2 are below 32767), so
   MLAS's AVX2 ``vpmaddubsw`` cannot saturate and the int32 products are exact.
2. ``S'_i = scale_i (q^ . c_i)`` comes out of one small ONNX graph per block; ``s * S'_i``
   differs from the exact score ``scale_i (q . c_i)`` by at most ``||x_i|| ||q - s q^||``
   (Cauchy-Schwarz, ``x_i`` the dequantised item), plus a float rounding allowance. With
   ``n_c`` the largest ``||x_i||`` of a block this gives each item a lower and an upper bound.
3. A row can be in the top k only if its upper bound reaches the k-th best lower bound. Those
   rows (typically k plus a few dozen) are the candidates; if they would exceed a quarter of
   the catalog the kernel gives up and the numpy kernel scans everything.

Use: ``EDGEREC_SEARCH_KERNEL=auto|numpy|onnxruntime`` or :func:`set_search_kernel`, and
``EDGEREC_SEARCH_LAYOUT=auto|columns|rows`` or :func:`set_search_layout`. ``auto``
(the default) uses ONNX Runtime for int8 catalogs of at least ``MIN_ROWS`` rows when
``onnxruntime`` can be imported, else numpy; ``onnxruntime`` raises
:class:`RuntimeUnavailableError` when it cannot be imported. Nothing here is imported or built
before the first search that uses it. Float16 catalogs always use numpy.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from edgerec.runtimes.int8_matmul import Int8MatMul, int8_matmul_available
from edgerec.sdk.catalog.store import Segment, VectorView
from edgerec.sdk.errors import RuntimeUnavailableError

__all__ = ["SearchKernel", "SearchLayout", "search_kernel", "search_layout",
           "set_search_kernel", "set_search_layout"]

MIN_ROWS = 16384  # below this numpy is as fast, and the copy is not worth keeping
CHUNK_ROWS = 131072  # rows per ONNX Runtime call (per cached block)
GROUP_MIN = 8  # a batch of at least this many queries goes through one (Q, D) product
MAX_GROUP = 32  # queries per ONNX Runtime call: its (32, CHUNK_ROWS) float32 output is 16 MiB
_LEVELS = 63  # query codes in [-63, 63] ...
QUERY_OFFSET = 64  # ... fed as [1, 127] in the COLUMNS layout
_SUB_ROWS = 4096  # rows per float32 block when measuring norms
_PROBE_BYTES = 1 << 23  # the synthetic block SearchLayout.AUTO times both layouts on ...
_PROBE_RUNS = 7  # ... this many times each, interleaved (the minimum counts)
_ROWS_WINS = 0.8  # rows is kept when it takes under this share of the columns' time
_F32_MIN = float(np.finfo(np.float32).min)


class SearchKernel(str, Enum):
    """Which code scores an int8 catalog."""

    AUTO = "auto"  # onnxruntime when importable and the catalog has >= MIN_ROWS rows
    NUMPY = "numpy"
    ONNXRUNTIME = "onnxruntime"


class SearchLayout(str, Enum):
    """How the onnxruntime kernel holds its copy of the codes (same results either way)."""

    AUTO = "auto"  # the faster of the two on this CPU, timed once per process and dimension
    COLUMNS = "columns"  # codes^T int8 (D, N) and per-item offsets; query uint8 (1, D) first
    ROWS = "rows"  # codes + 128 uint8 (N, D) with zero point 128; query int8 (D, 1) second


_state: dict[str, Any] = {}  # "kernel", "layout": the settings; "engine": made on first use;
# "measured": {dim: the layout AUTO chose}
_lock = threading.Lock()
_caches: dict[tuple[int, SearchLayout], _SegmentCache] = {}


def _parse(value: Any, where: str, kind: type[Enum]) -> Any:
    try:
        return kind(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        choices = ", ".join(k.value for k in kind)
        raise ValueError(f"{where} must be one of {choices}, got {value!r}") from None


_SETTINGS: dict[str, tuple[str, type[Enum]]] = {
    "kernel": ("EDGEREC_SEARCH_KERNEL", SearchKernel),
    "layout": ("EDGEREC_SEARCH_LAYOUT", SearchLayout),
}


def _setting(key: str) -> Any:
    """The setting ``key`` in force: set in this process, else its environment variable."""
    if key not in _state:
        env, kind = _SETTINGS[key]
        raw = os.environ.get(env, "") or "auto"
        _state[key] = _parse(raw, f"the environment variable {env}", kind)
    return _state[key]


def _set(key: str, value: Any, where: str) -> Any:
    """Set ``key`` for the process; returns the previous setting (AUTO for a bad environment
    variable, which this overrides)."""
    kind = _SETTINGS[key][1]
    chosen = _parse(value, where, kind)
    try:
        previous = _setting(key)
    except ValueError:
        previous = kind("auto")
    _state[key] = chosen
    return previous


def search_kernel() -> SearchKernel:
    """The kernel setting in force (:func:`set_search_kernel`, else the environment)."""
    return _setting("kernel")


def set_search_kernel(kernel: SearchKernel | str) -> SearchKernel:
    """Choose the kernel for int8 catalogs (process-wide); returns the previous setting."""
    return _set("kernel", kernel, "the search kernel")


def search_layout() -> SearchLayout:
    """The layout setting in force (:func:`set_search_layout`, else the environment)."""
    return _setting("layout")


def set_search_layout(layout: SearchLayout | str) -> SearchLayout:
    """Choose the onnxruntime kernel's layout (process-wide); returns the previous setting.
    Copies already built in the other layout stay until their catalog closes."""
    return _set("layout", layout, "the search layout")


# --------------------------------------------------------------------------- engine


def _engine(required: bool) -> Int8MatMul | None:
    """The shared :class:`~edgerec.runtimes.int8_matmul.Int8MatMul`, or None without ONNX
    Runtime (``required``: raise instead)."""
    if "engine" not in _state:
        with _lock:
            if "engine" not in _state:
                _state["engine"] = Int8MatMul.create() if int8_matmul_available() else None
    engine = _state["engine"]
    if engine is None and required:
        raise RuntimeUnavailableError(
            "the onnxruntime search kernel was requested but onnxruntime cannot be imported; "
            "install it (`pip install edgerec[onnx]`) or choose SearchKernel.NUMPY / AUTO"
        )
    return engine


def active_kernel(view: VectorView) -> SearchKernel:
    """The kernel a full scan of ``view`` uses now (NUMPY or ONNXRUNTIME)."""
    choice = search_kernel()
    if view.dtype != "int8" or choice is SearchKernel.NUMPY:
        return SearchKernel.NUMPY
    if choice is SearchKernel.AUTO and view.total_rows < MIN_ROWS:
        return SearchKernel.NUMPY
    engine = _engine(required=choice is SearchKernel.ONNXRUNTIME)
    return SearchKernel.NUMPY if engine is None else SearchKernel.ONNXRUNTIME


def active_layout(dim: int) -> SearchLayout:
    """The layout the onnxruntime kernel uses for ``dim``-wide codes now (COLUMNS or ROWS;
    the first call under AUTO times both on a block of the kernel's shape: tens of
    milliseconds)."""
    setting = search_layout()
    if setting is not SearchLayout.AUTO:
        return setting
    measured = _state.setdefault("measured", {})
    if dim not in measured:
        engine = _engine(required=True)  # before the lock: _engine takes it too
        with _lock:
            if dim not in measured:
                measured[dim] = _time_layouts(engine, dim)
    return measured[dim]


def _time_layouts(engine: Int8MatMul, dim: int) -> SearchLayout:
    """ROWS when its one-query product over a random block of ``_PROBE_BYTES`` of codes takes
    under ``_ROWS_WINS`` of the COLUMNS product's time (best of ``_PROBE_RUNS`` each)."""
    rng = np.random.default_rng(0)
    rows = min(CHUNK_ROWS, max(1024, _PROBE_BYTES // dim)) // 64 * 64  # a block's shape
    codes = np.tile(rng.integers(-128, 128, (64, dim), dtype=np.int8), (rows // 64, 1))
    codes_t, _ = engine.prepare(codes)
    shifted = engine.shift(codes)
    offset = np.zeros(rows, np.int32)
    scales = np.ones(rows, np.float32)
    u = rng.integers(1, 128, (1, dim), dtype=np.uint8)
    q = (u.astype(np.int16) - QUERY_OFFSET).astype(np.int8).reshape(dim, 1)
    calls = {SearchLayout.COLUMNS: lambda: engine.scaled_product(u, codes_t, offset, scales),
             SearchLayout.ROWS: lambda: engine.scaled_product_rows(shifted, q, scales[:, None])}
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(_PROBE_RUNS + 1):  # the first round warms up
        for layout, call in calls.items():
            t0 = time.perf_counter()
            call()
            best[layout] = min(best[layout], time.perf_counter() - t0)
    return (SearchLayout.ROWS if best[SearchLayout.ROWS] < _ROWS_WINS * best[SearchLayout.COLUMNS]
            else SearchLayout.COLUMNS)


# --------------------------------------------------------------------------- per-segment copy


@dataclass(frozen=True)
class _Block:
    start: int  # first row, in the segment
    codes: np.ndarray  # COLUMNS: (dim, rows) int8 codes^T; ROWS: (rows, dim) uint8 codes + 128
    offset: np.ndarray | None  # COLUMNS: (rows,) int32, 64 * sum of the row's codes
    scales: np.ndarray  # (rows,) float32
    max_norm: float  # largest ||x_i|| of the block (dequantised), rounded up


@dataclass(frozen=True)
class _SegmentCache:
    layout: SearchLayout
    blocks: tuple[_Block, ...]


def columns_offset(sums: np.ndarray) -> np.ndarray:
    """``(rows,)`` int32: what the COLUMNS layout's ``QUERY_OFFSET`` adds to each row's product,
    ``QUERY_OFFSET * sum_j c_ij``, from the ``(1, rows)`` column sums of
    :meth:`Int8MatMul.prepare`; the graph subtracts it."""
    return (sums[0].astype(np.int64) * QUERY_OFFSET).astype(np.int32)


def _segment_cache(seg: Segment, engine: Int8MatMul, layout: SearchLayout) -> _SegmentCache:
    """The copy of a segment's codes in ``layout``, built once per mapped array."""
    key = (id(seg.vectors), layout)
    cache = _caches.get(key)
    if cache is None:
        with _lock:
            cache = _caches.get(key)
            if cache is None:
                cache = _build(seg, engine, layout)
                _caches[key] = cache
                weakref.finalize(seg.vectors, _caches.pop, key, None)
    return cache


def _build(seg: Segment, engine: Int8MatMul, layout: SearchLayout) -> _SegmentCache:
    dim = seg.vectors.shape[1]
    buf = np.empty((_SUB_ROWS, dim), np.float32)
    blocks = []
    for c0 in range(0, seg.rows, CHUNK_ROWS):
        c1 = min(c0 + CHUNK_ROWS, seg.rows)
        codes = np.ascontiguousarray(seg.vectors[c0:c1])
        if layout is SearchLayout.ROWS:
            copy, offset = engine.shift(codes), None
        else:
            copy, sums = engine.prepare(codes)
            offset = columns_offset(sums)
        scales = np.ascontiguousarray(seg.scales[c0:c1], dtype=np.float32)
        peak = 0.0
        for b0 in range(0, c1 - c0, _SUB_ROWS):
            sub = codes[b0:b0 + _SUB_ROWS]
            f = buf[: sub.shape[0]]
            np.copyto(f, sub, casting="unsafe")
            squares = np.einsum("ij,ij->i", f, f)  # exact: integers below 2**24
            peak = max(peak, float((squares * scales[b0:b0 + sub.shape[0]] ** 2).max()))
        blocks.append(_Block(c0, copy, offset, scales, float(np.sqrt(peak)) * (1 + 1e-6)))
    return _SegmentCache(layout, tuple(blocks))


# --------------------------------------------------------------------------- scan


def candidate_rows(
    view: VectorView, queries: np.ndarray, k: int, invalid: list[np.ndarray | None]
) -> np.ndarray | None:
    """Sorted global rows that may hold each query's top ``k`` (a superset), or None.

    ``queries``: ``(Q, dim)`` float32, finite; ``invalid``: per segment, the rows that must
    not be returned (see :func:`edgerec.sdk.catalog.scan._invalid_mask`). None means: this kernel
    does not apply here (setting, dtype, size, engine) or gave up; scan with numpy.

    When too many rows lie within the one-level bound of the k-th best (many near-equal items,
    e.g. near-duplicates of the query), the scan runs once more with the query's rounding
    residual quantized as a second level: the bound shrinks about 63-fold for one more integer
    product per block, before giving up to numpy.
    """
    if active_kernel(view) is not SearchKernel.ONNXRUNTIME or k <= 0 or view.count == 0:
        return None
    engine = _engine(required=False)
    layout = active_layout(view.dim)
    q = np.asarray(queries, dtype=np.float64)
    step, levels, rest = _levels(q)
    # float32 rounding in the graph and in the final numpy scores, per unit of ||x_i||:
    rounding = 2.0**-22 * (view.dim + 8) * np.linalg.norm(q, axis=1)
    one = [(_feed(levels, layout), np.ones(len(q)))]
    rows = _scan(view, engine, layout, one, (np.linalg.norm(rest, axis=1) + rounding) / step,
                 k, invalid)
    if rows is not None:
        return rows
    step2, levels2, rest2 = _levels(rest)  # q = step * levels + step2 * levels2 + rest2
    two = [*one, (_feed(levels2, layout), step2 / step)]
    return _scan(view, engine, layout, two, (np.linalg.norm(rest2, axis=1) + rounding) / step,
                 k, invalid)


def _levels(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Q, D)`` float64 -> per-row step ``s = max|q| / 63`` (1 for a zero row), levels
    ``rint(q / s)`` in [-63, 63] and the rest ``q - s * levels``."""
    peak = np.abs(q).max(axis=1)
    step = np.where(peak > 0, peak / _LEVELS, 1.0)
    levels = np.rint(q / step[:, None])
    return step, levels, q - levels * step[:, None]


def _feed(levels: np.ndarray, layout: SearchLayout) -> np.ndarray:
    """Query levels as the layout's graph takes them: int8 for ROWS, uint8 + 64 for COLUMNS."""
    return (levels.astype(np.int8) if layout is SearchLayout.ROWS
            else (levels + QUERY_OFFSET).astype(np.uint8))


def _scan(view: VectorView, engine: Int8MatMul, layout: SearchLayout,
          parts: list[tuple[np.ndarray, np.ndarray]], beta: np.ndarray, k: int,
          invalid: list[np.ndarray | None]) -> np.ndarray | None:
    """One pass over the blocks: each block's estimate is ``sum_j w_j * S'(codes_j)`` (``parts``:
    query feeds and ``(Q,)`` weights), within ``beta * max_norm`` of the exact score in the
    same units; the candidate rows, or None when there are too many."""
    band = _Band(k, len(beta), cap=max(view.total_rows // 4, 4 * k))
    for seg, bad in zip(view.segments, invalid):
        cache = _segment_cache(seg, engine, layout)
        for block in cache.blocks:
            c0, c1 = block.start, block.start + block.scales.shape[0]
            mask = None if bad is None else bad[c0:c1]
            if mask is not None and mask.all():
                continue
            scores = _score(engine, parts[0][0], block, layout)
            for codes, weight in parts[1:]:  # in float32, in place: no (Q, rows) float64
                extra = _score(engine, codes, block, layout)
                extra *= weight.astype(np.float32)[:, None]
                scores += extra
            if mask is not None:
                scores[:, mask] = -np.inf
            if not band.push(scores, beta * block.max_norm, seg.start + c0):
                return None
    return band.rows()


def _score(engine: Int8MatMul, codes: np.ndarray, block: _Block,
           layout: SearchLayout) -> np.ndarray:
    """``(Q, rows)`` float32: ``scale_i * (q^ . c_i)`` for each query's codes (uint8 ``q^ + 64``
    for COLUMNS, int8 ``q^`` for ROWS)."""
    def run(a: np.ndarray) -> np.ndarray:
        if layout is SearchLayout.ROWS:
            out = engine.scaled_product_rows(block.codes, np.ascontiguousarray(a.T),
                                             block.scales[:, None])
            return out.reshape(1, -1) if out.shape[1] == 1 else np.ascontiguousarray(out.T)
        return engine.scaled_product(a, block.codes, block.offset, block.scales)

    n = codes.shape[0]
    if n < GROUP_MIN:  # one-row products take MLAS's fast path; a few rows do not
        parts = [run(codes[j:j + 1]) for j in range(n)]
    else:
        parts = [run(codes[j:j + MAX_GROUP]) for j in range(0, n, MAX_GROUP)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@functools.lru_cache(maxsize=8)
def _sample(columns: int) -> np.ndarray:
    """A fixed (seeded) sorted random sixteenth of ``range(columns)``."""
    rng = np.random.default_rng(columns)
    return np.sort(rng.choice(columns, columns // 16, replace=False))


class _Band:
    """Per query: the k best lower bounds merged so far (their minimum is the floor) and every
    row whose upper bound reaches the floor. The floor only rises, so pruning early is safe;
    each row's lower bound is merged at most once (a repeat would raise the floor wrongly).
    One query (``similar``'s case) takes a path without per-query indices: its rows come out
    in block order, so already sorted and unique."""

    def __init__(self, k: int, n_queries: int, cap: int) -> None:
        self.k = k
        self.cap = cap
        self.best = np.full((n_queries, k), -np.inf)
        self.floor = np.full(n_queries, -np.inf)
        self.found: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = []
        self.count = 0

    def push(self, scores: np.ndarray, margin: np.ndarray, row0: int) -> bool:
        """Add a block: ``scores`` ``(Q, C)`` (-inf where invalid), ``margin`` ``(Q,)`` the
        bound on |estimate - exact| in score units. False when there are too many rows."""
        n_queries, c = scores.shape
        floor = self.floor
        if np.isneginf(floor).any():  # no floor yet: the k-th best of a sample of this block
            floor = np.maximum(floor, self._kth(scores) - margin)
        floor = np.maximum(floor - margin, _F32_MIN)
        if n_queries == 1:
            return self._push_one(scores[0], float(margin[0]), float(floor[0]), row0)
        flat = np.flatnonzero(scores >= floor[:, None])  # rows whose upper bound reaches it
        self.count += flat.size
        if self.count > self.cap * n_queries:  # memory bound; rows() checks the union
            return False
        q_idx, c_idx = np.divmod(flat, c)
        values = scores.ravel()[flat]
        lower = values - margin[q_idx]
        rises = lower > self.floor[q_idx]
        if rises.any():  # the few rows that raise the floor
            qr, lr = q_idx[rises], lower[rises]
            pad = np.full((n_queries, int(np.bincount(qr).max())), -np.inf)
            pad[qr, np.arange(qr.size) - np.searchsorted(qr, qr)] = lr
            both = np.concatenate([self.best, pad], axis=1)
            self.best = np.partition(both, both.shape[1] - self.k, axis=1)[:, -self.k:]
            self.floor = self.best.min(axis=1)
        self.found.append((q_idx, c_idx + row0, values + margin[q_idx]))
        return True

    def _push_one(self, scores: np.ndarray, margin: float, floor: float, row0: int) -> bool:
        """:meth:`push` for one query: ``scores`` ``(C,)``."""
        c_idx = np.flatnonzero(scores >= floor)
        self.count += c_idx.size
        if self.count > self.cap:
            return False
        values = scores[c_idx]
        lower = values - margin
        rising = lower[lower > self.floor[0]]
        if rising.size:
            both = np.concatenate([self.best[0], rising])
            self.best = np.partition(both, both.size - self.k)[None, -self.k:]
            self.floor = self.best.min(axis=1)
        self.found.append((None, c_idx + row0, values + margin))
        return True

    def _kth(self, scores: np.ndarray) -> np.ndarray:
        """``(Q,)`` the k-th best score of a fixed random sixteenth of a large block's rows (of
        all rows if that finds fewer than k valid ones); -inf when the block has fewer than k
        valid rows. Random, not every 16th row: a catalog added in a repeating order (item
        ``i`` like item ``i + 32``) would hide the query's look-alikes from a stride."""
        c = scores.shape[1]
        samples = (scores[:, _sample(c)], scores) if c >= 16384 else (scores,)
        for sample in samples:
            if sample.shape[1] >= self.k:
                kth = np.partition(sample, sample.shape[1] - self.k, axis=1)[:, -self.k]
                if np.isfinite(kth).all():
                    return kth
        return np.full(scores.shape[0], -np.inf)

    def rows(self) -> np.ndarray | None:
        """The sorted candidate rows of all queries; None if more than ``cap``."""
        if not self.found:
            return np.zeros(0, np.int64)
        q_parts, row_parts, upper_parts = zip(*self.found)
        rows, upper = np.concatenate(row_parts), np.concatenate(upper_parts)
        if self.floor.size == 1:  # one query: blocks in row order, so sorted and unique
            rows = rows[upper >= self.floor[0]].astype(np.int64)
        else:
            q_idx = np.concatenate(q_parts)
            rows = np.unique(rows[upper >= self.floor[q_idx]]).astype(np.int64)
        return None if rows.size > self.cap else rows
