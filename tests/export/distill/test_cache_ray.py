"""The teacher-feature cache filled on a local Ray: the same files as the local workers, an
interrupted fill resumed without recomputing finished images (by Ray or locally, either way
round), a killed actor retried, and Ray missing or unreachable refused before any work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE, needs_ray, sample_images
from edgerec.export.data.views import VIEW_RECIPE, make_views
from edgerec.export.distill.cache import FeatureCache, build_feature_cache, item_seed
from edgerec.export.distill.cache_ray import RayCacheOptions
from edgerec.sdk import Bundle
from edgerec.sdk.errors import RayUnavailableError

VIEWS, STUDENT = 2, 64
SEED = 3
TWO_ACTORS = RayCacheOptions(workers=2, batch_size=2)


class _Stop(Exception):
    """Raised from ``progress`` to interrupt a fill, as a killed driver would."""


class _LoggedViews:
    """``make_views`` that appends ``pid seed`` to a file for every image it is asked for, so a
    test sees which images the actors computed, and in which processes."""

    def __init__(self, log: Path) -> None:
        self.log = str(log)

    def __call__(self, image, n, size, seed):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {seed}\n")
        return make_views(image, n, size, seed)

    def entries(self) -> list[tuple[int, int]]:
        """(pid, image index) of every image computed so far."""
        if not os.path.exists(self.log):
            return []
        pairs = [line.split() for line in Path(self.log).read_text().splitlines()]
        return [(int(pid), int(seed) - item_seed(SEED, 0)) for pid, seed in pairs]


@pytest.fixture(scope="module")
def by_value(local_ray):
    """Ray's workers cannot import this test module: send ``_LoggedViews`` by value."""
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    local_ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture()
def logged(by_value, tmp_path) -> _LoggedViews:
    return _LoggedViews(tmp_path / "computed.log")


@pytest.fixture(scope="module")
def paths() -> list[Path]:
    return [p for p, _ in sample_images(1)]  # 10 photos, one per label: 5 batches of 2


def _fill(cache_dir: Path, paths: list[Path], teacher: Bundle, **kw) -> FeatureCache:
    return build_feature_cache(
        cache_dir, item_ids=[p.stem for p in paths], paths=paths,
        digests=[p.stem for p in paths], teacher_source=teacher.path,
        teacher_id=teacher.encoder_id, teacher_dim=teacher.embedding_dim,
        teacher_size=teacher.preprocessing.input_size, student_size=STUDENT,
        views_per_item=VIEWS, view_fn=kw.pop("view_fn", make_views), view_recipe=VIEW_RECIPE,
        seed=SEED, **kw)


def _stop_after(commits: int):
    calls: list[int] = []

    def progress(done: int) -> None:
        calls.append(done)
        if len(calls) > commits:  # the first call reports what was done before the fill
            raise _Stop

    return progress


def _finished(cache: Path) -> set[int]:
    meta = json.loads((cache / "meta.json").read_text())
    spans = [(0, meta["done"]), *meta.get("done_ranges", [])]
    return {i for a, b in spans for i in range(a, b)}


def _assert_same(local: FeatureCache, other: FeatureCache) -> None:
    assert other.path.name == local.path.name  # the same key: the same folder
    assert (json.loads((other.path / "meta.json").read_text())
            == json.loads((local.path / "meta.json").read_text()))
    np.testing.assert_array_equal(np.asarray(other.views), np.asarray(local.views))
    np.testing.assert_allclose(np.asarray(other.features, np.float32),
                               np.asarray(local.features, np.float32), atol=2e-3)


@pytest.fixture(scope="module")
def local_cache(paths, teacher_bundle, tmp_path_factory) -> FeatureCache:
    return _fill(tmp_path_factory.mktemp("local") / "cache", paths, teacher_bundle, workers=1)


def _copy(cache_dir: Path, to: Path) -> Path:
    shutil.copytree(cache_dir, to)
    return next(to.glob("views-*"))


def test_ray_fill_with_two_actors_equals_the_local_fill(local_ray, paths, teacher_bundle,
                                                        local_cache, tmp_path):
    seen: list[int] = []
    cache = _fill(tmp_path / "cache", paths, teacher_bundle, ray=TWO_ACTORS,
                  progress=seen.append)
    _assert_same(local_cache, cache)
    assert seen[0] == 0 and seen[-1] == len(paths) and seen == sorted(seen)


LOCAL_DONE = 3  # images an interrupted local fill had recorded


