"""The same personalised feed with two encoders, paired on one split (``edgerec evaluate
--against``): is the feed a shop gets with its distilled student at least as good as with the
teacher?

::

    log = read_events("events.csv", known_items=set(catalog_a))
    result = compare_encoders(("teacher-bundle", "teacher-catalog"),
                              ("student-bundle", "student-catalog"), log,
                              labels=("teacher", "student"))
    result.margins["device"]["NDCG@20"]     # CI of NDCG@20(student) - NDCG@20(teacher)

Each side is a bundle and the catalog its encoder built from the *same items* (same ids).
One split is made, from side ``a``'s bundle as :func:`~.protocol.evaluate` makes it (the
options', else the scorer's recorded split, else leave-last-out), and both sides rank the same
evaluated users on it. Per side two models: ``device[label]``, the ranking ``for_user`` runs
with that bundle (its behaviour feed when the bundle has behaviour signals, else its scorer
over the top-C by ``u . v``, else ``u . v``), and ``visual_knn[label]``, the pixels-only
ranking ``u . v``. The margins are paired bootstrap CIs over users of ``b - a`` for each
ranking and metric. ``moves`` says what the margin is made of: how many held-out items
ranked differently under ``b`` and by how many positions (a margin made of a few items moving
one place can be no more than a refit's jitter; items leaving the top-k are more than that).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
from edgerec.sdk.behaviour.model import load_behaviour
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.catalog.checks import check_encoder_match
from edgerec.sdk.errors import CatalogError, ProfileError
from edgerec.sdk.evaluation.baselines import VisualKnn
from edgerec.sdk.evaluation.behaviour_feed import BehaviourFeedRanker
from edgerec.sdk.evaluation.device import DeviceRanker
from edgerec.sdk.evaluation.events import EventLog, EventsReport, Holdout
from edgerec.sdk.evaluation.loop import Progress, RankRun, model_results, rank_everyone
from edgerec.sdk.evaluation.protocol import EvaluateOptions, device_recipe
from edgerec.sdk.evaluation.provenance import (
    check_split,
    choose_split,
    has_scorer,
    recorded_holdout,
)
from edgerec.sdk.evaluation.ranker import BaselineContext, Ranker
from edgerec.sdk.evaluation.ranking_metrics import ConfidenceInterval
from edgerec.sdk.evaluation.results import ModelResult
from edgerec.sdk.evaluation.summary import AUC, Bootstrap, margins
from edgerec.sdk.evaluation.task import CatalogData, EvalTask, build_task
from edgerec.sdk.scorer import Scorer, ScorerOptions

__all__ = ["RANKINGS", "EncoderComparison", "RankMoves", "compare_encoders", "rank_moves"]

PathLike = Union[str, os.PathLike]
Side = tuple[Union[Bundle, PathLike], Union[Catalog, PathLike]]

RANKINGS = ("device", "visual_knn")
"""The two rankings compared per side: the device's ``for_user`` and pixels only."""


@dataclass(frozen=True)
class RankMoves:
    """How the held-out items' ranks moved from side ``a`` to side ``b`` (one ranking).

    ``items``: held-out items compared (over all evaluated users). ``k``: the cut-off looked
    at (the primary metric's). ``changed``: items whose rank differs; ``up``/``down``: ranked
    better/worse under ``b``. ``within_k``: changed items ranked within the top ``k`` on at
    least one side (the ones a top-k metric sees); ``crossed_k``: of those, items inside the
    top ``k`` on one side only. ``by_size``: ``within_k`` items by how many places they moved
    (``"1"``, ``"2"``, ``"3-5"``, ``">5"``).
    """

    items: int
    k: int
    changed: int
    up: int
    down: int
    within_k: int
    crossed_k: int
    by_size: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"items": self.items, "k": self.k, "changed": self.changed, "up": self.up,
                "down": self.down, "within_k": self.within_k, "crossed_k": self.crossed_k,
                "by_size": dict(self.by_size)}


