"""Teacher features cached per image and augmentation view, so training never runs the teacher.

For each image, ``views`` crops are made at the teacher's input size (view 0 = the device's
centre crop, the others random augmentations); the teacher embeds each, and the crop is
stored downsampled to the student's size. On disk (``<cache>/views-<key>/``)::

    views.npy     (N * V, s, s, 3) uint8   student-size crops (np.lib.format memmap)
    features.npy  (N * V, D)       float16 teacher unit vectors
    meta.json     key, sizes, V, item ids, and ``done``: images finished so far

``key`` hashes the teacher, the images' bytes, the sizes, V and the seed, so any change makes a
new cache. Building is resumable: an interrupted build continues from ``done`` (written after
each chunk's arrays are flushed), and a finished cache is reused as is. Work is spread over
worker processes, each with its own teacher interpreter.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from edgerec.sdk import load_image
from edgerec.sdk.files import atomic_write_text
from PIL import Image

__all__ = ["FeatureCache", "build_feature_cache"]

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
    paths, seeds, n_views, teacher_size, student_size = task
    teacher = _WORKER["teacher"]
    all_views = np.concatenate([
        _WORKER["view_fn"](load_image(p), n_views, teacher_size, seed)
        for p, seed in zip(paths, seeds)
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
) -> FeatureCache:
    """Build (or resume, or reuse) the cache for these images; see the module docstring.

    ``digests`` are the images' sha256 (from the data scan); ``view_fn(img, n, size, seed)``
    returns (n, size, size, 3) uint8 crops with view 0 the centre crop. ``teacher_source`` is
    what each worker process passes to :meth:`Teacher.load`: best the teacher's bundle
    directory, so that no worker has to wrap a model file.
    """
    key = _key(teacher_id, digests, teacher_size, student_size, views_per_item, seed,
               view_recipe)
    path = Path(cache_dir) / f"views-{key}"
    meta = _open_or_create(path, {"key": key, "item_ids": list(item_ids),
                                  "views_per_item": views_per_item,
                                  "teacher_size": teacher_size, "student_size": student_size,
                                  "teacher_id": teacher_id, "done": 0}, teacher_dim)
    if progress is not None:
        progress(int(meta["done"]))
    if int(meta["done"]) < len(item_ids):
        # spawn, not fork: the parent may hold torch/JAX threads, and a forked child can
        # deadlock on their locks
        with ProcessPoolExecutor(
            max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(teacher_source), str(Path(cache_dir)), teacher_mean, teacher_std,
                      view_fn),
        ) as pool:
            _fill(path, meta, paths, seed, chunk, pool, progress)
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


def _fill(path: Path, meta: dict, paths: Sequence[Path], seed: int, chunk: int,
          pool: ProcessPoolExecutor, progress: Optional[Callable[[int], None]]) -> None:
    """Compute the items from ``meta["done"]`` on, a chunk per task; ``done`` is written after
    each chunk's arrays are flushed (the resume point)."""
    n, v = len(meta["item_ids"]), meta["views_per_item"]
    views = np.load(path / "views.npy", mmap_mode="r+")
    feats = np.load(path / "features.npy", mmap_mode="r+")
    starts = list(range(int(meta["done"]), n, chunk))
    tasks = [([str(p) for p in paths[s : s + chunk]],
              [seed * 1_000_003 + i for i in range(s, min(s + chunk, n))],
              v, meta["teacher_size"], meta["student_size"]) for s in starts]
    for s, (vw, ft) in zip(starts, pool.map(_work, tasks)):
        e = min(s + chunk, n)
        views[s * v : e * v] = vw
        feats[s * v : e * v] = ft
        views.flush()
        feats.flush()
        meta["done"] = e
        _write_meta(path, meta)
        if progress is not None:
            progress(e)
    del views, feats
