"""The ranking loop shared by :func:`~.protocol.evaluate` and :func:`~.compare.compare_encoders`:
every model ranks every evaluated user's catalog (:func:`rank_everyone`), then per model and
slice the metrics with bootstrap CIs (:func:`model_results`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from edgerec.sdk.errors import ProfileError
from edgerec.sdk.evaluation.metrics import Metric
from edgerec.sdk.evaluation.ranker import Ranker
from edgerec.sdk.evaluation.results import ModelResult
from edgerec.sdk.evaluation.summary import Bootstrap, PerUser, auc_by_slice, slice_result
from edgerec.sdk.evaluation.task import CatalogData, EvalTask

__all__ = ["Progress", "RankRun", "model_results", "rank_everyone"]

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called after each evaluated user."""


@dataclass
class RankRun:
    """A ranker and what the loop collects for it: per evaluated user the ranks of the
    held-out items (aligned with ``task.test``) and the AUC of each slice."""

    ranker: Ranker
    seconds: float = 0.0
    ranks: list[np.ndarray] = field(default_factory=list)
    aucs: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ranker.name


def rank_everyone(runs: list[RankRun], task: EvalTask,
                  classify: Optional[Callable[[int, np.ndarray], None]],
                  progress: Optional[Progress]) -> None:
    """Rank ``task``'s users with every run's ranker, in user order, appending to each run the
    ranks of the held-out items and the AUC of the all / cold / warm slices; ``classify(p,
    scores)`` sees the ``"scorer"`` run's scores."""
    for p in range(len(task.users)):
        banned, test = task.banned[p], task.test[p]
        slices = {"all": test, "cold": test[task.cold[test]], "warm": test[~task.cold[test]]}
        for run in runs:
            start = time.perf_counter()
            scores = np.asarray(run.ranker.scores(p), dtype=np.float64)
            run.ranks.append(np.asarray(run.ranker.ranks(p, banned, test, scores), np.int64))
            for name, value in auc_by_slice(scores, banned, slices).items():
                run.aucs.setdefault(name, {})[p] = value
            if classify is not None and run.name == "scorer":
                classify(p, scores)
            run.seconds += time.perf_counter() - start
        if progress is not None:
            progress(p + 1, len(task.users))


def model_results(runs: list[RankRun], task: EvalTask, data: CatalogData,
                  metrics: list[Metric], bootstrap: Bootstrap,
                  ) -> tuple[dict[str, ModelResult], dict[str, PerUser]]:
    """Per run: its :class:`ModelResult` (all, cold, warm and per-label slices) and its
    per-user values on the ``all`` slice (for paired margins)."""
    cold = [task.cold[t] for t in task.test]
    masks = {"all": [np.ones(len(t), bool) for t in task.test], "cold": cold,
             "warm": [~c for c in cold]}
    item_labels = np.array(data.labels, dtype=object)
    labels = sorted({data.labels[j] for t in task.test for j in t} - {""})
    by_label = {lab: [item_labels[t] == lab for t in task.test] for lab in labels}
    out, per_user = {}, {}
    for run in runs:
        parts = {name: slice_result(run.ranks, m, metrics, run.aucs.get(name), bootstrap)
                 for name, m in masks.items()}
        label_parts = {lab: slice_result(run.ranks, m, metrics, None, bootstrap)
                       for lab, m in by_label.items()}
        whole = parts["all"]
        if whole is None:  # cannot happen: every evaluated user has a held-out item
            raise ProfileError("no evaluated user has a held-out item")
        out[run.name] = ModelResult(
            run.name, run.ranker.description, whole[0],
            parts["cold"][0] if parts["cold"] else None,
            parts["warm"][0] if parts["warm"] else None,
            {lab: part[0] for lab, part in label_parts.items() if part},
            round(run.seconds, 3), dict(run.ranker.extras),
        )
        per_user[run.name] = whole[1]
    return out, per_user
