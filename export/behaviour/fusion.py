"""Fitting the feed's fusion on validation cuts of the training events: :func:`fit_fusion`.

Cut ``k`` (``k = 1 .. BehaviourOptions.validation_cuts``) holds out each sampled training user's
``k``-th newest positive training item and learns the behaviour signals without the newest
``k`` (:func:`~.learn.learn_behaviour`); the device's own candidate generator
(:func:`edgerec.sdk.behaviour.feed_candidates`) gives every sampled user their candidates and
feature rows, so the negatives are exactly the candidates the device ranks. Two fusions are fit
on those lists (features standardised):

- **linear**: a listwise softmax regression (ListNet top-one, L2) that learns to put the
  held-out item first among its candidates;
- **mlp**: the scorer's recipe on feature rows: one ReLU hidden layer with dropout beside a
  linear skip, binary cross-entropy (positives up-weighted to the negatives' total), Adam with
  L2 (weight decay), in torch.

``fusion="auto"`` measures both by NDCG@20 over user folds (fit on the other folds' lists of
every cut, measured on cut 1 of the held-out fold's users) and keeps the MLP only when its mean
paired margin over the linear fusion exceeds two standard errors of that margin (else the
simpler model), then refits the kept one on all lists. The record keeps both cross-validated
scores and the margin, the candidate recall and the NDCG@20 of the fused score beside each
signal alone, so a reader sees what fusion adds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from edgerec.export.behaviour.learn import learn_behaviour
from edgerec.export.options import BehaviourOptions
from edgerec.sdk.behaviour.feed import (
    DEFAULT_FUSION,
    FEATURES,
    FeedOptions,
    feed_candidates,
    fuse,
    user_history,
)
from edgerec.sdk.behaviour.index import BehaviourIndex
from edgerec.sdk.bundle.manifest import FusionRecord, UserVectorRecipe
from edgerec.sdk.evaluation.events import Interaction, SplitProtocol, holdout_split
from edgerec.sdk.profile import user_vector
from edgerec.sdk.ranking import MatrixCandidates

__all__ = ["ValidationLists", "choose_fusion", "fit_fusion", "fit_linear", "fit_mlp",
           "listwise_regression", "validation_lists"]

Log = Callable[[str], None]
_K = 20
_SINGLE = ("visual", "collab", "cooc", "popularity")


@dataclass(frozen=True)
class ValidationLists:
    """The fusion's training data: per (cut, sampled user), the feature rows ``xs[i]``
    (C_i, F) float32 of the candidates the device's generator gives that user and ``ys[i]``
    (C_i,) bool, the held-out item's row; ``users[i]`` the user's position in the sample,
    ``cuts[i]`` the cut (1: the newest training item held out)."""

    xs: list[np.ndarray]
    ys: list[np.ndarray]
    users: np.ndarray
    cuts: np.ndarray

    def __len__(self) -> int:
        return len(self.xs)

    def hits(self, cut: int = 1) -> int:
        """Users of ``cut`` whose held-out item is among their candidates."""
        return sum(bool(y.any()) for y, c in zip(self.ys, self.cuts) if c == cut)

    def select(self, keep: np.ndarray) -> ValidationLists:
        idx = np.flatnonzero(keep)
        return ValidationLists([self.xs[i] for i in idx], [self.ys[i] for i in idx],
                               self.users[idx], self.cuts[idx])


def _cut_lists(train: Mapping[str, Sequence[Interaction]], test: Mapping[str, Sequence[
        Interaction]], users: Sequence[str], item_ids: Sequence[str], v: np.ndarray,
        options: BehaviourOptions, recipe: UserVectorRecipe, feed: FeedOptions
        ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Candidate lists of ``users`` (those with a usable history) for one cut."""
    learned = learn_behaviour(train, item_ids, v, options, log=lambda _m: None)
    if learned.model is None:
        return [], [], []
    row = {item: j for j, item in enumerate(item_ids)}
    index = BehaviourIndex.build(learned.model, item_ids, lambda ids: v[[row[i] for i in ids]])
    tiebreak = np.random.default_rng([options.seed, 1]).permutation(len(item_ids))
    xs, ys, who = [], [], []
    for position, user in enumerate(users):
        history_events = [e.to_event() for e in train.get(user, ())]
        history = user_history(history_events, index.row, half_life_days=recipe.half_life_days,
                               weights=recipe.event_weights)
        by_id = {e.item_id: v[index.row[e.item_id]] for e in history_events
                 if e.item_id in index.row}
        u = user_vector(history_events, by_id, half_life_days=recipe.half_life_days,
                        weights=recipe.event_weights)
        if u is None or not len(history) or user not in test:
            continue
        banned = np.zeros(len(item_ids), bool)
        banned[[index.row[i] for i in by_id]] = True
        source = MatrixCandidates(v, exclude=np.flatnonzero(banned), tiebreak=tiebreak)
        cands = feed_candidates(history, u, index, source, lambda r: v[r], banned, feed)
        held = {index.row[e.item_id] for e in test[user] if e.item_id in index.row}
        xs.append(cands.features)
        ys.append(np.isin(cands.rows, list(held)))
        who.append(position)
    return xs, ys, who


