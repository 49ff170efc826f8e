"""Co-interaction pairs for the encoder's behaviour term: :class:`BehaviourPairs`.

A shop's events say which photos its customers take together; the distillation can teach the
student that as well as what its teacher sees (``DistillConfig.w_behaviour``). Each training
batch is then half anchors and half a co-occurrence neighbour of each anchor, drawn in
proportion to its score, and :meth:`BehaviourPairs.targets` gives each anchor's target
distribution over the batch (see :mod:`edgerec.export.distill.train`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BehaviourPairs"]


@dataclass(frozen=True)
class BehaviourPairs:
    """Co-occurrence neighbours of the training items.

    Attributes:
        rows: (N, K) int64 training-item indices, -1 where an item has fewer than K.
        scores: (N, K) float32, >= 0, the co-occurrence score of each neighbour (0 at -1).
    """

    rows: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.rows.ndim != 2 or self.rows.shape != self.scores.shape:
            raise ValueError(f"rows {self.rows.shape} and scores {self.scores.shape} must be "
                             "the same (N, K) shape")
        if (self.scores < 0).any() or ((self.rows < 0) & (self.scores > 0)).any():
            raise ValueError("scores must be >= 0, and 0 where there is no neighbour")

    @property
    def items(self) -> int:
        """N, the training items the rows index."""
        return len(self.rows)

    @property
    def linked(self) -> int:
        """How many training items have at least one neighbour."""
        return int((self.scores > 0).any(axis=1).sum())

    def partners(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One partner per item of ``items`` (B,) int64: a neighbour drawn with probability
        proportional to its score, or a uniformly random item when it has none."""
        s = self.scores[items].astype(np.float64)
        total = s.sum(axis=1)
        pick = (np.cumsum(s, axis=1) < (rng.random(len(items)) * total)[:, None]).sum(axis=1)
        pick = np.minimum(pick, s.shape[1] - 1)
        chosen = self.rows[items, pick]
        lonely = total <= 0
        chosen[lonely] = rng.integers(0, self.items, int(lonely.sum()))
        return chosen.astype(np.int64)

    def targets(self, items: np.ndarray) -> np.ndarray:
        """(B, B) float32: entry (a, b) the score of batch item ``b`` as a neighbour of batch
        item ``a`` (0 when it is not one, and between copies of the same item)."""
        hits = self.rows[items][:, :, None] == items[None, None, :]  # (B, K, B)
        out = (hits * self.scores[items][:, :, None]).sum(axis=1).astype(np.float32)
        out[items[:, None] == items[None, :]] = 0.0
        return out
