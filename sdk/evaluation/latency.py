"""The device's per-user latency, measured in the evaluation run: ``Recommender.for_user`` on
the bundle and the catalog as stored, for the evaluated users' training histories.

BLAS is limited to one thread while timing when ``threadpoolctl`` is installed (it comes with
the ``eval`` extra); otherwise the report says the threads were not limited (set
``OPENBLAS_NUM_THREADS=1`` before starting Python). The scorer runs with one engine thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Callable, Optional, Union

import numpy as np
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import UserVectorRecipe
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.evaluation.events import Interaction
from edgerec.sdk.evaluation.ranker import one_blas_thread
from edgerec.sdk.evaluation.results import LatencyReport
from edgerec.sdk.recommender import Recommender, RecommenderOptions
from edgerec.sdk.scorer import ScorerOptions

__all__ = ["measure_for_user"]


def measure_for_user(bundle: Bundle, catalog: Union[Catalog, str], histories: Mapping[
        str, Sequence[Interaction]], users: Sequence[str], *, k: int, candidates: int,
        recipe: UserVectorRecipe, scorer: Optional[ScorerOptions],
        expected: Callable[[int], Sequence[str]]) -> LatencyReport:
    """Time ``for_user(history, k)`` for each of ``users`` (their ``histories``), after one
    untimed call; ``expected(i)`` is the evaluated top-k ids of ``users[i]`` (for
    ``agreement``). ``scorer`` None ranks without the bundle's scorer."""
    options = RecommenderOptions(
        candidates=candidates, half_life_days=recipe.half_life_days,
        event_weights=dict(recipe.event_weights), use_scorer=scorer is not None,
        scorer=replace(scorer or ScorerOptions(), num_threads=1))
    limit, threads = one_blas_thread()
    times, same, used = [], 0, False
    with Recommender.create_from_bundle(bundle, catalog, options) as rec, limit:
        events = [[e.to_event() for e in histories[u]] for u in users]
        if events:
            rec.for_user(events[0], k=k)
        for i, history in enumerate(events):
            start = time.perf_counter()
            got = rec.for_user(history, k=k)
            times.append(time.perf_counter() - start)
            used = used or got.scorer_used
            same += list(got.ids) == list(expected(i))
    ms = np.array(times) * 1e3 if times else np.zeros(1)
    return LatencyReport(users=len(times), k=k, median_ms=round(float(np.median(ms)), 4),
                         p90_ms=round(float(np.percentile(ms, 90)), 4),
                         mean_ms=round(float(ms.mean()), 4), threads=threads,
                         scorer_used=used, agreement=round(same / max(1, len(times)), 4))
