"""Recommendation ranking and classification metrics (numpy only, exact).

Per-user ranking metrics take ``ranked``, one user's recommendations best first (a list of
string ids or a 1-D numpy array of ids, no duplicates), ``relevant``, the user's held-out
items (any collection of ids, must be non-empty: a user with nothing relevant has to be
skipped by the caller), and a cut-off ``k`` (a positive int). Gains are binary.

* ``recall@k = |top-k ∩ relevant| / |relevant|``
* ``hit_rate@k = 1`` if any relevant item is in the top-k, else ``0``
* ``NDCG@k = DCG / IDCG`` with ``DCG = sum_i rel_i / log2(i + 1)`` (``i`` from 1) and ``IDCG``
  the DCG of ``min(|relevant|, k)`` hits in a row
* ``AP@k = sum_i P@i * rel_i / min(|relevant|, k)`` (as in :mod:`edgerec.sdk.evaluation.retrieval`)

:func:`auc` is the full-catalog ROC AUC of one user (Mann-Whitney U with average ranks, so a
tie between a positive and a negative counts 1/2). :func:`ranking_report` averages the
per-user metrics, :func:`per_user_metrics` returns them aligned per user for
:func:`bootstrap_ci` / :func:`paired_bootstrap_ci` (percentile bootstrap over users).
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

__all__ = [
    "ClassificationReport",
    "ConfidenceInterval",
    "RankingReport",
    "auc",
    "average_precision_at_k",
    "bootstrap_ci",
    "classification_report",
    "hit_rate_at_k",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "per_user_metrics",
    "ranking_report",
    "recall_at_k",
]

_METRICS = ("recall", "ndcg", "hit_rate", "map")
_BOOTSTRAP_CHUNK = 1 << 22  # resampled indices drawn at once (32 MiB of int64)


# --------------------------------------------------------------------------- validation


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def _as_ids(ids: Sequence[str] | np.ndarray, what: str) -> list:
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"{what} must be a sequence of ids, not a single string {ids!r}")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"{what} must be 1-D, got shape {ids.shape}")
        return ids.tolist()
    return list(ids)


def _hits(ranked: Sequence[str] | np.ndarray, relevant: Collection[str],
          k: int) -> tuple[np.ndarray, int, int]:
    """``rel`` (min(k, len(ranked)),) float64 0/1 for the top-k, ``|relevant|`` and ``k``."""
    k = _check_k(k)
    ranked = _as_ids(ranked, "ranked")
    if len(set(ranked)) != len(ranked):
        seen: set = set()
        for item in ranked:
            if item in seen:
                raise ValueError(f"ranked contains duplicate id {item!r}")
            seen.add(item)
    wanted = set(_as_ids(relevant, "relevant"))
    if not wanted:
        raise ValueError("relevant is empty: skip users with no relevant item")
    rel = np.fromiter((x in wanted for x in ranked[:k]), dtype=np.float64)
    return rel, len(wanted), k


def _as_mask(values: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(values)
    if mask.dtype == bool:
        return mask
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{what} must be bool (or 0/1), got values outside {{0, 1}}")
    return mask.astype(bool)


def _as_scores(scores: np.ndarray, n: int, what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) != n:
        raise ValueError(f"{what} must have shape ({n},), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return s


# --------------------------------------------------------------------- per-user metrics


def recall_at_k(ranked: Sequence[str] | np.ndarray, relevant: Collection[str], k: int) -> float:
    """``|top-k ∩ relevant| / |relevant|``; ``ValueError`` if ``relevant`` is empty."""
    rel, n_relevant, _ = _hits(ranked, relevant, k)
    return float(rel.sum() / n_relevant)


def hit_rate_at_k(ranked: Sequence[str] | np.ndarray, relevant: Collection[str],
                  k: int) -> float:
    """1.0 if any relevant item is in the top-k, else 0.0."""
    rel, _, _ = _hits(ranked, relevant, k)
    return float(rel.any())


def ndcg_at_k(ranked: Sequence[str] | np.ndarray, relevant: Collection[str], k: int) -> float:
    """Binary-gain NDCG@k: ``sum_i rel_i / log2(i + 1)`` over the ideal ``min(|relevant|, k)``."""
    rel, n_relevant, k = _hits(ranked, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = discounts[: min(n_relevant, k)].sum()
    return float((rel * discounts[: len(rel)]).sum() / idcg)


def average_precision_at_k(ranked: Sequence[str] | np.ndarray, relevant: Collection[str],
                           k: int) -> float:
    """``AP@k = sum_i P@i * rel_i / min(|relevant|, k)`` (P@i = hits in the top i / i)."""
    rel, n_relevant, k = _hits(ranked, relevant, k)
    precision_at = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((precision_at * rel).sum() / min(n_relevant, k))


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Full-catalog ROC AUC of one user.

    ``scores`` (N,) float (higher = more recommended, finite), ``positive`` (N,) bool (0/1
    accepted). Mann-Whitney U with average ranks: the fraction of (positive, negative) pairs
    the scores order correctly, a tie counting 1/2. Computed in integers, so it is exactly the
    pairwise count rounded once. ``ValueError`` when there is no positive or no negative.
    """
    pos = _as_mask(positive, "positive")
    if pos.ndim != 1:
        raise ValueError(f"positive must be 1-D, got shape {pos.shape}")
    s = _as_scores(scores, len(pos), "scores")
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auc needs a positive and a negative, got {n_pos} and {n_neg}")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    twice_rank = 2 * np.cumsum(counts) - counts + 1  # 2 * average 1-based rank of each value
    twice_u = int(twice_rank[inverse.reshape(-1)][pos].sum()) - n_pos * (n_pos + 1)
    return twice_u / (2 * n_pos * n_neg)


