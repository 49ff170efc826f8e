"""``edgerec export``: photos -> a verified bundle with fp32 and int8 encoders.

:func:`export_bundle` runs the steps, one function each, each over its own module: the data
(:mod:`.data.scan`: scan, clean, split), the teacher and its cached features per view
(:mod:`.distill.teacher`, :mod:`.distill.cache`, :mod:`.data.views`), the student and its
distillation (:mod:`.distill.student`, :mod:`.distill.train`) and whitening
(:mod:`.distill.whiten`), the fp32 and int8 files with their gates (:mod:`.artifacts`), the
quality of each next to the teacher, with ``events`` the personalised scorer
(:mod:`.scorer.bundle`, trained on the exported fp32 encoder's vectors of the dataset's images),
the report (:mod:`.report`) and the bundle (:func:`edgerec.sdk.bundle.write_bundle`, atomic).

Everything slow is resumable: the feature cache and the training checkpoints live in the work
directory (default ``<out>.work`` beside the bundle) and ``resume=True`` continues from them.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from edgerec.export.artifacts.encoder import BuiltArtifacts, build_artifacts
from edgerec.export.artifacts.macs import tflite_macs, torch_macs
from edgerec.export.artifacts.parity import artifact_embeddings, neighbour_overlap
from edgerec.export.artifacts.qat import QatOptions
from edgerec.export.behaviour.learn import cooccurrence_neighbours
from edgerec.export.data.scan import Dataset, ImageRecord, scan_images, split
from edgerec.export.data.views import VIEW_RECIPE, make_views
from edgerec.export.distill.cache import FeatureCache, build_feature_cache
from edgerec.export.distill.pairs import BehaviourPairs
from edgerec.export.distill.student import StudentEncoder
from edgerec.export.distill.teacher import Teacher
from edgerec.export.distill.teacher_torchvision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_PREFIX,
    torchvision_teacher,
)
from edgerec.export.distill.tflite_output import with_output
from edgerec.export.distill.train import (
    TrainResult,
    embed_views,
    rebase_batchnorm,
    train_student,
)
from edgerec.export.distill.whiten import DEFAULT_POWERS, WhiteningChoice, choose_whitening
from edgerec.export.errors import ExportError
from edgerec.export.options import ExportOptions, default_teacher
from edgerec.export.scorer.bundle import (
    ScorerBuild,
    read_scorer_events,
    scorer_holdout,
    train_and_export_scorer,
)
from edgerec.runtimes import Engine, RuntimeOptions, open_runtime
from edgerec.sdk import Bundle, Precision, Preprocessing, Role, Whitening, preprocess
from edgerec.sdk.bundle.manifest import WHITENING_FORMAT
from edgerec.sdk.bundle.writer import NewWeights, write_bundle
from edgerec.sdk.catalog.ingest import listing_from_csv
from edgerec.sdk.cluster import connected, require_ray
from edgerec.sdk.evaluation.events import EventLog
from edgerec.sdk.evaluation.retrieval import label_retrieval
from edgerec.sdk.files import atomic_write_text, sha256_file
from edgerec.sdk.progress import ProgressBar

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


def _trains_with_labels(ds: Dataset, options: ExportOptions) -> bool:
    """Whether the student trains with the labels: asked for, and two labels with a pair."""
    counts = Counter(r.label for r in ds.records if r.label is not None)
    return options.data.use_labels and sum(n >= 2 for n in counts.values()) >= 2


def _cap(records: list[ImageRecord], per_label: Optional[int], unlabelled: Optional[int],
         rng: np.random.Generator) -> list[ImageRecord]:
    """At most ``per_label`` records of each label and ``unlabelled`` without one (None: all)."""
    by: dict[Optional[str], list[ImageRecord]] = {}
    for r in records:
        by.setdefault(r.label, []).append(r)
    out = []
    for label, group in by.items():
        n = unlabelled if label is None else per_label
        idx = rng.permutation(len(group))[:n] if n else range(len(group))
        out += [group[i] for i in sorted(idx)]
    return sorted(out, key=lambda r: r.item_id)


def _train_val(ds: Dataset, options: ExportOptions,
               labelled: bool) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The training and validation records: the CSV's ``split`` column when it has one, else
    stratified by label (``labelled``) or at random by item id (records without labels)."""
    given = _split_column(options.data.items, options.images)
    if given:
        train = [r for r in ds.records if given.get(r.item_id, "train") == "train"]
        val = [r for r in ds.records if given.get(r.item_id) in ("validation", "val", "test")]
    else:
        train, val = split(ds, val_fraction=options.data.val_fraction, seed=options.seed,
                           split_unlabelled=not labelled)
    data = options.data
    if data.max_per_label or data.max_unlabelled:
        rng = np.random.default_rng(options.seed)
        train = _cap(train, data.max_per_label, data.max_unlabelled, rng)
        val = _cap(val, data.max_per_label and max(2, data.max_per_label // 2),
                   data.max_unlabelled and max(12, data.max_unlabelled // 8), rng)
    if labelled:
        labelled_val = [r for r in val if r.label is not None]
        if len({r.label for r in labelled_val}) < 2 or len(labelled_val) < 4:
            raise ExportError(
                f"Validation needs labelled images of at least 2 labels (got "
                f"{len(labelled_val)} images, {len({r.label for r in labelled_val})} labels); "
                "add a few images to each label, or pass --ignore-labels to train without "
                "them.")
    elif len(val) < 2:
        raise ExportError(
            f"Validation needs at least 2 held-out images (got {len(val)} of "
            f"{len(ds.records)}); add images or raise the validation fraction.")
    if not train:
        raise ExportError("No training images are left after the split; add images.")
    return train, val


def _pre(options: ExportOptions) -> Preprocessing:
    d = options.distill
    return Preprocessing(input_size=options.student.config().image_size, mean=d.mean, std=d.std)


def _feature_cache(records: Sequence[ImageRecord], views: int, teacher: Teacher,
                   options: ExportOptions, work: Path, what: str) -> FeatureCache:
    with ProgressBar(len(records), f"teacher features ({what})") as bar:
        return build_feature_cache(
            work / "cache", item_ids=[r.item_id for r in records],
            paths=[r.path for r in records], digests=[r.sha256 for r in records],
            # the workers open the bundle this process already wrapped the teacher into,
            # instead of each wrapping the model file again
            teacher_source=teacher.bundle.path, teacher_id=teacher.identity,
            teacher_dim=teacher.dim, teacher_size=teacher.input_size,
            student_size=options.student.config().image_size, views_per_item=views,
            view_fn=make_views, view_recipe=VIEW_RECIPE, seed=options.seed,
            workers=options.workers, teacher_mean=options.teacher.mean,
            teacher_std=options.teacher.std, progress=bar.update_to, ray=options.ray,
        )


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


def _whitening(model: StudentEncoder, train_vectors: np.ndarray, train_labels: np.ndarray,
               select_views: np.ndarray, select_labels: Optional[np.ndarray],
               teacher_select: np.ndarray, options: ExportOptions,
               log: Log) -> Optional[WhiteningChoice]:
    """Fit the encoder's whitening on the training images' embeddings ``train_vectors`` (of
    their device crops, view 0; within their labels ``train_labels`` (N,), -1 unlabelled,
    when there are any) and pick its power on the selection images (:mod:`.distill.whiten`):
    by same-label mAP@10 with ``select_labels``, or without them by top-10 agreement with the
    teacher's vectors ``teacher_select``; None when ``whiten="off"``."""
    whiten = options.student.whiten
    if whiten == "off":
        return None
    select_vectors = embed_views(model, select_views, options.distill)
    forced = whiten != "auto"
    choice = choose_whitening(train_vectors, select_vectors, select_labels,
                              teacher=teacher_select if select_labels is None else None,
                              train_labels=train_labels,
                              powers=(float(whiten),) if forced else DEFAULT_POWERS,
                              keep=0.0 if forced else None)
    tried = ", ".join(f"{p:g}: {m:.3f}" for p, m in choice.scores.items())
    log(f"whitening ({choice.covariance}): power "
        f"{choice.power if choice.power is not None else 'off'} (selection {choice.measure} "
        f"unwhitened {choice.baseline:.3f}; {tried})")
    return choice


AGREEMENT_K = 10
"""Neighbours per query of the label-free measure (teacher-neighbour agreement@10)."""


def selection_split(train: list[ImageRecord], fraction: float, seed: int,
                    log: Log = print, *, labelled: bool = True,
                    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Hold ``fraction`` of the training images out to pick the kept epoch on, so that the
    validation images only report quality: stratified by label (``labelled``), else at random.

    Returns ``(train, select)``; ``select`` is empty (pick on validation) when ``fraction`` is
    0, when (``labelled``) no label would have two held-out images (same-label mAP needs a
    pair; the tiny ``--quick`` sample hits this) or when (without labels) fewer than
    ``AGREEMENT_K + 1`` images would be held out; this is logged.
    """
    if fraction <= 0:
        return train, []
    kept, held = split(train, val_fraction=fraction, seed=seed, split_unlabelled=not labelled)
    if labelled and max(Counter(r.label for r in held if r.label is not None).values(),
                        default=0) < 2:
        log(f"select fraction {fraction}: no label would have 2 held-out images; the epoch "
            "is picked on the validation images instead")
        return train, []
    if not labelled and len(held) <= AGREEMENT_K:
        log(f"select fraction {fraction}: {len(held)} held-out images are too few for "
            f"agreement@{AGREEMENT_K}; the epoch is picked on the validation images instead")
        return train, []
    return kept, held


@dataclass
class _Data:
    """Step 1's records: the splits, the extra and unseen images, the labels the student trains
    with (``label_names``; none when it trains without labels) and the labels that only
    measure (``truth``: every scanned image's own label, by path)."""

    dataset: Dataset
    train: list[ImageRecord]
    select: list[ImageRecord]
    val: list[ImageRecord]
    extra: list[ImageRecord]
    unseen: list[ImageRecord]
    label_names: list[str]
    truth: dict[Path, Optional[str]]

    @property
    def labelled(self) -> bool:
        """Whether the student trains with labels."""
        return bool(self.label_names)

    @property
    def pool(self) -> list[ImageRecord]:
        """The images the student trains on (train + unlabelled extra)."""
        return self.train + self.extra

    def pool_labels(self) -> np.ndarray:
        """(N,) label index of each pool image, -1 for unlabelled."""
        names = self.label_names
        return np.array([names.index(r.label) if r.label in names else -1 for r in self.pool])

    def labels(self, records: Sequence[ImageRecord]) -> Optional[np.ndarray]:
        """The training labels of ``records`` (None when the student trains without)."""
        return np.array([r.label for r in records]) if self.labelled else None

    def measured(self, records: Sequence[ImageRecord]) -> Optional[np.ndarray]:
        """The labels that measure ``records`` (the scanned ones, used or not for training;
        None marks an unlabelled image), or None when no label has two of them."""
        labels = [self.truth.get(r.path, r.label) for r in records]
        counts = Counter(lab for lab in labels if lab is not None)
        if not counts or max(counts.values()) < 2:
            return None
        return np.array(labels, dtype=object)

    def counts(self) -> dict[str, Any]:
        return {"train": len(self.train), "validation": len(self.val), "extra": len(self.extra),
                "epoch_selection": len(self.select), "unseen": len(self.unseen),
                "issues": len(self.dataset.issues), "trained_with_labels": self.labelled}


@dataclass
class _Teacher:
    """Steps 2-3: the teacher's cached features (train views, validation, selection,
    unseen) and what the manifest says of it."""

    train: FeatureCache
    val: FeatureCache
    select: FeatureCache
    unseen: Optional[FeatureCache]
    info: dict[str, Any]
    macs: Optional[int]


@dataclass
class _Student:
    """Steps 4-5b: the trained student, its training record and its whitening."""

    model: StudentEncoder
    result: TrainResult
    choice: Optional[WhiteningChoice]
    train_vectors: Optional[np.ndarray] = None  # what the whitening was fitted on
    train_labels: Optional[np.ndarray] = None  # their label indices (-1: none)

    @property
    def transform(self) -> Optional[Callable[[np.ndarray], np.ndarray]]:
        choice = self.choice
        return choice.whitening.apply if choice is not None and choice.whitening else None

    def device(self, vectors: np.ndarray) -> np.ndarray:
        """Unit vectors as the device ends with them (after the whitening)."""
        transform = self.transform
        return vectors if transform is None else transform(vectors)


def _read_data(options: ExportOptions, log: Log) -> tuple[_Data, Optional[EventLog]]:
    log(f"scanning {options.images} ...")
    ds = scan_images(options.images, items_csv=options.data.items, progress=True)
    events = None
    if options.events is not None:  # fail fast: before anything slow
        events = read_scorer_events(options.events, [r.item_id for r in ds.records],
                                    options.scorer)
        log(f"events: {events.report.summary()}")
    truth = {r.path: r.label for r in ds.records}
    labelled = _trains_with_labels(ds, options)
    if not labelled:
        why = ("--ignore-labels: the labels only measure" if ds.labels and
               not options.data.use_labels else "the images have no labels to train with")
        log(f"training without labels ({why}); the kept epoch and the whitening are picked "
            f"by teacher-neighbour agreement@{AGREEMENT_K}")
        ds = Dataset([replace(r, label=None) for r in ds.records], ds.issues, ds.source)
    train, val = _train_val(ds, options, labelled)
    extra = [replace(r, label=None) for folder in options.data.extra_images
             for r in scan_images(folder, progress=True).records]
    unseen = (scan_images(options.data.eval_unseen, progress=True).records
              if options.data.eval_unseen else [])
    train, select = selection_split(train, options.data.select_fraction, options.seed + 1, log,
                                    labelled=labelled)
    data = _Data(ds, train, select, val, extra, unseen,
                 sorted({r.label for r in train if r.label is not None}) if labelled else [],
                 truth)
    log(f"data: {len(train)} train, {len(select)} epoch selection, {len(val)} validation, "
        f"{len(extra)} extra, {len(unseen)} unseen; {len(ds.issues)} issue(s) reported")
    return data, events


def _teacher_source(options: ExportOptions, work: Path, log: Log) -> Path:
    source = options.teacher.source or default_teacher()
    if source is None:
        raise ExportError("No teacher given and no shipped teacher found; pass --teacher MODEL.")
    output = options.teacher.output
    if output is not None:
        if Path(source).suffix != ".tflite":
            raise ExportError(f"--teacher-output needs a .tflite teacher; got {source}.")
        name = hashlib.sha256(f"{sha256_file(source)}\x00{output}".encode()).hexdigest()[:16]
        log(f"teacher: {Path(source).name} with {output} as its output")
        return with_output(source, output, work / f"teacher-output-{name}.tflite")
    if not str(source).startswith(TORCHVISION_PREFIX):
        return Path(source)
    weights = options.teacher.weights
    if weights is None:
        raise ExportError(f"--teacher {source} needs --teacher-weights FILE (the "
                          "architecture's pretrained state_dict; nothing is downloaded).")
    log(f"building the {source} teacher from {weights} ...")
    return torchvision_teacher(str(source), weights, work,
                               mean=options.teacher.mean or IMAGENET_MEAN,
                               std=options.teacher.std or IMAGENET_STD)


def _ray_session(options: ExportOptions, log: Log) -> contextlib.AbstractContextManager:
    """One Ray connection for all the feature caches of an export (``options.ray``), so a local
    Ray starts once; nothing without ``options.ray``."""
    if options.ray is None:
        return contextlib.nullcontext()
    address = options.ray.address
    log(f"teacher features on Ray ({address or 'a local Ray'}): {options.ray.workers} actors "
        f"x {options.ray.cpus_per_worker:g} CPU")
    return connected(require_ray(address, options.ray.connect_timeout_s), address)


def _teacher_features(options: ExportOptions, data: _Data, work: Path, log: Log) -> _Teacher:
    teacher = Teacher.load(_teacher_source(options, work, log), work, mean=options.teacher.mean,
                           std=options.teacher.std)
    try:
        with _ray_session(options, log):
            tr = _feature_cache(data.pool, options.distill.views, teacher, options, work,
                                "train")
            va = _feature_cache(data.val, 1, teacher, options, work, "validation")
            se = (_feature_cache(data.select, 1, teacher, options, work, "selection")
                  if data.select else va)
            un = (_feature_cache(data.unseen, 1, teacher, options, work, "unseen")
                  if data.unseen else None)
        # the same network's MACs from its .tflite, whichever file the encoder runs
        tflite = [a for a in teacher.bundle.manifest.artifacts
                  if a.role is Role.ENCODER and a.engine is Engine.TFLITE]
        macs = tflite_macs(teacher.bundle.artifact_path(tflite[0])) if tflite else None
        return _Teacher(tr, va, se, un, teacher.describe(), macs)
    finally:
        teacher.close()


def _teacher_vectors(cache: FeatureCache) -> np.ndarray:
    """(N, Dt) float32 teacher vectors of a cache's device crops (view 0 of each image)."""
    return np.asarray(cache.features[:: cache.views_per_item], np.float32)


def _behaviour_pairs(options: ExportOptions, data: _Data, events: Optional[EventLog],
                     log: Log) -> Optional[BehaviourPairs]:
    """The training images' co-occurrence neighbours on the training side of the scorer's split
    of the events (never its held-out side), when ``w_behaviour`` asks for them."""
    config = options.distill
    if config.w_behaviour <= 0:
        return None
    if events is None:
        raise ExportError(f"--distill w_behaviour={config.w_behaviour} learns from the "
                          "events: pass --events (user_id,item_id[,...]) or drop w_behaviour")
    holdout = scorer_holdout(events, options.scorer)
    rows, scores = cooccurrence_neighbours(holdout.train, [r.item_id for r in data.pool],
                                           config.behaviour_neighbours,
                                           options.scorer.behaviour.shrink)
    pairs = BehaviourPairs(rows, scores)
    if not pairs.linked:
        raise ExportError("--distill w_behaviour: no two training images share a user in the "
                          "events' training side; drop w_behaviour or pass a fuller log")
    log(f"behaviour term: {pairs.linked} of {pairs.items} training images have co-occurrence "
        f"neighbours (up to {config.behaviour_neighbours}) on the scorer split's training "
        "side")
    return pairs


def _train(options: ExportOptions, data: _Data, feats: _Teacher, work: Path,
           log: Log, pairs: Optional[BehaviourPairs] = None) -> _Student:
    config = options.student.config()
    model = StudentEncoder(config, mean=options.distill.mean, std=options.distill.std)
    if config.init is not None:
        # ImageNet weights with BatchNorm folded: give each BatchNorm its input's statistics
        # so that training starts from the same network (train_student's --resume reloads)
        rebase_batchnorm(model, feats.train.views, options.distill, seed=options.seed)
        log(f"student body initialised from {config.init.name} (ImageNet weights)")
    labels = data.pool_labels()
    select = data.select or data.val
    select_labels = data.labels(select)
    select_views = np.asarray(feats.select.views)
    teacher_select = _teacher_vectors(feats.select)
    key = f"agree@{AGREEMENT_K}"

    def probe(m: torch.nn.Module) -> dict[str, float]:
        """Top-10 agreement with the teacher on the selection images (logged always; it picks
        the kept epoch when the student trains without labels)."""
        vectors = embed_views(m, select_views, options.distill)
        return {key: neighbour_overlap(teacher_select, vectors, AGREEMENT_K)}

    select_on = "val_map@10" if data.labelled else key
    log(f"training {options.student.name} ({config.image_size}px, {config.dim}-d) for up to "
        f"{options.distill.epochs} epochs{'' if data.labelled else ' without labels'}; the "
        f"kept epoch is the best {select_on} on {len(select)} "
        f"{'epoch-selection' if data.select else 'validation'} images ...")
    result = train_student(
        model, views=feats.train.views, features=feats.train.features,
        views_per_item=feats.train.views_per_item, labels=labels, val_views=select_views,
        val_labels=select_labels, config=options.distill, checkpoint_dir=work / "checkpoints",
        resume=options.resume, probe=probe, select_on=select_on, pairs=pairs,
        log=lambda row: log(
            f"  epoch {row['epoch'] + 1}: loss {row['loss']:.3f}  "
            + (f"val mAP@10 {row['val_map@10']:.3f}  " if "val_map@10" in row else "")
            + f"{key} {row[key]:.3f}  ({row['seconds']:.0f} s)"),
    )
    # the whitening, fitted on training images, its power picked on the selection images
    train_vectors = embed_views(model, feats.train.views[:: feats.train.views_per_item],
                                options.distill)
    choice = _whitening(model, train_vectors, labels, select_views, select_labels,
                        teacher_select, options, log)
    return _Student(model, result, choice, train_vectors, labels)


def _build(options: ExportOptions, data: _Data, student: _Student, work: Path,
           log: Log) -> BuiltArtifacts:
    """fp32 and int8 files, gated against the torch student (after the whitening)."""
    pre = _pre(options)
    rng = np.random.default_rng(options.seed)
    pick = sorted(rng.permutation(len(data.train))[: options.quantization.calibration_images])
    x_cal = preprocess([data.train[i].path for i in pick], pre)
    folder = work / "artifacts"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    q = options.quantization
    qat = (QatOptions(steps=q.qat_steps, max_minutes=q.qat_minutes, seed=options.seed,
                      threads=options.distill.threads) if q.qat_steps else None)
    return build_artifacts(student.model, pre, folder,
                           x_val=preprocess([r.path for r in data.val], pre),
                           val_labels=data.labels(data.val), x_cal=x_cal,
                           allow_gate_failure=q.allow_gate_failure,
                           first_remedy_only=options.quick, transform=student.transform,
                           target=q.target, qat=qat, log=log)


def _quality(options: ExportOptions, data: _Data, feats: _Teacher, student: _Student,
             built: BuiltArtifacts) -> tuple[dict[str, Any], dict[str, Any]]:
    """Side by side for the teacher, the torch student (whitened as on the device, and without
    the whitening) and every file, on the validation images (``seen``) and the unseen ones:
    top-10 agreement with the teacher (``agree@10``) always, same-label mAP@10 where the images
    have labels (used for training or not). Returns ``(quality, sets)``, ``sets`` saying what
    each set holds (images, whether labelled, the chance level of agree@10)."""
    pre = _pre(options)
    sets = {"seen": (data.val, feats.val)}
    if data.unseen and feats.unseen is not None:
        sets["unseen"] = (data.unseen, feats.unseen)
    quality: dict[str, Any] = {"teacher": {}, "student_torch_fp32": {}}
    if student.transform is not None:
        quality["student_torch_fp32_unwhitened"] = {}
    described: dict[str, Any] = {}
    sweep: dict[str, dict[str, Optional[float]]] = {}
    for name, (records, cache) in sets.items():
        labels, teacher = data.measured(records), _teacher_vectors(cache)
        described[name] = {"images": len(records), "labelled": labels is not None,
                           f"agree@{AGREEMENT_K}_chance": min(AGREEMENT_K, len(records) - 1)
                           / max(1, len(records) - 1)}

        def measure(vectors: np.ndarray, labels=labels, teacher=teacher,
                    name=name) -> dict[str, Optional[float]]:
            return {f"{name}_map@10": _label_map(vectors, labels),
                    f"{name}_agree@{AGREEMENT_K}": neighbour_overlap(teacher, vectors,
                                                                     AGREEMENT_K)}

        x = preprocess([r.path for r in records], pre)
        raw = _torch_embed(student.model, x)
        quality["teacher"].update(measure(teacher))
        quality["student_torch_fp32"].update(measure(student.device(raw)))
        if student.transform is not None:
            quality["student_torch_fp32_unwhitened"].update(measure(raw))
        for power, fitted in _sweep(student):  # what each power would give (never steers)
            sweep.setdefault(f"{power:g}", {}).update(measure(fitted.apply(raw)))
        for art in built.artifacts:
            quality.setdefault(art.key, {}).update(measure(built.embed(art, x)))
    if sweep:
        described["whitening_by_power"] = sweep
    return quality, described


def _sweep(student: _Student) -> list[tuple[float, Whitening]]:
    """The whitening of the kind the export chose, fitted at every power (for the report)."""
    choice = student.choice
    if choice is None or student.train_vectors is None:
        return []
    labels = student.train_labels if choice.covariance == "within-label" else None
    return [(p, Whitening.fit(student.train_vectors, p, labels)) for p in DEFAULT_POWERS]


def _label_map(vectors: np.ndarray, labels: Optional[np.ndarray]) -> Optional[float]:
    """Same-label mAP@10 among the rows that have a label (None without labels)."""
    if labels is None:
        return None
    rows = np.array([lab is not None for lab in labels])
    return label_retrieval(vectors[rows], labels[rows].astype(str)).map_at_k


def _scorer(options: ExportOptions, events: Optional[EventLog], data: _Data, student: _Student,
            built: BuiltArtifacts, work: Path, log: Log) -> Optional[ScorerBuild]:
    """The personalised scorer, on the vectors a catalog built with the bundle will hold."""
    if events is None:
        return None
    records = data.dataset.records
    ids = [r.item_id for r in records]
    fp32 = next(a for a in built.artifacts if a.precision is Precision.FP32)
    log(f"embedding {len(ids)} items with {fp32.key} for the scorer ...")
    vectors = student.device(_item_vectors([r.path for r in records], fp32.source,
                                           _pre(options)))
    return train_and_export_scorer(events, ids, vectors, work / "scorer", options.scorer,
                                   log=log, vectors_source={"source": fp32.key,
                                                            "items": len(ids)})


def _records(options: ExportOptions, data: _Data, feats: _Teacher, student: _Student,
             built: BuiltArtifacts, quality: tuple[dict[str, Any], dict[str, Any]],
             scorer: Optional[ScorerBuild],
             t0: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest's ``metrics`` and ``recipe``."""
    config, result, choice = options.student.config(), student.result, student.choice
    student_macs = torch_macs(student.model, config.image_size)
    teacher_macs = feats.macs
    quality, sets = quality
    metrics = {
        "quality": quality,
        "quality_sets": sets,
        "parity": {k: v.to_dict() for k, v in built.parity.items()},
        "quantization": built.ladder_records,
        "gate_failures": built.gate_failures,
        "int8_gate_checks": list(built.gate_checks),
        "whitening": choice.to_dict() if choice is not None else {"power": None},
        "macs": {"student": student_macs, "teacher": teacher_macs,
                 "ratio": (teacher_macs / student_macs) if teacher_macs else None},
        "training": {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                     "stopped": result.stopped, "minutes": result.seconds / 60,
                     "selected_on": "val_map@10" if data.labelled else f"agree@{AGREEMENT_K}",
                     "best_selection_score": result.best_map},
        "data": data.counts(),
        "export_minutes": (time.perf_counter() - t0) / 60,
    }
    recipe = {"student": options.student.name, "width": config.width,
              "image_size": config.image_size, "dim": config.dim,
              "init": config.init.name if config.init is not None else None,
              "views": options.distill.views, "view_recipe": VIEW_RECIPE,
              "distill": asdict(options.distill), "whiten": options.student.whiten,
              "int8_target": options.quantization.target.value,
              "qat_steps": options.quantization.qat_steps,
              "labels": data.label_names, "trained_with_labels": data.labelled,
              "use_labels": options.data.use_labels, "quick": options.quick,
              "seed": options.seed, "distill_seed": options.distill.seed}
    if scorer is not None:
        metrics["scorer"] = scorer.metrics
        recipe["scorer"] = scorer.recipe
    return metrics, recipe


LATENCY_RUNS = 20  # timed single-image runs per artifact, after 3 warm-up runs


def _latency(built: BuiltArtifacts, x: np.ndarray, runs: int = LATENCY_RUNS) -> dict[str, Any]:
    """Single-image latency of every shipped file on its own engine (1 thread), in ms:
    ``{key: {"p50_ms", "p90_ms", "runs", "threads"}}``; measured at export time so the report
    shows what a device would pay, not a guess from MACs."""
    out: dict[str, Any] = {}
    one = np.ascontiguousarray(x[:1], dtype=np.float32)
    for art in built.artifacts:
        with open_runtime(art.source, options=RuntimeOptions(num_threads=1)) as rt:
            spec = rt.input_specs()[0]
            nhwc = len(spec.shape) == 4 and spec.shape[-1] == 3 and spec.shape[1] != 3
            feed = {spec.name: np.ascontiguousarray(one.transpose(0, 2, 3, 1)) if nhwc else one}
            for _ in range(3):
                rt.run(feed)
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                rt.run(feed)
                times.append((time.perf_counter() - t) * 1000)
        out[art.key] = {"p50_ms": float(np.percentile(times, 50)),
                        "p90_ms": float(np.percentile(times, 90)), "runs": runs, "threads": 1}
    return out


def _report(options: ExportOptions, work: Path, data: _Data, feats: _Teacher,
            student: _Student, built: BuiltArtifacts, metrics: dict[str, Any],
            recipe: dict[str, Any]) -> dict[str, Path]:
    """The HTML report and its pictures; returns the files the bundle carries for people."""
    from edgerec.export.report import (
        artifact_rows,
        plot_curves,
        plot_neighbours,
        write_html_report,
    )

    folder = work / "report"
    folder.mkdir(exist_ok=True)
    val_labels = data.measured(data.val)
    curves = plot_curves(student.result.history, folder / "curves.png")
    reference = student.device(_torch_embed(student.model, preprocess(
        [r.path for r in data.val], _pre(options))))
    grid = plot_neighbours(np.asarray(feats.val.views), reference, val_labels,
                           folder / "neighbours.png")
    metrics["latency"] = _latency(built, preprocess([r.path for r in data.val[:1]],
                                                    _pre(options)))
    parity_rows = artifact_rows(metrics, sizes=built.sizes)
    choice = student.choice
    report = write_html_report(
        folder / "report.html", title=f"edgerec export: {Path(options.out).name}",
        summary=[{"model": k, **v} for k, v in metrics["quality"].items()],
        sets=metrics["quality_sets"], artifacts=parity_rows,
        data={"counts": {**{k: v for k, v in data.dataset.to_report().items()
                            if k not in ("issues", "issues_by_kind")},
                         "split": data.counts()},
              "issues": [i.to_dict() for i in data.dataset.issues]},
        curves=curves, neighbours=grid, recipe=recipe,
        whitening=choice.to_dict() if choice is not None else None,
        quick=options.quick, gate_failures=metrics["gate_failures"],
        gate_checks=metrics["int8_gate_checks"])
    atomic_write_text(folder / "history.json", json.dumps(student.result.history, indent=1))
    return {"report/report.html": report, "report/curves.png": curves,
            "report/neighbours.png": grid, "report/history.json": folder / "history.json"}


def export_bundle(options: ExportOptions, log: Log = print) -> ExportResult:
    """Run the whole export (see the module docstring); returns the verified bundle.

    Raises:
        ExportError: bad data, a teacher that is not an image model, an existing ``out``
            without ``force``/``resume``, an int8 artifact that fails its gate, or (with
            ``events``) an unreadable or empty events file or nothing to learn from.
        RayUnavailableError: ``ray`` is set and Ray is not installed or its address does not
            answer (before any work).
    """
    t0 = time.perf_counter()
    options = options.resolved()
    out = Path(options.out)
    if out.exists() and not (options.force or options.resume):
        raise ExportError(f"{out} already exists; pass --force to replace it (or --resume).")
    if options.ray is not None:  # Ray installed and its address answering, before any work
        require_ray(options.ray.address, options.ray.connect_timeout_s)
    if options.quick:
        log("--quick: a smoke configuration (96 px, 2 epochs, 8 images per label or 160 "
            "unlabelled), not a model to ship")
    work = Path(options.work_dir) if options.work_dir else out.parent / f"{out.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(options.seed)
    data, events = _read_data(options, log)
    pairs = _behaviour_pairs(options, data, events, log)  # before anything slow
    feats = _teacher_features(options, data, work, log)
    student = _train(options, data, feats, work, log, pairs)
    built = _build(options, data, student, work, log)
    quality = _quality(options, data, feats, student, built)
    scorer = _scorer(options, events, data, student, built, work, log)
    metrics, recipe = _records(options, data, feats, student, built, quality, scorer, t0)
    extra_files = _report(options, work, data, feats, student, built, metrics, recipe)
    bundle = _write(options, out, work, student, built, scorer, feats.info, metrics, recipe,
                    extra_files)
    log(f"wrote {bundle.path} ({', '.join(a.key for a in bundle.artifacts())}) in "
        f"{metrics['export_minutes']:.1f} min; report: {bundle.path / 'report' / 'report.html'}")
    return ExportResult(bundle=bundle, metrics=metrics, report=bundle.path / "report/report.html",
                        seconds=time.perf_counter() - t0)


def _write(options: ExportOptions, out: Path, work: Path, student: _Student,
           built: BuiltArtifacts, scorer: Optional[ScorerBuild], teacher: dict[str, Any],
           metrics: dict[str, Any], recipe: dict[str, Any],
           extra_files: dict[str, Path]) -> Bundle:
    weights = list(scorer.weights) if scorer else []
    choice = student.choice
    if choice is not None and choice.whitening is not None:
        choice.whitening.save(work / "whitening.npz")
        weights.append(NewWeights(source=work / "whitening.npz", role=Role.ENCODER,
                                  precision=Precision.FP32, format=WHITENING_FORMAT,
                                  file="encoder.whitening.npz"))
    return write_bundle(
        out, artifacts=[*built.artifacts, *(scorer.artifacts if scorer else ())],
        weights=weights, preprocessing=_pre(options),
        embedding_dim=options.student.config().dim, name=out.name, teacher=teacher,
        metrics=metrics, recipe=recipe, force=True, extra_files=extra_files,
        scorer=scorer.record if scorer else None,
        behaviour=scorer.behaviour.record if scorer and scorer.behaviour else None,
        behaviour_source=scorer.behaviour.file if scorer and scorer.behaviour else None,
    )
