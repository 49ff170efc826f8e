"""Offline evaluation of personalised recommendation against baselines (``edgerec evaluate``).

::

    log = read_events("events.csv", known_items=set(catalog))
    result = evaluate(bundle, catalog, log, EvaluateOptions(k=10))
    result.models["scorer"].all.report.ndcg        # NDCG@10 of the device's ranking
    result.margins["popularity"]                    # CI of NDCG@10(scorer) - NDCG@10(popularity)
    json.dumps(result.to_dict())

**Protocol.** The events are split per user by
:func:`~edgerec.sdk.evaluation.events.holdout_split` (leave-last-out when every event has a
timestamp, else a seeded random holdout; the same function and parameters the scorer's
training uses, :mod:`.provenance`). For every user with held-out items, each model ranks every
catalog item except the user's training items; the user's held-out items are the relevant ones.
Metrics (:mod:`edgerec.sdk.evaluation.ranking_metrics`) are averaged over users, each with a
percentile-bootstrap CI over users (the same resampled users for every model), and the device's
model is compared with each baseline by a paired bootstrap CI on NDCG@k.

**Models** (all in one run, on the same split): ``scorer``, the device's own ranking
(:func:`edgerec.sdk.ranking.rank_for_user`, the function :meth:`Recommender.for_user` runs: the
top-C by ``u . v`` re-ranked by the bundle's scorer, with the bundle's C and user-vector recipe;
its AUC scores the whole catalog with the scorer; absent, with a warning, when the bundle has no
scorer), then every baseline of :mod:`.baselines` (each a :class:`~.baselines.Ranker`).

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
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import Precision, UserVectorRecipe
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.catalog.checks import check_encoder_match
from edgerec.sdk.errors import ProfileError
from edgerec.sdk.evaluation.baselines import Ranker, make_baselines
from edgerec.sdk.evaluation.events import EventLog, Holdout, holdout_split
from edgerec.sdk.evaluation.provenance import (
    check_split,
    has_scorer,
    holdout_params,
    recorded_holdout,
)
from edgerec.sdk.evaluation.ranking_metrics import (
    auc,
    bootstrap_ci,
    classification_report,
    paired_bootstrap_ci,
    per_user_metrics,
    ranking_report,
)
from edgerec.sdk.evaluation.results import EvaluationResult, ModelResult, SliceResult
from edgerec.sdk.evaluation.task import CatalogData, EvalTask, build_task
from edgerec.sdk.ranking import MatrixCandidates, rank_for_user
from edgerec.sdk.scorer import Scorer, ScorerOptions

__all__ = ["EvaluateOptions", "evaluate"]

PathLike = Union[str, os.PathLike]
Progress = Callable[[int, int], None]

METRICS = ("ndcg", "recall", "hit_rate", "map")
NO_SCORER_WARNING = (
    "the bundle has no scorer: the scorer row is absent and for_user on this bundle ranks by "
    "inner product (the visual_knn row); margins are visual_knn minus each baseline"
)


# ------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class EvaluateOptions:
    """How :func:`evaluate` splits, ranks and measures.

    Attributes:
        k: the cut-off of every ranking metric.
        test_fraction, seed: the holdout (:func:`~edgerec.sdk.evaluation.events.holdout_split`);
            None takes the scorer's recorded split (``manifest.scorer.holdout``), else 0.2
            and 0. ``seed`` also seeds ties, baselines, negatives and the bootstrap.
        candidates: C of the device's two-stage ranking (top-C by ``u . v`` to the scorer);
            None: the bundle's recorded C (as on the device), else 500.
        resamples, level: percentile bootstrap over users.
        half_life_days: recency half-life of the user vector; None: the bundle's recorded
            user-vector recipe (as on the device), else 30.
        bpr_factors, bpr_epochs, bpr_lr, bpr_reg: BPR and VBPR training (Adam, mini-batches
            of 256, ``bpr_reg`` an L2 penalty on the rows in each batch).
        vbpr: also train and rank the VBPR baseline.
        engine, precision: which scorer artifact to run (None: as the device picks).
    """

    k: int = 10
    test_fraction: Optional[float] = None
    seed: Optional[int] = None
    candidates: Optional[int] = None
    resamples: int = 1000
    level: float = 0.95
    half_life_days: Optional[float] = None
    bpr_factors: int = 32
    bpr_epochs: int = 30
    bpr_lr: float = 0.02
    bpr_reg: float = 1e-3
    vbpr: bool = True
    engine: Optional[Engine] = None
    precision: Optional[Precision] = None

    def __post_init__(self) -> None:
        for name in ("k", "candidates", "resamples", "bpr_factors", "bpr_epochs"):
            value = getattr(self, name)
            if value is None and name == "candidates":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {self.seed!r}")
        if self.test_fraction is not None and not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1) or None, got {self.test_fraction!r}")
        for name in ("level",):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)!r}")
        for name in ("half_life_days", "bpr_lr"):
            value = getattr(self, name)
            if value is None and name == "half_life_days":
                continue
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.bpr_reg, (int, float)) and 0 <= self.bpr_reg < math.inf):
            raise ValueError(f"bpr_reg must be a non-negative number, got {self.bpr_reg!r}")
        if self.engine is not None:
            object.__setattr__(self, "engine", Engine(self.engine))
        if self.precision is not None:
            object.__setattr__(self, "precision", Precision(self.precision))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["engine"] = self.engine.value if self.engine else None
        out["precision"] = self.precision.value if self.precision else None
        return out


# ------------------------------------------------------------------------- the device


class DeviceRanker:
    """The device's ranking as a :class:`~.baselines.Ranker`: :func:`rank_for_user` over the
    catalog's vectors with the bundle's scorer and C (its scores, for the AUC: the scorer's
    logits over the whole catalog)."""

    name = "scorer"
    description = "the bundle's scorer re-ranking the top-C by u.v (the device's for_user)"

    def __init__(self, scorer: Scorer, task: EvalTask, data: CatalogData, candidates: int,
                 tiebreak: np.ndarray) -> None:
        self._scorer, self._task, self._v = scorer, task, data.vectors
        self._candidates, self._tiebreak = candidates, tiebreak
        self.fit_seconds = 0.0
        self.extras: dict[str, Any] = {"scorer": scorer.key, "candidates": candidates}

    def scores(self, user: int) -> np.ndarray:
        return self._scorer.score(self._task.u[user], self._v).astype(np.float64)

    def top(self, user: int, exclude: np.ndarray, k: int) -> np.ndarray:
        source = MatrixCandidates(self._v, exclude=exclude, tiebreak=self._tiebreak)
        ranking = rank_for_user(self._task.u[user], source, self._scorer.score, k=k,
                                candidates=self._candidates)
        return np.asarray(ranking.keys, dtype=np.int64)


@dataclass
class _Run:
    """A ranker and what the loop collects for it."""

    ranker: Ranker
    seconds: float = 0.0
    rankings: dict[str, list[str]] = field(default_factory=dict)
    aucs: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ranker.name


def _user_aucs(scores: np.ndarray, banned: np.ndarray,
               slices: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per slice: the AUC of its items against every other non-training item."""
    avail = np.ones(len(scores), bool)
    avail[banned] = False
    out = {}
    for name, positives in slices.items():
        mask = np.zeros(len(scores), bool)
        mask[positives] = True
        if positives.size and (avail & ~mask).any():
            out[name] = auc(scores[avail], mask[avail])
    return out


