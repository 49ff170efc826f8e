"""The behaviour signals laid out over a catalog's items: :class:`BehaviourIndex`.

The bundle's :class:`~.model.BehaviourModel` is keyed by the ids the export saw; a catalog on
the device may hold fewer items (removed since) or more (added with ``catalog add``). The
index gives every catalog item, by row, its popularity, its co-occurrence neighbours (as
catalog rows) and a collaborative vector: the learned one, else the image mapping's, so an item
added on the device is rankable at once through its photo (with zero popularity and no
co-occurrence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
from edgerec.sdk.behaviour.model import BehaviourModel

__all__ = ["BehaviourIndex"]

VectorsOf = Callable[[Sequence[str]], np.ndarray]
"""``vectors_of(ids) -> (len(ids), D)`` float32 image vectors of catalog items."""


@dataclass(frozen=True, eq=False)
class BehaviourIndex:
    """Behaviour signals per catalog row.

    Attributes:
        model: the bundle's signals.
        ids: the catalog's ids (N,), row order; ``row``: id -> row.
        popularity, count: (N,) float32 (0 for items the export did not see).
        neighbours: (N, K) int64 catalog rows (-1: none); neighbour_scores: (N, K) float32.
        collab: (N, d) float32 collaborative vectors; learned: (N,) bool, True when from events.
        popular: catalog rows by popularity, most popular first (items with any).
        unknown_in_catalog: items of the model that the catalog lacks.
    """

    model: BehaviourModel
    ids: tuple[str, ...]
    row: dict[str, int]
    popularity: np.ndarray
    count: np.ndarray
    neighbours: np.ndarray
    neighbour_scores: np.ndarray
    collab: np.ndarray
    learned: np.ndarray
    popular: np.ndarray
    unknown_in_catalog: int

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, model: BehaviourModel, ids: Sequence[str],
              vectors_of: VectorsOf) -> BehaviourIndex:
        """Align ``model`` to the catalog items ``ids``; ``vectors_of`` is asked only for the
        image vectors of items the model has no learned collaborative vector for."""
        ids = tuple(ids)
        row = {item: j for j, item in enumerate(ids)}
        n, k = len(ids), model.neighbours.shape[1]
        source = np.array([row.get(item, -1) for item in model.ids], dtype=np.int64)
        present = source >= 0
        target = source[present]  # catalog rows of the model's items, in model order
        popularity, count = np.zeros(n, np.float32), np.zeros(n, np.float32)
        popularity[target] = model.popularity[present]
        count[target] = model.count[present]
        neighbours = np.full((n, k), -1, np.int64)
        scores = np.zeros((n, k), np.float32)
        nb = model.neighbours[present]
        mapped = np.where(nb >= 0, source[np.maximum(nb, 0)], -1)
        neighbours[target] = mapped
        scores[target] = np.where(mapped >= 0, model.neighbour_scores[present], 0.0)
        collab = np.zeros((n, model.dim), np.float32)
        learned = np.zeros(n, bool)
        keep = model.learned[present]
        collab[target[keep]] = model.collab[present][keep]
        learned[target[keep]] = True
        cold = np.flatnonzero(~learned)
        if len(cold):
            collab[cold] = model.map_vectors(vectors_of([ids[j] for j in cold]))
        order = np.argsort(-popularity, kind="stable")
        popular = order[popularity[order] > 0]
        return cls(model, ids, row, popularity, count, neighbours, scores, collab, learned,
                   popular, int((~present).sum()))
