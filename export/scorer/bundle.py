"""Library entries for the personalised scorer: events -> trained, gated scorer files -> bundle.

- :func:`train_and_export_scorer`: an events CSV (or
  :class:`~edgerec.sdk.evaluation.events.EventLog`)
  and the catalog's item vectors -> the scorer's bundle files and ``metrics["scorer"]``. Used by
  ``edgerec export --events`` (:mod:`.pipeline`) and by :func:`add_scorer`.
- :func:`add_scorer`: ``edgerec scorer train``: an existing bundle + the catalog built with it
  + events -> a new bundle (written atomically) with the encoder files copied over and a scorer.

Honesty: the scorer trains only on ``holdout_split(log, test_fraction, split_seed).train``;
``metrics["scorer"]["holdout"]`` records the split (and the events file's sha256) so that
``edgerec evaluate`` can rebuild the same held-out events and score them. Early stopping uses
further splits of the training part (:mod:`.train`), never the test part.

A scorer ships only when it beats the inner-product order on that validation: when the best
epoch is 0, :func:`train_and_export_scorer` returns no files, ``metrics["scorer"]["shipped"]``
is false with the ``reason`` and the ``comparison`` (inner-product NDCG against the best
trained epoch's), and the bundle is written without a scorer (the device ranks by ``u . v``).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgerec.export.behaviour.build import BehaviourBuild, build_behaviour
from edgerec.export.errors import ExportError
from edgerec.export.options import ScorerExportOptions
from edgerec.export.scorer.artifacts import (
    BuiltScorer,
    ParitySets,
    ScorerGate,
    build_scorer_artifacts,
    calibration_rows,
    parity_sets,
)
from edgerec.export.scorer.data import Examples
from edgerec.export.scorer.train import ScorerTrainResult, train_scorer
from edgerec.sdk import Bundle, Catalog, Role
from edgerec.sdk.bundle.manifest import (
    MANIFEST_NAME,
    HoldoutRecord,
    ScorerRecord,
    UserVectorRecipe,
)
from edgerec.sdk.bundle.writer import NewArtifact, NewWeights, write_bundle
from edgerec.sdk.catalog.checks import check_encoder_match
from edgerec.sdk.errors import ProfileError
from edgerec.sdk.evaluation.events import (
    EventLog,
    Holdout,
    SplitProtocol,
    holdout_split,
    read_events,
)

__all__ = [
    "ScorerBuild",
    "ScorerResult",
    "add_scorer",
    "read_scorer_events",
    "scorer_holdout",
    "train_and_export_scorer",
]

PathLike = Union[str, os.PathLike]
Log = Callable[[str], None]
_CALIBRATION_ROWS = 4096  # calibration_rows' max_rows


@dataclass(frozen=True)
class ScorerBuild:
    """The scorer's files for a bundle and what goes into its manifest."""

    artifacts: tuple[NewArtifact, ...]
    weights: tuple[NewWeights, ...]
    metrics: dict[str, Any]
    recipe: dict[str, Any]
    training: ScorerTrainResult
    record: ScorerRecord
    behaviour: Optional[BehaviourBuild] = None


@dataclass(frozen=True)
class ScorerResult:
    """What :func:`add_scorer` wrote."""

    bundle: Bundle
    metrics: dict[str, Any]
    seconds: float


def read_scorer_events(path: PathLike, known_items: Sequence[str],
                       options: ScorerExportOptions) -> EventLog:
    """Read and check the events for training (:func:`~edgerec.sdk.evaluation.events.read_events`).

    Raises:
        ExportError: the file is missing, unreadable or empty, lacks the id columns, or none of
            its events is for a catalog item.
    """
    try:
        log = read_events(path, known_items=known_items, user_column=options.user_column,
                          item_column=options.item_column)
    except ProfileError as exc:
        raise ExportError(f"events: {exc}") from exc
    if not len(log):
        raise ExportError(f"no usable events in {path} ({log.report.summary()}); the events' "
                          f"{options.item_column!r} must name catalog items")
    return log


