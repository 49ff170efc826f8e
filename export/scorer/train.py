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

Early stopping, on validation NDCG@k: ``folds`` per-user splits of the training events
(``holdout_split`` with seeds ``seed + 1 ...``, never the test part) each train ``epochs``
epochs and rank the whole catalog for their validation users (fit history excluded) with the
device's folded computation after every epoch; the epoch where the *mean* curve peaks is kept,
and the model is then refit on all the training events for that many epochs (``refit``).
Why not one split and the best epoch's weights: on clothing-small (owners as users) one split
leaves ~170 users and ~16 validation hits in the top 10, so its best epoch is mostly noise (it
picked epoch 0, 2 and 20 on three seeds), and it trains on 20 % fewer events; over split
seeds 1-3, fixed-epoch training on everything beat it by +0.012 NDCG@10
(benchmarks/results/scorer_runs.jsonl).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np
import torch
from edgerec.export.errors import ExportError
from edgerec.export.scorer.data import (
    Examples,
    NegativeSampling,
    RankingSet,
    build_examples,
    mean_ndcg,
    ranking_set,
    sample_epoch,
)
from edgerec.sdk.evaluation.events import Interaction, holdout_split
from edgerec.sdk.scorer import MlpWeights
from torch import nn

__all__ = ["ScorerConfig", "ScorerNet", "ScorerTrainResult", "catalog_scores", "train_scorer"]


