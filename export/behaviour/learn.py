"""Learning the behaviour signals from training events: :func:`learn_behaviour`.

From each user's positive events (weighted by kind, :data:`DEFAULT_EVENT_WEIGHTS`, and by the
event's own weight): the time-decayed popularity and user count of every item; its top-K
co-occurrence neighbours (items in the same users' histories, ``c_ij / (sqrt(n_i n_j) +
shrink)``, plus the same score over sessions where the events have timestamps, computed in
blocks of items so memory stays ``block x N``); collaborative item vectors
(ALS from ``implicit``, confidence ``1 + alpha * weight``); and a ridge regression from the image
vector to the collaborative vector, fitted on items with events from two or more users, which
gives every other item (and any item added later on the device) its collaborative vector.

Nothing is learned when no item has events from two different users (e.g. every photo has one
owner): behaviour then cannot tell anything pixels do not, and the record says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np
from edgerec.export.errors import ExportError
from edgerec.export.options import BehaviourOptions
from edgerec.sdk.behaviour.model import BehaviourModel
from edgerec.sdk.bundle.manifest import DEFAULT_EVENT_WEIGHTS
from edgerec.sdk.evaluation.events import Interaction

__all__ = ["LearnedBehaviour", "cooccurrence_neighbours", "learn_behaviour"]

Log = Callable[[str], None]
_BLOCK = 1024
_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class LearnedBehaviour:
    """The learned signals (None with ``reason`` when there was nothing to learn) and a
    report (sizes, seconds, the mapping's chosen ridge and its held-out error)."""

    model: Optional[BehaviourModel]
    reason: str = ""
    report: dict[str, Any] = field(default_factory=dict)


def _matrix(train: Mapping[str, Sequence[Interaction]], index: Mapping[str, int],
            half_life_days: float) -> tuple[Any, np.ndarray, np.ndarray]:
    """Users x items CSR of summed positive weights, the decayed popularity (N,) and the
    distinct-user count (N,)."""
    from scipy.sparse import csr_matrix

    users, items, weights, times = [], [], [], []
    for u, user in enumerate(sorted(train)):
        for it in train[user]:
            j = index.get(it.item_id)
            w = DEFAULT_EVENT_WEIGHTS.get(it.kind.value, 0.0) * it.weight
            if j is None or w <= 0:
                continue
            users.append(u)
            items.append(j)
            weights.append(w)
            times.append(it.timestamp)
    n = len(index)
    w = np.array(weights, np.float64)
    if all(t is not None for t in times) and times:
        t = np.array(times, np.float64)
        decay = 0.5 ** ((t.max() - t) / _SECONDS_PER_DAY / half_life_days)
    else:
        decay = np.ones(len(w))
    popularity = np.bincount(np.array(items, np.int64), w * decay, minlength=n)
    x = csr_matrix((w, (np.array(users, np.int64), np.array(items, np.int64))),
                   shape=(len(train), n))
    x.sum_duplicates()
    count = np.diff(x.tocsc().indptr).astype(np.float64)
    return x, popularity, count


def _sessions(train: Mapping[str, Sequence[Interaction]], index: Mapping[str, int],
              gap_minutes: float) -> Optional[Any]:
    """Sessions x items binary CSR (a session: one user's positive events with gaps of at
    most ``gap_minutes``, in time order); None without timestamps on every event or when no
    session holds two distinct items."""
    from scipy.sparse import csr_matrix

    if gap_minutes <= 0:
        return None
    rows, cols = [], []
    session = -1
    for user in sorted(train):
        events = [it for it in train[user] if it.item_id in index
                  and DEFAULT_EVENT_WEIGHTS.get(it.kind.value, 0.0) * it.weight > 0]
        if any(it.timestamp is None for it in events):
            return None
        last = None
        for it in sorted(events, key=lambda e: e.timestamp):
            if last is None or it.timestamp - last > gap_minutes * 60.0:
                session += 1
            last = it.timestamp
            rows.append(session)
            cols.append(index[it.item_id])
    if not rows:
        return None
    x = csr_matrix((np.ones(len(rows)), (np.array(rows, np.int64), np.array(cols, np.int64))),
                   shape=(session + 1, len(index)))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x if (np.diff(x.indptr) >= 2).any() else None


def _ratio(counts: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """``counts / norms`` (broadcast), 0 where ``norms`` is 0 (an item nobody has, shrink 0)."""
    norms = np.broadcast_to(norms, counts.shape)
    return np.divide(counts, norms, out=np.zeros(counts.shape), where=norms > 0)


def _neighbours(x: Any, count: np.ndarray, k: int, shrink: float,
                sessions: Optional[Any] = None, session_weight: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` co-occurrence neighbours per item: (N, k) int64 rows (-1 none) and scores
    (plus ``session_weight`` x the same score over ``sessions``, see :func:`_sessions`)."""
    n = x.shape[1]
    b = x.copy()
    b.data[:] = 1.0
    bt = b.T.tocsr()
    st = sessions.T.tocsr() if sessions is not None else None
    s_root = (np.sqrt(np.diff(sessions.tocsc().indptr).astype(np.float64))
              if sessions is not None else None)
    rows = np.full((n, k), -1, np.int64)
    scores = np.zeros((n, k), np.float32)
    warm = np.flatnonzero(count > 0)
    root = np.sqrt(count)
    for start in range(0, len(warm), _BLOCK):
        block = warm[start:start + _BLOCK]
        c = (bt[block] @ b).toarray()  # (block, N) co-occurrence counts
        c[np.arange(len(block)), block] = 0.0
        s = _ratio(c, root[block, None] * root[None, :] + shrink)
        if st is not None and s_root is not None and session_weight > 0:
            cs = (st[block] @ sessions).toarray()
            cs[np.arange(len(block)), block] = 0.0
            s += session_weight * _ratio(cs, s_root[block, None] * s_root[None, :] + shrink)
        kk = min(k, n - 1)
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk > 0 else np.zeros((len(block), 0),
                                                                                   np.int64)
        top_s = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        top, top_s = np.take_along_axis(top, order, 1), np.take_along_axis(top_s, order, 1)
        top = np.where(top_s > 0, top, -1)
        rows[block, :kk] = top
        scores[block, :kk] = np.where(top >= 0, top_s, 0.0)
    return rows, scores


def cooccurrence_neighbours(train: Mapping[str, Sequence[Interaction]], item_ids: Sequence[str],
                            k: int, shrink: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` co-occurrence neighbours of each of ``item_ids`` among themselves, from the
    positive events of ``train`` (user -> events; events on other items are left out):
    (N, k) int64 indices into ``item_ids`` (-1 where there are fewer) and (N, k) float32
    scores ``c_ij / (sqrt(n_i n_j) + shrink)`` (``c_ij`` users who have both, ``n_i`` users who
    have ``i``), best first. An id listed twice gets the same neighbours at both places, and
    as a neighbour it is named by its first place."""
    if k < 1:
        raise ExportError(f"co-occurrence neighbours: k must be at least 1, got {k}")
    first: dict[str, int] = {}  # distinct id -> its first place
    for j, item in enumerate(item_ids):
        first.setdefault(item, j)
    slot = {item: u for u, item in enumerate(first)}  # distinct id -> its row in the matrix
    x, _, count = _matrix(train, slot, half_life_days=1.0)
    rows, scores = _neighbours(x, count, k, shrink)
    place = np.fromiter(first.values(), np.int64, len(first))
    rows = np.where(rows >= 0, place[np.maximum(rows, 0)], -1)
    where = np.fromiter((slot[item] for item in item_ids), np.int64, len(item_ids))
    return rows[where], scores[where]


def _als(x: Any, options: BehaviourOptions) -> np.ndarray:
    """ALS item factors (N, d) float32 on confidences ``1 + alpha * weight``."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise ExportError(f"the behaviour signals need `implicit` ({exc}): "
                          "pip install 'edgerec[export]'") from None
    conf = x.copy().astype(np.float32)
    conf.data = 1.0 + options.alpha * conf.data
    with threadpool_limits(1):
        model = AlternatingLeastSquares(factors=options.dim,
                                        regularization=options.regularization, alpha=1.0,
                                        iterations=options.iterations, num_threads=1,
                                        random_state=options.seed)
        model.fit(conf, show_progress=False)
    return np.asarray(model.item_factors, np.float32)[:, :options.dim]


def _mapping(vectors: np.ndarray, y: np.ndarray, fit: np.ndarray, options: BehaviourOptions
             ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Ridge regression image (D) -> collaborative (d) on rows ``fit``; the penalty chosen on
    a seeded tenth of them (mean squared error), then refitted on all."""
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(fit)
    held = order[: max(1, len(order) // 10)] if len(order) >= 20 else order[:0]
    train = order[len(held):]

    def solve(rows: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
        xv = vectors[rows].astype(np.float64)
        mx, my = xv.mean(axis=0), y[rows].astype(np.float64).mean(axis=0)
        xc = xv - mx
        a = xc.T @ xc
        a[np.diag_indices_from(a)] += lam
        w = np.linalg.solve(a, xc.T @ (y[rows] - my))
        return w, my - mx @ w

    table = {}
    if len(held):
        for lam in options.ridge:
            w, b = solve(train, lam)
            table[lam] = float(np.mean((vectors[held] @ w + b - y[held]) ** 2))
        best = min(table, key=lambda k: table[k])
    else:
        best = options.ridge[len(options.ridge) // 2]
    w, b = solve(fit, best)
    baseline = float(np.mean((y[held] - y[train].mean(axis=0)) ** 2)) if len(held) else None
    return (w.astype(np.float32), b.astype(np.float32),
            {"ridge": best, "held_out_mse": table, "mean_predictor_mse": baseline,
             "fit_items": len(fit)})


def learn_behaviour(train: Mapping[str, Sequence[Interaction]], item_ids: Sequence[str],
                    vectors: np.ndarray, options: BehaviourOptions,
                    log: Log = print) -> LearnedBehaviour:
    """The behaviour signals of ``train`` (user -> events) over ``item_ids`` with image
    ``vectors`` (N, D) float32 (see the module docstring); ``model`` None and ``reason`` when
    no item has positive events from two users."""
    t0 = time.perf_counter()
    index = {item: j for j, item in enumerate(item_ids)}
    x, popularity, count = _matrix(train, index, options.popularity_half_life_days)
    shared = int((count >= 2).sum())
    report: dict[str, Any] = {"users": int(x.shape[0]), "items": len(item_ids),
                              "warm_items": int((count > 0).sum()), "shared_items": shared}
    if shared == 0:
        return LearnedBehaviour(None, "no item has positive events from two different users: "
                                "behaviour cannot add anything to pixels", report)
    sessions = _sessions(train, index, options.session_gap_minutes)
    neighbours, scores = _neighbours(x, count, options.neighbours, options.shrink, sessions,
                                     options.session_weight)
    report["sessions"] = int(sessions.shape[0]) if sessions is not None else 0
    t1 = time.perf_counter()
    factors = _als(x, options)
    t2 = time.perf_counter()
    w, b, mapping = _mapping(np.asarray(vectors, np.float32), factors,
                             np.flatnonzero(count >= 2), options)
    learned = count > 0
    collab = np.where(learned[:, None], factors, np.asarray(vectors, np.float32) @ w + b)
    model = BehaviourModel(
        ids=tuple(item_ids), popularity=popularity.astype(np.float32),
        count=count.astype(np.float32), neighbours=neighbours, neighbour_scores=scores,
        collab=collab.astype(np.float32), learned=learned, gram=np.zeros((options.dim,) * 2,
                                                                          np.float32),
        mapping_w=w, mapping_b=b, regularization=options.regularization, alpha=options.alpha)
    # what the device reads back (int8 collab): the fold-in's gram is over those vectors
    model = BehaviourModel.from_arrays(model.to_arrays())
    y = model.collab[model.learned].astype(np.float64)
    model = replace(model, gram=(y.T @ y).astype(np.float32))
    report.update({"mapping": mapping, "seconds": {
        "cooccurrence": round(t1 - t0, 2), "als": round(t2 - t1, 2),
        "total": round(time.perf_counter() - t0, 2)}})
    log(f"behaviour: {report['warm_items']} warm items ({shared} shared by two users or "
        f"more), {options.neighbours} neighbours and {options.dim}-d ALS vectors each, mapping "
        f"ridge {mapping['ridge']}; {report['seconds']['total']:.1f} s")
    return LearnedBehaviour(model, "", report)
