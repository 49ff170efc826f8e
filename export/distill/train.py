"""Distil a teacher into a student encoder from cached teacher features (+ labels when given).

Loss (all terms on the student's L2-normalised embedding ``z``, ``t`` the teacher's vector):

- **relational** (weight ``w_relational``): for each item, the teacher's similarity
  distribution over the batch and a queue of recent items, ``softmax(t . T / tau_t)``, is the
  target for the student's ``softmax(z . Z / tau_s)`` (KL). It copies *which items look
  alike* to the teacher, which is what retrieval needs, without forcing the 1024-d geometry
  into 128 dimensions;
- **cosine** (``w_cosine``): a linear projection of the embedding to the teacher's dimension
  should point where the teacher's vector points;
- **label** (``w_label``): a normalised-softmax (cosine) classifier with label smoothing on
  labelled items only; unlabelled items contribute to the distillation terms only. With
  ``label_head`` > 0 the classifier reads a small MLP of the embedding instead of the
  embedding itself, so the label term need not collapse each label into one tight cluster in
  the space retrieval uses (the projection-head effect known from SimCLR). Measured on the
  clothing data (README, run r11) that was worse on seen and unseen labels; off by default.

Teacher vectors from a ReLU network are all non-negative, so any two are alike (median cosine
0.54 on the clothing data) and a softmax at ``tau_teacher`` 0.05 puts only ~12% of its mass on
the 10 nearest of 4,096 keys. With ``teacher_center`` the mean teacher vector (over the cached
training views) is subtracted first: the same softmax then puts ~60% on those 10, so the
relational target is about neighbourhoods, and the cosine target about what sets an item apart.
Measured on the clothing data (README, run r9) that made the student *worse* on seen and unseen
labels alike (0.437 / 0.331 against 0.633 / 0.390): the broad similarity structure of the soft
target carries more than the sharp neighbourhoods a small student cannot copy. Off by default.

AdamW with linear warm-up and cosine decay, per step. With ``ema_decay`` > 0 an exponential
moving average of the weights (and BatchNorm buffers) is kept beside them (decay warmed up as
``min(ema_decay, (1 + step) / (10 + step))``); it is what gets evaluated, kept and returned.
After each epoch the student (or its average) is evaluated
(same-label mAP@10 on the validation views); the best state is kept, training stops early after
``patience`` evaluations without improvement or when ``max_minutes`` is spent. The kept state's
BatchNorm statistics are then re-estimated exactly on training crops. ``last.pt`` is
written atomically every epoch and training resumes from it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from edgerec.sdk.evaluation.retrieval import label_retrieval
from edgerec.sdk.files import atomic_write
from torch import nn

__all__ = [
    "DistillConfig", "TrainResult", "embed_views", "recalibrate_batchnorm", "train_student",
]


@dataclass(frozen=True)
class DistillConfig:
    """Training recipe (see the module docstring for the terms)."""

    epochs: int = 24
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    w_relational: float = 1.0
    w_cosine: float = 0.5
    w_label: float = 1.0
    tau_teacher: float = 0.05
    teacher_center: bool = False  # subtract the mean teacher vector before normalising
    tau_student: float = 0.05
    queue_size: int = 4096
    label_scale: float = 16.0
    label_smoothing: float = 0.1
    label_head: int = 0  # > 0: the classifier sees MLP(z) (this hidden width), not z itself
    label_decay_from: float = 0.6  # training progress (0..1) after which w_label ramps ...
    w_label_end: float = 0.5  # ... linearly down to this weight at the end (README r15-r17)
    select_on: str = "val_map@10"  # history key whose maximum picks the kept epoch
    ema_decay: float = 0.995  # > 0: evaluate and keep an exponential moving average of weights
    patience: int = 8
    max_minutes: Optional[float] = None
    seed: int = 0
    threads: int = 2
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class TrainResult:
    """What training produced: the best weights, when, and the per-epoch history."""

    best_map: float
    best_epoch: int
    epochs_run: int
    stopped: str  # "epochs" | "early_stop" | "time_budget"
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class _Heads(nn.Module):
    def __init__(self, dim: int, teacher_dim: int, classes: int, label_head: int = 0):
        super().__init__()
        self.project = nn.Linear(dim, teacher_dim)
        self.label_mlp = (nn.Sequential(nn.Linear(dim, label_head), nn.ReLU(),
                                        nn.Linear(label_head, dim))
                          if label_head else nn.Identity())
        self.classes = nn.Parameter(torch.randn(max(classes, 1), dim) * 0.01)


def _to_input(views: np.ndarray, mean: torch.Tensor, inv_std: torch.Tensor,
              flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, s, s, 3) uint8 -> (B, 3, s, s) float32 normalised, channels_last memory format."""
    views = np.asarray(views)
    if not views.flags.writeable:  # read-only memmap slices; torch wants writable memory
        views = views.copy()
    x = torch.from_numpy(np.ascontiguousarray(views)).permute(0, 3, 1, 2).float()
    x = (x - mean) * inv_std
    if flip is not None and flip.any():
        x[flip] = x[flip].flip(3)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def embed_views(model: nn.Module, views: np.ndarray, config: DistillConfig,
                batch: int = 256) -> np.ndarray:
    """Student embeddings (N, D) float32, unit rows, for uint8 views (N, s, s, 3)."""
    model.eval()
    mean = torch.tensor(config.mean).view(1, 3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(config.std).view(1, 3, 1, 1) * 255)
    out = [F.normalize(model(_to_input(views[i : i + batch], mean, inv_std)), dim=1)
           for i in range(0, len(views), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, views: np.ndarray, config: DistillConfig,
                          images: int = 1024, batch: int = 64, seed: int = 0) -> None:
    """Re-estimate every BatchNorm's running mean/variance as an exact average over ``images``
    random training crops (train-mode forward passes, no gradient), then switch to eval.

    Running statistics updated with momentum lag the weights, badly so after few steps; this
    makes the eval-mode network match the weights it ends with.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches
    mean = torch.tensor(config.mean).view(1, 3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(config.std).view(1, 3, 1, 1) * 255)
    rows = np.sort(np.random.default_rng(seed).permutation(len(views))[:images])
    model.train()
    for i in range(0, len(rows), batch):
        model(_to_input(views[rows[i : i + batch]], mean, inv_std))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    model.eval()


def _feature_mean(features: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(Dt,) float32 mean of the unit-normalised rows of ``features`` (N, Dt), read in chunks."""
    total = np.zeros(features.shape[1], np.float64)
    for i in range(0, len(features), chunk):
        rows = np.asarray(features[i : i + chunk], np.float32)
        total += (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).sum(0)
    return (total / max(1, len(features))).astype(np.float32)


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def _load(path: Path) -> dict:
    # weights_only: tensors and plain containers only, never arbitrary objects
    return torch.load(path, map_location="cpu", weights_only=True)


def train_student(
    model: nn.Module,
    *,
    views: np.ndarray,
    features: np.ndarray,
    views_per_item: int,
    labels: np.ndarray,
    val_views: np.ndarray,
    val_labels: np.ndarray,
    config: DistillConfig,
    checkpoint_dir: Path,
    resume: bool = False,
    log: Optional[Callable[[dict], None]] = None,
    probe: Optional[Callable[[nn.Module], dict]] = None,
) -> TrainResult:
    """Train ``model`` in place and load the best state into it.

    Args:
        views: (N * V, s, s, 3) uint8 cached crops (V = ``views_per_item`` per item).
        features: (N * V, Dt) float16/32 teacher unit vectors for those crops.
        labels: (N,) int64 class index per item, -1 for unlabelled.
        val_views: (M, s, s, 3) uint8 validation centre crops; ``val_labels`` (M,).
        checkpoint_dir: ``last.pt`` (resume point) and ``best.pt`` live here.
        resume: continue from ``last.pt`` when it exists.
        log: called with each epoch's history row.
        probe: called with the model (eval mode) after each epoch; the numbers it returns join
            the history row, so ``config.select_on`` can name one of them (e.g. a selection
            score on held-out data) and diagnostics can be logged.
    """
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    model.to(memory_format=torch.channels_last)  # 2.2x faster on this CPU (measured)
    n_items = len(labels)
    classes = int(labels.max()) + 1 if (labels >= 0).any() else 0
    dim = model(torch.zeros(2, 3, views.shape[1], views.shape[2])).shape[1]
    heads = _Heads(dim, features.shape[1], classes, config.label_head)
    params = list(model.parameters()) + list(heads.parameters())
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr,
                            foreach=True)
    steps_per_epoch = max(1, n_items // config.batch_size)
    total = steps_per_epoch * config.epochs
    warm = max(1, int(config.warmup_epochs * steps_per_epoch))

    def label_weight(step: int) -> float:
        progress = step / max(1, total)
        if progress <= config.label_decay_from:
            return config.w_label
        frac = (progress - config.label_decay_from) / max(1e-9, 1 - config.label_decay_from)
        return config.w_label + (config.w_label_end - config.w_label) * frac

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(config.std).view(1, 3, 1, 1) * 255)
    center = torch.from_numpy(_feature_mean(features)) if config.teacher_center else None
    queue_z = torch.zeros(0, dim)
    queue_t = torch.zeros(0, features.shape[1])
    start_epoch, history, best_map, best_epoch, spent = 0, [], -1.0, -1, 0.0
    ema = copy.deepcopy(model) if config.ema_decay > 0 else None
    ema_steps = 0
    last = checkpoint_dir / "last.pt"
    if resume and last.is_file():
        state = _load(last)
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]) + 1, list(state["history"])
        best_map, best_epoch = float(state["best_map"]), int(state["best_epoch"])
        spent = float(state["seconds"])
        torch.set_rng_state(state["torch_rng"])
        rng = np.random.default_rng(int(state["np_seed"]))
        queue_z, queue_t = state["queue_z"], state["queue_t"]
        if ema is not None:
            ema.load_state_dict(state["ema"])
            ema_steps = int(state["ema_steps"])
    t0 = time.perf_counter() - spent
    stopped = "epochs"
    labelled = torch.from_numpy(labels.astype(np.int64))
    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = rng.permutation(n_items)
        sums = {"loss": 0.0, "relational": 0.0, "cosine": 0.0, "label": 0.0}
        for step in range(steps_per_epoch):
            items = order[step * config.batch_size : (step + 1) * config.batch_size]
            rows = np.sort(items * views_per_item + rng.integers(0, views_per_item, len(items)))
            x = _to_input(views[rows], mean, inv_std, torch.rand(len(rows)) < 0.5)
            t = F.normalize(torch.from_numpy(np.asarray(features[rows], np.float32)), dim=1)
            if config.teacher_center:
                t = F.normalize(t - center, dim=1)
            y = labelled[torch.from_numpy(rows // views_per_item)]
            e = model(x)
            z = F.normalize(e, dim=1)
            loss = torch.zeros(())
            parts = {}
            if config.w_relational:
                keys_z, keys_t = torch.cat([z, queue_z]), torch.cat([t, queue_t])
                eye = torch.zeros(len(z), len(keys_z), dtype=torch.bool)
                eye[:, : len(z)] = torch.eye(len(z), dtype=torch.bool)
                target = F.softmax((t @ keys_t.T / config.tau_teacher).masked_fill(eye, -1e9), 1)
                logp = F.log_softmax((z @ keys_z.T / config.tau_student).masked_fill(eye, -1e9), 1)
                parts["relational"] = F.kl_div(logp, target, reduction="batchmean")
                loss = loss + config.w_relational * parts["relational"]
            if config.w_cosine:
                p = F.normalize(heads.project(e), dim=1)
                parts["cosine"] = 1 - (p * t).sum(1).mean()
                loss = loss + config.w_cosine * parts["cosine"]
            mask = y >= 0
            if config.w_label and classes and mask.any():
                zl = F.normalize(heads.label_mlp(z[mask]), dim=1) if config.label_head else z[mask]
                logits = config.label_scale * zl @ F.normalize(heads.classes, dim=1).T
                parts["label"] = F.cross_entropy(logits, y[mask],
                                                 label_smoothing=config.label_smoothing)
                loss = loss + label_weight(epoch * steps_per_epoch + step) * parts["label"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                decay = min(config.ema_decay, (1 + ema_steps) / (10 + ema_steps))
                ema_steps += 1
                with torch.no_grad():
                    for a, b in zip(ema.state_dict().values(), model.state_dict().values()):
                        if a.dtype.is_floating_point:
                            a.mul_(decay).add_(b.detach(), alpha=1 - decay)
                        else:
                            a.copy_(b)
            if config.w_relational and config.queue_size:
                queue_z = torch.cat([z.detach(), queue_z])[: config.queue_size]
                queue_t = torch.cat([t, queue_t])[: config.queue_size]
            sums["loss"] += float(loss.detach())
            for k, v in parts.items():
                sums[k] += float(v.detach())
        judged = ema if ema is not None else model
        val = label_retrieval(embed_views(judged, val_views, config), val_labels, k=10)
        row = {"epoch": epoch, "lr": sched.get_last_lr()[0], "val_map@10": val.map_at_k,
               "val_p@10": val.precision_at_k,
               "w_label": label_weight((epoch + 1) * steps_per_epoch),
               **{k: v / steps_per_epoch for k, v in sums.items()}}
        if probe is not None:
            row.update(probe(judged))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if config.select_on not in row:
            raise ValueError(f"select_on={config.select_on!r} is not in the history row "
                             f"{sorted(row)}: pass a probe that returns it")
        if not math.isfinite(row[config.select_on]):
            raise ValueError(f"{config.select_on} is {row[config.select_on]}: the images it is "
                             "measured on need at least two of some label")
        if row[config.select_on] > best_map:
            best_map, best_epoch = float(row[config.select_on]), epoch
            _save_atomic({"model": judged.state_dict()}, checkpoint_dir / "best.pt")
        np_seed = int(rng.integers(0, 2**31 - 1))  # reseed so a resumed run continues alike
        rng = np.random.default_rng(np_seed)
        _save_atomic({
            "model": model.state_dict(), "heads": heads.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
            "history": history, "best_map": best_map, "best_epoch": best_epoch,
            "seconds": time.perf_counter() - t0, "torch_rng": torch.get_rng_state(),
            "np_seed": np_seed, "queue_z": queue_z, "queue_t": queue_t,
            "config": asdict(config),
            **({"ema": ema.state_dict(), "ema_steps": ema_steps} if ema is not None else {}),
        }, last)
        if log is not None:
            log(row)
        if epoch - best_epoch >= config.patience:
            stopped = "early_stop"
            break
        if config.max_minutes and (time.perf_counter() - t0) / 60 > config.max_minutes:
            stopped = "time_budget"
            break
    model.load_state_dict(_load(checkpoint_dir / "best.pt")["model"])
    recalibrate_batchnorm(model, views, config, seed=config.seed)
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(best_map=best_map, best_epoch=best_epoch, epochs_run=len(history),
                       stopped=stopped, history=history, seconds=time.perf_counter() - t0)