def validation_lists(train: Mapping[str, Sequence[Interaction]], item_ids: Sequence[str],
                     vectors: np.ndarray, options: BehaviourOptions, recipe: UserVectorRecipe,
                     feed: FeedOptions) -> ValidationLists:
    """The candidate lists of every cut (see the module docstring; empty when nothing is
    learned). The users are sampled once (``options.validation_users``, seeded) from those
    with a held-out item in cut 1."""
    v = np.ascontiguousarray(vectors, np.float32)
    events = [e for user in sorted(train) for e in train[user]]
    timestamps = all(e.timestamp is not None for e in events)
    users: list[str] = []
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    who: list[int] = []
    cuts: list[int] = []
    for cut in range(1, options.validation_cuts + 1):
        if not events:
            break
        split = holdout_split(events, protocol=SplitProtocol.LEAVE_LAST_OUT,
                              timestamps=timestamps)
        if cut == 1:
            users = sorted(split.test)
            if len(users) > options.validation_users:
                rng = np.random.default_rng(options.seed)
                users = sorted(rng.choice(np.array(users, dtype=object),
                                          options.validation_users, replace=False))
        cx, cy, cw = _cut_lists(split.train, split.test, users, item_ids, v, options, recipe,
                                feed)
        xs += cx
        ys += cy
        who += cw
        cuts += [cut] * len(cx)
        events = [e for user in sorted(split.train) for e in split.train[user]]
    return ValidationLists(xs, ys, np.array(who, np.int64), np.array(cuts, np.int64))


def listwise_regression(xs: Sequence[np.ndarray], positives: Sequence[int], l2: float = 1.0
                        ) -> np.ndarray:
    """Weights (F,) of a linear score ``x @ w`` that maximise, per list, the softmax
    probability of its positive row (``xs[i]`` (C_i, F) standardised, ``positives[i]`` the
    positive's row): the listwise (ListNet top-one) loss, convex, by L-BFGS from zero."""
    from scipy.optimize import minimize

    f = xs[0].shape[1]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = 0.5 * l2 * w @ w, l2 * w
        for x, pos in zip(xs, positives):
            s = x @ w
            m = s.max()
            e = np.exp(s - m)
            z = e.sum()
            total += m + np.log(z) - s[pos]
            grad = grad + (e / z) @ x - x[pos]
        return float(total), grad

    return minimize(loss, np.zeros(f), jac=True, method="L-BFGS-B",
                    options={"maxiter": 200}).x


def _standardisation(lists: ValidationLists) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate(lists.xs).astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(scale > 1e-9, scale, 1.0)


def fit_linear(lists: ValidationLists) -> FusionRecord:
    """The linear listwise fusion of the lists that hold their positive (see the module
    docstring); requires at least one."""
    mean, scale = _standardisation(lists)
    pairs = [((x - mean) / scale, int(np.flatnonzero(y)[0]))
             for x, y in zip(lists.xs, lists.ys) if y.any()]
    w = listwise_regression([a for a, _ in pairs], [p for _, p in pairs])
    return FusionRecord(features=FEATURES, weights=tuple(w), mean=tuple(mean),
                        scale=tuple(scale), bias=0.0, fitted=True)