def scorer_holdout(events: EventLog, options: ScorerExportOptions) -> Holdout:
    """The split the scorer and the behaviour signals learn on (their ``train`` side) and are
    measured on (``test``), as ``options`` asks."""
    protocol = (SplitProtocol.LEAVE_LAST_OUT if options.holdout == "leave-last-out"
                else SplitProtocol.FRACTION)
    return holdout_split(events, test_fraction=options.test_fraction,
                         seed=options.split_seed, protocol=protocol)


def train_and_export_scorer(
    events: Union[PathLike, EventLog],
    item_ids: Sequence[str],
    vectors: np.ndarray,
    work_dir: PathLike,
    options: Optional[ScorerExportOptions] = None,
    *,
    vectors_source: Optional[dict[str, Any]] = None,
    log: Log = print,
) -> ScorerBuild:
    """Split, train, convert, quantize and check the scorer; no files (``metrics["shipped"]``
    false, with the ``reason``) when no trained epoch beat the inner-product order.

    Args:
        events: the events CSV (read against ``item_ids``) or an already read log.
        item_ids: the catalog's ids; vectors: float32 ``(N, D)`` unit vectors in that order,
            as the catalog holds them.
        work_dir: where the files are written (the bundle copies them).
        vectors_source: where the vectors came from (recorded in the metrics).

    Raises:
        ExportError: bad events, nothing to learn from, a conversion bug, or an int8 gate
            failure with ``fail_on_gate``.
    """
    t0 = time.perf_counter()
    options = options or ScorerExportOptions()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ExportError(f"{len(item_ids)} item ids for vectors of shape {vectors.shape}")
    if not isinstance(events, EventLog):
        events = read_scorer_events(events, item_ids, options)
    report = events.report
    log(f"events: {report.summary()}")
    holdout = scorer_holdout(events, options)
    log(f"scorer split: {holdout.describe()}")
    cfg = options.config
    record = _record(options, holdout, report.sha256, {"shipped": True})
    behaviour = build_behaviour(holdout.train, item_ids, vectors, Path(work_dir) / "behaviour",
                                options.behaviour, recipe=record.user_vector,
                                candidates=cfg.candidates, holdout=record.holdout, log=log)
    result = train_scorer(holdout.train, item_ids, vectors, cfg,
                          timestamps=events.has_timestamps, log=log)
    comparison = result.comparison(cfg.k)
    recipe = {**cfg.to_dict(), "test_fraction": options.test_fraction,
              "split_seed": options.split_seed, "input": "[u, v, u*v]",
              "user_vector": "edgerec.sdk.user_vector, leave-one-out, default event weights"}
    metrics: dict[str, Any] = {
        "shipped": result.improves,
        "comparison": comparison,
        "holdout": {**holdout.describe(), "events_sha256": report.sha256,
                    "user_column": options.user_column, "item_column": options.item_column,
                    "known_items": len(item_ids)},
        "events": report.to_dict(),
        "training": result.to_dict(),
        "item_vectors": vectors_source or {},
        "behaviour": behaviour.metrics,
    }
    if options.test_fraction == 0:
        metrics["holdout"]["note"] = ("trained on every event (test_fraction 0): nothing is "
                                      "held out; evaluate on other events")
    if not result.improves:
        metrics["reason"] = (
            f"no trained epoch beat the inner-product order on validation (NDCG@{cfg.k}: "
            f"inner product {_fmt(comparison['inner_product'])}, best trained "
            f"{_fmt(comparison['best_trained'])} at epoch {comparison['best_trained_epoch']}, "
            f"over {comparison['folds']} fold(s)): no scorer is shipped and the device ranks "
            "by u.v (visual kNN)")
        metrics["seconds"] = time.perf_counter() - t0
        log(f"scorer not shipped: {metrics['reason']}")
        return ScorerBuild((), (), metrics, recipe, result,
                           _record(options, holdout, report.sha256, metrics), behaviour)
    rng = np.random.default_rng(cfg.seed)
    examples = result.examples.subset(  # leave-one-out vectors for parity without validation
        np.sort(rng.permutation(len(result.examples))[:_CALIBRATION_ROWS]))
    sets = parity_sets(result.validation, examples, vectors, candidates=cfg.candidates,
                       seed=cfg.seed)
    calibration = calibration_rows(*_calibration_inputs(sets, result.examples, rng), vectors,
                                   seed=cfg.seed)
    gate = options.gate or ScorerGate()
    built: BuiltScorer = build_scorer_artifacts(
        result.model, Path(work_dir), sets=sets, vectors=vectors, calibration=calibration,
        k=cfg.k, gate=gate, fail_on_gate=options.fail_on_gate, int8=options.int8,
        log=log)
    metrics.update({
        **built.metrics(),
        "gate": {"min_ndcg_ratio": gate.min_ndcg_ratio,
                 "min_top_k_overlap": gate.min_top_k_overlap,
                 "min_spearman": gate.min_spearman,
                 "min_hits_for_ndcg": gate.min_hits,
                 "ndcg_checked": {key: gate.ndcg_checked(r)
                                  for key, r in built.parity.items()},
                 "parity_candidates": int(sets.candidates.shape[1]),
                 "parity_users": len(sets.u)},
        "seconds": time.perf_counter() - t0,
    })
    return ScorerBuild(tuple(built.artifacts), tuple(built.weights), metrics, recipe, result,
                       _record(options, holdout, report.sha256, metrics), behaviour)


