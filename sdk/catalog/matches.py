"""Search results: :class:`Match`, :class:`Matches` (one query), :class:`BatchMatches`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

__all__ = ["BatchMatches", "Match", "Matches", "make_matches"]


@dataclass(frozen=True)
class Match:
    """One search hit: the item id, its inner-product score and its metadata."""

    id: str
    score: float
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "metadata": self.metadata}


@dataclass(frozen=True, repr=False)
class Matches:
    """The hits of one query, best first.

    ``ids``: ``(n,)`` str; ``scores``: ``(n,)`` float32 inner products (for an int8 catalog,
    of the dequantised vectors); ``metadata``: one dict per hit. ``n <= k``. The arrays are
    read-only.
    """

    ids: np.ndarray
    scores: np.ndarray
    metadata: tuple[dict[str, Any], ...]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @overload
    def __getitem__(self, index: int) -> Match: ...
    @overload
    def __getitem__(self, index: slice) -> Matches: ...
    def __getitem__(self, index: int | slice) -> Match | Matches:
        if isinstance(index, slice):
            return make_matches(self.ids[index], self.scores[index], self.metadata[index])
        return Match(str(self.ids[index]), float(self.scores[index]), self.metadata[index])

    def __iter__(self) -> Iterator[Match]:
        return (self[i] for i in range(len(self)))

    def to_list(self) -> list[dict[str, Any]]:
        """``[{"id", "score", "metadata"}, ...]``, best first (JSON-ready)."""
        return [m.to_dict() for m in self]

    def __repr__(self) -> str:
        head = ", ".join(f"{m.id!r}: {m.score:.3f}" for m in self[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"Matches({len(self)} hits: {head}{more})"


@dataclass(frozen=True, repr=False)
class BatchMatches:
    """The hits of a batch of queries: one :class:`Matches` per query row, in order."""

    matches: tuple[Matches, ...]

    def __len__(self) -> int:
        return len(self.matches)

    def __getitem__(self, index: int) -> Matches:
        return self.matches[index]

    def __iter__(self) -> Iterator[Matches]:
        return iter(self.matches)

    def to_list(self) -> list[list[dict[str, Any]]]:
        return [m.to_list() for m in self.matches]

    def __repr__(self) -> str:
        sizes = sorted({len(m) for m in self.matches})
        return f"BatchMatches({len(self)} queries, hits per query {sizes})"


def make_matches(ids: np.ndarray, scores: np.ndarray, metadata: tuple[dict, ...]) -> Matches:
    ids = np.array(ids, dtype=str)
    scores = np.array(scores, dtype=np.float32)
    ids.flags.writeable = False
    scores.flags.writeable = False
    return Matches(ids, scores, tuple(metadata))