def _rank_everyone(runs: list[_Run], task: EvalTask, data: CatalogData, k: int,
                   classify: Optional[Callable[[int, np.ndarray], None]],
                   progress: Optional[Progress]) -> None:
    for p, user in enumerate(task.users):
        banned, test = task.banned[p], task.test[p]
        slices = {"all": test, "cold": test[task.cold[test]], "warm": test[~task.cold[test]]}
        for run in runs:
            start = time.perf_counter()
            scores = np.asarray(run.ranker.scores(p), dtype=np.float64)
            run.rankings[user] = [data.ids[j] for j in run.ranker.top(p, banned, k)]
            for name, value in _user_aucs(scores, banned, slices).items():
                run.aucs.setdefault(name, {})[user] = value
            if classify is not None and run.name == "scorer":
                classify(p, scores)
            run.seconds += time.perf_counter() - start
        if progress is not None:
            progress(p + 1, len(task.users))


# ---------------------------------------------------------------------------- metrics


def _slice(rankings: Mapping[str, list[str]], relevant: Mapping[str, list[str]],
           aucs: Optional[Mapping[str, float]], options: EvaluateOptions,
           seed: int) -> Optional[tuple[SliceResult, np.ndarray]]:
    """Report, CIs and the per-user NDCG (sorted users) of one slice; None if it is empty."""
    relevant = {u: r for u, r in relevant.items() if r}
    if not relevant:
        return None
    report = ranking_report(rankings, relevant, options.k, aucs)
    per = per_user_metrics(rankings, relevant, options.k)
    ci = {m: bootstrap_ci(per[m], resamples=options.resamples, level=options.level, seed=seed)
          for m in METRICS}
    if aucs:
        values = [aucs[u] for u in per["users"] if u in aucs]
        if values:
            ci["auc"] = bootstrap_ci(np.array(values), resamples=options.resamples,
                                     level=options.level, seed=seed)
    return SliceResult(report, ci), per["ndcg"]


