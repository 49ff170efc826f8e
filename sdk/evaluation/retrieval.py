"""Retrieval quality metrics (numpy only).

Same-label retrieval: every vector queries all the others; a neighbour is relevant when it
has the query's label. ``mAP@k`` averages, over queries, ``AP@k = sum_i P@i * rel_i /
min(n_relevant, k)``, the definition the teacher models' published figures use (a test
reproduces them when the shared data is beside the checkout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

__all__ = ["QueryRetrieval", "RetrievalReport", "label_retrieval", "label_retrieval_per_query"]


@dataclass(frozen=True)
class RetrievalReport:
    """Same-label retrieval quality over ``queries`` vectors at cut-off ``k``."""

    k: int
    queries: int
    map_at_k: float
    precision_at_k: float
    recall_at_k: float

    def to_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        k = self.k
        return (f"RetrievalReport(mAP@{k}={self.map_at_k:.3f}, P@{k}={self.precision_at_k:.3f}, "
                f"R@{k}={self.recall_at_k:.3f}, queries={self.queries})")


@dataclass(frozen=True, eq=False)  # array fields: compare them with numpy, not ==
class QueryRetrieval:
    """Same-label retrieval per query, for paired comparisons of two encoders on the same
    images (e.g. ``paired_bootstrap_ci(b.ap, a.ap)``).

    Attributes:
        k: the cut-off.
        rows: (Q,) int64, the row of ``vectors`` each query is (rows whose label no other row
            has are left out, so two encoders on the same labels give the same ``rows``).
        ap: (Q,) float64, AP@k of each query.
        precision: (Q,) float64, P@k.
        recall: (Q,) float64, R@k (relevant found in the top k / relevant that exist).
    """

    k: int
    rows: np.ndarray
    ap: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def label_retrieval_per_query(vectors: np.ndarray, labels: Sequence, k: int = 10, *,
                              gallery: Optional[np.ndarray] = None) -> QueryRetrieval:
    """Each row of ``vectors`` (N, D) queries the other N-1 by inner product; the figures of
    each query (:class:`QueryRetrieval`). Queries whose label no other item has are skipped.
    Ties are broken by index.

    ``gallery`` (N, D), row i the same item as row i of ``vectors`` embedded another way (e.g.
    by an older encoder or decoder): the queries search it instead of ``vectors`` itself
    (item i still leaves itself out).

    Raises:
        ValueError: not (N, D) vectors with N labels, a gallery of another shape, or fewer
            than two vectors.
    """
    x = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"need (N, D) vectors and N labels, got {x.shape} and {len(labels)}")
    g = x if gallery is None else np.asarray(gallery, dtype=np.float32)
    if g.shape != x.shape:
        raise ValueError(f"the gallery must be {x.shape} like the vectors, got {g.shape}")
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        raise ValueError("label_retrieval needs at least two vectors.")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_relevant = counts[inverse] - 1
    aps, precisions, recalls = [], [], []
    for start in range(0, n, 1024):
        sims = x[start : start + 1024] @ g.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        rel = (inverse[top] == inverse[start : start + 1024, None]).astype(np.float64)
        precision_at = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
        nrel = n_relevant[start : start + 1024]
        keep = nrel > 0
        aps.append(((precision_at * rel).sum(1) / np.minimum(nrel, k).clip(1))[keep])
        precisions.append(rel.mean(1)[keep])
        recalls.append((rel.sum(1) / nrel.clip(1))[keep])
    return QueryRetrieval(k=k, rows=np.flatnonzero(n_relevant > 0).astype(np.int64),
                          ap=np.concatenate(aps), precision=np.concatenate(precisions),
                          recall=np.concatenate(recalls))


def label_retrieval(vectors: np.ndarray, labels: Sequence, k: int = 10) -> RetrievalReport:
    """Each row of ``vectors`` (N, D) queries the other N-1 by inner product; the means over
    queries of :func:`label_retrieval_per_query`.

    Queries whose label no other item has are skipped. Ties are broken by index.
    """
    q = label_retrieval_per_query(vectors, labels, k)
    found = len(q.ap) > 0
    return RetrievalReport(
        k=q.k,
        queries=len(q.ap),
        map_at_k=float(q.ap.mean()) if found else 0.0,
        precision_at_k=float(q.precision.mean()) if found else 0.0,
        recall_at_k=float(q.recall.mean()) if found else 0.0,
    )