def fit_mlp(lists: ValidationLists, *, hidden: int = 16, epochs: int = 30, seed: int = 0,
            batch: int = 1024, lr: float = 3e-3, weight_decay: float = 1e-4,
            dropout: float = 0.1) -> FusionRecord:
    """The MLP fusion (see the module docstring) on the rows of the lists that hold their
    positive; requires at least one."""
    import torch

    mean, scale = _standardisation(lists)
    keep = [i for i, y in enumerate(lists.ys) if y.any()]
    x = torch.from_numpy(((np.concatenate([lists.xs[i] for i in keep]) - mean) / scale)
                         .astype(np.float32))
    y = torch.from_numpy(np.concatenate([lists.ys[i] for i in keep]).astype(np.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a net this small is fastest (and reproducible) on one thread
    try:
        return _train_mlp(x, y, mean, scale, hidden=hidden, epochs=epochs, seed=seed,
                          batch=batch, lr=lr, weight_decay=weight_decay, dropout=dropout)
    finally:
        torch.set_num_threads(threads)


def _train_mlp(x: Any, y: Any, mean: np.ndarray, scale: np.ndarray, *, hidden: int,
               epochs: int, seed: int, batch: int, lr: float, weight_decay: float,
               dropout: float) -> FusionRecord:
    import torch

    f = x.shape[1]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    first, last = torch.nn.Linear(f, hidden), torch.nn.Linear(hidden, 1)
    skip = torch.nn.Linear(f, 1, bias=False)
    drop = torch.nn.Dropout(dropout)
    params = [*first.parameters(), *last.parameters(), *skip.parameters()]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    pos_weight = (len(y) - y.sum()) / y.sum().clamp(min=1.0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            b = order[start:start + batch]
            logit = (last(drop(torch.relu(first(x[b])))) + skip(x[b])).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logit, y[b], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def values(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().numpy()

    return FusionRecord(features=FEATURES, weights=tuple(values(skip.weight)[0]),
                        mean=tuple(mean), scale=tuple(scale), bias=float(values(last.bias)[0]),
                        fitted=True, hidden_weights=tuple(map(tuple, values(first.weight))),
                        hidden_bias=tuple(values(first.bias)),
                        output_weights=tuple(values(last.weight)[0]))


def _ndcg(scores: np.ndarray, label: np.ndarray) -> float:
    if not label.any():
        return 0.0
    pos = np.flatnonzero(label)[0]
    ties = int((scores == scores[pos]).sum()) - 1  # ties count half: no optimistic ranks
    rank = 1 + int((scores > scores[pos]).sum()) + ties / 2
    return 1.0 / np.log2(rank + 1) if rank <= _K else 0.0


def _mean_ndcg(lists: ValidationLists, fusion: FusionRecord) -> float:
    return float(np.mean([_ndcg(fuse(x, fusion), y) for x, y in zip(lists.xs, lists.ys)])
                 ) if len(lists) else 0.0


def _cross_validate(lists: ValidationLists, options: BehaviourOptions,
                    fitters: Mapping[str, Callable[[ValidationLists], FusionRecord]]
                    ) -> dict[str, list[float]]:
    """NDCG@20 per fold and fusion kind: fit on the other folds' lists (every cut), measured
    on cut 1 of the fold's users."""
    people = np.unique(lists.users)
    folds = np.array_split(np.random.default_rng([options.seed, 2]).permutation(people),
                           min(options.fusion_folds, len(people)))
    scores: dict[str, list[float]] = {name: [] for name in fitters}
    for fold in folds:
        held = np.isin(lists.users, fold)
        fit_on = lists.select(~held)
        if not any(y.any() for y in fit_on.ys):
            continue
        measure = lists.select(held & (lists.cuts == 1))
        for name, fit in fitters.items():
            scores[name].append(round(_mean_ndcg(measure, fit(fit_on)), 5))
    return scores


def fit_fusion(train: Mapping[str, Sequence[Interaction]], item_ids: Sequence[str],
               vectors: np.ndarray, options: BehaviourOptions, recipe: UserVectorRecipe,
               feed: FeedOptions, log: Log = print) -> FusionRecord:
    """The fusion (see the module docstring); :data:`DEFAULT_FUSION` (not fitted) when no
    validation list holds its held-out item among the candidates."""
    t0 = time.perf_counter()
    lists = validation_lists(train, item_ids, vectors, options, recipe, feed)
    if not any(y.any() for y in lists.ys):
        return DEFAULT_FUSION
    return choose_fusion(lists, options, log=log, started=t0)


def choose_fusion(lists: ValidationLists, options: BehaviourOptions, log: Log = print,
                  started: Optional[float] = None) -> FusionRecord:
    """Fit ``options.fusion`` on ``lists`` (with ``"auto"``: the cross-validated choice of the
    module docstring) and record how; at least one list must hold its positive."""
    t0 = time.perf_counter() if started is None else started

    def mlp(part: ValidationLists) -> FusionRecord:
        return fit_mlp(part, hidden=options.fusion_hidden, epochs=options.fusion_epochs,
                       seed=options.seed)

    fitters = {"linear": fit_linear, "mlp": mlp}
    chosen = options.fusion
    cv: dict[str, list[float]] = {}
    margin: dict[str, float] = {}
    if chosen == "auto":
        cv = _cross_validate(lists, options, fitters)
        diff = np.array(cv["mlp"]) - np.array(cv["linear"])
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
        margin = {"mean": round(float(diff.mean()), 5) if len(diff) else 0.0,
                  "standard_error": round(se, 5)}
        chosen = "mlp" if len(diff) > 1 and diff.mean() > 2 * se else "linear"
    fusion = fitters[chosen](lists)
    first = lists.select(lists.cuts == 1)
    validation = _validation(first.xs, first.ys, fusion, lists.hits(1), len(first))
    validation.update(kind=fusion.kind, choice=options.fusion, cuts=options.validation_cuts,
                      lists=len(lists), lists_with_positive=sum(bool(y.any()) for y in lists.ys),
                      seconds=round(time.perf_counter() - t0, 1))
    if cv:
        validation["cv_ndcg@20"] = {name: {"folds": v, "mean": round(float(np.mean(v)), 5)}
                                    for name, v in cv.items() if v}
        validation["mlp_minus_linear"] = {**margin, "rule": "mlp only if the mean paired "
                                          "margin exceeds 2 standard errors"}
    log(f"fusion ({fusion.kind}"
        + (", by cross-validation: " + ", ".join(
            f"{name} {d['mean']:.4f}" for name, d in validation["cv_ndcg@20"].items())
           if cv else "") + f"): {validation['users']} validation users, "
        f"{lists.hits(1)} with their held-out item among the candidates; NDCG@{_K} in-sample "
        f"fused {validation['ndcg@20']['fused']:.4f}, "
        + ", ".join(f"{k} {v:.4f}" for k, v in validation["ndcg@20"].items() if k != "fused")
        + f"; {validation['seconds']:.0f} s")
    return FusionRecord(features=fusion.features, weights=fusion.weights, mean=fusion.mean,
                        scale=fusion.scale, bias=fusion.bias, fitted=True, validation=validation,
                        hidden_weights=fusion.hidden_weights, hidden_bias=fusion.hidden_bias,
                        output_weights=fusion.output_weights)


def _validation(xs: list[np.ndarray], ys: list[np.ndarray], fusion: FusionRecord, hits: int,
                users: int) -> dict[str, Any]:
    """Candidate recall and, within the candidates, NDCG@20 of the fused score and of each
    signal alone (in-sample on cut 1: a relative comparison, not a test)."""
    ndcg = {name: 0.0 for name in ("fused", *_SINGLE)}
    for x, y in zip(xs, ys):
        ndcg["fused"] += _ndcg(fuse(x, fusion), y)
        for name in _SINGLE:
            ndcg[name] += _ndcg(x[:, FEATURES.index(name)] + (
                x[:, FEATURES.index("collab_mapped")] if name == "collab" else 0), y)
    return {"users": users, "candidate_recall": hits / max(1, users),
            "ndcg@20": {k: round(v / max(1, users), 5) for k, v in ndcg.items()}}
