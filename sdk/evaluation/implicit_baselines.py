"""BPR and ALS from the ``implicit`` library (PyPI ``implicit``, CPU), the usual matrix
factorisation peers. Optional: ``pip install 'edgerec[eval]'``; without it these two baselines
are skipped and the results say so (nothing else here, and nothing on the device, needs it).

Both train on the binary training matrix of every training user, seeded (``random_state``),
with ``BaselineOptions.threads`` threads (1: reproducible) and the BLAS pool limited to one
thread while they fit (``implicit`` asks for that); their grids are searched on the
validation cut. Scores are ``item_factors @ user_factors[u]`` (BPR's item bias is its last
factor). Items without a training event keep what the library gives them (ALS: about zero,
BPR: their random initial factors).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from edgerec.sdk.evaluation.interactions import Interactions
from edgerec.sdk.evaluation.ranker import (
    BaselineContext,
    BaselineUnavailableError,
    ScoreRanker,
    one_blas_thread,
)
from edgerec.sdk.evaluation.tuning import ScoreFn, edge_warning, grid, grid_search

__all__ = ["ImplicitAls", "ImplicitBpr", "implicit_version"]

_INSTALL = "install the evaluation extra: pip install 'edgerec[eval]'"


def implicit_version() -> str:
    """The installed ``implicit``'s version; :class:`BaselineUnavailableError` without it."""
    try:
        import implicit
    except ImportError as exc:
        raise BaselineUnavailableError(f"implicit is not installed ({exc}); {_INSTALL}") from None
    return str(getattr(implicit, "__version__", "unknown"))


def _user_items(interactions: Interactions):
    from scipy.sparse import csr_matrix

    users, items = interactions.pairs()
    return csr_matrix((np.ones(len(users), np.float32), (users, items)),
                      shape=(interactions.n_users, interactions.n_items))


class _Factors:
    def __init__(self, model: Any) -> None:
        self.users = np.asarray(model.user_factors, np.float64)
        self.items = np.asarray(model.item_factors, np.float64)

    def __call__(self, user: int, history: np.ndarray) -> np.ndarray:
        return self.items @ self.users[user]


def _fit(make: Any, interactions: Interactions) -> ScoreFn:
    with one_blas_thread()[0]:  # implicit checks the BLAS pool when a model is made
        model = make()
        model.fit(_user_items(interactions), show_progress=False)
    return _Factors(model)


class _ImplicitRanker(ScoreRanker):
    def __init__(self, context: BaselineContext, points: list[dict[str, Any]]) -> None:
        super().__init__(context.tiebreak)
        version = implicit_version()
        start = time.perf_counter()
        self._context = context
        cut = context.validation_cut() if len(points) > 1 else None
        best, table = (grid_search(cut, points, self._make) if cut is not None
                       else (points[0], []))
        self._score = self._make(context.interactions, best)
        self.fit_seconds = time.perf_counter() - start
        self.extras = {**best, "implicit": version, "validation": table,
                       "fit_seconds": round(self.fit_seconds, 3)}
        warning = edge_warning(self.name, best, points, table)
        if warning:
            self.extras["warning"] = warning

    def _make(self, interactions: Interactions, point: Mapping[str, Any]) -> ScoreFn:
        raise NotImplementedError

    def scores(self, user: int) -> np.ndarray:
        return self._score(int(self._context.users[user]), self._context.history(user))


class ImplicitBpr(_ImplicitRanker):
    name = "bpr"
    description = "BPR matrix factorisation (implicit, CPU), tuned on a validation cut"

    def __init__(self, context: BaselineContext) -> None:
        o = context.options
        super().__init__(context, grid(factors=o.bpr_factors, learning_rate=o.bpr_learning_rates,
                                       regularization=o.bpr_regularizations))

    def _make(self, interactions: Interactions, point: Mapping[str, Any]) -> ScoreFn:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        o = self._context.options
        return _fit(lambda: BayesianPersonalizedRanking(
            iterations=o.bpr_iterations, num_threads=o.threads,
            random_state=self._context.seed + 7, **point), interactions)


class ImplicitAls(_ImplicitRanker):
    name = "als"
    description = "ALS matrix factorisation (implicit, CPU), tuned on a validation cut"

    def __init__(self, context: BaselineContext) -> None:
        o = context.options
        super().__init__(context, grid(factors=o.als_factors,
                                       regularization=o.als_regularizations))

    def _make(self, interactions: Interactions, point: Mapping[str, Any]) -> ScoreFn:
        from implicit.cpu.als import AlternatingLeastSquares

        o = self._context.options
        return _fit(lambda: AlternatingLeastSquares(
            alpha=o.als_alpha, iterations=o.als_iterations, num_threads=o.threads,
            random_state=self._context.seed + 8, **point), interactions)
