"""The behaviour signals as a bundle part: :func:`build_behaviour` learns them on the training
side of the scorer's split, fits the fusion on a validation cut of it, and writes the ``.npz``
and the :class:`~edgerec.sdk.bundle.manifest.BehaviourRecord` the bundle lists (or a record
that says why there are none)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from edgerec.export.behaviour.fusion import fit_fusion
from edgerec.export.behaviour.learn import learn_behaviour
from edgerec.export.options import BehaviourOptions
from edgerec.sdk.behaviour.feed import FeedOptions
from edgerec.sdk.behaviour.model import BehaviourModel
from edgerec.sdk.bundle.manifest import BehaviourRecord, HoldoutRecord, UserVectorRecipe
from edgerec.sdk.evaluation.events import Interaction

__all__ = ["BehaviourBuild", "build_behaviour"]

Log = Callable[[str], None]
FILE = "behaviour.npz"


@dataclass(frozen=True)
class BehaviourBuild:
    """The record for the manifest, the file to copy in (None when not shipped) and the
    report for ``metrics["behaviour"]``."""

    record: BehaviourRecord
    file: Optional[Path]
    metrics: dict[str, Any]


def build_behaviour(train: Mapping[str, Sequence[Interaction]], item_ids: Sequence[str],
                    vectors: np.ndarray, work_dir: Path, options: BehaviourOptions, *,
                    recipe: UserVectorRecipe, candidates: int,
                    holdout: Optional[HoldoutRecord] = None, log: Log = print) -> BehaviourBuild:
    """Learn, fit and write the behaviour part from ``train`` (user -> events, the held-out
    events already removed) for items ``item_ids`` with image ``vectors`` (N, D) float32."""
    t0 = time.perf_counter()
    if not options.enabled:
        record = BehaviourRecord(shipped=False, reason="turned off (BehaviourOptions.enabled)")
        return BehaviourBuild(record, None, {"shipped": False, "reason": record.reason})
    learned = learn_behaviour(train, item_ids, vectors, options, log=log)
    if learned.model is None:
        log(f"behaviour signals not shipped: {learned.reason}")
        record = BehaviourRecord(shipped=False, reason=learned.reason, holdout=holdout)
        return BehaviourBuild(record, None, {"shipped": False, "reason": learned.reason,
                                             **learned.report})
    fusion = fit_fusion(train, item_ids, vectors, options, recipe,
                        FeedOptions(candidates=candidates), log=log)
    arrays = learned.model.to_arrays()
    per_item, model_bytes = BehaviourModel.sizes(arrays)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / FILE
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    record = BehaviourRecord(
        shipped=True, file=FILE, sha256="0" * 64, items=len(item_ids),
        warm_items=int(learned.model.learned.sum()), dim=learned.model.dim,
        neighbours=int(learned.model.neighbours.shape[1]),
        popularity_half_life_days=options.popularity_half_life_days, fusion=fusion,
        holdout=holdout, bytes_per_item=round(per_item, 2), model_bytes=model_bytes)
    metrics = {"shipped": True, **learned.report, "bytes_per_item": round(per_item, 2),
               "model_bytes": model_bytes, "file_bytes": path.stat().st_size,
               "fusion": fusion.to_dict(), "seconds": round(time.perf_counter() - t0, 2)}
    log(f"behaviour signals: {per_item:.1f} bytes per item + {model_bytes} bytes of model; "
        f"{metrics['seconds']:.1f} s")
    return BehaviourBuild(record, path, metrics)