# ----------------------------------------------------------------------- classification


@dataclass(frozen=True)
class ClassificationReport:
    """Binary classification quality at ``threshold`` over ``support`` samples.

    ``positives`` counts the samples labelled positive. ``precision`` is 0.0 when nothing is
    predicted positive, ``recall`` is 0.0 when nothing is labelled positive, ``f1`` is 0.0
    when ``precision + recall`` is 0.
    """

    threshold: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    support: int
    positives: int

    def to_dict(self) -> dict:
        return asdict(self)


def classification_report(scores: np.ndarray, labels: np.ndarray,
                          threshold: float = 0.5) -> ClassificationReport:
    """Predict positive where ``scores >= threshold``; ``scores`` (N,) float, ``labels`` (N,)
    bool (0/1 accepted), N >= 1. See :class:`ClassificationReport` for the 0/0 conventions."""
    truth = _as_mask(labels, "labels")
    if truth.ndim != 1 or len(truth) == 0:
        raise ValueError(f"labels must be 1-D and non-empty, got shape {truth.shape}")
    predicted = _as_scores(scores, len(truth), "scores") >= threshold
    tp = int((predicted & truth).sum())
    n_predicted, positives, n = int(predicted.sum()), int(truth.sum()), len(truth)
    correct = int((predicted == truth).sum())
    precision = tp / n_predicted if n_predicted else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassificationReport(threshold=float(threshold), accuracy=correct / n,
                                precision=precision, recall=recall, f1=f1, support=n,
                                positives=positives)


# ---------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class RankingReport:
    """Means over ``users`` users of the per-user metrics at cut-off ``k``.

    ``auc`` is the mean of the per-user AUCs handed to :func:`ranking_report`, or None.
    """

    k: int
    users: int
    recall: float
    ndcg: float
    hit_rate: float
    map: float
    auc: Optional[float]

    def to_dict(self) -> dict:
        return asdict(self)


def _eligible_users(rankings: Mapping[str, Sequence[str]],
                    relevant: Mapping[str, Collection[str]]) -> list:
    users = sorted(u for u, items in relevant.items() if len(_as_ids(items, "relevant")))
    for user in users:
        if user not in rankings:
            raise ValueError(f"user {user!r} has relevant items but no ranking")
    return users


