"""Offline evaluation of personalised recommendation against baselines (``edgerec evaluate``).

::

    log = read_events("events.csv", known_items=set(catalog))
    result = evaluate(bundle, catalog, log, EvaluateOptions(protocol="leave-last-out"))
    result.models["ease"].all["NDCG@20"]            # mean and 95% CI
    result.margins["NDCG@20"]["ease"]               # CI of NDCG@20(device) - NDCG@20(ease)
    json.dumps(result.to_dict())

**Protocol.** The events are split per user by
:func:`~edgerec.sdk.evaluation.events.holdout_split`: leave-last-out (each user's newest
distinct item held out, the rest as history and training) or the fraction split the scorer's
training uses; by default the scorer's recorded split (:mod:`.provenance`), else leave-last-out
when every event has a timestamp, else a seeded random fifth. For every user with held-out
items, each model ranks every catalog item except the user's training items; the held-out
items are the relevant ones. Metrics (:mod:`.metrics`: NDCG@20, Recall@20, HR@10, MRR, and
NDCG/Recall/HR/MAP at ``k``; full-catalog AUC) are averaged over users with
percentile-bootstrap CIs over users, and the device's model is compared with each baseline by
paired bootstrap CIs on every metric (:mod:`.summary`).

**Models** (all in one run, on the same split): ``behaviour_feed``, the device's ranking when
the bundle has behaviour signals (:mod:`.behaviour_feed`; then the reference); ``scorer``, the
device's ranking without them
(:func:`edgerec.sdk.ranking.rank_for_user`, the function :meth:`Recommender.for_user` runs: the
top-C by ``u . v`` re-ranked by the bundle's scorer, with the bundle's C and user-vector recipe;
its ranking beyond C continues in ``u . v`` order, for MRR; its AUC scores the whole catalog
with the scorer; absent, with a warning, when the bundle has no scorer, and then the reference
is ``visual_knn``, the device's ranking without a scorer), then every baseline of
:mod:`.baselines` (hyperparameters chosen on a validation cut of the training events). The
device's ``for_user`` is also timed per user (:mod:`.latency`).

Ties are broken by one seeded random order of the catalog (not by catalog order, which can
correlate with the labels or owners). **Slices**: ``all`` held-out items; ``cold`` (items with
no training event from anyone) and ``warm``; one slice per ``label``. In a slice, the user's
other held-out items count as not relevant, for the ranking metrics and the AUC alike.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np
from edgerec.runtimes import Engine
from edgerec.sdk.behaviour.model import load_behaviour
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import Precision, UserVectorRecipe
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.catalog.checks import check_encoder_match
from edgerec.sdk.errors import ProfileError
from edgerec.sdk.evaluation.baselines import make_baselines
from edgerec.sdk.evaluation.behaviour_feed import BehaviourFeedRanker
from edgerec.sdk.evaluation.device import DeviceRanker
from edgerec.sdk.evaluation.events import EventLog, Holdout, SplitProtocol
from edgerec.sdk.evaluation.latency import measure_for_user
from edgerec.sdk.evaluation.loop import Progress, RankRun, model_results, rank_everyone
from edgerec.sdk.evaluation.metrics import Metric, parse_metric
from edgerec.sdk.evaluation.provenance import (
    check_split,
    choose_split,
    has_scorer,
    recorded_holdout,
)
from edgerec.sdk.evaluation.ranker import BaselineContext, BaselineOptions, Ranker
from edgerec.sdk.evaluation.ranking_metrics import classification_report
from edgerec.sdk.evaluation.results import EvaluationResult, LatencyReport
from edgerec.sdk.evaluation.summary import (
    AUC,
    Bootstrap,
    margins,
)
from edgerec.sdk.evaluation.task import CatalogData, EvalTask, build_task
from edgerec.sdk.scorer import Scorer, ScorerOptions

__all__ = ["DEFAULT_METRICS", "EvaluateOptions", "evaluate"]

PathLike = Union[str, os.PathLike]

DEFAULT_METRICS = ("NDCG@20", "Recall@20", "HR@10", "MRR")
"""The headline metrics, the first the primary one (margins' first column, ``target_met``)."""

NO_SCORER_WARNING = (
    "the bundle has no scorer: the scorer row is absent and for_user on this bundle ranks by "
    "inner product (the visual_knn row); margins are visual_knn minus each baseline"
)


# ------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class EvaluateOptions:
    """How :func:`evaluate` splits, ranks and measures.

    Attributes:
        protocol: :class:`~edgerec.sdk.evaluation.events.SplitProtocol`; None: the scorer's
            recorded split, else leave-last-out when every event has a timestamp, else the
            fraction split (seeded random).
        k: a further cut-off: NDCG, Recall, HR and MAP at ``k`` are reported too.
        metrics: the headline metrics (``NDCG@n``, ``Recall@n``, ``HR@n``, ``MAP@n``, ``MRR``),
            the first the primary one.
        test_fraction, seed: the fraction split's share; None takes the scorer's recorded
            split, else 0.2 and 0. ``seed`` also seeds ties, baselines, negatives and the
            bootstrap.
        candidates: C of the device's two-stage ranking (top-C by ``u . v`` to the scorer);
            None: the bundle's recorded C (as on the device), else 500.
        resamples, level: percentile bootstrap over users.
        half_life_days: recency half-life of the user vector; None: the bundle's recorded
            user-vector recipe (as on the device), else 30.
        latency_users: time the device's ``for_user`` for this many evaluated users (seeded
            sample; 0: not measured).
        engine, precision: which scorer artifact to run (None: as the device picks).
        baselines: :class:`~edgerec.sdk.evaluation.ranker.BaselineOptions`.
    """

    protocol: Optional[SplitProtocol] = None
    k: int = 10
    metrics: tuple[str, ...] = DEFAULT_METRICS
    test_fraction: Optional[float] = None
    seed: Optional[int] = None
    candidates: Optional[int] = None
    resamples: int = 1000
    level: float = 0.95
    half_life_days: Optional[float] = None
    latency_users: int = 1000
    engine: Optional[Engine] = None
    precision: Optional[Precision] = None
    baselines: BaselineOptions = field(default_factory=BaselineOptions)

    def __post_init__(self) -> None:
        for name in ("k", "candidates", "resamples", "latency_users"):
            value = getattr(self, name)
            if value is None and name == "candidates":
                continue
            low = 0 if name == "latency_users" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {self.seed!r}")
        if self.test_fraction is not None and not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1) or None, got {self.test_fraction!r}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level!r}")
        life = self.half_life_days
        if life is not None and not (isinstance(life, (int, float)) and 0 < life < math.inf):
            raise ValueError(f"half_life_days must be a positive number, got "
                             f"{self.half_life_days!r}")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if not self.metrics:
            raise ValueError("metrics must name at least one metric")
        for name in self.metrics:
            parse_metric(name)
        if self.protocol is not None:
            object.__setattr__(self, "protocol", SplitProtocol(self.protocol))
        if self.engine is not None:
            object.__setattr__(self, "engine", Engine(self.engine))
        if self.precision is not None:
            object.__setattr__(self, "precision", Precision(self.precision))
        if not isinstance(self.baselines, BaselineOptions):
            raise TypeError(f"baselines must be BaselineOptions, got {self.baselines!r}")

    def metric_list(self) -> list[Metric]:
        """The headline metrics, then NDCG, Recall, HR and MAP at ``k`` (no repeats)."""
        names = list(self.metrics) + [f"{m}@{self.k}" for m in ("NDCG", "Recall", "HR", "MAP")]
        return [parse_metric(n) for n in dict.fromkeys(names)]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["protocol"] = self.protocol.value if self.protocol else None
        out["engine"] = self.engine.value if self.engine else None
        out["precision"] = self.precision.value if self.precision else None
        out["metrics"] = list(self.metrics)
        return out


