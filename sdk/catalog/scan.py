"""Exact top-k search over a catalog's int8 or float16 vectors, and MMR re-ranking.

The kernel never makes a float32 copy of a large catalog (a small int8 one, within
:data:`~edgerec.sdk.catalog.store.DECODED_BYTES` = 16 MiB of float32, keeps its codes decoded:
``Segment.decoded``, the same products without the per-query conversion). It walks each
segment in chunks of ``CHUNK_ROWS`` rows (the unit of top-k selection) and, inside a chunk, in
sub-blocks of about 2 MiB of float32 (the unit of decoding, sized to stay in cache):

- int8: ``codes -> float32`` into a reused, cache-sized buffer (``np.copyto``),
  ``block @ q.T``, then times the per-item scale (numpy has no BLAS for integer products);
- float16: numpy's float16 cast is slow, so the kernel decodes the bits instead:
  ``(int32(h) << 13) & 0x8FFFFFFF`` read as float32 is the half value times 2**-112 (exact for
  normal and subnormal halves), so the query is pre-scaled by 2**112 (after dividing by its
  max |q| so nothing overflows) and the scores are exact.

Timings per storage type and kernel: ``benchmarks/results/catalog_targets.md``.

The first chunk's ``np.argpartition`` gives each query k candidates; later chunks only add the
entries above each query's current k-th best score (one vectorised comparison), and the merged
set is cut back to k. The final k are sorted by score (ties: lower row first). Dead rows and
rows outside a filter are set to ``-inf`` (or, when a filter keeps under a quarter of the rows,
only those rows are gathered and scored).

For int8 catalogs, :mod:`edgerec.sdk.catalog.prefilter` (ONNX Runtime's integer product, when
installed) first narrows a full scan to the few rows that can be in the top k; those rows are
then scored here like any others, so the results are this kernel's.

Filters are resolved once per query batch to a sorted array of rows through the ``attrs`` index
table (see :mod:`edgerec.sdk.catalog.filters`); MMR re-ranks a candidate pool
(:func:`mmr_select`).
"""

from __future__ import annotations

import numpy as np
from edgerec.sdk.catalog.prefilter import candidate_rows
from edgerec.sdk.catalog.store import Segment, VectorView

__all__ = ["exact_top_k", "mmr_select"]

CHUNK_ROWS = 32768
BLOCK_BYTES = 1 << 21
QUERY_GROUP = 64  # queries per pass: bounds the (rows, queries) score blocks of a big batch
_F16_MASK = np.int32(-1879048193)  # 0x8FFFFFFF: keep sign, drop the sign-extension bits
_F16_SCALE = 2.0**112



# --------------------------------------------------------------------------- kernel


class _BlockScorer:
    """Scores stored blocks against a fixed batch of queries, reusing one decode buffer."""

    def __init__(self, queries: np.ndarray, dtype: str, block_rows: int) -> None:
        dim = queries.shape[1]
        self.float16 = dtype == "float16"
        if self.float16:
            peak = np.abs(queries).max(axis=1)
            self.post = np.where(peak > 0, peak, 1.0).astype(np.float32)
            scaled = queries / self.post[:, None] * np.float32(_F16_SCALE)
            self.q_t = np.ascontiguousarray(scaled.T, dtype=np.float32)
            self.buf = np.empty((block_rows, dim), np.int32)
        else:
            self.q_t = np.ascontiguousarray(queries.T, dtype=np.float32)
            self.buf = np.empty((block_rows, dim), np.float32)

    def score(self, block: np.ndarray, scales: np.ndarray | None, out: np.ndarray,
              decoded: bool = False) -> None:
        """Write float32 scores ``(len(block), Q)`` of stored ``block`` into ``out``;
        ``decoded``: ``block`` is int8 codes already as float32 (``Segment.decoded``)."""
        if decoded:
            np.dot(block, self.q_t, out=out)
            if scales is not None:
                out *= np.asarray(scales)[:, None]
            return
        buf = self.buf[: block.shape[0]]
        if self.float16:
            np.left_shift(block.view(np.int16), 13, out=buf, dtype=np.int32)
            np.bitwise_and(buf, _F16_MASK, out=buf)
            np.dot(buf.view(np.float32), self.q_t, out=out)
            out *= self.post
        else:
            np.copyto(buf, block, casting="unsafe")
            np.dot(buf, self.q_t, out=out)
            if scales is not None:
                out *= np.asarray(scales)[:, None]


