"""The behaviour feed's ranking, written once for the device (:meth:`Recommender.for_user`),
``edgerec evaluate`` and the export's fusion fit.

Candidates come from four sources (each tagged on the candidate, :data:`SOURCES`):

- ``visual``: the top ``FeedOptions.visual`` items by ``u . v`` (the device's user vector);
- ``cooc``: the co-occurrence neighbours of the ``FeedOptions.recent`` newest history items;
- ``collab``: the top ``FeedOptions.collab`` items by ``x . y`` in the collaborative space
  (``x``: the user's ALS fold-in from the history's collaborative vectors);
- ``popular``: the ``FeedOptions.popular`` most popular items (time-decayed);

their union (history, dismissed and excluded items left out) is cut to C. Each candidate gets
the feature row :data:`FEATURES` (visual and collaborative similarity, co-occurrence score,
collaborative closeness to the newest history items, log popularity and user count, source
flags) and one score from the bundle's fusion
(:class:`~edgerec.sdk.bundle.manifest.FusionRecord`: standardised features, a linear model or a
small MLP with a linear skip, whichever scored better in cross-validation at export on a
validation cut); the reason of a result is the signal that contributed most to its score (the
score minus the score with that feature at its mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from edgerec.sdk.behaviour.index import BehaviourIndex
from edgerec.sdk.bundle.manifest import FusionRecord
from edgerec.sdk.profile import Event, EventKind, event_weights
from edgerec.sdk.ranking import CandidateSource

__all__ = [
    "DEFAULT_FUSION",
    "FEATURES",
    "LATEST",
    "RECENT",
    "SOURCES",
    "FeedCandidates",
    "FeedOptions",
    "FeedRanking",
    "UserHistory",
    "contributions",
    "feature_rows",
    "feed_candidates",
    "fuse",
    "rank_feed",
    "user_factors",
    "user_history",
]

SOURCES = ("visual", "cooc", "collab", "popular")
"""Candidate sources; a candidate's ``sources`` has bit ``1 << i`` for ``SOURCES[i]``."""

FEATURES = ("visual", "collab", "collab_mapped", "cooc", "collab_latest", "collab_recent",
            "popularity", "count", "src_visual", "src_cooc", "src_collab", "src_popular")
"""A candidate's feature row: ``u . v``; ``x . y`` for items with a learned collaborative
vector and, separately, for items whose vector came from the image mapping; the summed
co-occurrence scores with the recent history (weighted by the history item's weight); the
cosine of its collaborative vector with the sum of the newest :data:`LATEST` history items'
(what the person is into right now) and of the newest :data:`RECENT`; ``log1p`` of the decayed
popularity and of the user count; one 0/1 flag per source."""

LATEST = 2
"""History items the ``collab_latest`` feature compares with."""
RECENT = 10
"""History items the ``collab_recent`` feature compares with."""

DEFAULT_FUSION = FusionRecord(
    features=FEATURES, weights=(1.0, 1.0, 0.5, 1.0, 0.5, 0.5, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0),
    mean=(0.0,) * len(FEATURES), scale=(1.0,) * len(FEATURES), bias=0.0, fitted=False)
"""Hand-set fusion for a bundle whose record has none (not fitted: every signal counts)."""

_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class FeedOptions:
    """How many candidates each source gives (before the union is cut to ``candidates``).

    Attributes:
        candidates: C, the union's maximum size.
        visual, collab, popular: items from visual kNN, collaborative kNN, recent-popular.
        recent: the newest history items whose co-occurrence neighbours are candidates.
    """

    candidates: int = 500
    visual: int = 200
    collab: int = 200
    popular: int = 50
    recent: int = 20

    def __post_init__(self) -> None:
        for name in ("candidates", "visual", "collab", "popular", "recent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (
                    1 if name == "candidates" else 0):
                raise ValueError(f"FeedOptions.{name} must be a non-negative int "
                                 f"(candidates >= 1), got {value!r}")