# ---------------------------------------------------------------------------- the loop


# ------------------------------------------------------------------------------ evaluate


def _classifier(task: EvalTask, n_items: int,
                seed: int) -> tuple[Callable[[int, np.ndarray], None], list, list]:
    """A hook that keeps, per user, the logits of the held-out items and of as many seeded
    uniform negatives (items neither trained on nor held out)."""
    rng = np.random.default_rng([seed, 4])
    pos: list[np.ndarray] = []
    neg: list[np.ndarray] = []

    def hook(p: int, logits: np.ndarray) -> None:
        allowed = np.ones(n_items, bool)
        allowed[task.banned[p]] = False
        allowed[task.test[p]] = False
        pool = np.flatnonzero(allowed)
        pos.append(logits[task.test[p]])
        if len(pool):
            n = len(task.test[p])
            neg.append(logits[rng.choice(pool, n, replace=n > len(pool))])

    return hook, pos, neg


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def device_recipe(bundle: Bundle, options: EvaluateOptions) -> tuple[UserVectorRecipe, int]:
    """The user-vector recipe and C the device would use with this bundle (the options'
    half-life and C override the bundle's record)."""
    record = bundle.manifest.scorer
    recipe = record.user_vector if record is not None else UserVectorRecipe()
    if options.half_life_days is not None:
        recipe = UserVectorRecipe(options.half_life_days, recipe.event_weights)
    candidates = options.candidates or (record.candidates if record is not None else 500)
    return recipe, candidates


