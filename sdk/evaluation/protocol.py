"""Offline evaluation of personalised recommendation against baselines (``edgerec evaluate``).

::

    log = read_events("events.csv", known_items=set(catalog))
    result = evaluate(bundle, catalog, log, EvaluateOptions(k=10))
    result.models["scorer"].all.report.ndcg        # NDCG@10 of the device's ranking
    result.margins["popularity"]                    # CI of NDCG@10(scorer) - NDCG@10(popularity)
    json.dumps(result.to_dict())

**Protocol.** The events are split per user by :func:`~edgerec.sdk.evaluation.events.holdout_split`
(leave-last-out when every event has a timestamp, else a seeded random holdout; the same
function and parameters the scorer's training uses). For every user with held-out items, each
model ranks every catalog item except the user's training items; the user's held-out items are
the relevant ones. Metrics (:mod:`edgerec.sdk.evaluation.ranking_metrics`) are averaged over
users, each with
a percentile-bootstrap CI over users (the same resampled users for every model), and the
device's model is compared with each baseline by a paired bootstrap CI on NDCG@k.

**Models** (all in one run, on the same split):

- ``scorer``: what :meth:`Recommender.for_user` does on the device: the top ``candidates`` by
  ``u . v`` re-ranked by the bundle's scorer, the rest after them in ``u . v`` order (``u`` is
  :func:`~edgerec.sdk.profile.user_vector` of the user's training events). Its AUC scores the
  whole catalog with the scorer. Absent (with a warning) when the bundle has no scorer.
- ``visual_knn``: ``u . v`` (the device's ranking without a scorer).
- ``popularity``: the item's number of positive training events.
- ``label_popularity``: the number of positive training events on the item's ``label``
  (catalog metadata): a non-personal baseline that treats cold and warm items alike.
- ``bpr``: BPR matrix factorisation on item ids (:func:`train_bpr`); items without a training
  event get zero factors and the mean bias, so it cannot rank them.
- ``vbpr``: BPR on the visual vectors, ``theta_u . (E v) + beta . v`` (:func:`train_vbpr`);
  no per-item parameter, so it scores cold items too.

Ties are broken by one seeded random order of the catalog (not by catalog order, which can
correlate with the labels or owners). **Slices**: ``all`` held-out items; ``cold`` (items with
no training event from anyone) and ``warm``; one slice per ``label``. In a slice, the user's
other held-out items count as not relevant, for the ranking metrics and the AUC alike.

**Consistency with training.** An exported scorer records
``manifest.metrics["scorer"]["holdout"] = {"strategy", "seed", "test_fraction", ...,
"events_sha256"}``. ``seed``/``test_fraction`` None take it from there (else 0 and 0.2); a
different events file, seed or fraction, or a scorer without that record, gives a warning: the
scorer may have trained on the held-out events.
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
from edgerec.sdk.bundle.manifest import Precision, Role
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.catalog.checks import check_encoder_match
from edgerec.sdk.errors import ProfileError
from edgerec.sdk.evaluation.baselines import train_bpr, train_vbpr
from edgerec.sdk.evaluation.events import EventLog, EventsReport, Holdout, holdout_split
from edgerec.sdk.evaluation.ranking_metrics import (
    ClassificationReport,
    ConfidenceInterval,
    RankingReport,
    auc,
    bootstrap_ci,
    classification_report,
    paired_bootstrap_ci,
    per_user_metrics,
    ranking_report,
)
from edgerec.sdk.profile import user_vector
from edgerec.sdk.scorer import Scorer

__all__ = ["EvaluateOptions", "EvaluationResult", "ModelResult", "SliceResult", "evaluate"]

PathLike = Union[str, os.PathLike]
Progress = Callable[[int, int], None]

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 0
METRICS = ("ndcg", "recall", "hit_rate", "map")
NO_SCORER_WARNING = (
    "the bundle has no scorer: the scorer row is absent and for_user on this bundle ranks by "
    "inner product (the visual_knn row); margins are visual_knn minus each baseline"
)
DESCRIPTIONS = {
    "scorer": "the bundle's scorer re-ranking the top-C by u.v (the device's for_user)",
    "visual_knn": "u.v, u = recency-weighted mean of the history's vectors (no scorer)",
    "popularity": "number of positive training events of the item",
    "label_popularity": "number of positive training events of the item's label",
    "bpr": "BPR matrix factorisation on item ids (cannot rank cold items)",
    "vbpr": "BPR on visual vectors: theta_u.(E v) + beta.v (scores cold items)",
}


# ------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class EvaluateOptions:
    """How :func:`evaluate` splits, ranks and measures.

    Attributes:
        k: the cut-off of every ranking metric.
        test_fraction, seed: the holdout (:func:`~edgerec.sdk.evaluation.events.holdout_split`);
            None
            takes the scorer's recorded split (``manifest.metrics.scorer.holdout``), else 0.2
            and 0. ``seed`` also seeds ties, baselines, negatives and the bootstrap.
        candidates: C of the device's two-stage ranking (top-C by ``u . v`` to the scorer).
        resamples, level: percentile bootstrap over users.
        half_life_days: recency half-life of the user vector (as on the device).
        bpr_factors, bpr_epochs, bpr_lr, bpr_reg: BPR and VBPR training (Adam, mini-batches
            of 256, ``bpr_reg`` an L2 penalty on the rows in each batch).
        vbpr: also train and rank the VBPR baseline.
        engine, precision: which scorer artifact to run (None: as the device picks).
    """

    k: int = 10
    test_fraction: Optional[float] = None
    seed: Optional[int] = None
    candidates: int = 500
    resamples: int = 1000
    level: float = 0.95
    half_life_days: float = 30.0
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


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SliceResult:
    """One model on one slice of the held-out items: mean metrics (``report``) and their
    bootstrap CIs (``ci``: ``"ndcg"``, ``"recall"``, ``"hit_rate"``, ``"map"``, and ``"auc"``
    when AUCs were computed for the slice)."""

    report: RankingReport
    ci: Mapping[str, ConfidenceInterval]

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "ci": {k: v.to_dict() for k, v in self.ci.items()}}


@dataclass(frozen=True)
class ModelResult:
    """One model: ``all`` held-out items, the ``cold`` and ``warm`` ones (None when the split
    has none), and one slice per label (AUC only on ``all``/``cold``/``warm``). ``seconds``:
    training plus ranking time. ``extras``: e.g. ``{"losses": [...]}`` per epoch for BPR."""

    name: str
    description: str
    all: SliceResult
    cold: Optional[SliceResult]
    warm: Optional[SliceResult]
    labels: Mapping[str, SliceResult]
    seconds: float
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> RankingReport:
        return self.all.report

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description, "seconds": self.seconds,
            "all": self.all.to_dict(),
            "cold": self.cold.to_dict() if self.cold else None,
            "warm": self.warm.to_dict() if self.warm else None,
            "labels": {k: v.to_dict() for k, v in self.labels.items()},
            "extras": dict(self.extras),
        }


@dataclass(frozen=True)
class EvaluationResult:
    """Everything :func:`evaluate` measured.

    ``models``: name -> :class:`ModelResult`, in the order of the module docstring.
    ``reference``: the device's model (``"scorer"``, or ``"visual_knn"`` without a scorer);
    ``margins``: baseline -> CI of ``NDCG@k(reference) - NDCG@k(baseline)`` over the same
    users. ``classification``: the scorer's ``sigmoid(logit) >= 0.5`` on held-out positives
    against as many seeded uniform negatives (None without a scorer). ``split``: the holdout's
    ``describe()`` plus where its parameters came from (``source``), the evaluated users, and
    the held-out (user, item) pairs that are cold or warm (``cold_test_items``,
    ``warm_test_items``). ``warnings``: sentences for people.
    """

    k: int
    models: Mapping[str, ModelResult]
    reference: str
    margins: Mapping[str, ConfidenceInterval]
    classification: Optional[ClassificationReport]
    split: Mapping[str, Any]
    events: EventsReport
    options: EvaluateOptions
    warnings: tuple[str, ...]
    seconds: float

    @property
    def target_met(self) -> Optional[bool]:
        """True when the scorer's NDCG@k beats every baseline *significantly* (each margin's
        CI above 0); None without a scorer."""
        if self.reference != "scorer":
            return None
        return all(ci.low > 0 for ci in self.margins.values())

    @property
    def ahead_of_all(self) -> Optional[bool]:
        """True when the scorer's mean NDCG@k is above every baseline's (the point estimate,
        whatever the CIs say); None without a scorer."""
        if self.reference != "scorer":
            return None
        return all(ci.mean > 0 for ci in self.margins.values())

    @property
    def not_significant(self) -> list[str]:
        """Baselines whose margin's CI reaches 0 or below."""
        return [name for name, ci in self.margins.items() if not ci.low > 0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "k": self.k, "reference": self.reference, "target_met": self.target_met,
            "ahead_of_all": self.ahead_of_all, "not_significant": self.not_significant,
            "models": {k: v.to_dict() for k, v in self.models.items()},
            "margins": {k: v.to_dict() for k, v in self.margins.items()},
            "classification": self.classification.to_dict() if self.classification else None,
            "split": dict(self.split), "events": self.events.to_dict(),
            "options": self.options.to_dict(), "warnings": list(self.warnings),
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class _CatalogData:
    """The catalog in memory: ids (N,), float32 vectors (N, D), labels (N,) ('' if none)."""

    ids: tuple[str, ...]
    index: Mapping[str, int]
    vectors: np.ndarray
    labels: tuple[str, ...]

    @classmethod
    def load(cls, catalog: Catalog) -> _CatalogData:
        ids = tuple(catalog)
        found, vectors = catalog.vectors(list(ids)) if ids else ((), np.zeros((0, catalog.dim)))
        labels = []
        for item in found:
            label = catalog.get(item).metadata.get("label")
            labels.append("" if label is None else str(label))
        return cls(tuple(found), {x: i for i, x in enumerate(found)},
                   np.ascontiguousarray(vectors, dtype=np.float32), tuple(labels))


@dataclass(frozen=True)
class _Task:
    """The evaluated users (sorted) and, per user, catalog indices of the training items
    (``banned``), of the held-out items (``test``), and the user vector (``u``, (U, D))."""

    users: tuple[str, ...]
    banned: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    u: np.ndarray
    train_users: np.ndarray  # BPR pairs over every training user (index into bpr_users)
    train_items: np.ndarray
    bpr_users: Mapping[str, int]
    item_counts: np.ndarray  # (N,) positive training events per item
    cold: np.ndarray  # (N,) bool: no training event at all
    dropped_test_events: int
    no_history_users: int


def _build_task(split: Holdout, data: _CatalogData, half_life_days: float) -> _Task:
    index, n = data.index, len(data.ids)
    seen = np.zeros(n, bool)
    counts = np.zeros(n)
    bpr_users: dict[str, int] = {}
    pair_u, pair_i = [], []
    for user in sorted(split.train):
        for it in split.train[user]:
            j = index.get(it.item_id)
            if j is None:
                continue
            seen[j] = True
            if it.positive:
                counts[j] += 1
                pair_u.append(bpr_users.setdefault(user, len(bpr_users)))
                pair_i.append(j)
    users, banned, test, vectors = [], [], [], []
    dropped = no_history = 0
    for user in sorted(split.test):
        held = [index[e.item_id] for e in split.test[user] if e.item_id in index]
        dropped += len(split.test[user]) - len(held)
        train = split.train.get(user, ())
        rows = {e.item_id: data.vectors[index[e.item_id]] for e in train if e.item_id in index}
        u = user_vector([e.to_event() for e in train], rows, half_life_days=half_life_days)
        if not held or u is None or user not in bpr_users:
            no_history += u is None and bool(held)
            continue
        users.append(user)
        banned.append(np.array(sorted({index[i] for i in rows}), dtype=np.int64))
        test.append(np.array(sorted(set(held)), dtype=np.int64))
        vectors.append(u)
    dim = data.vectors.shape[1]
    return _Task(tuple(users), tuple(banned), tuple(test),
                 np.array(vectors, np.float32).reshape(len(users), dim),
                 np.array(pair_u, np.int64), np.array(pair_i, np.int64), bpr_users, counts,
                 ~seen, dropped, no_history)


# ----------------------------------------------------------------------------- ranking


def _top_k(scores: np.ndarray, banned: np.ndarray, tiebreak: np.ndarray, k: int,
           extra: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the ``k`` best items by ``scores`` (N,) (ties: lower ``tiebreak`` first),
    never one in ``banned`` (or ``extra``)."""
    s = np.array(scores, dtype=np.float64)
    s[banned] = -np.inf
    if extra is not None:
        s[extra] = -np.inf
    avail = np.flatnonzero(s > -np.inf)
    if len(avail) > k:
        kth = -np.partition(-s[avail], k - 1)[k - 1]
        avail = avail[s[avail] >= kth]
    order = np.lexsort((tiebreak[avail], -s[avail]))
    return avail[order][:k]


@dataclass
class _Model:
    """A model as the loop sees it: ``scores(user_pos) -> (N,)`` for AUC, and optionally its
    own ``top(user_pos, banned) -> (k,)`` ranking (else the top-k of the scores)."""

    name: str
    scores: Callable[[int], np.ndarray]
    top: Optional[Callable[[int, np.ndarray], np.ndarray]] = None
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    rankings: dict[str, list[str]] = field(default_factory=dict)
    aucs: dict[str, dict[str, float]] = field(default_factory=dict)


def _timed(make: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = make()
    return value, time.perf_counter() - start


def _baselines(task: _Task, data: _CatalogData, options: EvaluateOptions,
               seed: int) -> list[_Model]:
    v = data.vectors
    models = [_Model("visual_knn", lambda p: v @ task.u[p])]
    pop = task.item_counts
    models.append(_Model("popularity", lambda p: pop))
    label_ids = {lab: i for i, lab in enumerate(sorted(set(data.labels)))}
    item_label = np.array([label_ids[lab] for lab in data.labels], np.int64)
    per_label = np.bincount(item_label, weights=pop, minlength=len(label_ids))
    if "" in label_ids:  # items without a label share no label's popularity
        per_label[label_ids[""]] = 0.0
    label_score = per_label[item_label]  # ties (within a label): the seeded order
    models.append(_Model("label_popularity", lambda p: label_score))
    n_users, n_items = len(task.bpr_users), len(data.ids)
    hyper = dict(factors=options.bpr_factors, epochs=options.bpr_epochs, lr=options.bpr_lr,
                 reg=options.bpr_reg)
    to_bpr = np.array([task.bpr_users[u] for u in task.users], np.int64)
    bpr, fit = _timed(lambda: train_bpr(task.train_users, task.train_items, n_users, n_items,
                                        seed=seed + 2, **hyper))
    models.append(_Model("bpr", lambda p: bpr.scores(to_bpr[p]), seconds=fit,
                         extras={"losses": list(bpr.losses), "fit_seconds": fit}))
    if options.vbpr:
        vbpr, fit = _timed(lambda: train_vbpr(task.train_users, task.train_items, v, n_users,
                                              seed=seed + 3, **hyper))
        models.append(_Model("vbpr", lambda p: vbpr.scores(to_bpr[p], v), seconds=fit,
                             extras={"losses": list(vbpr.losses), "fit_seconds": fit}))
    return models


def _scorer_model(scorer: Scorer, task: _Task, data: _CatalogData, options: EvaluateOptions,
                  tiebreak: np.ndarray) -> _Model:
    """The device's two-stage ranking (see the module docstring)."""
    v, k = data.vectors, options.k

    def top(p: int, banned: np.ndarray) -> np.ndarray:
        ip = v @ task.u[p]
        cand = _top_k(ip, banned, tiebreak, options.candidates)
        if len(cand) == 0:
            return cand
        logits = scorer.score(task.u[p], v[cand])
        ranked = cand[np.argsort(-logits, kind="stable")]
        if len(ranked) < k:
            ranked = np.concatenate([ranked, _top_k(ip, banned, tiebreak, k - len(ranked),
                                                    extra=cand)])
        return ranked[:k]

    model = _Model("scorer", lambda p: scorer.score(task.u[p], v).astype(np.float64), top)
    key = getattr(scorer, "key", None) or scorer.artifact.key  # e.g. scorer/onnx/fp32
    model.extras.update({"scorer": str(key), "candidates": options.candidates})
    return model


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


def _rank_everyone(models: list[_Model], task: _Task, data: _CatalogData, k: int,
                   tiebreak: np.ndarray, classify: Optional[Callable[[int, np.ndarray], None]],
                   progress: Optional[Progress]) -> None:
    for p, user in enumerate(task.users):
        banned, test = task.banned[p], task.test[p]
        slices = {"all": test, "cold": test[task.cold[test]], "warm": test[~task.cold[test]]}
        for model in models:
            start = time.perf_counter()
            scores = np.asarray(model.scores(p), dtype=np.float64)
            top = model.top(p, banned) if model.top else _top_k(scores, banned, tiebreak, k)
            model.rankings[user] = [data.ids[j] for j in top]
            for name, value in _user_aucs(scores, banned, slices).items():
                model.aucs.setdefault(name, {})[user] = value
            if classify is not None and model.name == "scorer":
                classify(p, scores)
            model.seconds += time.perf_counter() - start
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


def _relevant(task: _Task, data: _CatalogData,
              keep: Callable[[int], bool]) -> dict[str, list[str]]:
    return {user: [data.ids[j] for j in task.test[p] if keep(j)]
            for p, user in enumerate(task.users)}


def _results(models: list[_Model], task: _Task, data: _CatalogData, options: EvaluateOptions,
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
            m.name, DESCRIPTIONS[m.name], whole[0],
            parts["cold"][0] if parts["cold"] else None,
            parts["warm"][0] if parts["warm"] else None,
            {lab: part[0] for lab, part in label_parts.items() if part},
            round(m.seconds, 3), m.extras,
        )
        ndcg[m.name] = whole[1]
    return out, ndcg


# ------------------------------------------------------------------- holdout provenance


def _has_scorer(bundle: Bundle) -> bool:
    """An engine artifact or a weights file (the folded numpy path) with role ``scorer``."""
    weights = getattr(bundle, "weights", None)
    return bundle.has(Role.SCORER) or bool(weights is not None and weights(Role.SCORER))


def _holdout_record(bundle: Bundle) -> Optional[Mapping[str, Any]]:
    scorer = bundle.manifest.metrics.get("scorer")
    record = scorer.get("holdout") if isinstance(scorer, Mapping) else None
    return record if isinstance(record, Mapping) else None


def _holdout_params(bundle: Bundle, log: EventLog, options: EvaluateOptions,
                    warnings: list[str]) -> tuple[int, float, str]:
    """``(seed, test_fraction, source)``; warns where the scorer's split cannot be matched."""
    has_scorer = _has_scorer(bundle)
    record = _holdout_record(bundle) if has_scorer else None
    if has_scorer and record is None:
        warnings.append(
            "the bundle's scorer does not record its training split "
            "(manifest metrics.scorer.holdout): it may have trained on the events held out "
            "here, so its numbers may be optimistic; export the scorer again to record it"
        )
    seed, fraction, source = DEFAULT_SEED, DEFAULT_TEST_FRACTION, "default"
    if record is not None:
        seed, fraction = int(record.get("seed", seed)), float(record.get("test_fraction", fraction))
        source = "bundle"
        sha = record.get("events_sha256")
        if sha and sha != log.report.sha256:
            warnings.append(
                f"WARNING: the events file {log.report.path} (sha256 {log.report.sha256[:12]}) is "
                f"not the one the scorer trained on (sha256 {str(sha)[:12]}): the scorer may have "
                "trained on events held out here, so its numbers may be optimistic; evaluate on "
                "the training events file"
            )
    for name, given in (("seed", options.seed), ("test_fraction", options.test_fraction)):
        if given is None:
            continue
        recorded = seed if name == "seed" else fraction
        if record is not None and given != recorded:
            warnings.append(
                f"{name} {given} differs from the {recorded} the scorer's split used: the "
                "scorer may have trained on events held out here (drop the option to use its)"
            )
        source = "options"
    seed = options.seed if options.seed is not None else seed
    fraction = options.test_fraction if options.test_fraction is not None else fraction
    return seed, fraction, source


def _check_split(record: Optional[Mapping[str, Any]], split: Holdout,
                 warnings: list[str]) -> None:
    if record is None:
        return
    described = split.describe()
    diffs = [f"{key} {record[key]!r} there, {described[key]!r} here"
             for key in ("strategy", "train_events", "test_events", "test_users")
             if key in record and record[key] != described[key]]
    if diffs:
        warnings.append("the split differs from the scorer's training split ("
                        + "; ".join(diffs) + "): its numbers may be optimistic")


# ------------------------------------------------------------------------------ evaluate


def _classifier(task: _Task, n_items: int,
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


def evaluate(
    bundle: Union[Bundle, PathLike],
    catalog: Union[Catalog, PathLike],
    log: EventLog,
    options: EvaluateOptions = EvaluateOptions(),
    *,
    progress: Optional[Progress] = None,
) -> EvaluationResult:
    """Split ``log`` per user, rank every evaluated user's catalog with the scorer and each
    baseline, and measure them (see the module docstring).

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
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    owned = not isinstance(catalog, Catalog)
    cat = Catalog.open(catalog, readonly=True) if owned else catalog
    try:
        check_encoder_match(cat, bundle, "evaluate with the bundle that built the catalog, "
                            "or rebuild the catalog with this bundle")
        data = _CatalogData.load(cat)
    finally:
        if owned:
            cat.close()
    warnings: list[str] = []
    seed, fraction, source = _holdout_params(bundle, log, options, warnings)
    split = holdout_split(log, test_fraction=fraction, seed=seed)
    _check_split(_holdout_record(bundle) if _has_scorer(bundle) else None, split, warnings)
    task = _build_task(split, data, options.half_life_days)
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
        models = []
        if _has_scorer(bundle):  # opened first: a scorer that cannot run fails fast
            scorer = Scorer.create_from_bundle(bundle, engine=options.engine,
                                               precision=options.precision)
            models.append(_scorer_model(scorer, task, data, options, tiebreak))
        else:
            warnings.insert(0, NO_SCORER_WARNING)
        models += _baselines(task, data, options, seed)
        _rank_everyone(models, task, data, options.k, tiebreak,
                       classify if scorer is not None else None, progress)
    finally:
        if scorer is not None:
            scorer.close()
    results, ndcg = _results(models, task, data, options, seed)
    reference = "scorer" if scorer is not None else "visual_knn"
    margins = {name: paired_bootstrap_ci(ndcg[reference], values, resamples=options.resamples,
                                         level=options.level, seed=seed)
               for name, values in ndcg.items() if name != reference}
    report = None
    if scorer is not None:
        logits = np.concatenate(pos + neg)
        labels = np.concatenate([np.ones(sum(map(len, pos)), bool),
                                 np.zeros(sum(map(len, neg)), bool)])
        report = classification_report(_sigmoid(logits), labels, 0.5)
    split_info = _split_info(split, task, source)
    warnings.extend(_data_warnings(log, task, split_info))
    return EvaluationResult(
        k=options.k, models=results, reference=reference, margins=margins,
        classification=report, split=split_info, events=log.report, options=options,
        warnings=tuple(warnings), seconds=round(time.perf_counter() - start, 3),
    )


def _split_info(split: Holdout, task: _Task, source: str) -> dict[str, Any]:
    held = np.concatenate(task.test)
    return {**split.describe(), "source": source, "evaluated_users": len(task.users),
            "cold_test_items": int(task.cold[held].sum()),
            "warm_test_items": int((~task.cold[held]).sum()),
            "test_events_not_in_catalog": task.dropped_test_events,
            "users_without_history": task.no_history_users}


def _data_warnings(log: EventLog, task: _Task, info: Mapping[str, Any]) -> list[str]:
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
