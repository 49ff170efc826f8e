"""The teacher-feature cache filled on a Ray cluster (the ``scale`` extra): the same files.

::

    build_feature_cache(work / "cache", ..., ray=RayCacheOptions(address="10.0.0.5:6379",
                                                                 workers=16))

What runs where:

- the **driver** (this process) opens or creates the cache exactly as a local build does
  (:func:`~edgerec.export.distill.cache.build_feature_cache`: same key, same folder, same
  memory-mapped ``views.npy``/``features.npy``) and hands the images it does not have yet to
  Ray Data as rows ``(index, path, seed)``, the seed being the local build's
  :func:`~edgerec.export.distill.cache.item_seed`;
- ``map_batches`` runs :class:`_TeacherRows`, a callable class on a fixed
  ``ActorPoolStrategy``: each actor opens the teacher once, and for every batch computes the
  images' views and teacher features with :func:`~edgerec.export.distill.cache.compute_rows`
  (the local workers' own step, so the values are the local build's) and returns them;
- the driver writes each returned batch into the memory maps, flushes them and records the
  images in ``meta.json`` (:class:`~edgerec.export.distill.cache.CacheWriter`, as the local
  build), in whatever order batches finish.

Failure semantics: an actor or node that dies is restarted by Ray Data and its batch retried; a
driver that dies loses only the batches it had not recorded, and a re-run (Ray or local)
computes exactly the images ``meta.json`` does not list. Workers never write the cache, so it
may sit on the driver's local disk; the images, the teacher bundle and (for a teacher model
file, wrapped there) the cache's parent folder must be at the same paths on every node.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from edgerec.export.distill.cache import CacheWriter, ViewFn, compute_rows, item_seed
from edgerec.sdk.cluster import RayJobOptions, connected, require_ray

__all__ = ["RayCacheOptions", "fill_on_ray"]


@dataclass(frozen=True)
class RayCacheOptions(RayJobOptions):
    """How the teacher cache is filled on Ray: :class:`~edgerec.sdk.cluster.RayJobOptions`
    with one teacher per actor; ``batch_size`` (default 8) images per actor call are
    recorded in the cache together when the call returns, and ``cpus_per_worker`` is also
    the teacher's engine threads."""

    batch_size: int = 8


class _TeacherRows:
    """Ray Data callable class: one teacher per actor; a batch of images -> their cache rows,
    ``views`` (b, V, s, s, 3) uint8 and ``features`` (b, V, D) float16 beside ``index``."""

    def __init__(self, teacher_source: str, work_dir: str, mean: Any, std: Any,
                 view_fn: ViewFn, n_views: int, teacher_size: int, student_size: int,
                 num_threads: int) -> None:
        from edgerec.export.distill.teacher import Teacher

        warnings.filterwarnings("ignore")  # as the local workers: converters' chatter
        self.teacher = Teacher.load(teacher_source, work_dir, mean=mean, std=std,
                                    num_threads=num_threads)
        self.view_fn = view_fn
        self.shape = (n_views, teacher_size, student_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n_views, teacher_size, student_size = self.shape
        views, features = compute_rows(
            self.teacher, self.view_fn, [str(p) for p in batch["path"]],
            [int(s) for s in batch["seed"]], n_views, teacher_size, student_size)
        b = len(batch["index"])
        return {"index": np.asarray(batch["index"], np.int64),
                "views": views.reshape(b, n_views, *views.shape[1:]),
                "features": features.reshape(b, n_views, -1)}


def fill_on_ray(writer: CacheWriter, paths: Sequence[Path], seed: int,
                options: RayCacheOptions, *, teacher_source: Path, work_dir: Path,
                teacher_mean: Any, teacher_std: Any, view_fn: ViewFn,
                progress: Optional[Callable[[int], None]] = None) -> None:
    """Compute the images ``writer`` still lacks on Ray actors and commit each batch as it
    returns (see the module docstring); ``progress`` gets the number of images finished.
    Called by :func:`~edgerec.export.distill.cache.build_feature_cache` with ``ray=``.

    Raises:
        RayUnavailableError: Ray is not installed, or ``options.address`` is unreachable.
    """
    ray = require_ray(options.address, options.connect_timeout_s)
    todo = writer.pending()
    if not todo:
        return
    meta = writer.meta
    rows = [{"index": i, "path": str(Path(paths[i]).absolute()), "seed": item_seed(seed, i)}
            for i in todo]
    kwargs = {"teacher_source": str(Path(teacher_source).absolute()),
              "work_dir": str(Path(work_dir).absolute()), "mean": teacher_mean,
              "std": teacher_std, "view_fn": view_fn, "n_views": writer.views_per_item,
              "teacher_size": meta["teacher_size"], "student_size": meta["student_size"],
              "num_threads": max(1, int(options.cpus_per_worker))}
    with connected(ray, options.address):
        ds = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // options.batch_size))
        ds = ds.map_batches(
            _TeacherRows, fn_constructor_kwargs=kwargs, batch_size=options.batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=options.workers),
            num_cpus=options.cpus_per_worker)
        batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
        try:
            for out in batches:
                views, features = out["views"], out["features"]
                writer.commit(out["index"], views.reshape(-1, *views.shape[2:]),
                              features.reshape(-1, features.shape[-1]))
                if progress is not None:
                    progress(writer.count)
        finally:  # an interrupted driver stops the actors at once (and frees their CPUs)
            close = getattr(batches, "close", None)
            if close is not None:
                close()