def _latency(bundle: Bundle, catalog: Catalog, split: Holdout, task: EvalTask,
             reference: Ranker, options: EvaluateOptions, recipe: UserVectorRecipe,
             candidates: int, seed: int, scorer: Optional[ScorerOptions],
             data: CatalogData) -> Optional[LatencyReport]:
    if not options.latency_users:
        return None
    n = len(task.users)
    rng = np.random.default_rng([seed, 7])
    chosen = np.sort(rng.choice(n, min(n, options.latency_users), replace=False))
    k = max((m.k or 0) for m in options.metric_list())
    users = [task.users[p] for p in chosen]
    return measure_for_user(
        bundle, catalog, split.train, users, k=k, candidates=candidates, recipe=recipe,
        scorer=scorer,
        expected=lambda i: [data.ids[j] for j in reference.top(int(chosen[i]),
                                                               task.banned[chosen[i]], k)])


def evaluate(
    bundle: Union[Bundle, PathLike],
    catalog: Union[Catalog, PathLike],
    log: EventLog,
    options: EvaluateOptions = EvaluateOptions(),
    *,
    progress: Optional[Progress] = None,
) -> EvaluationResult:
    """Split ``log`` per user, rank every evaluated user's catalog with the device's ranking
    and each baseline, time the device's ``for_user``, and measure them (see the module
    docstring).

    ``bundle``/``catalog``: objects (left open) or paths (opened and closed here; the bundle
    is verified). ``log``: from :func:`~edgerec.sdk.evaluation.events.read_events`, ideally with
    ``known_items`` the catalog's ids. ``progress(done, total)`` is called after each user.

    Raises:
        ProfileError: no user has a held-out item with a usable history (e.g. every user
            has a single event).
        EncoderMismatchError: the catalog was built with another encoder than the bundle's.
        ArtifactNotFoundError, RuntimeUnavailableError, ModelError: the bundle's scorer
            cannot be run here (never skipped silently).
    """
    start = time.perf_counter()
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    owned = not isinstance(catalog, Catalog)
    cat = Catalog.open(catalog, readonly=True) if owned else catalog
    try:
        check_encoder_match(cat, bundle, "evaluate with the bundle that built the catalog, "
                            "or rebuild the catalog with this bundle")
        return _evaluate(bundle, cat, CatalogData.load(cat), log, options, progress, start)
    finally:
        if owned:
            cat.close()


def _evaluate(bundle: Bundle, cat: Catalog, data: CatalogData, log: EventLog,
              options: EvaluateOptions, progress: Optional[Progress],
              start: float) -> EvaluationResult:
    warnings: list[str] = []
    choice = choose_split(bundle, log, protocol=options.protocol, seed=options.seed,
                          test_fraction=options.test_fraction, warnings=warnings)
    if choice.protocol is SplitProtocol.LEAVE_LAST_OUT and options.test_fraction is not None:
        warnings.append(f"test_fraction {options.test_fraction} is not used: leave-last-out "
                        "holds out one item per user")
    split = choice.split(log)
    check_split(recorded_holdout(bundle), split, log, warnings)
    recipe, candidates = device_recipe(bundle, options)
    task = build_task(split, data, recipe)
    if not task.users:
        raise ProfileError(
            f"nothing to evaluate in {log.report.path}: no user has two distinct positive "
            f"items in the catalog ({split.skipped_users} user(s) with fewer were skipped, "
            f"{log.report.unknown_items} event(s) for unknown items dropped); evaluation needs "
            "users with at least two events"
        )
    seed = choice.seed
    tiebreak = np.random.default_rng([seed, 1]).permutation(len(data.ids))
    scorer = None
    classify, pos, neg = _classifier(task, len(data.ids), seed)
    scorer_options = ScorerOptions(engine=options.engine, precision=options.precision)
    try:
        rankers: list[Ranker] = []
        behaviour, behaviour_record, _ = load_behaviour(bundle)
        if behaviour is not None and behaviour_record is not None:  # the device's for_user
            rankers.append(BehaviourFeedRanker(behaviour, behaviour_record, task, data,
                                               split.train, recipe, candidates, tiebreak))
        if has_scorer(bundle):  # opened first: a scorer that cannot run fails fast
            scorer = Scorer.create_from_bundle(bundle, scorer_options)
            rankers.append(DeviceRanker(scorer, task, data, candidates, tiebreak))
        elif not rankers:
            if "visual_knn" in options.baselines.skip:
                raise ValueError("without a scorer visual_knn is the device's ranking (the "
                                 "reference): do not skip it")
            warnings.insert(0, NO_SCORER_WARNING)
        baselines, skipped = make_baselines(BaselineContext(task, data, tiebreak, seed,
                                                            options.baselines))
        rankers += baselines
        runs = [RankRun(r, seconds=r.fit_seconds) for r in rankers]
        rank_everyone(runs, task, classify if scorer is not None else None, progress)
        latency = _latency(bundle, cat, split, task, rankers[0], options, recipe, candidates,
                           seed, scorer_options if scorer is not None else None, data)
    finally:
        if scorer is not None:
            scorer.close()
    warnings += [f"{name} skipped: {why}" for name, why in skipped.items()]
    warnings += [str(r.extras["warning"]) for r in rankers if "warning" in r.extras]
    return _result(runs, task, data, options, seed, split, choice.source, log, warnings,
                   (pos, neg) if scorer is not None else None, latency, skipped, start)