def rank_moves(ranks_a: np.ndarray, ranks_b: np.ndarray, k: int) -> RankMoves:
    """:class:`RankMoves` from the 1-based ranks ``(M,)`` int of the same held-out items
    under two rankings, with cut-off ``k`` >= 1."""
    a = np.asarray(ranks_a, np.int64)
    b = np.asarray(ranks_b, np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"ranks must be two (M,) arrays of one shape, got {a.shape} and "
                         f"{b.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    changed = a != b
    seen = changed & (np.minimum(a, b) <= k)
    size = np.abs(a - b)[seen]
    bins = {"1": int((size == 1).sum()), "2": int((size == 2).sum()),
            "3-5": int(((size >= 3) & (size <= 5)).sum()), ">5": int((size > 5).sum())}
    return RankMoves(items=len(a), k=int(k), changed=int(changed.sum()),
                     up=int((b < a).sum()), down=int((b > a).sum()), within_k=int(seen.sum()),
                     crossed_k=int((seen & ((a <= k) != (b <= k))).sum()), by_size=bins)


@dataclass(frozen=True)
class EncoderComparison:
    """What :func:`compare_encoders` measured.

    ``labels``: the two sides' names (``a`` first). ``models``: ``"device[label]"`` and
    ``"visual_knn[label]"`` -> :class:`ModelResult` (all / cold / warm / per-label slices).
    ``device_models``: label -> which model the side's ``for_user`` is (``"behaviour_feed"``,
    ``"scorer"`` or ``"visual_knn"``). ``margins``: ranking (:data:`RANKINGS`) -> metric -> CI
    of ``metric(b) - metric(a)`` over the same users (paired bootstrap). ``metrics``: names in
    report order, ``primary`` the first. ``split``: the holdout's ``describe()`` with its source
    and the evaluated users. ``warnings``: sentences for people.
    """

    labels: tuple[str, str]
    metrics: tuple[str, ...]
    primary: str
    models: Mapping[str, ModelResult]
    device_models: Mapping[str, str]
    margins: Mapping[str, Mapping[str, ConfidenceInterval]]
    moves: Mapping[str, RankMoves]
    split: Mapping[str, Any]
    events: EventsReport
    options: EvaluateOptions
    warnings: tuple[str, ...]
    seconds: float

    @property
    def b_at_least_a(self) -> bool:
        """True when side ``b``'s device ranking is at least side ``a``'s on the primary metric
        (the point estimate; the CI is in ``margins``)."""
        return self.margins["device"][self.primary].mean >= 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "labels": list(self.labels), "metrics": list(self.metrics), "primary": self.primary,
            "b_at_least_a": self.b_at_least_a,
            "models": {k: v.to_dict() for k, v in self.models.items()},
            "device_models": dict(self.device_models),
            "margins": {r: {m: ci.to_dict() for m, ci in per.items()}
                        for r, per in self.margins.items()},
            "moves": {r: m.to_dict() for r, m in self.moves.items()},
            "split": dict(self.split), "events": self.events.to_dict(),
            "options": self.options.to_dict(), "warnings": list(self.warnings),
            "seconds": self.seconds,
        }


@dataclass
class _Side:
    label: str
    bundle: Bundle
    data: CatalogData
    task: Optional[EvalTask] = None


