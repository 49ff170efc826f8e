"""What every model of ``edgerec evaluate`` is: the :class:`Ranker` protocol, the
:class:`ScoreRanker` base, the baselines' options (:class:`BaselineOptions`) and what they are
trained from (:class:`BaselineContext`).

A baseline is a class whose constructor takes a :class:`BaselineContext` and trains on it (on
the training events only; hyperparameters on :meth:`BaselineContext.validation_cut`, never on
held-out events). A baseline that cannot run here (an optional library missing) raises
:class:`BaselineUnavailableError` and is skipped with the reason in the results.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Protocol

import numpy as np
from edgerec.sdk.evaluation.interactions import Interactions
from edgerec.sdk.evaluation.metrics import item_ranks
from edgerec.sdk.evaluation.task import CatalogData, EvalTask
from edgerec.sdk.evaluation.tuning import ValidationCut
from edgerec.sdk.ranking import top_rows

__all__ = [
    "BaselineContext",
    "BaselineOptions",
    "BaselineUnavailableError",
    "Ranker",
    "ScoreRanker",
    "one_blas_thread",
]


def one_blas_thread() -> tuple[contextlib.AbstractContextManager, str]:
    """A context that limits BLAS (and OpenMP) to one thread, through ``threadpoolctl`` (part of
    the ``eval`` extra), and a few words saying whether it could."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext(), "not limited (threadpoolctl missing)"
    return threadpool_limits(1), "1 (threadpoolctl)"


class BaselineUnavailableError(ImportError):
    """A baseline needs something this install lacks (e.g. ``implicit``); it is skipped."""


class Ranker(Protocol):
    """A model :func:`~edgerec.sdk.evaluation.evaluate` ranks with.

    ``user`` is a position in :attr:`EvalTask.users`. ``scores`` returns ``(N,)`` float64 over
    the catalog rows (the AUC's input). ``ranks`` returns the 1-based positions (int64) of
    catalog rows ``items`` in the model's ranking of every row but ``exclude`` (``scores`` is
    what :meth:`scores` returned for the user). ``top`` returns the best ``k`` rows, none of
    ``exclude``. ``fit_seconds``: training time; ``extras``: into the results (e.g. the chosen
    hyperparameters and their validation table).
    """

    name: str
    description: str
    fit_seconds: float
    extras: dict[str, Any]

    def scores(self, user: int) -> np.ndarray: ...

    def ranks(self, user: int, exclude: np.ndarray, items: np.ndarray,
              scores: np.ndarray) -> np.ndarray: ...

    def top(self, user: int, exclude: np.ndarray, k: int) -> np.ndarray: ...


class ScoreRanker:
    """A ranker whose ranking is the order of its scores, ties broken by ``tiebreak`` (N,)."""

    name = ""
    description = ""

    def __init__(self, tiebreak: np.ndarray) -> None:
        self.tiebreak = tiebreak
        self.fit_seconds = 0.0
        self.extras: dict[str, Any] = {}

    def scores(self, user: int) -> np.ndarray:
        raise NotImplementedError

    def ranks(self, user: int, exclude: np.ndarray, items: np.ndarray,
              scores: np.ndarray) -> np.ndarray:
        return item_ranks(scores, exclude=exclude, items=items, tiebreak=self.tiebreak)

    def top(self, user: int, exclude: np.ndarray, k: int) -> np.ndarray:
        return top_rows(self.scores(user), k, exclude=exclude, tiebreak=self.tiebreak)


def _positive_ints(name: str, values: Any, zero: bool = False) -> None:
    if not isinstance(values, tuple) or not values or any(
            isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero else 1)
            for v in values):
        kind = "non-negative" if zero else "positive"
        raise ValueError(f"{name} must be a non-empty tuple of {kind} ints, got {values!r}")


def _positive_floats(name: str, values: Any) -> None:
    if not isinstance(values, tuple) or not values or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf
            for v in values):
        raise ValueError(f"{name} must be a non-empty tuple of positive numbers, got {values!r}")