def _relevant(task: EvalTask, data: CatalogData,
              keep: Callable[[int], bool]) -> dict[str, list[str]]:
    return {user: [data.ids[j] for j in task.test[p] if keep(j)]
            for p, user in enumerate(task.users)}


def _results(models: list[_Run], task: EvalTask, data: CatalogData, options: EvaluateOptions,
             seed: int) -> tuple[dict[str, ModelResult], dict[str, np.ndarray]]:
    cold = task.cold
    relevant = {"all": _relevant(task, data, lambda j: True),
                "cold": _relevant(task, data, lambda j: bool(cold[j])),
                "warm": _relevant(task, data, lambda j: not cold[j])}
    labels = sorted({data.labels[j] for t in task.test for j in t} - {""})
    by_label = {lab: _relevant(task, data, lambda j, lab=lab: data.labels[j] == lab)
                for lab in labels}
    out, ndcg = {}, {}
    for m in models:
        parts = {name: _slice(m.rankings, rel, m.aucs.get(name), options, seed)
                 for name, rel in relevant.items()}
        label_parts = {lab: _slice(m.rankings, rel, None, options, seed)
                       for lab, rel in by_label.items()}
        whole = parts["all"]
        if whole is None:  # cannot happen: every evaluated user has a held-out item
            raise ProfileError("no evaluated user has a held-out item")
        out[m.name] = ModelResult(
            m.name, m.ranker.description, whole[0],
            parts["cold"][0] if parts["cold"] else None,
            parts["warm"][0] if parts["warm"] else None,
            {lab: part[0] for lab, part in label_parts.items() if part},
            round(m.seconds, 3), m.ranker.extras,
        )
        ndcg[m.name] = whole[1]
    return out, ndcg



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


def _recipe(bundle: Bundle, options: EvaluateOptions) -> tuple[UserVectorRecipe, int]:
    """The user-vector recipe and C the device would use with this bundle (the options'
    half-life and C override the bundle's record)."""
    record = bundle.manifest.scorer
    recipe = record.user_vector if record is not None else UserVectorRecipe()
    if options.half_life_days is not None:
        recipe = UserVectorRecipe(options.half_life_days, recipe.event_weights)
    candidates = options.candidates or (record.candidates if record is not None else 500)
    return recipe, candidates


def _load(bundle: Union[Bundle, PathLike], catalog: Union[Catalog, PathLike]
          ) -> tuple[Bundle, CatalogData]:
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    owned = not isinstance(catalog, Catalog)
    cat = Catalog.open(catalog, readonly=True) if owned else catalog
    try:
        check_encoder_match(cat, bundle, "evaluate with the bundle that built the catalog, "
                            "or rebuild the catalog with this bundle")
        return bundle, CatalogData.load(cat)
    finally:
        if owned:
            cat.close()