def compare_encoders(
    a: Side,
    b: Side,
    log: EventLog,
    options: Optional[EvaluateOptions] = None,
    *,
    labels: tuple[str, str] = ("a", "b"),
    progress: Optional[Progress] = None,
) -> EncoderComparison:
    """Rank one split of ``log`` with each side's device ranking and pixels-only ranking and
    measure the paired margins ``b - a`` (see the module docstring).

    ``a``, ``b``: ``(bundle, catalog)``, objects (left open) or paths (opened and closed here).
    ``log``: from :func:`~edgerec.sdk.evaluation.events.read_events`. ``options``: the split,
    metrics and bootstrap as for :func:`~.protocol.evaluate` (its baselines and latency are not
    used; None: the defaults). ``progress(done, total)`` after each user.

    Raises:
        CatalogError: the two catalogs do not hold the same items in the same order (build
            both from the same items file).
        EncoderMismatchError: a catalog was built with another encoder than its bundle's.
        ProfileError: no user has a held-out item with a usable history.
    """
    start = time.perf_counter()
    options = options or EvaluateOptions()
    if len(labels) != 2 or labels[0] == labels[1] or not all(labels):
        raise ValueError(f"labels must be two different non-empty names, got {labels!r}")
    with ExitStack() as stack:
        sides = [_open(stack, label, *side) for label, side in zip(labels, (a, b))]
        if sides[0].data.ids != sides[1].data.ids:
            raise CatalogError(
                f"the catalogs of {labels[0]!r} and {labels[1]!r} hold different items (or "
                "in another order): build both with `edgerec catalog build` from the same items "
                "file")
        warnings: list[str] = []
        choice = choose_split(sides[0].bundle, log, protocol=options.protocol,
                              seed=options.seed, test_fraction=options.test_fraction,
                              warnings=warnings)
        split = choice.split(log)
        for side in sides:
            check_split(recorded_holdout(side.bundle), split, log, warnings)
        tiebreak = np.random.default_rng([choice.seed, 1]).permutation(len(sides[0].data.ids))
        runs, device_models = [], {}
        for side in sides:
            device, pixels = _rankers(stack, side, split, options, tiebreak, choice.seed)
            device_models[side.label] = device.name
            device.name, pixels.name = (f"{r}[{side.label}]" for r in RANKINGS)
            runs += [RankRun(device), RankRun(pixels)]
        _check_same_users(*sides)
        task, data = sides[0].task, sides[0].data
        if not task.users:
            raise ProfileError(
                f"nothing to compare in {log.report.path}: no user has two distinct positive "
                "items in the catalog; the comparison needs users with at least two events")
        rank_everyone(runs, task, None, progress)
    metrics = options.metric_list()
    bootstrap = Bootstrap(options.resamples, options.level, choice.seed)
    results, per_user = model_results(runs, task, data, metrics, bootstrap)
    names = [m.name for m in metrics] + [AUC]
    diff, moves = {}, {}
    cutoff = next((m.k for m in metrics if m.k is not None), 20)
    by_name = {run.name: np.concatenate(run.ranks) for run in runs}
    for ranking in RANKINGS:
        ref, other = (f"{ranking}[{label}]" for label in reversed(labels))
        per = margins({ref: per_user[ref], other: per_user[other]}, ref, names, bootstrap)
        diff[ranking] = {m: per[m][other] for m in names if other in per[m]}
        moves[ranking] = rank_moves(by_name[other], by_name[ref], cutoff)  # a -> b
    held = np.concatenate(task.test)
    split_info = {**split.describe(), "source": choice.source, "evaluated_users": len(task.users),
                  "cold_test_items": int(task.cold[held].sum()),
                  "warm_test_items": int((~task.cold[held]).sum())}
    return EncoderComparison(
        labels=tuple(labels), metrics=tuple(names), primary=metrics[0].name, models=results,
        device_models=device_models, margins=diff, moves=moves, split=split_info,
        events=log.report, options=options, warnings=tuple(warnings),
        seconds=round(time.perf_counter() - start, 3))


def _open(stack: ExitStack, label: str, bundle: Union[Bundle, PathLike],
          catalog: Union[Catalog, PathLike]) -> _Side:
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    if isinstance(catalog, Catalog):
        cat = catalog
    else:
        cat = Catalog.open(catalog, readonly=True)
        stack.callback(cat.close)
    check_encoder_match(cat, bundle, f"give side {label!r} the bundle that built its catalog, "
                        "or rebuild the catalog with this bundle")
    return _Side(label, bundle, CatalogData.load(cat))


def _rankers(stack: ExitStack, side: _Side, split: Holdout, options: EvaluateOptions,
             tiebreak: np.ndarray, seed: int) -> tuple[Ranker, Ranker]:
    """The side's device ranking (behaviour feed, else scorer, else ``u . v``) and ``u . v``."""
    recipe, candidates = device_recipe(side.bundle, options)
    side.task = build_task(split, side.data, recipe)
    pixels = VisualKnn(BaselineContext(side.task, side.data, tiebreak, seed))
    behaviour, record, _ = load_behaviour(side.bundle)
    if behaviour is not None and record is not None:
        return BehaviourFeedRanker(behaviour, record, side.task, side.data, split.train,
                                   recipe, candidates, tiebreak), pixels
    if has_scorer(side.bundle):
        scorer = Scorer.create_from_bundle(
            side.bundle, ScorerOptions(engine=options.engine, precision=options.precision))
        stack.callback(scorer.close)
        return DeviceRanker(scorer, side.task, side.data, candidates, tiebreak), pixels
    return VisualKnn(BaselineContext(side.task, side.data, tiebreak, seed)), pixels


def _check_same_users(a: _Side, b: _Side) -> None:
    ta, tb = a.task, b.task
    same = (ta is not None and tb is not None and ta.users == tb.users
            and all(np.array_equal(x, y) for x, y in zip(ta.test, tb.test))
            and all(np.array_equal(x, y) for x, y in zip(ta.banned, tb.banned)))
    if not same:  # same ids and split give the same users; a guard, not an expected path
        raise ProfileError(f"{a.label!r} and {b.label!r} evaluate different users or held-out "
                           "items on the same split: build both catalogs from the same items")
