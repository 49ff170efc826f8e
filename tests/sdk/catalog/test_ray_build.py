"""The catalog build on a local Ray: the same catalog as the local build, killed workers
retried, bad images reported, resumption without re-embedding."""

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
from conftest import needs_ray, sample_images
from edgerec.sdk import Bundle
from edgerec.sdk.catalog import Catalog, SourceItem, build_catalog
from edgerec.sdk.catalog.ray_build import (
    RayBuildOptions,
    RayUnavailableError,
    build_catalog_on_ray,
    staging_dir,
)
from edgerec.sdk.errors import EncoderMismatchError

PER_LABEL = 4  # 40 photos: enough for 10 blocks of 4 over 2 actors, well under a minute


@pytest.fixture(scope="module")
def items() -> list[SourceItem]:
    return [SourceItem(p.stem, p, {"label": label}) for p, label in sample_images(PER_LABEL)]


@pytest.fixture(scope="module")
def local_catalog(teacher_bundle: Bundle, items, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray") / "local.catalog"
    build_catalog(teacher_bundle, out, items)
    return out


def _assert_same(a: Path, b: Path) -> None:
    with Catalog.open(a, readonly=True) as ca, Catalog.open(b, readonly=True) as cb:
        assert sorted(ca) == sorted(cb)
        ids = sorted(ca)
        _, va = ca.vectors(ids)
        _, vb = cb.vectors(ids)
        np.testing.assert_allclose(va, vb, atol=2e-2)
        assert ca.metadata_of(ids) == cb.metadata_of(ids)
        cb.verify()
        assert cb.info().segments == 1


def test_ray_build_with_two_actors_equals_the_local_build(local_ray, teacher_bundle, items,
                                                          local_catalog, tmp_path):
    out = tmp_path / "ray.catalog"
    report = build_catalog_on_ray(teacher_bundle, out, items,
                                  RayBuildOptions(workers=2, batch_size=4))
    assert (report.added, report.failed, report.count) == (len(items), (), len(items))
    _assert_same(local_catalog, out)
    assert not staging_dir(out).exists()
    with Catalog.open(out, readonly=True) as catalog:
        assert catalog.generation >= 1


def test_killed_actor_is_retried_and_the_catalog_is_complete(local_ray, teacher_bundle, items,
                                                             local_catalog, tmp_path):
    out = tmp_path / "killed.catalog"
    staging = staging_dir(out)
    killed: list[int] = []

    def kill_first_worker() -> None:
        # until the build ends (``killed.append(0)`` below), not a fixed deadline: on a loaded
        # machine the actors took over 30 s to start, and the build then ran unkilled
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not killed:
            for manifest in staging.glob("blk-*.json"):
                pid = json.loads(manifest.read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    try:
        report = build_catalog_on_ray(teacher_bundle, out, items,
                                      RayBuildOptions(workers=2, batch_size=2))
    finally:
        killed.append(0)  # stops the killer if the build ended before it killed anything
        killer.join()
    assert killed[0] != 0, "no worker wrote a block before the build ended"
    assert report.count == len(items) and not report.failed
    _assert_same(local_catalog, out)


def test_corrupt_image_is_reported_not_fatal(local_ray, teacher_bundle, items, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    some = [*items[:6], SourceItem("broken", bad, {})]
    report = build_catalog_on_ray(teacher_bundle, tmp_path / "c", some,
                                  RayBuildOptions(workers=2, batch_size=4))
    assert report.added == 6 and report.count == 6
    assert [f[0] for f in report.failed] == ["broken"]


def test_interrupted_build_resumes_from_staged_blocks(local_ray, teacher_bundle, items,
                                                      local_catalog, tmp_path):
    out = tmp_path / "resumed.catalog"
    build_catalog_on_ray(teacher_bundle, out, items[:8], RayBuildOptions(batch_size=4))
    staging = staging_dir(out)
    staging.mkdir()
    with Catalog.open(out, readonly=True) as catalog:
        gen = catalog.generation
        assert len(catalog) == 8
    # a run that staged blocks for items[8:20], then died before its commit
    from edgerec.sdk.catalog.ray_build import _EmbedBlock
    from edgerec.sdk.encoder import EncoderOptions

    worker = _EmbedBlock(str(teacher_bundle.path), EncoderOptions(num_threads=1), str(staging))
    for start in (8, 12, 16):
        chunk = items[start:start + 4]
        worker({"item_id": np.array([s.item_id for s in chunk]),
                "path": np.array([str(s.image) for s in chunk]),
                "meta": np.array([json.dumps(dict(s.metadata)) for s in chunk])})
    worker.encoder.close()
    with Catalog.open(out, readonly=True) as catalog:
        assert catalog.generation == gen  # staging never touches the catalog
    embedded: list[int] = []
    report = build_catalog_on_ray(teacher_bundle, out, items, RayBuildOptions(batch_size=4),
                                  progress=embedded.append)
    assert embedded[0] == 20  # 8 present + 12 staged: done before any worker ran
    assert report.skipped_existing == 8 and report.added == len(items) - 8
    _assert_same(local_catalog, out)


def test_other_encoder_is_refused(local_ray, teacher_bundle, tiny_bundle, items, local_catalog,
                                  tmp_path):
    out = tmp_path / "copy.catalog"
    shutil.copytree(local_catalog, out)
    with pytest.raises(EncoderMismatchError):
        build_catalog_on_ray(tiny_bundle, out, items[:2], RayBuildOptions())


def test_without_ray_the_error_names_the_extra(teacher_bundle, items, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailableError, match=r"pip install 'edgerec\[scale\]'"):
        build_catalog_on_ray(teacher_bundle, tmp_path / "c", items[:2])
    assert not (tmp_path / "c").exists()


@needs_ray
def test_unreachable_address_fails_before_any_work(teacher_bundle, items, tmp_path):
    with pytest.raises(RayUnavailableError, match="cannot reach"):
        build_catalog_on_ray(teacher_bundle, tmp_path / "c", items[:2],
                             RayBuildOptions(address="127.0.0.1:9", connect_timeout_s=1))
    assert not (tmp_path / "c").exists()