@dataclass(frozen=True)
class BaselineOptions:
    """How the baselines train. Tuples are grids searched on the validation cut
    (:mod:`.tuning`: each training user's newest training item held out, NDCG@20).

    Attributes:
        skip: baseline names not to run.
        validation_users: at most this many training users (seeded) in the validation cut.
        item_item_max: the co-occurrence, item-kNN and EASE models keep at most this many item
            columns (the items with training events, the most popular first; an item without
            a column scores 0, which is exactly what the full models give an item nobody
            trained on). Together with EASE's fit they peak near 24 bytes per column squared
            (2.4 GB of memory measured for MovieLens' 9,476 columns; ~10 GB at 20,000).
        ease_lambdas: EASE's L2 penalty grid.
        knn_neighbours: item-kNN's neighbourhood sizes (0: every item).
        als_factors, als_regularizations, als_alpha, als_iterations: implicit's ALS.
        bpr_factors, bpr_learning_rates, bpr_regularizations, bpr_iterations: implicit's BPR.
        vbpr_factors, vbpr_epochs, vbpr_lr, vbpr_reg: the numpy visual BPR (Adam, mini-batches
            of 256, ``vbpr_reg`` an L2 penalty on the rows in each batch).
        threads: implicit's threads (1: deterministic for a seed).
    """

    skip: tuple[str, ...] = ()
    validation_users: int = 2000
    item_item_max: int = 20_000
    ease_lambdas: tuple[float, ...] = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)
    knn_neighbours: tuple[int, ...] = (2, 5, 10, 20, 50, 100, 200, 0)
    als_factors: tuple[int, ...] = (64, 128, 256)
    als_regularizations: tuple[float, ...] = (0.01, 0.1, 1.0)
    als_alpha: float = 1.0
    als_iterations: int = 15
    bpr_factors: tuple[int, ...] = (64,)
    bpr_learning_rates: tuple[float, ...] = (0.003, 0.01, 0.05)
    bpr_regularizations: tuple[float, ...] = (0.0001, 0.001, 0.01)
    bpr_iterations: int = 100
    vbpr_factors: int = 32
    vbpr_epochs: int = 30
    vbpr_lr: float = 0.02
    vbpr_reg: float = 1e-3
    threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip", tuple(self.skip))
        for name in ("validation_users", "item_item_max", "als_iterations", "bpr_iterations",
                     "vbpr_factors", "vbpr_epochs", "threads"):
            _positive_ints(name, (getattr(self, name),))
        for name in ("als_factors", "bpr_factors"):
            _positive_ints(name, getattr(self, name))
        _positive_ints("knn_neighbours", self.knn_neighbours, zero=True)
        for name in ("ease_lambdas", "als_regularizations", "bpr_learning_rates",
                     "bpr_regularizations"):
            _positive_floats(name, getattr(self, name))
        _positive_floats("als_alpha / vbpr_lr", (self.als_alpha, self.vbpr_lr))
        if not (isinstance(self.vbpr_reg, (int, float)) and 0 <= self.vbpr_reg < math.inf):
            raise ValueError(f"vbpr_reg must be a non-negative number, got {self.vbpr_reg!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BaselineContext:
    """What the baselines train on: the task, the catalog, the tie order, the seed and the
    options; the training interactions of every training user (``interactions``, built once)
    and each evaluated user's index in them (``users``); the validation cut and Gram matrices,
    made on first use and shared."""

    task: EvalTask
    data: CatalogData
    tiebreak: np.ndarray
    seed: int
    options: BaselineOptions = field(default_factory=BaselineOptions)
    interactions: Interactions = field(init=False)
    users: np.ndarray = field(init=False)
    _cut: Any = field(default=False, init=False, repr=False)
    _grams: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.interactions = Interactions.from_pairs(
            self.task.train_users, self.task.train_items, len(self.task.pair_users),
            len(self.data.ids))
        self.users = self.task.user_pairs_index

    def history(self, user: int) -> np.ndarray:
        """Evaluated user ``user``'s distinct positive training rows, oldest first."""
        return self.interactions.histories[self.users[user]]

    def validation_cut(self) -> Optional[ValidationCut]:
        """The validation cut (None when no training user has two items)."""
        if self._cut is False:
            self._cut = ValidationCut.make(self.interactions,
                                           max_users=self.options.validation_users,
                                           seed=self.seed, tiebreak=self.tiebreak)
        return self._cut

    def gram(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """``(columns, X^T X)`` of ``interactions`` over at most ``item_item_max`` columns
        (cached for the training interactions and the validation cut's)."""
        key = id(interactions)
        if key not in self._grams:
            columns = interactions.columns(self.options.item_item_max)
            self._grams[key] = (columns, interactions.gram(columns))
        return self._grams[key]

    def release(self) -> None:
        """Drop the cached Gram matrices (they can be large)."""
        self._grams.clear()
