"""Teacher features cached per image and augmentation view, so training never runs the teacher.

For each image, ``views`` crops are made at the teacher's input size (view 0 = the device's
centre crop, the others random augmentations); the teacher embeds each, and the crop is
stored downsampled to the student's size. On disk (``<cache>/views-<key>/``)::

    views.npy     (N * V, s, s, 3) uint8   student-size crops (np.lib.format memmap)
    features.npy  (N * V, D)       float16 teacher unit vectors
    meta.json     key, sizes, V, item ids, ``done``: images 0..done-1 are finished, and
                  ``done_ranges``: [start, end) ranges finished beyond them (a fill that
                  finishes images out of order); absent when there are none

Image ``i`` has rows ``i*V .. i*V+V-1``; its views are drawn with the seed
:func:`item_seed` ``(seed, i)``. ``key`` hashes the teacher, the images' bytes, the sizes, V
and the seed, so any change makes a new cache. Building is resumable: one process (the driver)
writes every row, flushes the arrays, then records the images in ``meta.json`` (atomically,
:class:`CacheWriter`), so an interrupted build computes exactly the images not recorded, and a
finished cache is reused as is. The work is spread over local worker processes, each with its
own teacher interpreter, or over Ray actors (``ray=``, :mod:`.cache_ray`); both write the same
files with the same values, and either resumes a cache the other left unfinished.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from edgerec.sdk import load_image
from edgerec.sdk.cluster import require_ray
from edgerec.sdk.files import atomic_write_text
from PIL import Image

if TYPE_CHECKING:
    from edgerec.export.distill.cache_ray import RayCacheOptions
    from edgerec.export.distill.teacher import Teacher

__all__ = ["CacheWriter", "FeatureCache", "build_feature_cache", "compute_rows", "item_seed"]

CACHE_VERSION = 1
ViewFn = Callable[[Image.Image, int, int, int], np.ndarray]


@dataclass
class FeatureCache:
    """A finished cache, memory-mapped read-only."""

    path: Path
    item_ids: list[str]
    views_per_item: int
    views: np.ndarray  # (N * V, s, s, 3) uint8
    features: np.ndarray  # (N * V, D) float16

    @classmethod
    def open(cls, path: Path) -> FeatureCache:
        meta = json.loads((path / "meta.json").read_text())
        if meta["done"] != len(meta["item_ids"]):
            raise ValueError(f"feature cache {path} is incomplete; build it again")
        return cls(path, meta["item_ids"], meta["views_per_item"],
                   np.load(path / "views.npy", mmap_mode="r"),
                   np.load(path / "features.npy", mmap_mode="r"))

    def rows(self, item_index: int) -> range:
        v = self.views_per_item
        return range(item_index * v, (item_index + 1) * v)


# -- worker side (one teacher per process) -------------------------------------------------

_WORKER: dict = {}


def _init_worker(teacher_source: str, work_dir: str, mean, std, view_fn: ViewFn) -> None:
    import warnings

    from edgerec.export.distill.teacher import Teacher

    warnings.filterwarnings("ignore")
    _WORKER["teacher"] = Teacher.load(teacher_source, work_dir, mean=mean, std=std)
    _WORKER["view_fn"] = view_fn


def _work(task: tuple[list[str], list[int], int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return compute_rows(_WORKER["teacher"], _WORKER["view_fn"], *task)


def item_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s augmented views in a cache built with ``seed``."""
    return seed * 1_000_003 + index