def _result(runs: list[RankRun], task: EvalTask, data: CatalogData, options: EvaluateOptions,
            seed: int, split: Holdout, source: str, log: EventLog, warnings: list[str],
            logits: Optional[tuple[list, list]], latency: Optional[LatencyReport],
            skipped: Mapping[str, str], start: float) -> EvaluationResult:
    metrics = options.metric_list()
    bootstrap = Bootstrap(options.resamples, options.level, seed)
    results, per_user = model_results(runs, task, data, metrics, bootstrap)
    reference = runs[0].name
    names = [m.name for m in metrics] + [AUC]
    report = None
    if logits is not None:
        pos, neg = logits
        scores = np.concatenate(pos + neg)
        labels = np.concatenate([np.ones(sum(map(len, pos)), bool),
                                 np.zeros(sum(map(len, neg)), bool)])
        report = classification_report(_sigmoid(scores), labels, 0.5)
    split_info = _split_info(split, task, source)
    warnings.extend(_data_warnings(log, task, split_info, split))
    return EvaluationResult(
        metrics=tuple(names), primary=metrics[0].name, models=results, reference=reference,
        margins=margins(per_user, reference, names, bootstrap), classification=report,
        split=split_info, events=log.report, options=options, latency=latency,
        skipped=dict(skipped), warnings=tuple(warnings),
        seconds=round(time.perf_counter() - start, 3),
    )


def _split_info(split: Holdout, task: EvalTask, source: str) -> dict[str, Any]:
    held = np.concatenate(task.test)
    return {**split.describe(), "source": source, "evaluated_users": len(task.users),
            "cold_test_items": int(task.cold[held].sum()),
            "warm_test_items": int((~task.cold[held]).sum()),
            "test_events_not_in_catalog": task.dropped_test_events,
            "users_without_history": task.no_history_users}


def _data_warnings(log: EventLog, task: EvalTask, info: Mapping[str, Any],
                   split: Holdout) -> list[str]:
    out = []
    report = log.report
    if report.kept < report.rows:
        out.append(f"{report.rows - report.kept} of {report.rows} event rows were dropped "
                   "(see the events report)")
    if not log.has_timestamps:
        newest = ("each user's last item in file order" if split.protocol is
                  SplitProtocol.LEAVE_LAST_OUT else "a seeded random choice")
        if report.missing_timestamps:
            out.append(f"{report.missing_timestamps} event(s) have no timestamp, so the "
                       f"holdout is {newest}; give every event a timestamp")
        elif split.protocol is SplitProtocol.LEAVE_LAST_OUT:
            out.append(f"the events have no timestamps, so leave-last-out holds out {newest}")
    if info["cold_test_items"] and not info["warm_test_items"]:
        out.append("every held-out item is cold (no training event from anyone): popularity "
                   "and the behaviour baselines (co-occurrence, item-kNN, EASE, BPR, ALS), "
                   "which know items only by their events, cannot rank them")
    if task.dropped_test_events:
        out.append(f"{task.dropped_test_events} held-out event(s) are for items not in the "
                   "catalog and were not evaluated")
    if task.no_history_users:
        out.append(f"{task.no_history_users} user(s) had held-out items but no training item "
                   "in the catalog and were skipped")
    return out