@dataclass(frozen=True)
class ScorerConfig:
    """The scorer recipe.

    Attributes:
        hidden: widths of the deep path's hidden layers.
        dropout: dropout after each hidden ReLU (training only).
        lr: Adam learning rate.
        weight_decay: Adam L2 on the deep path.
        batch_size: rows per step.
        epochs: epochs each validation fold trains (the refit trains the best of them);
            max_minutes: time budget per fold.
        negatives: :class:`~.scorer_data.NegativeSampling` per positive.
        inner_product_prior: start from ``prior_scale * u.v`` (see the module docstring).
        prior_scale: the logit per unit of ``u.v`` at the start.
        half_life_days: recency half-life of the user vector (the device's default is 30).
        val_fraction: share of each user's training items a validation fold holds out
            (0: no validation, train ``epochs`` epochs on everything).
        folds: validation folds whose mean NDCG curve picks the epoch count.
        refit: retrain on all training events for that many epochs (else: fold 0's fit).
        user_balance: examples of a user with ``n`` examples weigh ``n ** -user_balance``
            (0: every example alike, so a bulk user dominates; 1: every user alike, as NDCG
            averages over users).
        k: the NDCG cut-off.
        seed: sampling, initialisation and split seed (validation folds use seed + 1, ...).
        threads: torch threads while training (a network this small gains nothing from more,
            and on a busy machine loses a lot).
    """

    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    epochs: int = 20
    max_minutes: float = 20.0
    negatives: NegativeSampling = field(default_factory=NegativeSampling)
    inner_product_prior: bool = True
    prior_scale: float = 10.0
    half_life_days: float = 30.0
    val_fraction: float = 0.2
    folds: int = 3
    refit: bool = True
    user_balance: float = 0.0
    k: int = 10
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be positive widths, got {self.hidden!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        for name in ("epochs", "batch_size", "k", "threads", "folds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


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
            the mean validation NDCG over the folds and each fold's (no validation: the
            training run's own rows).
        best_epoch, best_val_ndcg: the kept epoch and its validation NDCG (None: no validation).
        inner_product_val_ndcg: validation NDCG of ranking by ``u.v`` alone (the baseline).
        stopped: ``"epochs"`` or ``"time"`` (a fold ran out of ``max_minutes``).
        seconds: wall time of training.
        data: counts of examples and users (:attr:`Examples.counts`) and the validation split.
        validation: the validation :class:`~.scorer_data.RankingSet` (for parity checks).
        examples: the training :class:`~.scorer_data.Examples` (for calibration).
    """

    model: ScorerNet
    weights: MlpWeights
    history: tuple[dict[str, Any], ...]
    best_epoch: int
    best_val_ndcg: Optional[float]
    inner_product_val_ndcg: Optional[float]
    stopped: str
    seconds: float
    data: dict[str, Any]
    validation: RankingSet
    examples: Examples

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for the manifest's ``metrics["scorer"]["training"]``)."""
        return {"history": list(self.history), "best_epoch": self.best_epoch,
                "best_val_ndcg": self.best_val_ndcg,
                "inner_product_val_ndcg": self.inner_product_val_ndcg,
                "stopped": self.stopped, "seconds": self.seconds, "data": self.data}


def catalog_scores(weights: MlpWeights, u: np.ndarray, vectors: np.ndarray,
                   chunk: int = 16) -> np.ndarray:
    """Logits ``(B, N)`` of every catalog item for each of ``u`` ``(B, D)``: the device's
    folded computation (:class:`~edgerec.sdk.Scorer`), batched over users in torch (one
    thread-pool for training and validation: numpy's BLAS threads beside torch's contend)."""
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    a_v = t(np.vstack([weights.first_v, weights.skip_v[None]]))  # (H1 + 1, D)
    a_uv = t(np.vstack([weights.first_uv, weights.skip_uv[None]]))
    a_u = t(np.vstack([weights.first_u, weights.skip_u[None]]))
    a_b = t(np.append(weights.first_b, weights.skip_b))
    dense = [(t(w), t(b)) for w, b in weights.dense]
    v = t(vectors)
    out = []
    with torch.no_grad():
        for start in range(0, len(u), chunk):
            us = t(u[start : start + chunk])  # (b, D)
            a = a_v[None] + a_uv[None] * us[:, None, :]  # (b, H1 + 1, D)
            h = torch.einsum("nd,bhd->bnh", v, a) + (us @ a_u.T + a_b)[:, None, :]
            x = torch.relu(h[..., :-1])
            for i, (w, b) in enumerate(dense):
                x = (torch.relu(x) if i else x) @ w.T + b
            out.append((x[..., 0] + h[..., -1]).numpy())
    return np.concatenate(out) if out else np.empty((0, len(vectors)), np.float32)


def _rows(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.cat([u, v, u * v], dim=1)


def _flatten(train: Mapping[str, Sequence[Interaction]]) -> list[Interaction]:
    return sorted((e for events in train.values() for e in events), key=lambda e: e.line)


def train_scorer(
    train: Mapping[str, Sequence[Interaction]],
    item_ids: Sequence[str],
    vectors: np.ndarray,
    config: ScorerConfig = ScorerConfig(),
    *,
    timestamps: bool = False,
    log: Callable[[str], None] = print,
) -> ScorerTrainResult:
    """Train a scorer on ``train`` (user id -> events; the test part already removed).

    Args:
        item_ids, vectors: the catalog, float32 ``(N, D)`` unit vectors in ``item_ids`` order.
        timestamps: the events carry timestamps (the validation split then holds out each
            user's newest items, as the test split does).

    Raises:
        ExportError: no user has two or more items to learn from.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(train, item_ids, vectors, config, timestamps, log)
    finally:
        torch.set_num_threads(threads)


def _train(train: Mapping[str, Sequence[Interaction]], item_ids: Sequence[str],
           vectors: np.ndarray, config: ScorerConfig, timestamps: bool,
           log: Callable[[str], None]) -> ScorerTrainResult:
    """Pick the epoch count on validation folds, then refit on all of ``train``."""
    t0 = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    k = config.k
    if config.val_fraction == 0:
        fit = _fit(train, {}, item_ids, vectors, config, config.epochs, log)
        return _result(fit, fit, [], None, "epochs", {"test_fraction": 0.0}, t0)
    folds = []
    for fold in range(config.folds):
        split = holdout_split(_flatten(train), test_fraction=config.val_fraction,
                              seed=config.seed + 1 + fold, timestamps=timestamps)
        log(f"scorer validation fold {fold + 1}/{config.folds}")
        folds.append((split, _fit(split.train, split.test, item_ids, vectors,
                                  replace(config, seed=config.seed + fold), config.epochs, log)))
    key = f"val_ndcg@{k}"
    curves = np.array([[row[key] for row in f.history] for _, f in folds], dtype=np.float64)
    depth = min(len(c) for c in curves) if len(curves) else 0
    mean_curve = curves[:, :depth].mean(0)
    best_epoch = int(np.argmax(mean_curve + 1e-9 * -np.arange(depth)))  # ties: fewer epochs
    baseline = float(np.mean([f.baseline for _, f in folds]))
    log(f"scorer: mean validation NDCG@{k} over {config.folds} folds peaks at epoch "
        f"{best_epoch} ({mean_curve[best_epoch]:.4f}; inner product {baseline:.4f}); "
        f"refitting on all training events")
    if config.refit:
        final = _fit(train, {}, item_ids, vectors, config, best_epoch, log)
    else:  # keep fold 0's model at that epoch
        final = _fit(folds[0][0].train, {}, item_ids, vectors, config, best_epoch, log)
    history = [{"epoch": e, key: float(mean_curve[e]),
                "folds": [float(c[e]) for c in curves],
                "loss": folds[0][1].history[e]["loss"]} for e in range(depth)]
    split_info = {**folds[0][0].describe(), "folds": config.folds,
                  "seeds": [config.seed + 1 + f for f in range(config.folds)]}
    stopped = "epochs" if depth == config.epochs + 1 else folds[0][1].stopped
    return _result(final, folds[0][1], history, (best_epoch, float(mean_curve[best_epoch]),
                                                 baseline), stopped, split_info, t0)


@dataclass
class _Fit:
    model: ScorerNet
    history: list[dict[str, Any]]
    baseline: Optional[float]
    stopped: str
    examples: Examples
    validation: RankingSet


def _result(final: _Fit, reference: _Fit, history: list[dict[str, Any]],
            best: Optional[tuple[int, float, float]], stopped: str,
            split_info: dict[str, Any], t0: float) -> ScorerTrainResult:
    """``final`` is the shipped model; ``reference`` (a validation fold) supplies the ranking
    set the exporter checks parity on."""
    best_epoch, best_val, baseline = best if best else (len(final.history) - 1, None, None)
    data = {**final.examples.counts, "validation_split": split_info,
            "validation": reference.validation.describe()}
    return ScorerTrainResult(
        model=final.model, weights=final.model.to_weights(),
        history=tuple(history or final.history), best_epoch=best_epoch, best_val_ndcg=best_val,
        inner_product_val_ndcg=baseline, stopped=stopped, seconds=time.perf_counter() - t0,
        data=data, validation=reference.validation, examples=final.examples)


def _fit(fit: Mapping[str, Sequence[Interaction]], heldout: Mapping[str, Sequence[Interaction]],
         item_ids: Sequence[str], vectors: np.ndarray, config: ScorerConfig, epochs: int,
         log: Callable[[str], None]) -> _Fit:
    """Train ``epochs`` epochs on ``fit``, recording validation NDCG on ``heldout`` (if any)
    after each; returns the last epoch's model (eval mode)."""
    t0 = time.perf_counter()
    n_items, dim = vectors.shape
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    ex = build_examples(fit, item_ids, vectors, half_life_days=config.half_life_days,
                        hard_pool=config.negatives.hard_pool)
    if not len(ex) or not ex.label.any():
        raise ExportError(
            f"no user has two or more catalog items in the training events "
            f"({ex.counts.get('single_item_users', 0)} users with one): the scorer learns from "
            "a user's other items; give events with several items per user"
        )
    val = ranking_set(fit, heldout, item_ids, vectors, half_life_days=config.half_life_days)
    log(f"scorer data: {ex.counts['examples']} examples from {ex.counts['users']} users "
        f"({ex.counts['single_item_users']} single-item users skipped); validation: "
        f"{len(val)} users")

    # standardisation statistics from one epoch's rows, then the prior
    first = sample_epoch(ex, config.negatives, n_items, rng)
    x0 = np.concatenate([ex.u[first.example], vectors[first.item],
                         ex.u[first.example] * vectors[first.item]], axis=1)
    model = ScorerNet(dim, config.hidden, config.dropout, x0.mean(0), x0.std(0))
    if config.inner_product_prior:
        ip = (x0[:, 2 * dim :]).sum(1)
        rate = float(np.clip(np.average(first.label, weights=first.weight), 1e-3, 1 - 1e-3))
        model.init_inner_product_prior(
            config.prior_scale, float(np.log(rate / (1 - rate))) - config.prior_scale * ip.mean())
    model.eval()

    def validate() -> Optional[float]:
        return mean_ndcg(catalog_scores(model.to_weights(), val.u, vectors), val, config.k)

    baseline = mean_ndcg(val.u @ vectors.T, val, config.k) if len(val) else None
    history = [{"epoch": 0, "loss": None, f"val_ndcg@{config.k}": validate(), "seconds": 0.0}]
    _log_epoch(log, history[-1], config.k, baseline)
    opt = torch.optim.Adam([
        {"params": [*model.deep.parameters(), *model.head.parameters()],
         "weight_decay": config.weight_decay},
        {"params": model.skip.parameters(), "weight_decay": 0.0},
    ], lr=config.lr)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    per_user = np.bincount(ex.user, minlength=len(ex.user_ids)).astype(np.float64)
    balance = per_user[ex.user] ** -config.user_balance  # per example
    balance = (balance / balance.mean()).astype(np.float32)
    u_t, v_t = torch.from_numpy(ex.u), torch.from_numpy(vectors)
    stopped = "epochs"
    for epoch in _progress(range(1, epochs + 1)):
        rows = first if epoch == 1 else sample_epoch(ex, config.negatives, n_items, rng)
        order = torch.from_numpy(rng.permutation(len(rows)))
        example, item = torch.from_numpy(rows.example), torch.from_numpy(rows.item)
        label = torch.from_numpy(rows.label)
        weight = torch.from_numpy(rows.weight * balance[rows.example])
        model.train()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            logits = model(_rows(u_t[example[idx]], v_t[item[idx]]))[:, 0]
            w = weight[idx]
            loss = (loss_fn(logits, label[idx]) * w).sum() / w.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        history.append({"epoch": epoch, "loss": total / len(order),
                        f"val_ndcg@{config.k}": validate() if len(val) else None,
                        "seconds": round(time.perf_counter() - t0, 2)})
        _log_epoch(log, history[-1], config.k, baseline)
        if time.perf_counter() - t0 > 60 * config.max_minutes:
            stopped = "time"
            break
    model.eval()
    return _Fit(model, history, baseline, stopped, ex, val)


def _progress(epochs: range):
    try:
        from tqdm import tqdm
    except ImportError:
        return epochs
    return tqdm(epochs, desc="scorer epochs", unit="epoch", disable=None, leave=False)


def _log_epoch(log: Callable[[str], None], row: dict[str, Any], k: int,
               baseline: Optional[float]) -> None:
    ndcg = row[f"val_ndcg@{k}"]
    loss = "-" if row["loss"] is None else f"{row['loss']:.4f}"
    text = "-" if ndcg is None else f"{ndcg:.4f}"
    base = "" if baseline is None or row["epoch"] else f" (inner product u.v: {baseline:.4f})"
    log(f"  scorer epoch {row['epoch']}: loss {loss}  val NDCG@{k} {text}{base}")