@dataclass(frozen=True)
class UserHistory:
    """A history over catalog rows: ``rows`` (H,) int64 distinct items with a net positive
    weight, oldest to newest (by their latest event); ``weights`` (H,) float64 > 0 (event
    weight x ``0.5 ** (age / half_life_days)``, summed per item); ``kinds``: each item's
    strongest positive event kind (for reasons)."""

    rows: np.ndarray
    weights: np.ndarray
    kinds: tuple[EventKind, ...]

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def user_history(events: Sequence[Event], row: Mapping[str, int], *, half_life_days: float,
                 weights: Optional[Mapping[Any, float]] = None) -> UserHistory:
    """The :class:`UserHistory` of ``events`` (items not in ``row`` ignored), with the same
    event weights and decay as the user vector."""
    table = event_weights(weights)
    usable = [e for e in events if e.item_id in row and table[e.kind] != 0.0]
    if not usable:
        return UserHistory(np.zeros(0, np.int64), np.zeros(0), ())
    newest = max(e.timestamp for e in usable)
    total: dict[str, float] = {}
    last: dict[str, float] = {}
    kind: dict[str, EventKind] = {}
    for e in usable:
        w = table[e.kind] * 0.5 ** ((newest - e.timestamp) / _SECONDS_PER_DAY / half_life_days)
        total[e.item_id] = total.get(e.item_id, 0.0) + w
        last[e.item_id] = max(last.get(e.item_id, -np.inf), e.timestamp)
        if table[e.kind] > 0 and (e.item_id not in kind or table[e.kind] >= table[kind[e.item_id]]):
            kind[e.item_id] = e.kind
    items = sorted((i for i in total if total[i] > 0 and i in kind), key=lambda i: last[i])
    return UserHistory(np.array([row[i] for i in items], np.int64),
                       np.array([total[i] for i in items], np.float64),
                       tuple(kind[i] for i in items))


@dataclass(frozen=True)
class FeedCandidates:
    """The union of the sources: ``rows`` (C,) int64 catalog rows, ``sources`` (C,) uint8
    bitmask over :data:`SOURCES`, ``features`` (C, F) float32 over :data:`FEATURES`,
    ``cooc_from`` (C,) int64 position in the history of the item with the largest
    co-occurrence term (-1: none); ``user_factors`` (d,) the user's collaborative vector."""

    rows: np.ndarray
    sources: np.ndarray
    features: np.ndarray
    cooc_from: np.ndarray
    user_factors: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def _top(scores: np.ndarray, k: int, banned: np.ndarray) -> np.ndarray:
    """Rows of the ``k`` largest ``scores`` not ``banned`` (N,) bool, best first."""
    n = scores.shape[0]
    k = min(k, n - int(np.count_nonzero(banned)))
    if k <= 0:
        return np.zeros(0, np.int64)
    s = np.array(scores)  # a copy, in the scores' dtype
    s[banned] = -np.inf
    part = np.argpartition(s, n - k)[n - k:]
    return part[np.argsort(-s[part], kind="stable")]


