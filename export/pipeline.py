"""``edgerec export``: photos -> a verified bundle with fp32 and int8 encoders.

Steps, each in its own module: scan and clean (:mod:`.data`), teacher (:mod:`.teacher`),
cached teacher features per view (:mod:`.cache`, :mod:`.views`), student
(:mod:`.student`), distillation (:mod:`.distill`), fp32 conversion (:mod:`.convert`), int8
quantization with gates (:mod:`.quantize`), parity and quality (:mod:`.parity`), report
(:mod:`.report`), bundle (:func:`edgerec.sdk.write_bundle`, atomic). With ``events``, the
personalised scorer too (:mod:`.scorer_bundle`), trained on the exported fp32 encoder's vectors
of the dataset's images.

Everything slow is resumable: the feature cache and the training checkpoints live in the work
directory (default ``<out>.work`` beside the bundle) and ``resume=True`` continues from them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from edgerec.export.artifacts.encoder import build_artifacts
from edgerec.export.artifacts.macs import tflite_macs, torch_macs
from edgerec.export.artifacts.parity import artifact_embeddings
from edgerec.export.data.scan import Dataset, ImageRecord, scan_images, split
from edgerec.export.data.views import VIEW_RECIPE, make_views
from edgerec.export.distill.cache import FeatureCache, build_feature_cache
from edgerec.export.distill.student import STUDENTS, StudentEncoder, create_student
from edgerec.export.distill.teacher import Teacher
from edgerec.export.distill.teacher_torchvision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_PREFIX,
    torchvision_teacher,
)
from edgerec.export.distill.train import TrainResult, embed_views, train_student
from edgerec.export.distill.whiten import DEFAULT_POWERS, WhiteningChoice, choose_whitening
from edgerec.export.errors import ExportError
from edgerec.export.options import ExportOptions, default_teacher
from edgerec.export.scorer.bundle import read_scorer_events, train_and_export_scorer
from edgerec.runtimes import Engine
from edgerec.sdk import Bundle, Precision, Preprocessing, Role, preprocess
from edgerec.sdk.bundle.manifest import WHITENING_FORMAT
from edgerec.sdk.bundle.writer import NewWeights, write_bundle
from edgerec.sdk.catalog.ingest import listing_from_csv
from edgerec.sdk.evaluation.retrieval import label_retrieval

__all__ = ["ExportResult", "export_bundle", "selection_split"]

PathLike = Union[str, os.PathLike]
Log = Callable[[str], None]


@dataclass
class ExportResult:
    """The written bundle and what was measured on the way."""

    bundle: Bundle
    metrics: dict[str, Any]
    report: Path
    seconds: float


def _split_column(items: Optional[Path], root: Optional[Path]) -> dict[str, str]:
    """item_id -> the CSV's ``split`` cell, ids as the one reader gives them (as scan_images)."""
    if items is None:
        return {}
    listing = listing_from_csv(items, base=root)
    return {s.item_id: str(s.metadata["split"]).lower() for s in listing if "split" in s.metadata}


