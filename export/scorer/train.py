"""Train the MLP scorer: binary cross-entropy on (user vector, item vector) pairs.

The network (:class:`ScorerNet`) takes ``x = [u, v, u*v]`` (float32 ``(C, 3D)``), standardises
each column with training statistics (a fixed buffer, so int8 activations see comparable
ranges), and sums two paths::

    logit = head(deep(z)) + skip(z),   z = (x - mean) * inv_std
    deep  = Linear(3D, H1) -> ReLU -> Dropout -> ... -> ReLU -> Dropout   (hidden layers)
    head  = Linear(H_last, 1)
    skip  = Linear(3D, 1)

With ``inner_product_prior`` (default) the skip path starts as ``scale * u.v + b`` (the visual
kNN baseline the scorer must beat) and the head starts at zero, so epoch 0
*is* the inner-product ranking, and the epoch count chosen on validation can be 0 when
training does not help. The skip path is not weight-decayed (decay would pull it away from the
prior); the deep path is (Adam's L2).

Early stopping, on validation NDCG@k: per-user splits of the training events (``holdout_split``
with seeds ``seed + 1 ...``, never the test part) each train ``epochs`` epochs and, after every
epoch, rank each validation user's top-``candidates`` items by ``u . v`` (their fit history
excluded: what the device's search hands the scorer) with the device's folded computation; the
epoch where the *mean* curve over the folds peaks is kept (epoch 0, the inner product itself,
included), and the model is then refit on all the training events for that many epochs
(``refit``). Why folds and a refit rather than one split and its best epoch's weights: on a
small log one split's validation holds few hits, so its best epoch is mostly noise, and it
trains on a fifth fewer events (the comparison is in README, "Personalised scorer"). Folds that
stop at different epochs (a time budget) are compared on the epochs they all reached.

**Budget** (so that a big log can neither run for an hour nor materialise its rows): an epoch
is at most ``epoch_rows`` rows (positives and their negatives): the next slice of a shuffled
cycle through the examples when there are more, so every example is seen before any is seen
again; each row ``[u, v, u*v]`` is built per mini-batch, never all at once (standardisation
statistics are streamed over the first epoch's rows). Folds stop being added once their
validation sets hold ``val_relevant`` held-out items (more folds only average out the noise of
small validation sets); each fold validates at most ``val_users`` users, each on ``candidates``
items, so a validation costs O(val_users x candidates x D) whatever the catalog's size. So the
work is bounded by ``epochs x epoch_rows`` rows per fold and for the refit, whatever the log's
size, while a small log (every epoch whole) trains as it did before the budget.
``max_minutes`` bounds the wall time on top, for a slow or busy machine: each fold may use
``max_minutes / (folds + 1)``, the refit what is left (at least as much).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import numpy as np
import torch
from edgerec.export.errors import ExportError
from edgerec.export.options import ScorerConfig
from edgerec.export.scorer.data import (
    EpochRows,
    Examples,
    RankingSet,
    build_examples,
    candidate_rows,
    mean_ndcg,
    ranking_set,
    sample_epoch,
)
from edgerec.sdk.evaluation.events import Interaction, holdout_split
from edgerec.sdk.progress import track
from edgerec.sdk.scorer import MlpWeights
from torch import nn

__all__ = ["ScorerNet", "ScorerTrainResult", "catalog_scores", "train_scorer"]


class Standardize(nn.Module):
    """``(x - mean) * inv_std`` per column, fixed buffers (its own module, so that int8
    quantizers can be told to leave it float by name)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, np.float32).copy()))
        self.register_buffer("inv_std", torch.from_numpy(
            (1.0 / np.maximum(np.asarray(std, np.float32), 1e-6)).astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class ScorerNet(nn.Module):
    """``(C, 3D)`` rows ``[u, v, u*v]`` -> ``(C, 1)`` logits (see the module docstring).

    Modules: ``standardize``, ``deep`` (``deep.0``, ``deep.1``, ...: one Linear + ReLU +
    Dropout block per hidden layer), ``head``, ``skip``.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (128, 64), dropout: float = 0.1,
                 mean: Optional[np.ndarray] = None, std: Optional[np.ndarray] = None) -> None:
        super().__init__()
        self.dim = int(dim)
        width = 3 * self.dim
        mean = np.zeros(width, np.float32) if mean is None else np.asarray(mean, np.float32)
        std = np.ones(width, np.float32) if std is None else np.asarray(std, np.float32)
        self.standardize = Standardize(mean, std)
        layers: list[nn.Module] = []
        for h in hidden:
            layers.append(nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)))
            width = h
        self.deep = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)
        self.skip = nn.Linear(3 * self.dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.standardize(x)
        return self.head(self.deep(z)) + self.skip(z)

    def init_inner_product_prior(self, scale: float, bias: float) -> None:
        """Make the network compute ``scale * u.v + bias`` exactly (deep path silenced)."""
        d = self.dim
        with torch.no_grad():
            self.skip.weight.zero_()
            # z_j = (x_j - m_j) * s_j  =>  x_j = z_j / s_j + m_j over the u*v block
            std = self.standardize
            self.skip.weight[0, 2 * d :] = scale / std.inv_std[2 * d :]
            self.skip.bias.fill_(scale * float(std.mean[2 * d :].sum()) + bias)
            self.head.weight.zero_()
            self.head.bias.zero_()

    def to_weights(self) -> MlpWeights:
        """The device's :class:`~edgerec.sdk.scorer.MlpWeights` (standardisation folded into
        the first layer and the skip path)."""
        d = self.dim
        std = self.standardize
        s, m = std.inv_std.detach().double(), std.mean.detach().double()

        def fold(linear: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
            w = linear.weight.detach().double() * s  # W diag(s)
            b = linear.bias.detach().double() - w @ m
            return w.numpy().astype(np.float32), b.numpy().astype(np.float32)

        linears = [m_ for m_ in self.deep.modules() if isinstance(m_, nn.Linear)]
        linears.append(self.head)
        w1, b1 = fold(linears[0])
        ws, bs = fold(self.skip)
        dense = tuple((lin.weight.detach().numpy().astype(np.float32).copy(),
                       lin.bias.detach().numpy().astype(np.float32).copy())
                      for lin in linears[1:])
        return MlpWeights(w1[:, :d], w1[:, d : 2 * d], w1[:, 2 * d :], b1,
                          ws[0, :d], ws[0, d : 2 * d], ws[0, 2 * d :], np.float32(bs[0]),
                          dense)


@dataclass(frozen=True)
class ScorerTrainResult:
    """A trained scorer and how it got there.

    Attributes:
        model: the shipped :class:`ScorerNet` (refit for ``best_epoch`` epochs), eval mode.
        weights: its :class:`~edgerec.sdk.scorer.MlpWeights`.
        history: per epoch (0 = before training) ``{"epoch", "loss", "val_ndcg@k", "folds"}``:
            the mean validation NDCG over the folds and each fold's, over the epochs every fold
            reached (no validation: the training run's own rows).
        best_epoch, best_val_ndcg: the kept epoch and its validation NDCG (None: no validation).
        inner_product_val_ndcg: validation NDCG of ranking by ``u.v`` alone (the baseline).
        best_trained_epoch, best_trained_val_ndcg: the best epoch >= 1 of the mean curve and
            its NDCG (None without validation or trained epochs): what training reached.
        stopped: ``"epochs"`` or ``"time"`` (a fold or the refit ran out of its budget).
        seconds: wall time of training.
        data: counts of examples and users (:attr:`Examples.counts`), the validation split,
            each fold's curve, and the budget as applied.
        validation: the validation :class:`~.data.RankingSet` (for parity checks).
        examples: the training :class:`~.data.Examples` (for calibration).
    """

    model: ScorerNet
    weights: MlpWeights
    history: tuple[dict[str, Any], ...]
    best_epoch: int
    best_val_ndcg: Optional[float]
    inner_product_val_ndcg: Optional[float]
    best_trained_epoch: Optional[int]
    best_trained_val_ndcg: Optional[float]
    stopped: str
    seconds: float
    data: dict[str, Any]
    validation: RankingSet
    examples: Examples

    @property
    def improves(self) -> bool:
        """False when validation ran and no trained epoch beat the inner-product order (best
        epoch 0): such a scorer would only cost time on the device."""
        return self.best_val_ndcg is None or self.best_epoch > 0

    def comparison(self, k: int = 10) -> dict[str, Any]:
        """The validation comparison behind :attr:`improves` (JSON-ready)."""
        split = self.data.get("validation_split", {})
        return {"metric": f"ndcg@{k}", "inner_product": self.inner_product_val_ndcg,
                "best_trained": self.best_trained_val_ndcg,
                "best_trained_epoch": self.best_trained_epoch, "best_epoch": self.best_epoch,
                "folds": split.get("folds_run", 0),
                "validation_users": [f["validation"]["users"]
                                     for f in split.get("fold_runs", [])]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for the manifest's ``metrics["scorer"]["training"]``)."""
        return {"history": list(self.history), "best_epoch": self.best_epoch,
                "best_val_ndcg": self.best_val_ndcg,
                "inner_product_val_ndcg": self.inner_product_val_ndcg,
                "best_trained_epoch": self.best_trained_epoch,
                "best_trained_val_ndcg": self.best_trained_val_ndcg,
                "stopped": self.stopped, "seconds": self.seconds, "data": self.data}


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _folded(weights: MlpWeights) -> tuple[torch.Tensor, ...]:
    """``(A_v, A_uv, A_u, b)``: the first layer and the skip path stacked (``H1 + 1`` rows)."""
    return (_tensor(np.vstack([weights.first_v, weights.skip_v[None]])),
            _tensor(np.vstack([weights.first_uv, weights.skip_uv[None]])),
            _tensor(np.vstack([weights.first_u, weights.skip_u[None]])),
            _tensor(np.append(weights.first_b, weights.skip_b)))


def _rest(h: torch.Tensor, dense: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Logits from the first layer's pre-activations ``h`` ``(..., H1 + 1)`` (last: skip)."""
    x = torch.relu(h[..., :-1])
    for i, (w, b) in enumerate(dense):
        x = (torch.relu(x) if i else x) @ w.T + b
    return x[..., 0] + h[..., -1]


def catalog_scores(weights: MlpWeights, u: np.ndarray, vectors: np.ndarray,
                   chunk: int = 16) -> np.ndarray:
    """Logits ``(B, N)`` of every catalog item for each of ``u`` ``(B, D)``: the device's
    folded computation (:class:`~edgerec.sdk.Scorer`), batched over users in torch (one
    thread-pool for training and validation: numpy's BLAS threads beside torch's contend)."""
    a_v, a_uv, a_u, a_b = _folded(weights)
    dense = [(_tensor(w), _tensor(b)) for w, b in weights.dense]
    v = _tensor(vectors)
    out = []
    with torch.no_grad():
        for start in range(0, len(u), chunk):
            us = _tensor(u[start : start + chunk])  # (b, D)
            a = a_v[None] + a_uv[None] * us[:, None, :]  # (b, H1 + 1, D)
            h = torch.einsum("nd,bhd->bnh", v, a) + (us @ a_u.T + a_b)[:, None, :]
            out.append(_rest(h, dense).numpy())
    return np.concatenate(out) if out else np.empty((0, len(vectors)), np.float32)


def candidate_scores(weights: MlpWeights, u: np.ndarray, vectors: np.ndarray,
                     candidates: np.ndarray, chunk: int = 8) -> np.ndarray:
    """Logits ``(B, C)`` of each user's ``candidates`` (int64 ``(B, C)`` catalog rows): the
    folded computation of :func:`catalog_scores` on the device's candidate sets."""
    a_v, a_uv, a_u, a_b = _folded(weights)
    dense = [(_tensor(w), _tensor(b)) for w, b in weights.dense]
    out = []
    with torch.no_grad():
        for start in range(0, len(u), chunk):
            us = _tensor(u[start : start + chunk])  # (b, D)
            vc = _tensor(vectors[candidates[start : start + chunk]])  # (b, C, D)
            a = a_v[None] + a_uv[None] * us[:, None, :]  # (b, H1 + 1, D)
            h = torch.bmm(vc, a.transpose(1, 2)) + (us @ a_u.T + a_b)[:, None, :]
            out.append(_rest(h, dense).numpy())
    return (np.concatenate(out) if out
            else np.empty((0, np.shape(candidates)[1]), np.float32))


def _ip_scores(u: np.ndarray, vectors: np.ndarray, candidates: np.ndarray,
               chunk: int = 8) -> np.ndarray:
    """``u . v`` of each user's candidates, float32 ``(B, C)``."""
    out = np.empty(candidates.shape, dtype=np.float32)
    for start in range(0, len(u), chunk):
        out[start : start + chunk] = np.einsum(
            "bd,bcd->bc", u[start : start + chunk], vectors[candidates[start : start + chunk]])
    return out


def _rows(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.cat([u, v, u * v], dim=1)


def _flatten(train: Mapping[str, Sequence[Interaction]]) -> list[Interaction]:
    return sorted((e for events in train.values() for e in events), key=lambda e: e.line)


def train_scorer(
    train: Mapping[str, Sequence[Interaction]],
    item_ids: Sequence[str],
    vectors: np.ndarray,
    config: Optional[ScorerConfig] = None,
    *,
    timestamps: bool = False,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.perf_counter,
) -> ScorerTrainResult:
    """Train a scorer on ``train`` (user id -> events; the test part already removed).

    Args:
        item_ids, vectors: the catalog, float32 ``(N, D)`` unit vectors in ``item_ids`` order.
        timestamps: the events carry timestamps (the validation split then holds out each
            user's newest items, as the test split does).
        clock: seconds, for ``config.max_minutes`` (read when a fold or the refit starts and
            after each of its epochs).

    Raises:
        ExportError: no user has two or more items to learn from.
    """
    threads = torch.get_num_threads()
    config = config or ScorerConfig()
    torch.set_num_threads(config.threads)
    try:
        return _train(train, item_ids, vectors, config, timestamps, log, clock)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Fit:
    model: ScorerNet
    history: list[dict[str, Any]]
    baseline: Optional[float]
    stopped: str
    examples: Examples
    validation: RankingSet
    per_epoch: int

    @property
    def epochs_run(self) -> int:
        return len(self.history) - 1


def _train(train: Mapping[str, Sequence[Interaction]], item_ids: Sequence[str],
           vectors: np.ndarray, config: ScorerConfig, timestamps: bool,
           log: Callable[[str], None], clock: Callable[[], float]) -> ScorerTrainResult:
    """Pick the epoch count on validation folds, then refit on all of ``train``."""
    t0 = clock()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    k, key = config.k, f"val_ndcg@{config.k}"
    total = 60.0 * config.max_minutes
    share = total / (config.folds + 1)

    def left() -> float:
        return max(share, total - (clock() - t0))

    if config.val_fraction == 0:
        fit = _fit(train, {}, item_ids, vectors, config, config.epochs, log, seconds=total,
                   clock=clock, desc="scorer")
        return _result(fit, fit, [], None, fit.stopped, {"test_fraction": 0.0}, config,
                       clock() - t0)
    folds = _validation_folds(train, item_ids, vectors, config, timestamps, share, log, clock)
    scored = [f for _, f in folds if len(f.validation)]
    fold_runs = [{"seed": config.seed + 1 + i, "epochs_run": f.epochs_run,
                  "stopped": f.stopped, "curve": [row[key] for row in f.history],
                  "inner_product": f.baseline, "validation": f.validation.describe(),
                  "examples_per_epoch": f.per_epoch}
                 for i, (_, f) in enumerate(folds)]
    split_info = {**folds[0][0].describe(), "folds": config.folds, "folds_run": len(folds),
                  "seeds": [r["seed"] for r in fold_runs], "fold_runs": fold_runs}
    if not scored:  # no fold has a validation user: nothing to stop on
        log("scorer: no validation user in any fold (every user has one item?): training "
            f"{config.epochs} epochs on all training events")
        final = _fit(train, {}, item_ids, vectors, config, config.epochs, log,
                     seconds=left(), clock=clock, desc="scorer refit")
        return _result(final, folds[0][1], [], None, final.stopped, split_info, config,
                       clock() - t0)
    matrix = _fold_curves(scored, key, log)
    depth = matrix.shape[1]
    mean_curve = matrix.mean(0)
    best_epoch = int(np.argmax(mean_curve - 1e-9 * np.arange(depth)))  # ties: fewer epochs
    baseline = float(np.mean([f.baseline for f in scored]))
    trained = (int(np.argmax(mean_curve[1:] - 1e-9 * np.arange(depth - 1))) + 1
               if depth > 1 else None)
    log(f"scorer: mean validation NDCG@{k} over {len(scored)} fold(s) peaks at epoch "
        f"{best_epoch} ({mean_curve[best_epoch]:.4f}; inner product {baseline:.4f}"
        + (f"; best trained epoch {trained}: {mean_curve[trained]:.4f}" if trained else "")
        + ")")
    if best_epoch == 0:
        log("scorer: no trained epoch beat the inner-product order on validation")
    elif config.refit:
        log(f"scorer: refitting on all training events for {best_epoch} epochs")
    source = train if config.refit else folds[0][0].train  # else fold 0's events
    final = _fit(source, {}, item_ids, vectors, config, best_epoch, log, seconds=left(),
                 clock=clock, desc="scorer refit")
    if final.epochs_run < best_epoch:
        log(f"scorer: the refit ran out of time after {final.epochs_run} of {best_epoch} "
            "epochs")
    history = [{"epoch": e, key: float(mean_curve[e]), "folds": [float(c) for c in matrix[:, e]],
                "loss": scored[0].history[e]["loss"]} for e in range(depth)]
    stopped = ("epochs" if all(f.stopped == "epochs" for _, f in folds)
               and final.stopped == "epochs" else "time")
    best = (best_epoch, float(mean_curve[best_epoch]), baseline,
            trained, float(mean_curve[trained]) if trained else None)
    return _result(final, scored[0], history, best, stopped, split_info, config, clock() - t0)


def _validation_folds(train: Mapping[str, Sequence[Interaction]], item_ids: Sequence[str],
                      vectors: np.ndarray, config: ScorerConfig, timestamps: bool,
                      seconds: float, log: Callable[[str], None],
                      clock: Callable[[], float]) -> list[tuple[Any, _Fit]]:
    """Train ``config.epochs`` on each validation fold (a seeded holdout of ``train``), until
    the folds' validation sets hold ``config.val_relevant`` items together; ``(split, fit)``
    per fold run."""
    folds: list[tuple[Any, _Fit]] = []
    relevant = 0
    for fold in range(config.folds):
        split = holdout_split(_flatten(train), test_fraction=config.val_fraction,
                              seed=config.seed + 1 + fold, timestamps=timestamps)
        log(f"scorer validation fold {fold + 1}/{config.folds}")
        fit = _fit(split.train, split.test, item_ids, vectors,
                   replace(config, seed=config.seed + fold), config.epochs, log, seconds=seconds,
                   clock=clock, desc=f"scorer fold {fold + 1}", val_seed=config.seed + 1 + fold)
        folds.append((split, fit))
        relevant += fit.validation.describe()["relevant"]
        if relevant >= config.val_relevant and fold + 1 < config.folds:
            log(f"scorer: {relevant} held-out items in {fold + 1} fold(s) (>= "
                f"{config.val_relevant}): enough to pick the epoch count; no further fold")
            break
    return folds


def _fold_curves(scored: Sequence[_Fit], key: str, log: Callable[[str], None]) -> np.ndarray:
    """(folds, epochs) float64 validation curves, cut to the epochs every fold reached (folds
    that stop early stop at different epochs)."""
    curves = [[row[key] for row in f.history] for f in scored]
    depth = min(len(c) for c in curves)
    if any(len(c) != depth for c in curves):
        log(f"scorer: the folds stopped at different epochs ({[len(c) - 1 for c in curves]}); "
            f"comparing them on epochs 0-{depth - 1}")
    return np.array([c[:depth] for c in curves], dtype=np.float64)


def _result(final: _Fit, reference: _Fit, history: list[dict[str, Any]],
            best: Optional[tuple[int, float, float, Optional[int], Optional[float]]],
            stopped: str, split_info: dict[str, Any], config: ScorerConfig,
            seconds: float) -> ScorerTrainResult:
    """``final`` is the shipped model; ``reference`` (a validation fold) supplies the ranking
    set the exporter checks parity on."""
    if best is None:
        best = (len(final.history) - 1, None, None, None, None)
    best_epoch, best_val, baseline, trained, trained_val = best
    data = {**final.examples.counts, "validation_split": split_info,
            "validation": reference.validation.describe(),
            "refit_epochs": final.epochs_run,
            "budget": {"epoch_rows": config.epoch_rows, "examples_per_epoch": final.per_epoch,
                       "max_minutes": config.max_minutes, "val_users": config.val_users,
                       "val_relevant": config.val_relevant, "candidates": config.candidates}}
    return ScorerTrainResult(
        model=final.model, weights=final.model.to_weights(),
        history=tuple(history or final.history), best_epoch=best_epoch, best_val_ndcg=best_val,
        inner_product_val_ndcg=baseline, best_trained_epoch=trained,
        best_trained_val_ndcg=trained_val, stopped=stopped, seconds=seconds, data=data,
        validation=reference.validation, examples=final.examples)


class _Cycle:
    """Each epoch's examples: all of them (sorted) when ``per_epoch >= n``, else the next
    ``per_epoch`` of a shuffled order, reshuffled when it runs out (so every example is seen
    once before any is seen twice)."""

    def __init__(self, n: int, per_epoch: int, rng: np.random.Generator) -> None:
        self.n, self.per_epoch, self.rng = n, min(per_epoch, n), rng
        self.order = np.empty(0, np.int64)

    @property
    def whole(self) -> bool:
        return self.per_epoch >= self.n

    def next(self) -> np.ndarray:
        if self.whole:
            return np.arange(self.n, dtype=np.int64)
        if len(self.order) < self.per_epoch:
            self.order = np.concatenate([self.order, self.rng.permutation(self.n)])
        take, self.order = self.order[: self.per_epoch], self.order[self.per_epoch :]
        return np.unique(take)  # sorted (a reshuffle may repeat an example: a few fewer)


def _row_stats(ex: Examples, rows: EpochRows, chunk: int = 512) -> tuple[np.ndarray, ...]:
    """Column mean and (population) std of ``rows``' ``[u, v, u*v]`` and the mean ``u . v``,
    streamed over chunks of rows (Chan's parallel update, float64)."""
    width = 3 * ex.dim
    mean, m2, n, ip = np.zeros(width), np.zeros(width), 0, 0.0
    for start in range(0, len(rows), chunk):
        u = ex.user_vectors(rows.example[start : start + chunk])
        v = ex.vectors[rows.item[start : start + chunk]]
        x = np.concatenate([u, v, u * v], axis=1).astype(np.float64)
        ip += float(x[:, 2 * ex.dim :].sum())
        nb = len(x)
        mb = x.mean(0)
        delta = mb - mean
        m2 += ((x - mb) ** 2).sum(0) + delta**2 * n * nb / (n + nb)
        mean += delta * nb / (n + nb)
        n += nb
    return mean, np.sqrt(m2 / max(n, 1)), np.float64(ip / max(n, 1))


def _fit(fit: Mapping[str, Sequence[Interaction]], heldout: Mapping[str, Sequence[Interaction]],
         item_ids: Sequence[str], vectors: np.ndarray, config: ScorerConfig, epochs: int,
         log: Callable[[str], None], *, seconds: float, clock: Callable[[], float],
         desc: str, val_seed: int = 0) -> _Fit:
    """Train ``epochs`` epochs on ``fit`` (stopping after the epoch that passes ``seconds``),
    recording validation NDCG on ``heldout`` (if any) after each; returns the last epoch's
    model (eval mode)."""
    t0 = clock()
    n_items, dim = vectors.shape
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    negatives = config.negatives
    ex = build_examples(fit, item_ids, vectors, half_life_days=config.half_life_days,
                        hard_pool=negatives.hard_pool if negatives.hard else 0)
    if not len(ex) or not ex.label.any():
        raise ExportError(
            f"no user has two or more catalog items in the training events "
            f"({ex.counts.get('single_item_users', 0)} users with one): the scorer learns from "
            "a user's other items; give events with several items per user"
        )
    val = ranking_set(fit, heldout, item_ids, vectors, half_life_days=config.half_life_days,
                      max_users=config.val_users, seed=val_seed)
    cand = candidate_rows(val, vectors, config.candidates)
    cycle = _Cycle(len(ex), max(1, config.epoch_rows // (1 + negatives.per_positive)), rng)
    log(f"{desc} data: {ex.counts['examples']} examples from {ex.counts['users']} users "
        f"({ex.counts['single_item_users']} single-item users skipped); "
        f"{cycle.per_epoch} examples per epoch; validation: {len(val)} users x "
        f"{cand.shape[1]} candidates")

    # standardisation statistics from the first epoch's rows (streamed), then the prior
    chosen = cycle.next()
    first = sample_epoch(ex, negatives, n_items, rng, None if cycle.whole else chosen)
    model = _initial_model(ex, first, dim, config)

    def validate() -> Optional[float]:
        if not len(val):
            return None
        return mean_ndcg(candidate_scores(model.to_weights(), val.u, vectors, cand), val,
                         config.k, candidates=cand)

    baseline = (mean_ndcg(_ip_scores(val.u, vectors, cand), val, config.k, candidates=cand)
                if len(val) else None)
    history = [{"epoch": 0, "loss": None, f"val_ndcg@{config.k}": validate(), "seconds": 0.0}]
    _log_epoch(log, history[-1], config.k, baseline)
    opt = torch.optim.Adam([
        {"params": [*model.deep.parameters(), *model.head.parameters()],
         "weight_decay": config.weight_decay},
        {"params": model.skip.parameters(), "weight_decay": 0.0},
    ], lr=config.lr)
    per_user = np.bincount(ex.user, minlength=len(ex.user_ids)).astype(np.float64)
    balance = per_user[ex.user] ** -config.user_balance  # per example
    balance = (balance / balance.mean()).astype(np.float32)
    v_t = torch.from_numpy(vectors)
    stopped = "epochs"
    for epoch in track(range(1, epochs + 1), desc, unit="epoch", total=epochs):
        if epoch > 1:
            chosen = cycle.next()
        rows = first if epoch == 1 else sample_epoch(ex, negatives, n_items, rng,
                                                     None if cycle.whole else chosen)
        loss = _train_epoch(model, opt, ex, rows, chosen, v_t, balance, rng, config.batch_size)
        score = validate()
        elapsed = clock() - t0
        history.append({"epoch": epoch, "loss": loss,
                        f"val_ndcg@{config.k}": score, "seconds": round(elapsed, 2)})
        _log_epoch(log, history[-1], config.k, baseline)
        if elapsed > seconds and epoch < epochs:
            stopped = "time"
            log(f"{desc}: out of its time budget ({seconds / 60:.1f} min) after epoch {epoch}")
            break
    model.eval()
    return _Fit(model, history, baseline, stopped, ex, val, cycle.per_epoch)


def _initial_model(ex: Examples, first: EpochRows, dim: int, config: ScorerConfig) -> ScorerNet:
    """A scorer standardised on the first epoch's rows (``dim``: item vector D), starting from
    ``prior_scale * u.v`` plus the rows' base-rate logit when ``inner_product_prior``; eval
    mode."""
    mean, std, ip_mean = _row_stats(ex, first)
    model = ScorerNet(dim, config.hidden, config.dropout, mean, std)
    if config.inner_product_prior:
        rate = float(np.clip(np.average(first.label, weights=first.weight), 1e-3, 1 - 1e-3))
        model.init_inner_product_prior(
            config.prior_scale, float(np.log(rate / (1 - rate))) - config.prior_scale * ip_mean)
    model.eval()
    return model


def _train_epoch(model: ScorerNet, opt: torch.optim.Optimizer, ex: Examples, rows: EpochRows,
                 chosen: np.ndarray, v_t: torch.Tensor, balance: np.ndarray,
                 rng: np.random.Generator, batch_size: int) -> float:
    """One pass over ``rows`` in a random order, mini-batch rows ``[u, v, u*v]`` built on the
    fly (``chosen``: the epoch's example indices, whose user vectors are built once); returns
    the mean weighted BCE; leaves the model in eval mode."""
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    u_t = torch.from_numpy(ex.user_vectors(chosen))  # (chosen, D); rows index it by position
    local = torch.from_numpy(np.searchsorted(chosen, rows.example))
    order = torch.from_numpy(rng.permutation(len(rows)))
    item = torch.from_numpy(rows.item)
    label = torch.from_numpy(rows.label)
    weight = torch.from_numpy(rows.weight * balance[rows.example])
    model.train()
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        logits = model(_rows(u_t[local[idx]], v_t[item[idx]]))[:, 0]
        w = weight[idx]
        loss = (loss_fn(logits, label[idx]) * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    model.eval()
    return total / len(order)


def _log_epoch(log: Callable[[str], None], row: dict[str, Any], k: int,
               baseline: Optional[float]) -> None:
    ndcg = row[f"val_ndcg@{k}"]
    loss = "-" if row["loss"] is None else f"{row['loss']:.4f}"
    text = "-" if ndcg is None else f"{ndcg:.4f}"
    base = "" if baseline is None or row["epoch"] else f" (inner product u.v: {baseline:.4f})"
    log(f"  scorer epoch {row['epoch']}: loss {loss}  val NDCG@{k} {text}{base}")