def compute_rows(teacher: Teacher, view_fn: ViewFn, paths: Sequence[str], seeds: Sequence[int],
                 n_views: int, teacher_size: int, student_size: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The cache rows of some images (what a local worker and a Ray actor compute alike).

    Returns:
        views (len(paths) * n_views, student_size, student_size, 3) uint8 and features
        (len(paths) * n_views, D) float16, image by image, view 0 first.
    """
    all_views = np.concatenate([
        view_fn(load_image(p), n_views, teacher_size, seed) for p, seed in zip(paths, seeds)
    ])
    features = teacher.embed_views(all_views).astype(np.float16)
    if student_size != teacher_size:
        all_views = np.stack([
            np.asarray(Image.fromarray(v).resize((student_size, student_size),
                                                 Image.Resampling.BILINEAR))
            for v in all_views
        ])
    return all_views, features


# -- builder --------------------------------------------------------------------------------


def _key(teacher_id: str, digests: Sequence[str], teacher_size: int, student_size: int,
         n_views: int, seed: int, recipe: str) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, teacher_id, teacher_size, student_size,
                                   n_views, seed, recipe]).encode())
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()[:16]


def _write_meta(path: Path, meta: dict) -> None:
    atomic_write_text(path / "meta.json", json.dumps(meta))


def build_feature_cache(
    cache_dir: Path,
    *,
    item_ids: Sequence[str],
    paths: Sequence[Path],
    digests: Sequence[str],
    teacher_source: Path,
    teacher_id: str,
    teacher_dim: int,
    teacher_size: int,
    student_size: int,
    views_per_item: int,
    view_fn: ViewFn,
    view_recipe: str,
    seed: int = 0,
    workers: int = 2,
    chunk: int = 8,
    teacher_mean=None,
    teacher_std=None,
    progress: Optional[Callable[[int], None]] = None,
    ray: Optional[RayCacheOptions] = None,
) -> FeatureCache:
    """Build (or resume, or reuse) the cache for these images; see the module docstring.

    ``digests`` are the images' sha256 (from the data scan); ``view_fn(img, n, size, seed)``
    returns (n, size, size, 3) uint8 crops with view 0 the centre crop. ``teacher_source`` is
    what each worker passes to :meth:`Teacher.load`: best the teacher's bundle directory, so
    that no worker has to wrap a model file. ``progress`` gets the number of images finished.

    ``ray`` None: ``workers`` local processes, ``chunk`` images per task. Otherwise Ray actors
    (:func:`edgerec.export.distill.cache_ray.fill_on_ray`: ``ray.workers`` actors,
    ``ray.batch_size`` images per call); ``teacher_source``, the images and ``cache_dir`` (a
    model file is wrapped there) must then be at the same paths on every node. The cache is
    the same either way.

    Raises:
        RayUnavailableError: ``ray`` is given and Ray is not installed or its address does not
            answer; raised before anything is written.
    """
    if ray is not None:
        require_ray(ray.address, ray.connect_timeout_s)
    key = _key(teacher_id, digests, teacher_size, student_size, views_per_item, seed,
               view_recipe)
    path = Path(cache_dir) / f"views-{key}"
    meta = _open_or_create(path, {"key": key, "item_ids": list(item_ids),
                                  "views_per_item": views_per_item,
                                  "teacher_size": teacher_size, "student_size": student_size,
                                  "teacher_id": teacher_id, "done": 0}, teacher_dim)
    if progress is not None:
        progress(_count(meta))
    if _pending(meta):
        with CacheWriter(path, meta) as writer:
            if ray is not None:
                from edgerec.export.distill.cache_ray import fill_on_ray

                fill_on_ray(writer, paths, seed, ray, teacher_source=teacher_source,
                            work_dir=Path(cache_dir), teacher_mean=teacher_mean,
                            teacher_std=teacher_std, view_fn=view_fn, progress=progress)
            else:
                _fill_local(writer, paths, seed, chunk, workers, progress,
                            (str(teacher_source), str(Path(cache_dir)), teacher_mean,
                             teacher_std, view_fn))
    return FeatureCache.open(path)


def _open_or_create(path: Path, meta: dict, teacher_dim: int) -> dict:
    """The cache's ``meta.json`` (resumed where it exists, else a new empty cache)."""
    if (path / "meta.json").is_file():
        return json.loads((path / "meta.json").read_text())
    path.mkdir(parents=True, exist_ok=True)
    n, v, s = len(meta["item_ids"]), meta["views_per_item"], meta["student_size"]
    np.lib.format.open_memmap(path / "views.npy", "w+", np.uint8, (n * v, s, s, 3)).flush()
    np.lib.format.open_memmap(path / "features.npy", "w+", np.float16,
                              (n * v, teacher_dim)).flush()
    _write_meta(path, meta)
    return meta


def _ranges(meta: dict) -> list[tuple[int, int]]:
    """The finished images as sorted, disjoint, non-adjacent [start, end) ranges."""
    spans = [(0, int(meta["done"]))] if int(meta["done"]) else []
    spans += [(int(a), int(b)) for a, b in meta.get("done_ranges", ())]
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        elif b > a:
            merged.append((a, b))
    return merged


def _count(meta: dict) -> int:
    return sum(b - a for a, b in _ranges(meta))


def _pending(meta: dict) -> list[int]:
    """The images not finished yet, ascending."""
    todo, at = [], 0
    for a, b in [*_ranges(meta), (len(meta["item_ids"]),) * 2]:
        todo += range(at, a)
        at = b
    return todo


class CacheWriter:
    """The one writer of an unfinished cache (the driver, never a worker): writes finished
    images' rows into the memory-mapped arrays, flushes them, then records the images in
    ``meta.json`` (atomically): the resume point. Use as a context manager."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = Path(path)
        self.meta = meta
        self.views_per_item = int(meta["views_per_item"])
        self._views = np.load(self.path / "views.npy", mmap_mode="r+")
        self._features = np.load(self.path / "features.npy", mmap_mode="r+")

    @property
    def count(self) -> int:
        """Images finished so far (recorded in ``meta.json``)."""
        return _count(self.meta)

    def pending(self) -> list[int]:
        """Indices of the images not finished yet, ascending."""
        return _pending(self.meta)

    def commit(self, items: Sequence[int], views: np.ndarray, features: np.ndarray) -> None:
        """Store the rows of the images ``items`` (any order): ``views`` (len(items) * V, s, s,
        3) uint8 and ``features`` (len(items) * V, D), image by image as
        :func:`compute_rows` returns them; then record them as finished."""
        v = self.views_per_item
        items = [int(i) for i in items]
        if len(views) != len(items) * v or len(features) != len(items) * v:
            raise ValueError(f"{len(items)} images need {len(items) * v} rows, got "
                             f"{len(views)} views and {len(features)} features")
        spans, first = [], 0
        for k in range(1, len(items) + 1):  # one slice assignment per run of consecutive items
            if k == len(items) or items[k] != items[k - 1] + 1:
                a, b = items[first], items[k - 1] + 1
                self._views[a * v : b * v] = views[first * v : k * v]
                self._features[a * v : b * v] = features[first * v : k * v]
                spans.append((a, b))
                first = k
        self._views.flush()
        self._features.flush()
        merged = _ranges({"done": 0, "done_ranges": [*_ranges(self.meta), *spans]})
        head = merged[0][1] if merged and merged[0][0] == 0 else 0
        self.meta["done"] = head
        self.meta.pop("done_ranges", None)
        rest = [list(r) for r in merged if r[0] != 0]
        if rest:
            self.meta["done_ranges"] = rest
        _write_meta(self.path, self.meta)

    def close(self) -> None:
        """Release the memory maps (idempotent)."""
        self._views = self._features = None  # type: ignore[assignment]

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _runs(items: Sequence[int], chunk: int) -> list[list[int]]:
    """``items`` (ascending) cut into runs of consecutive indices, at most ``chunk`` each."""
    runs: list[list[int]] = []
    for i in items:
        if runs and runs[-1][-1] == i - 1 and len(runs[-1]) < chunk:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _fill_local(writer: CacheWriter, paths: Sequence[Path], seed: int, chunk: int,
                workers: int, progress: Optional[Callable[[int], None]],
                initargs: tuple) -> None:
    """Compute the pending images in local worker processes, a run of at most ``chunk``
    consecutive images per task, committed in order as the tasks finish."""
    meta = writer.meta
    runs = _runs(writer.pending(), chunk)
    tasks = [([str(paths[i]) for i in run], [item_seed(seed, i) for i in run],
              writer.views_per_item, meta["teacher_size"], meta["student_size"])
             for run in runs]
    # spawn, not fork: the parent may hold torch/JAX threads, and a forked child can deadlock
    # on their locks
    with ProcessPoolExecutor(
        max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=initargs,
    ) as pool:
        for run, (views, features) in zip(runs, pool.map(_work, tasks)):
            writer.commit(run, views, features)
            if progress is not None:
                progress(writer.count)