def _record(options: ScorerExportOptions, holdout: Holdout, events_sha256: str,
            metrics: dict[str, Any]) -> ScorerRecord:
    """What the bundle records for the device and for ``edgerec evaluate``: the C the scorer
    was validated and gated with, the user-vector recipe it was trained on, the held-out
    split, and whether it was shipped."""
    cfg, split = options.config, holdout.describe()
    held = None
    if options.test_fraction > 0 or holdout.protocol is SplitProtocol.LEAVE_LAST_OUT:
        held = HoldoutRecord(strategy=holdout.strategy, seed=holdout.seed,
                             test_fraction=holdout.test_fraction, events_sha256=events_sha256,
                             user_column=options.user_column, item_column=options.item_column,
                             train_events=split["train_events"],
                             test_events=split["test_events"], test_users=split["test_users"])
    return ScorerRecord(candidates=cfg.candidates,
                        user_vector=UserVectorRecipe(half_life_days=cfg.half_life_days),
                        holdout=held, shipped=bool(metrics["shipped"]),
                        reason=str(metrics.get("reason", "")))


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _calibration_inputs(sets: ParitySets, examples: Examples,
                        rng: np.random.Generator) -> tuple[ParitySets, Examples]:
    """Inputs for :func:`calibration_rows` that hold about its ``max_rows`` (4096) rows, mixed
    as its draw from *every* parity user's candidate rows and every training positive would be
    (users x C candidate rows to P positives), without building all those ``(C, 3D)`` rows and
    leave-one-out vectors at once (300 x 200 x 3072 floats alone are 0.7 GB at D = 1024)."""
    n_users, c = len(sets.u), max(1, sets.candidates.shape[1])
    share = n_users * c / max(1, n_users * c + len(examples))
    users = min(n_users, max(1, -(-round(_CALIBRATION_ROWS * share) // c)))
    n_ex = min(len(examples), round(_CALIBRATION_ROWS * (1 - share)))
    pick = np.sort(rng.permutation(len(examples))[:n_ex])
    return (ParitySets(sets.u[:users], sets.candidates[:users], None),
            examples.subset(pick))


def _unlisted_files(bundle: Bundle) -> dict[str, Path]:
    """The bundle's files that the manifest does not list (reports), to copy along."""
    listed = {a.file for a in bundle.manifest.artifacts} | {w.file for w in bundle.weights()}
    listed.add(MANIFEST_NAME)
    if bundle.manifest.behaviour is not None and bundle.manifest.behaviour.file:
        listed.add(bundle.manifest.behaviour.file)
    out = {}
    for path in sorted(bundle.path.rglob("*")):
        rel = path.relative_to(bundle.path).as_posix()
        if path.is_file() and not path.is_symlink() and rel not in listed:
            out[rel] = path
    return out


def add_scorer(
    bundle: Union[Bundle, PathLike],
    catalog: Union[Catalog, PathLike],
    events: PathLike,
    out: PathLike,
    options: Optional[ScorerExportOptions] = None,
    *,
    force: bool = False,
    log: Log = print,
) -> ScorerResult:
    """Train a scorer for ``bundle`` on ``events`` with the vectors ``catalog`` holds, and write
    ``out``: the bundle's encoder files (and reports) copied, any old scorer replaced, the new
    scorer added; ``metrics["scorer"]`` and ``recipe["scorer"]`` set. When no trained epoch
    beat the inner-product order on validation, ``out`` has no scorer files (the device then
    ranks by ``u . v``) and ``metrics["scorer"]`` says so (``"shipped": false``, ``"reason"``,
    ``"comparison"``). Atomic: on any error no ``out`` is left behind (or the old one stays,
    with ``force``).

    Raises:
        ExportError: ``out`` exists without ``force``; bad events; training or export failed.
        EncoderMismatchError: the catalog was built with another encoder than the bundle's.
        BundleError, CatalogError: the bundle or the catalog cannot be read.
    """
    t0 = time.perf_counter()
    options = options or ScorerExportOptions()
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; choose another --out or pass --force to "
                          "replace it")
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    opened = not isinstance(catalog, Catalog)
    cat = Catalog.open(catalog, readonly=True) if opened else catalog
    try:
        check_encoder_match(cat, bundle, "a scorer must learn from the vectors its bundle "
                            "makes; pass the catalog built with this bundle "
                            "(`edgerec catalog build`)")
        ids = list(cat)
        _, vectors = cat.vectors(ids)
        source = {"source": "catalog", "catalog": str(cat.path), "dtype": cat.dtype,
                  "generation": cat.generation, "items": len(ids),
                  "encoder_id": cat.encoder_id}
    finally:
        if opened:
            cat.close()
    if bundle.has(Role.SCORER) or bundle.weights(Role.SCORER):
        log(f"{bundle.path} already has a scorer: the new bundle replaces it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.scorer-", dir=out.parent) as work:
        build = train_and_export_scorer(events, ids, vectors, work, options,
                                        vectors_source=source, log=log)
        m = bundle.manifest
        kept = [NewArtifact(source=bundle.artifact_path(a), role=a.role, precision=a.precision,
                            inputs=a.inputs, outputs=a.outputs, output=a.output,
                            layout=a.layout, file=a.file, engine=a.engine)
                for a in m.artifacts if a.role is not Role.SCORER]
        kept_weights = [NewWeights(bundle.artifact_path(w), w.role, w.precision, w.format,
                                   w.file) for w in m.weights if w.role is not Role.SCORER]
        written = write_bundle(
            out, artifacts=[*kept, *build.artifacts], weights=[*kept_weights, *build.weights],
            preprocessing=m.preprocessing, embedding_dim=m.embedding_dim, name=m.name,
            teacher=m.teacher, metrics={**m.metrics, "scorer": build.metrics},
            recipe={**m.recipe, "scorer": build.recipe}, force=force,
            extra_files=_unlisted_files(bundle), scorer=build.record,
            behaviour=build.behaviour.record if build.behaviour else None,
            behaviour_source=build.behaviour.file if build.behaviour else None,
        )
    if written.encoder_id != bundle.encoder_id:  # copies of the same files: cannot happen
        raise ExportError(f"{out} got encoder id {written.encoder_id}, not "
                          f"{bundle.encoder_id}: please report this bug")
    if build.metrics["shipped"]:
        keys = ", ".join(a.key for a in written.artifacts(Role.SCORER))
        log(f"wrote {written.path}: scorer {keys} + folded weights")
    else:
        log(f"wrote {written.path} without a scorer (metrics.scorer says why)")
    return ScorerResult(written, build.metrics, time.perf_counter() - t0)