def _train_val(ds: Dataset, options: ExportOptions) -> tuple[list[ImageRecord], list[ImageRecord]]:
    given = _split_column(options.items, options.images)
    if given:
        train = [r for r in ds.records if given.get(r.item_id, "train") == "train"]
        val = [r for r in ds.records if given.get(r.item_id) in ("validation", "val", "test")]
    else:
        train, val = split(ds, val_fraction=options.val_fraction, seed=options.seed)
    if options.max_per_label:
        rng = np.random.default_rng(options.seed)

        def cap(records: list[ImageRecord], n: int) -> list[ImageRecord]:
            by: dict[Optional[str], list[ImageRecord]] = {}
            for r in records:
                by.setdefault(r.label, []).append(r)
            out = []
            for group in by.values():
                idx = rng.permutation(len(group))[:n]
                out += [group[i] for i in sorted(idx)]
            return sorted(out, key=lambda r: r.item_id)

        train = cap(train, options.max_per_label)
        val = cap(val, max(2, options.max_per_label // 2))
    labelled_val = [r for r in val if r.label is not None]
    if len({r.label for r in labelled_val}) < 2 or len(labelled_val) < 4:
        raise ExportError(
            f"Validation needs labelled images of at least 2 labels (got {len(labelled_val)} "
            f"images, {len({r.label for r in labelled_val})} labels); give a folder with one "
            "sub-folder per label and a few images each."
        )
    if not train:
        raise ExportError("No training images are left after the split; add images.")
    return train, val


def _pre(options: ExportOptions) -> Preprocessing:
    d = options.distill
    return Preprocessing(input_size=options.image_size, mean=d.mean, std=d.std)


def _feature_cache(records: Sequence[ImageRecord], views: int, teacher: Teacher,
                   options: ExportOptions, work: Path, what: str) -> FeatureCache:
    from tqdm import tqdm

    bar = tqdm(total=len(records), desc=f"teacher features ({what})", unit="img", disable=None)

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    try:
        return build_feature_cache(
            work / "cache", item_ids=[r.item_id for r in records],
            paths=[r.path for r in records], digests=[r.sha256 for r in records],
            # the workers open the bundle this process already wrapped the teacher into,
            # instead of each wrapping the model file again
            teacher_source=teacher.bundle.path, teacher_id=teacher.identity,
            teacher_dim=teacher.dim, teacher_size=teacher.input_size,
            student_size=options.image_size, views_per_item=views, view_fn=make_views,
            view_recipe=VIEW_RECIPE, seed=options.seed, workers=options.workers,
            teacher_mean=options.teacher_mean, teacher_std=options.teacher_std,
            progress=progress,
        )
    finally:
        bar.close()


def _torch_embed(model: StudentEncoder, x: np.ndarray, batch: int = 128) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        parts = [torch.nn.functional.normalize(model(torch.from_numpy(x[i : i + batch])), dim=1)
                 for i in range(0, len(x), batch)]
    return torch.cat(parts).numpy()


def _item_vectors(paths: Sequence[Path], artifact: Path, pre: Preprocessing,
                  batch: int = 64) -> np.ndarray:
    """(N, D) float32 unit vectors of ``paths`` through an fp32 encoder artifact, as
    ``edgerec catalog build`` makes them (the SDK's preprocessing, the engine, L2 norm); the
    torch student would differ from the catalog by the (gated, < 1e-3) conversion error."""
    from edgerec.sdk import l2_normalize

    parts = [artifact_embeddings(artifact, preprocess(list(paths[i : i + batch]), pre),
                                 num_threads=2)
             for i in range(0, len(paths), batch)]
    return l2_normalize(np.concatenate(parts))


def _whitening(model: StudentEncoder, tr: FeatureCache, train_labels: np.ndarray,
               select_views: np.ndarray, select_labels: np.ndarray, options: ExportOptions,
               log: Log) -> Optional[WhiteningChoice]:
    """Fit the encoder's whitening on the training images' device crops (view 0; within their
    labels ``train_labels`` (N,), -1 unlabelled, when there are any) and pick its power on the
    selection images (:mod:`.whiten_step`); None when ``whiten="off"``."""
    if options.whiten == "off":
        return None
    config = options.distill
    train_vectors = embed_views(model, tr.views[:: tr.views_per_item], config)
    select_vectors = embed_views(model, select_views, config)
    forced = options.whiten != "auto"
    choice = choose_whitening(train_vectors, select_vectors, select_labels,
                              train_labels=train_labels,
                              powers=(float(options.whiten),) if forced else DEFAULT_POWERS,
                              keep=0.0 if forced else None)
    tried = ", ".join(f"{p:g}: {m:.3f}" for p, m in choice.maps.items())
    log(f"whitening ({choice.covariance}): power "
        f"{choice.power if choice.power is not None else 'off'} (selection mAP@10 unwhitened "
        f"{choice.baseline_map:.3f}; {tried})")
    return choice


def selection_split(train: list[ImageRecord], fraction: float, seed: int,
                    log: Log = print,
                    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Hold ``fraction`` of the labelled training images out (stratified) to pick the kept
    epoch on, so that the validation images only report quality.

    Returns ``(train, select)``; ``select`` is empty (pick on validation) when ``fraction`` is
    0 or when no label would have two held-out images (same-label mAP needs a pair; the tiny
    ``--quick`` sample hits this), which is logged.
    """
    if fraction <= 0:
        return train, []
    kept, held = split(train, val_fraction=fraction, seed=seed)
    if max(Counter(r.label for r in held if r.label is not None).values(), default=0) < 2:
        log(f"select fraction {fraction}: no label would have 2 held-out images; the epoch "
            "is picked on the validation images instead")
        return train, []
    return kept, held


def export_bundle(options: ExportOptions, log: Log = print) -> ExportResult:
    """Run the whole export (see the module docstring); returns the verified bundle.

    Raises:
        ExportError: bad data, a teacher that is not an image model, an existing ``out``
            without ``force``/``resume``, an int8 artifact that fails its gate, or (with
            ``events``) an unreadable or empty events file or nothing to learn from.
    """
    t0 = time.perf_counter()
    options = options.resolved()
    out = Path(options.out)
    if out.exists() and not (options.force or options.resume):
        raise ExportError(f"{out} already exists; pass --force to replace it (or --resume).")
    if options.student not in STUDENTS:
        raise ExportError(f"Unknown student {options.student!r}; choose from {sorted(STUDENTS)}.")
    work = Path(options.work_dir) if options.work_dir else out.parent / f"{out.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(options.seed)

    # 1. data
    log(f"scanning {options.images} ...")
    ds = scan_images(options.images, items_csv=options.items, progress=True)
    events = None
    if options.events is not None:  # fail fast: before anything slow
        events = read_scorer_events(options.events, [r.item_id for r in ds.records],
                                    options.scorer)
        log(f"events: {events.report.summary()}")
    train, val = _train_val(ds, options)
    extra: list[ImageRecord] = []
    extra_reports = []
    for folder in options.extra_images:
        eds = scan_images(folder, progress=True)
        extra += [replace(r, label=None) for r in eds.records]
        extra_reports.append(eds.to_report())
    unseen = scan_images(options.eval_unseen, progress=True).records if options.eval_unseen else []
    train, select = selection_split(train, options.select_fraction, options.seed + 1, log)
    label_names = sorted({r.label for r in train if r.label is not None})
    log(f"data: {len(train)} train, {len(select)} epoch selection, {len(val)} validation, "
        f"{len(extra)} extra, {len(unseen)} unseen; {len(ds.issues)} issue(s) reported")

    # 2. teacher and 3. cached teacher features
    teacher_source = options.teacher or default_teacher()
    if teacher_source is None:
        raise ExportError("No teacher given and no shipped teacher found; pass --teacher MODEL.")
    if str(teacher_source).startswith(TORCHVISION_PREFIX):
        if options.teacher_weights is None:
            raise ExportError(f"--teacher {teacher_source} needs --teacher-weights FILE (the "
                              "architecture's pretrained state_dict; nothing is downloaded).")
        log(f"building the {teacher_source} teacher from {options.teacher_weights} ...")
        teacher_source = torchvision_teacher(
            str(teacher_source), options.teacher_weights, work,
            mean=options.teacher_mean or IMAGENET_MEAN, std=options.teacher_std or IMAGENET_STD)
    teacher = Teacher.load(teacher_source, work, mean=options.teacher_mean,
                           std=options.teacher_std)
    try:
        pool = train + extra
        tr = _feature_cache(pool, options.views, teacher, options, work, "train")
        va = _feature_cache(val, 1, teacher, options, work, "validation")
        se = (_feature_cache(select, 1, teacher, options, work, "selection")
              if select else va)
        un = (_feature_cache(unseen, 1, teacher, options, work, "unseen")
              if unseen else None)
        teacher_info = teacher.describe()
        teacher_macs = (tflite_macs(teacher.bundle.artifact_path(teacher.encoder.artifact))
                        if teacher.engine is Engine.TFLITE else None)
    finally:
        teacher.close()

    # 4. student and 5. distillation
    model = create_student(options.student, width=options.width, dim=options.dim,
                           image_size=options.image_size)
    labels = np.array([label_names.index(r.label) if r.label in label_names else -1
                       for r in pool])
    val_labels = np.array([r.label for r in val])
    select_labels = np.array([r.label for r in select]) if select else val_labels
    log(f"training {options.student} ({options.image_size}px, {options.dim}-d) for up to "
        f"{options.distill.epochs} epochs ...")
    result: TrainResult = train_student(
        model, views=tr.views, features=tr.features, views_per_item=tr.views_per_item,
        labels=labels, val_views=np.asarray(se.views), val_labels=select_labels,
        config=options.distill, checkpoint_dir=work / "checkpoints", resume=options.resume,
        log=lambda row: log(
            f"  epoch {row['epoch'] + 1}: loss {row['loss']:.3f}  val mAP@10 "
            f"{row['val_map@10']:.3f}  ({row['seconds']:.0f} s)"),
    )
    # 5b. whitening, fitted on training images, its power picked on the selection images
    choice = _whitening(model, tr, labels, np.asarray(se.views), select_labels, options, log)
    transform = choice.whitening.apply if choice is not None and choice.whitening else None

    # 6. fp32 and int8 artifacts, gated against the torch student
    pre = _pre(options)
    x_val = preprocess([r.path for r in val], pre)
    x_unseen = preprocess([r.path for r in unseen], pre) if unseen else None
    cal_rng = np.random.default_rng(options.seed)
    cal_records = [train[i] for i in sorted(cal_rng.permutation(len(train))[
        : options.calibration_images])]
    x_cal = preprocess([r.path for r in cal_records], pre)
    artifacts_dir = work / "artifacts"
    if artifacts_dir.exists():
        shutil.rmtree(artifacts_dir)
    artifacts_dir.mkdir()
    built = build_artifacts(model, pre, artifacts_dir, x_val=x_val, val_labels=val_labels,
                            x_cal=x_cal, allow_gate_failure=options.allow_gate_failure,
                            first_remedy_only=options.quick, transform=transform, log=log)

    # 7. quality of every artifact, seen and unseen, next to the teacher (after the whitening,
    # as the device computes vectors; the torch student also without it, for comparison)
    def device(vectors: np.ndarray) -> np.ndarray:
        return vectors if transform is None else transform(vectors)

    raw_val = _torch_embed(model, x_val)
    ref_val = device(raw_val)
    quality: dict[str, Any] = {
        "teacher": {"seen_map@10": label_retrieval(np.asarray(va.features, np.float32),
                                                   val_labels).map_at_k},
        "student_torch_fp32": {"seen_map@10": label_retrieval(ref_val, val_labels).map_at_k},
    }
    if transform is not None:
        quality["student_torch_fp32_unwhitened"] = {
            "seen_map@10": label_retrieval(raw_val, val_labels).map_at_k}
    if un is not None and x_unseen is not None:
        unseen_labels = np.array([r.label for r in unseen])
        quality["teacher"]["unseen_map@10"] = label_retrieval(
            np.asarray(un.features, np.float32), unseen_labels).map_at_k
        raw_unseen = _torch_embed(model, x_unseen)
        quality["student_torch_fp32"]["unseen_map@10"] = label_retrieval(
            device(raw_unseen), unseen_labels).map_at_k
        if transform is not None:
            quality["student_torch_fp32_unwhitened"]["unseen_map@10"] = label_retrieval(
                raw_unseen, unseen_labels).map_at_k
    for art in built.artifacts:
        quality[art.key] = {"seen_map@10": built.parity[art.key].map_candidate}
        if un is not None and x_unseen is not None:
            quality[art.key]["unseen_map@10"] = label_retrieval(
                built.embed(art, x_unseen), unseen_labels).map_at_k
    scorer = None
    if events is not None:  # 7b. the personalised scorer, on the vectors a catalog will hold
        ids = [r.item_id for r in ds.records]
        fp32 = next(a for a in built.artifacts if a.precision is Precision.FP32)
        log(f"embedding {len(ids)} items with {fp32.key} for the scorer ...")
        vectors = device(_item_vectors([r.path for r in ds.records], fp32.source, pre))
        scorer = train_and_export_scorer(
            events, ids, vectors, work / "scorer", options.scorer, log=log,
            vectors_source={"source": fp32.key, "items": len(ids)})
    student_macs = torch_macs(model, options.image_size)
    metrics = {
        "quality": quality,
        "parity": {k: v.to_dict() for k, v in built.parity.items()},
        "quantization": built.ladder_records,
        "gate_failures": built.gate_failures,
        "whitening": choice.to_dict() if choice is not None else {"power": None},
        "macs": {"student": student_macs, "teacher": teacher_macs,
                 "ratio": (teacher_macs / student_macs) if teacher_macs else None},
        "training": {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                     "stopped": result.stopped, "minutes": result.seconds / 60},
        "data": {"train": len(train), "validation": len(val), "extra": len(extra),
                 "epoch_selection": len(select),
                 "unseen": len(unseen), "issues": len(ds.issues)},
        "export_minutes": (time.perf_counter() - t0) / 60,
    }
    if scorer is not None:
        metrics["scorer"] = scorer.metrics
    recipe = {"student": options.student, "width": options.width,
              "image_size": options.image_size, "dim": options.dim, "views": options.views,
              "view_recipe": VIEW_RECIPE, "distill": asdict(options.distill),
              "whiten": options.whiten,
              "labels": label_names, "quick": options.quick, "seed": options.seed}
    if scorer is not None:
        recipe["scorer"] = scorer.recipe

    # 8. report and bundle
    from edgerec.export.report import plot_curves, plot_neighbours, write_html_report

    report_dir = work / "report"
    report_dir.mkdir(exist_ok=True)
    curves = plot_curves(result.history, report_dir / "curves.png")
    grid = plot_neighbours(np.asarray(va.views), ref_val, val_labels, report_dir / "neighbours.png")
    summary = [{"model": k, **v} for k, v in quality.items()]
    parity_rows = [{"artifact": k, **v.to_dict(),
                    "size_kb": round(built.sizes[k] / 1024)} for k, v in built.parity.items()]
    report = write_html_report(
        report_dir / "report.html", title=f"edgerec export: {out.name}", summary=summary,
        artifacts=parity_rows, data={"counts": ds.to_report().get("counts", {}),
                                     "issues": [i.to_dict() for i in ds.issues]},
        curves=curves, neighbours=grid, recipe=recipe,
        whitening=choice.to_dict() if choice is not None else None)
    (report_dir / "history.json").write_text(json.dumps(result.history, indent=1))
    weights = list(scorer.weights) if scorer else []
    if choice is not None and choice.whitening is not None:
        choice.whitening.save(work / "whitening.npz")
        weights.append(NewWeights(source=work / "whitening.npz", role=Role.ENCODER,
                                  precision=Precision.FP32, format=WHITENING_FORMAT,
                                  file="encoder.whitening.npz"))
    bundle = write_bundle(
        out, artifacts=[*built.artifacts, *(scorer.artifacts if scorer else ())],
        weights=weights,
        preprocessing=pre, embedding_dim=options.dim, name=out.name, teacher=teacher_info,
        metrics=metrics, recipe=recipe, force=True,
        extra_files={"report/report.html": report, "report/curves.png": curves,
                     "report/neighbours.png": grid,
                     "report/history.json": report_dir / "history.json"},
    )
    log(f"wrote {bundle.path} ({', '.join(a.key for a in bundle.artifacts())}) in "
        f"{metrics['export_minutes']:.1f} min; report: {bundle.path / 'report' / 'report.html'}")
    return ExportResult(bundle=bundle, metrics=metrics, report=bundle.path / "report/report.html",
                        seconds=time.perf_counter() - t0)