@pytest.fixture(scope="module")
def interrupted(local_ray, by_value, paths, teacher_bundle, local_cache, tmp_path_factory):
    """A local fill interrupted after 3 images, resumed on Ray and interrupted again after two
    more batches: ``(cache folder, images that Ray run computed)``; tests copy the folder."""
    cache_dir = tmp_path_factory.mktemp("interrupted") / "cache"
    folder = _copy(local_cache.path.parent, cache_dir)
    meta = json.loads((folder / "meta.json").read_text())
    meta["done"] = LOCAL_DONE
    (folder / "meta.json").write_text(json.dumps(meta))
    for name in ("views.npy", "features.npy"):  # the rows the local fill had not written
        rows = np.load(folder / name, mmap_mode="r+")
        rows[LOCAL_DONE * VIEWS :] = 0
        rows.flush()
        del rows
    logged = _LoggedViews(tmp_path_factory.mktemp("logs") / "computed.log")
    with pytest.raises(_Stop):
        _fill(cache_dir, paths, teacher_bundle, ray=TWO_ACTORS, view_fn=logged,
              progress=_stop_after(2))
    return cache_dir, [i for _, i in logged.entries()]


def test_a_ray_fill_resumes_a_local_fill_and_records_what_it_finished(paths, interrupted):
    cache_dir, computed = interrupted
    folder = next(cache_dir.glob("views-*"))
    finished = _finished(folder)
    assert min(computed) >= LOCAL_DONE  # the local fill's images were not computed again
    assert set(range(LOCAL_DONE)) < finished < set(range(len(paths)))
    assert finished - set(range(LOCAL_DONE)) <= set(computed)  # two batches, recorded
    with pytest.raises(ValueError, match="incomplete"):
        FeatureCache.open(folder)


def test_an_interrupted_ray_fill_resumes_without_recomputing_finished_images_despite_a_kill(
        local_ray, paths, teacher_bundle, local_cache, interrupted, logged, tmp_path):
    folder = _copy(interrupted[0], tmp_path / "cache")
    finished = _finished(folder)
    killed: list[int] = []

    def kill_the_first_actor() -> None:  # a process of this test's own Ray, by its pid
        # until the fill ends (``killed.append(0)`` below): on a loaded machine the actors
        # can take over a minute to start, and a fixed short deadline let the fill run unkilled
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not killed:
            for pid, _ in logged.entries()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_first_actor)
    killer.start()
    seen: list[int] = []
    try:
        cache = _fill(tmp_path / "cache", paths, teacher_bundle, ray=TWO_ACTORS,
                      view_fn=logged, progress=seen.append)
    finally:
        killed.append(0)  # stops the killer if the fill failed first
        killer.join()
    assert killed[0] != 0, "no actor computed an image in time to be killed"
    computed = logged.entries()
    # the killed actor's batch was retried elsewhere; no finished image was computed again
    assert {i for _, i in computed} == set(range(len(paths))) - finished
    assert {pid for pid, _ in computed} - set(killed)
    assert seen[0] == len(finished) and seen[-1] == len(paths)
    _assert_same(local_cache, cache)


def test_a_local_fill_resumes_an_interrupted_ray_fill(paths, teacher_bundle, local_cache,
                                                      interrupted, tmp_path):
    folder = _copy(interrupted[0], tmp_path / "cache")
    finished = _finished(folder)
    seen: list[int] = []
    cache = _fill(tmp_path / "cache", paths, teacher_bundle, workers=1, progress=seen.append)
    assert seen[0] == len(finished) and seen[-1] == len(paths)
    _assert_same(local_cache, cache)


@needs_ray
def test_an_unreachable_address_fails_before_any_work(paths, teacher_bundle, tmp_path):
    unreachable = RayCacheOptions(address="127.0.0.1:9", connect_timeout_s=1)
    with pytest.raises(RayUnavailableError, match="cannot reach"):
        _fill(tmp_path / "cache", paths, teacher_bundle, ray=unreachable)
    assert not (tmp_path / "cache").exists()
    from edgerec.export.options import ExportOptions
    from edgerec.export.pipeline import export_bundle

    with pytest.raises(RayUnavailableError, match="cannot reach"):
        export_bundle(ExportOptions(images=SAMPLE / "images", out=tmp_path / "bundle",
                                    ray=unreachable), log=lambda _msg: None)
    assert not (tmp_path / "bundle.work").exists()


def test_without_ray_the_error_names_the_extra(paths, teacher_bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailableError, match=r"pip install 'edgerec\[scale\]'"):
        _fill(tmp_path / "cache", paths, teacher_bundle, ray=RayCacheOptions())
    assert not (tmp_path / "cache").exists()


def test_the_ray_flags_map_onto_the_export_options(tmp_path):
    from edgerec.export.cli import _export_options
    from edgerec.sdk.cli.app import build_parser

    def options(*flags: str):
        return _export_options(build_parser().parse_args(
            ["export", "--images", str(tmp_path), "--out", str(tmp_path / "b"), *flags]))

    assert options().ray is None
    assert options("--ray").ray == RayCacheOptions()
    assert options("--ray", "10.0.0.5:6379", "--ray-workers", "8", "--ray-batch-size", "16",
                   "--ray-cpus-per-worker", "2").ray == RayCacheOptions(
        address="10.0.0.5:6379", workers=8, batch_size=16, cpus_per_worker=2.0)