class _TopK:
    """Running per-query top-k over chunks of scores.

    Once every query holds k candidates, a chunk contributes only its entries above that
    query's current k-th best score (one vectorised comparison), so the O(C) argpartition
    runs on the first chunk only.
    """

    def __init__(self, k: int, n_queries: int) -> None:
        self.k = k
        self.scores = np.empty((n_queries, 0), np.float32)
        self.rows = np.empty((n_queries, 0), np.int64)
        self.kth: np.ndarray | None = None  # (Q,) k-th best score so far, once k are held

    def push(self, scores: np.ndarray, rows: np.ndarray | int) -> None:
        """Add a chunk: ``scores`` ``(C, Q)``; ``rows`` the chunk's rows or its first row."""
        offset = isinstance(rows, (int, np.integer))
        if self.kth is not None:
            q_idx, c_idx = np.nonzero(np.greater(scores.T, self.kth[:, None]))
            if q_idx.size == 0:
                return
            counts = np.bincount(q_idx, minlength=self.scores.shape[0])
            pos = np.arange(q_idx.size) - np.repeat(np.cumsum(counts) - counts, counts)
            s = np.full((self.scores.shape[0], int(counts.max())), -np.inf, np.float32)
            r = np.zeros(s.shape, np.int64)
            s[q_idx, pos] = scores[c_idx, q_idx]
            r[q_idx, pos] = c_idx + rows if offset else np.asarray(rows)[c_idx]
        else:
            s = np.ascontiguousarray(scores.T)  # (Q, C)
            c = s.shape[1]
            if c > self.k:
                idx = np.argpartition(s, c - self.k, axis=1)[:, c - self.k:]
                s = np.take_along_axis(s, idx, axis=1)
            else:
                idx = np.broadcast_to(np.arange(c), s.shape)
            r = idx + rows if offset else np.asarray(rows)[idx]
        self.scores = np.concatenate([self.scores, s], axis=1)
        self.rows = np.concatenate([self.rows, r.astype(np.int64)], axis=1)
        if self.scores.shape[1] >= self.k:
            self._shrink()
            self.kth = self.scores.min(axis=1)

    def _shrink(self) -> None:
        n = self.scores.shape[1]
        if n > self.k:
            idx = np.argpartition(self.scores, n - self.k, axis=1)[:, n - self.k:]
            self.scores = np.take_along_axis(self.scores, idx, axis=1)
            self.rows = np.take_along_axis(self.rows, idx, axis=1)

    def result(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        self._shrink()
        rows_out, scores_out = [], []
        for s, r in zip(self.scores, self.rows):
            order = np.lexsort((r, -s))
            keep = order[np.isfinite(s[order])]
            rows_out.append(r[keep])
            scores_out.append(s[keep])
        return rows_out, scores_out


def exact_top_k(
    view: VectorView,
    queries: np.ndarray,
    k: int,
    *,
    allowed: np.ndarray | None = None,
    banned: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exact top-``k`` rows by inner product for each query.

    ``queries``: ``(Q, dim)`` float32, finite. ``allowed``: sorted unique live rows to search
    (None: every live row); ``banned``: rows to skip. Returns, per query, the rows (int64) and
    float32 scores, best first, at most ``k`` of each.

    Memory: a batch runs in groups of ``QUERY_GROUP`` queries, so its score blocks stay within
    ``QUERY_GROUP x CHUNK_ROWS`` float32 here (8 MiB) and ``QUERY_GROUP x
    prefilter.CHUNK_ROWS`` in the pre-filter (32 MiB), whatever the batch's size.
    """
    n_queries = queries.shape[0]
    if n_queries > QUERY_GROUP:
        rows_out: list[np.ndarray] = []
        scores_out: list[np.ndarray] = []
        for g in range(0, n_queries, QUERY_GROUP):
            r, s = exact_top_k(view, queries[g:g + QUERY_GROUP], k, allowed=allowed,
                               banned=banned)
            rows_out += r
            scores_out += s
        return rows_out, scores_out
    top = _TopK(k, n_queries)
    if k <= 0 or n_queries == 0 or view.count == 0:
        return top.result()
    if allowed is not None and banned is not None and banned.size:
        allowed = np.setdiff1d(allowed, banned, assume_unique=True)
        banned = None
    block_rows = max(16, BLOCK_BYTES // (4 * view.dim))
    scorer = _BlockScorer(queries, view.dtype, block_rows)
    gather = allowed is not None and allowed.size * 4 <= view.total_rows
    masks = None if gather else [_invalid_mask(seg, allowed, banned) for seg in view.segments]
    if masks is not None:  # int8: a faster engine may narrow the scan to a few rows
        rows = candidate_rows(view, queries, k, masks)
        if rows is not None:
            allowed, gather = rows, True  # then scored exactly here, like any other rows
    for i, seg in enumerate(view.segments):
        if gather:
            lo, hi = np.searchsorted(allowed, [seg.start, seg.stop])
            _scan_rows(seg, allowed[lo:hi] - seg.start, scorer, top, block_rows)
        else:
            _scan_segment(seg, masks[i], scorer, top, block_rows)
    return top.result()


def _invalid_mask(
    seg: Segment, allowed: np.ndarray | None, banned: np.ndarray | None
) -> np.ndarray | None:
    """``(rows,)`` bool, True where a row must not be returned; None if every row may be."""
    mask = None if seg.dead is None else seg.dead.copy()
    if allowed is not None:
        lo, hi = np.searchsorted(allowed, [seg.start, seg.stop])
        mask = np.ones(seg.rows, bool)
        mask[allowed[lo:hi] - seg.start] = False
    if banned is not None and banned.size:
        local = banned[(banned >= seg.start) & (banned < seg.stop)] - seg.start
        if local.size:
            mask = np.zeros(seg.rows, bool) if mask is None else mask
            mask[local] = True
    return mask


def _stored(seg: Segment) -> np.ndarray:
    """The rows the scorer reads: the decoded float32 codes when kept, else the stored ones."""
    return seg.vectors if seg.decoded is None else seg.decoded


def _scan_segment(
    seg: Segment, invalid: np.ndarray | None, scorer: _BlockScorer, top: _TopK, block_rows: int
) -> None:
    n_queries = scorer.q_t.shape[1]
    for c0 in range(0, seg.rows, CHUNK_ROWS):
        c1 = min(c0 + CHUNK_ROWS, seg.rows)
        if invalid is not None and invalid[c0:c1].all():
            continue
        scores = np.empty((c1 - c0, n_queries), np.float32)
        for b0 in range(c0, c1, block_rows):
            b1 = min(b0 + block_rows, c1)
            scales = None if seg.scales is None else seg.scales[b0:b1]
            scorer.score(_stored(seg)[b0:b1], scales, scores[b0 - c0:b1 - c0],
                         seg.decoded is not None)
        if invalid is not None:
            scores[invalid[c0:c1]] = -np.inf
        top.push(scores, seg.start + c0)


def _scan_rows(
    seg: Segment, local: np.ndarray, scorer: _BlockScorer, top: _TopK, block_rows: int
) -> None:
    n_queries = scorer.q_t.shape[1]
    for c0 in range(0, local.size, CHUNK_ROWS):
        idx = local[c0:c0 + CHUNK_ROWS]
        scores = np.empty((idx.size, n_queries), np.float32)
        for b0 in range(0, idx.size, block_rows):
            sub = idx[b0:b0 + block_rows]
            scales = None if seg.scales is None else seg.scales[sub]
            scorer.score(_stored(seg)[sub], scales, scores[b0:b0 + sub.size],
                         seg.decoded is not None)
        top.push(scores, idx + seg.start)


# --------------------------------------------------------------------------- MMR


def mmr_select(relevance: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal marginal relevance: pick ``k`` of a candidate pool, greedily.

    ``relevance``: ``(n,)`` scores to the query; ``vectors``: ``(n, dim)`` float32 candidates.
    Each step takes ``argmax (1 - diversity) * relevance - diversity * max cos(candidate,
    chosen)``. ``diversity=0`` keeps the relevance order; 1 ignores relevance after the first
    pick. Returns indices into the pool, in pick order.
    """
    n = relevance.shape[0]
    k = min(k, n)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    rel = relevance.astype(np.float64)
    max_sim = np.zeros(n)
    taken = np.zeros(n, bool)
    picks = []
    for _ in range(k):
        value = (1.0 - diversity) * rel - diversity * max_sim
        value[taken] = -np.inf
        j = int(np.argmax(value))
        picks.append(j)
        taken[j] = True
        max_sim = np.maximum(max_sim, unit @ unit[j])
    return np.array(picks, dtype=np.int64)