def evaluate(
    bundle: Union[Bundle, PathLike],
    catalog: Union[Catalog, PathLike],
    log: EventLog,
    options: EvaluateOptions = EvaluateOptions(),
    *,
    progress: Optional[Progress] = None,
) -> EvaluationResult:
    """Split ``log`` per user, rank every evaluated user's catalog with the device's ranking
    and each baseline, and measure them (see the module docstring).

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
    bundle, data = _load(bundle, catalog)
    warnings: list[str] = []
    seed, fraction, source = holdout_params(bundle, log, options.seed, options.test_fraction,
                                            warnings)
    split = holdout_split(log, test_fraction=fraction, seed=seed)
    check_split(recorded_holdout(bundle), split, warnings)
    recipe, candidates = _recipe(bundle, options)
    task = build_task(split, data, recipe)
    if not task.users:
        raise ProfileError(
            f"nothing to evaluate in {log.report.path}: no user has two distinct positive "
            f"items in the catalog ({split.skipped_users} user(s) with fewer were skipped, "
            f"{log.report.unknown_items} event(s) for unknown items dropped); evaluation needs "
            "users with at least two events"
        )
    tiebreak = np.random.default_rng([seed, 1]).permutation(len(data.ids))
    scorer = None
    classify, pos, neg = _classifier(task, len(data.ids), seed)
    try:
        rankers: list[Ranker] = []
        if has_scorer(bundle):  # opened first: a scorer that cannot run fails fast
            scorer = Scorer.create_from_bundle(bundle, ScorerOptions(engine=options.engine,
                                                                     precision=options.precision))
            rankers.append(DeviceRanker(scorer, task, data, candidates, tiebreak))
        else:
            warnings.insert(0, NO_SCORER_WARNING)
        hyper = dict(factors=options.bpr_factors, epochs=options.bpr_epochs,
                     lr=options.bpr_lr, reg=options.bpr_reg)
        rankers += make_baselines(task, data, tiebreak, seed=seed, hyper=hyper,
                                  skip=frozenset() if options.vbpr else frozenset({"vbpr"}))
        runs = [_Run(r, seconds=r.fit_seconds) for r in rankers]
        _rank_everyone(runs, task, data, options.k,
                       classify if scorer is not None else None, progress)
    finally:
        if scorer is not None:
            scorer.close()
    return _result(runs, task, data, options, seed, split, source, log, warnings,
                   (pos, neg) if scorer is not None else None, start)


def _result(runs: list[_Run], task: EvalTask, data: CatalogData, options: EvaluateOptions,
            seed: int, split: Holdout, source: str, log: EventLog, warnings: list[str],
            logits: Optional[tuple[list, list]], start: float) -> EvaluationResult:
    results, ndcg = _results(runs, task, data, options, seed)
    reference = "scorer" if logits is not None else "visual_knn"
    margins = {name: paired_bootstrap_ci(ndcg[reference], values, resamples=options.resamples,
                                         level=options.level, seed=seed)
               for name, values in ndcg.items() if name != reference}
    report = None
    if logits is not None:
        pos, neg = logits
        scores = np.concatenate(pos + neg)
        labels = np.concatenate([np.ones(sum(map(len, pos)), bool),
                                 np.zeros(sum(map(len, neg)), bool)])
        report = classification_report(_sigmoid(scores), labels, 0.5)
    split_info = _split_info(split, task, source)
    warnings.extend(_data_warnings(log, task, split_info))
    return EvaluationResult(
        k=options.k, models=results, reference=reference, margins=margins,
        classification=report, split=split_info, events=log.report, options=options,
        warnings=tuple(warnings), seconds=round(time.perf_counter() - start, 3),
    )


def _split_info(split: Holdout, task: EvalTask, source: str) -> dict[str, Any]:
    held = np.concatenate(task.test)
    return {**split.describe(), "source": source, "evaluated_users": len(task.users),
            "cold_test_items": int(task.cold[held].sum()),
            "warm_test_items": int((~task.cold[held]).sum()),
            "test_events_not_in_catalog": task.dropped_test_events,
            "users_without_history": task.no_history_users}


def _data_warnings(log: EventLog, task: EvalTask, info: Mapping[str, Any]) -> list[str]:
    out = []
    report = log.report
    if report.kept < report.rows:
        out.append(f"{report.rows - report.kept} of {report.rows} event rows were dropped "
                   "(see the events report)")
    if report.missing_timestamps and not log.has_timestamps:
        out.append(f"{report.missing_timestamps} event(s) have no timestamp, so the holdout is "
                   "a seeded random choice, not leave-last-out; give every event a timestamp")
    if info["cold_test_items"] and not info["warm_test_items"]:
        out.append("every held-out item is cold (no training event from anyone): popularity "
                   "and bpr, which know items only by their events, cannot rank them")
    if task.dropped_test_events:
        out.append(f"{task.dropped_test_events} held-out event(s) are for items not in the "
                   "catalog and were not evaluated")
    if task.no_history_users:
        out.append(f"{task.no_history_users} user(s) had held-out items but no training item "
                   "in the catalog and were skipped")
    return out