def feature_rows(rows: np.ndarray, sources: np.ndarray, visual: np.ndarray,
                 collab: np.ndarray, history: UserHistory, index: BehaviourIndex,
                 recent: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows (R, F) float32 over :data:`FEATURES` of catalog ``rows`` (R,) with their
    ``sources`` bitmasks (R,), ``visual`` similarities ``u . v`` (R,) and collaborative scores
    ``x . y`` (R,), and ``cooc_from`` (R,) (see :class:`FeedCandidates`)."""
    n = len(index)
    position = np.full(n, -1, np.int64)
    position[rows] = np.arange(len(rows))
    recent_rows = history.rows[-recent:] if recent else history.rows[:0]
    recent_w = history.weights[-recent:] if recent else history.weights[:0]
    cooc = np.zeros(len(rows))
    cooc_from = np.full(len(rows), -1, np.int64)
    offset = len(history) - len(recent_rows)
    if len(recent_rows):  # all recent items at once, in history order (the sums' order)
        targets = index.neighbours[recent_rows]  # (H, K)
        terms = recent_w[:, None] * index.neighbour_scores[recent_rows]
        source = np.repeat(np.arange(len(recent_rows)), targets.shape[1])
        targets, terms = targets.ravel(), terms.ravel()
        ok = targets >= 0
        pos = np.where(ok, position[np.maximum(targets, 0)], -1)
        keep = (pos >= 0) & ok
        pos, term, source = pos[keep], terms[keep], source[keep]
        np.add.at(cooc, pos, term)
        # the largest positive term per candidate, the earliest history item on ties
        order = np.lexsort((source, -term, pos))
        first = order[np.r_[True, pos[order][1:] != pos[order][:-1]]] if len(order) else order
        first = first[term[first] > 0]
        cooc_from[pos[first]] = offset + source[first]
    learned = index.learned[rows]
    y = index.collab[rows]
    y_norm = np.linalg.norm(y, axis=1)

    def cosine(newest: int) -> np.ndarray:
        direction = index.collab[history.rows[-newest:]].sum(axis=0)
        return (y @ direction) / np.maximum(y_norm * float(np.linalg.norm(direction)), 1e-12)

    features = np.column_stack([
        visual, np.where(learned, collab, 0.0), np.where(learned, 0.0, collab), cooc,
        cosine(LATEST), cosine(RECENT), np.log1p(index.popularity[rows]),
        np.log1p(index.count[rows]),
        *[(sources >> b) & 1 for b in range(len(SOURCES))],
    ]).astype(np.float32)
    return features, cooc_from


def user_factors(history: UserHistory, index: BehaviourIndex) -> np.ndarray:
    """The user's collaborative vector (d,) float32: the ALS fold-in of the history."""
    return index.model.user_factors(index.collab[history.rows],
                                    history.weights).astype(np.float32)


def feed_candidates(history: UserHistory, u: np.ndarray, index: BehaviourIndex,
                    visual: CandidateSource, visual_of: Any, banned: np.ndarray,
                    options: FeedOptions = FeedOptions()) -> FeedCandidates:
    """The candidates of one user (see the module docstring).

    Args:
        history: the user's :class:`UserHistory` over catalog rows.
        u: the device's user vector (D,) float32.
        index: the behaviour signals per catalog row.
        visual: ``(u, size) -> Candidates`` whose ``keys`` are catalog rows (exclusions and
            filters applied by the source).
        visual_of: ``rows -> (n, D)`` float32 image vectors of catalog rows.
        banned: (N,) bool, rows never returned (history, dismissed, excluded, filtered out).
    """
    x = user_factors(history, index)
    collab_all = index.collab @ x
    pool = visual(u, options.visual) if options.visual else None
    vis_rows = (np.asarray(pool.keys, np.int64) if pool is not None
                else np.zeros(0, np.int64))
    recent = history.rows[-options.recent:] if options.recent else history.rows[:0]
    nb = index.neighbours[recent]
    cooc_rows = np.unique(nb[nb >= 0])
    cooc_rows = cooc_rows[~banned[cooc_rows]]
    collab_rows = _top(collab_all, options.collab, banned)
    popular = index.popular[~banned[index.popular]][:options.popular]
    lists = (vis_rows, cooc_rows, collab_rows, popular)
    rows, first = np.unique(np.concatenate(lists), return_index=True)
    rows = rows[np.argsort(first, kind="stable")][:options.candidates]
    position = np.full(len(index), -1, np.int64)
    position[rows] = np.arange(len(rows))
    sources = np.zeros(len(rows), np.uint8)
    for bit, part in enumerate(lists):
        hit = position[part]
        sources[hit[hit >= 0]] |= np.uint8(1 << bit)
    vis = np.empty(len(rows), np.float32)
    rest = np.ones(len(rows), bool)
    if pool is not None and len(vis_rows):
        at = position[vis_rows]
        ok = at >= 0
        vis[at[ok]] = np.asarray(pool.scores, np.float32)[ok]
        rest[at[ok]] = False
    if rest.any():
        vis[rest] = np.asarray(visual_of(rows[rest]), np.float32) @ u
    features, cooc_from = feature_rows(rows, sources, vis, collab_all[rows], history, index,
                                       options.recent)
    return FeedCandidates(rows, sources, features, cooc_from, x)


@dataclass(frozen=True)
class _Compiled:
    """A :class:`FusionRecord` as arrays: ``cols`` (F',) int64 columns of :data:`FEATURES`
    (-1: a feature the device does not compute), ``mean``/``scale`` (F',), ``w`` (F',),
    ``w1`` (F', H), ``b1`` (H,), ``w2`` (H,) float32."""

    cols: np.ndarray
    known: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    bias: np.float32
    w1: Optional[np.ndarray]
    b1: Optional[np.ndarray]
    w2: Optional[np.ndarray]


_COMPILED: dict[int, tuple[FusionRecord, _Compiled]] = {}


def _compiled(fusion: FusionRecord) -> _Compiled:
    """The arrays of ``fusion``, built once per record object (a few kept)."""
    hit = _COMPILED.get(id(fusion))
    if hit is not None and hit[0] is fusion:
        return hit[1]
    col = {f: j for j, f in enumerate(FEATURES)}
    cols = np.array([col.get(f, -1) for f in fusion.features], np.int64)
    f32 = np.float32
    mlp = bool(fusion.hidden_weights)
    out = _Compiled(cols=np.maximum(cols, 0), known=(cols >= 0).astype(f32),
                    mean=np.asarray(fusion.mean, f32), scale=np.asarray(fusion.scale, f32),
                    w=np.asarray(fusion.weights, f32), bias=f32(fusion.bias),
                    w1=np.ascontiguousarray(np.asarray(fusion.hidden_weights, f32).T)
                    if mlp else None,
                    b1=np.asarray(fusion.hidden_bias, f32) if mlp else None,
                    w2=np.asarray(fusion.output_weights, f32) if mlp else None)
    if len(_COMPILED) >= 16:
        _COMPILED.clear()
    _COMPILED[id(fusion)] = (fusion, out)
    return out


def _standardised(features: np.ndarray, c: _Compiled) -> np.ndarray:
    """``z`` (C, F') float32 over the fusion's features (features not in :data:`FEATURES`:
    0)."""
    z = (np.asarray(features, np.float32)[:, c.cols] - c.mean) / c.scale
    z *= c.known
    return z


def _score(z: np.ndarray, c: _Compiled) -> np.ndarray:
    out = z @ c.w + c.bias
    if c.w1 is not None:
        hidden = z @ c.w1
        hidden += c.b1
        np.maximum(hidden, 0.0, out=hidden)
        out += hidden @ c.w2
    return out


def fuse(features: np.ndarray, fusion: FusionRecord) -> np.ndarray:
    """Scores (C,) float32 of ``features`` (C, F) over :data:`FEATURES` (features the fusion
    names that are not among them count 0, their standardised mean)."""
    c = _compiled(fusion)
    return _score(_standardised(features, c), c)


def contributions(features: np.ndarray, fusion: FusionRecord) -> np.ndarray:
    """Per-feature contributions (C, F) float32 over :data:`FEATURES`: the score minus the
    score with that feature at its mean (for a linear fusion exactly its term
    ``w * (x - mean) / scale``; 0 for features the fusion does not name)."""
    c = _compiled(fusion)
    z = _standardised(features, c)
    out = np.zeros(features.shape, np.float32)
    named = [(k, FEATURES.index(f)) for k, f in enumerate(fusion.features) if f in FEATURES]
    if not len(z) or not named:
        return out
    held = np.repeat(z[None], len(named), axis=0)  # (F', C, F'): one copy per feature held
    for i, (k, _) in enumerate(named):
        held[i, :, k] = 0.0
    at_mean = _score(held.reshape(-1, z.shape[1]), c).reshape(len(named), len(z))
    out[:, [j for _, j in named]] = (_score(z, c)[None] - at_mean).T
    return out


@dataclass(frozen=True)
class FeedRanking:
    """The top ``k``: positions ``order`` (k,) into ``candidates``, their ``rows``, ``scores``
    (fused, float32) and ``signals``: the feature that contributed most to each
    (``"cooc"``, ``"collab"``, ``"visual"`` or ``"popularity"``)."""

    order: np.ndarray
    rows: np.ndarray
    scores: np.ndarray
    signals: tuple[str, ...]
    candidates: FeedCandidates

    def __len__(self) -> int:
        return int(self.rows.shape[0])


_SIGNALS = {"visual": "visual", "collab": "collab", "collab_mapped": "collab",
            "collab_latest": "collab", "collab_recent": "collab",
            "cooc": "cooc", "popularity": "popularity", "count": "popularity"}


def rank_feed(candidates: FeedCandidates, fusion: FusionRecord, k: int,
              tiebreak: Optional[np.ndarray] = None) -> FeedRanking:
    """The best ``k`` of ``candidates`` by fused score (ties: the lower ``tiebreak`` of the
    row, default the earlier candidate)."""
    scores = fuse(candidates.features, fusion)
    ties = (np.arange(len(candidates)) if tiebreak is None
            else np.asarray(tiebreak)[candidates.rows])
    order = np.lexsort((ties, -scores))[: int(k)]
    names = [f for f in FEATURES if f in _SIGNALS]
    cols = [FEATURES.index(f) for f in names]
    contrib = contributions(candidates.features[order], fusion)
    strongest = (np.argmax(contrib[:, cols], axis=1).tolist() if cols and len(order)
                 else [])
    signals = tuple(_SIGNALS[names[b]] for b in strongest) if cols else ("visual",) * len(order)
    return FeedRanking(order, candidates.rows[order], scores[order], signals, candidates)