def per_user_metrics(rankings: Mapping[str, Sequence[str]],
                     relevant: Mapping[str, Collection[str]],
                     k: int = 10) -> dict[str, np.ndarray]:
    """Per-user ``recall``, ``ndcg``, ``hit_rate``, ``map`` at ``k``, for bootstrapping.

    Users are those in ``relevant`` with at least one relevant item, in sorted order; each
    must have a ranking (``ValueError`` naming the first, in sorted order, that has not).
    Users only in ``rankings`` are ignored. Returns ``{"users": (U,) object array of ids,
    "recall" | "ndcg" | "hit_rate" | "map": (U,) float64}``.
    """
    k = _check_k(k)
    users = _eligible_users(rankings, relevant)
    funcs = (recall_at_k, ndcg_at_k, hit_rate_at_k, average_precision_at_k)
    values = np.array([[f(rankings[u], relevant[u], k) for f in funcs] for u in users],
                      dtype=np.float64).reshape(len(users), len(funcs))
    out = {"users": np.array(users, dtype=object)}
    out.update({name: values[:, i].copy() for i, name in enumerate(_METRICS)})
    return out


def ranking_report(rankings: Mapping[str, Sequence[str]],
                   relevant: Mapping[str, Collection[str]], k: int = 10,
                   aucs: Optional[Mapping[str, float]] = None) -> RankingReport:
    """Mean per-user metrics over the users of :func:`per_user_metrics`.

    ``aucs`` (user -> full-catalog AUC, e.g. from :func:`auc`) is averaged over the evaluated
    users it has an entry for (users without a negative have no AUC); ``auc`` is None when
    ``aucs`` is None or covers none of them. ``ValueError`` when no user has a relevant item.
    """
    per_user = per_user_metrics(rankings, relevant, k)
    users = per_user["users"]
    if len(users) == 0:
        raise ValueError("no user has a relevant item")
    mean_auc = None
    if aucs is not None:
        given = [float(aucs[u]) for u in users if u in aucs]
        mean_auc = float(np.mean(given)) if given else None
    means = {name: float(per_user[name].mean()) for name in _METRICS}
    return RankingReport(k=_check_k(k), users=len(users), auc=mean_auc, **means)


# -------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class ConfidenceInterval:
    """``mean`` of the sample with its percentile-bootstrap interval ``[low, high]`` at
    confidence ``level`` from ``resamples`` resamples."""

    mean: float
    low: float
    high: float
    level: float
    resamples: int

    def to_dict(self) -> dict:
        return asdict(self)


def _as_values(values: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"{what} must be 1-D and non-empty, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return v


def bootstrap_ci(values: np.ndarray, *, resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap CI of the mean of ``values`` (U,) float, one value per user.

    Users are resampled with replacement ``resamples`` times with
    ``np.random.default_rng(seed)``; ``[low, high]`` are the ``(1 -/+ level) / 2`` quantiles of
    the resampled means. Deterministic for a given seed.
    """
    v = _as_values(values, "values")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) \
            or resamples < 1:
        raise ValueError(f"resamples must be a positive int, got {resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    n = len(v)
    rows = max(1, _BOOTSTRAP_CHUNK // n)
    means = np.empty(int(resamples), dtype=np.float64)
    for start in range(0, len(means), rows):
        stop = min(start + rows, len(means))
        means[start:stop] = v[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return ConfidenceInterval(mean=float(v.mean()), low=float(low), high=float(high),
                              level=float(level), resamples=int(resamples))


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, *, resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap CI of ``mean(a - b)``, ``a`` and ``b`` (U,) float aligned per user.

    The same resampled users are used for both, so this is the CI of the per-user
    difference (e.g. "the scorer beats the baseline by mean [low, high]").
    """
    a = _as_values(a, "a")
    b = _as_values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be aligned per user, got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, resamples=resamples, level=level, seed=seed)

