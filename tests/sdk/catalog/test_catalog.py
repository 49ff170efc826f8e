"""The catalog cache: storage, atomic generations, bad input, locking, crashes, readers."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import done_steps
from edgerec.sdk.catalog import catalog as catalog_module
from edgerec.sdk.catalog import store as catalog_store
from edgerec.sdk.catalog.catalog import Catalog, CatalogInfo, VectorDType
from edgerec.sdk.errors import CatalogError, CatalogLockedError, EncoderMismatchError

DIM = 16
ENC = "enc-a"
WORKER_PATH = Path(__file__).with_name("catalog_crash_worker.py")
_spec = importlib.util.spec_from_file_location("catalog_crash_worker", WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _ids(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _int8_tolerance(x: np.ndarray) -> np.ndarray:
    """Per-row bound on |x - dequantised x|: half a quantisation step, max|x| / 254."""
    return np.abs(x).max(axis=1, keepdims=True) / 254 + 1e-6


@pytest.fixture(params=["int8", "float16"])
def dtype(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture()
def catalog(tmp_path: Path) -> Catalog:
    cat = Catalog.create(tmp_path / "cat", dim=DIM, encoder_id=ENC)
    cat.add(_ids(50), _vectors(50), [{"label": "shoes" if i % 2 else "hat", "i": i}
                                     for i in range(50)])
    yield cat
    cat.close()


# ------------------------------------------------------------------ round trip


def test_create_then_reopen_returns_the_same_ids_vectors_and_metadata(tmp_path, dtype):
    x = _vectors(30)
    meta = [{"label": f"l{i % 3}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(30)]
    with Catalog.create(tmp_path / "c", dim=DIM, encoder_id=ENC, dtype=dtype) as cat:
        cat.add(_ids(30), x, meta)
    with Catalog.open(tmp_path / "c") as cat:
        assert len(cat) == 30
        assert list(cat) == _ids(30)
        assert "item7" in cat and "nope" not in cat and 7 not in cat
        got = np.stack([cat.get(i).vector for i in _ids(30)])
        assert got.dtype == np.float32
        tol = _int8_tolerance(x) if dtype == "int8" else np.abs(x) * 2**-11 + 1e-7
        assert np.all(np.abs(got - x) <= tol)
        assert [cat.get(i).metadata for i in _ids(30)] == meta
        assert cat.dtype == dtype and cat.dim == DIM and cat.encoder_id == ENC


def test_segments_are_plain_npy_files_without_pickle(catalog):
    files = sorted((catalog.path / "segments").glob("*.npy"))
    assert files
    for f in files:
        arr = np.load(f, allow_pickle=False)
        assert arr.dtype in (np.int8, np.float16, np.float32)


def test_metadata_defaults_to_an_empty_dict(tmp_path):
    with Catalog.create(tmp_path / "c", dim=DIM, encoder_id=ENC) as cat:
        cat.add(["a", "b"], _vectors(2), [None, {"x": 1}])
        cat.add(["c"], _vectors(1))
        assert [cat.get(i).metadata for i in "abc"] == [{}, {"x": 1}, {}]


def test_get_returns_a_read_only_vector(catalog):
    item = catalog.get("item3")
    assert item.id == "item3" and item.vector.shape == (DIM,)
    with pytest.raises(ValueError):
        item.vector[0] = 1.0


def test_create_accepts_a_bundle_like_object(tmp_path):
    bundle = SimpleNamespace(embedding_dim=24, encoder_id="sha-xyz")
    with Catalog.create(tmp_path / "c", bundle, dtype=VectorDType.FLOAT16) as cat:
        assert (cat.dim, cat.encoder_id, cat.dtype) == (24, "sha-xyz", "float16")
    with pytest.raises(CatalogError, match="contradicts"):
        Catalog.create(tmp_path / "d", bundle=bundle, dim=12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0, "encoder_id": ENC}, "dim must be a positive int"),
        ({"dim": 8, "encoder_id": ""}, "encoder_id must be a non-empty str"),
        ({"dim": 8, "encoder_id": ENC, "dtype": "int4"}, "dtype must be one of"),
    ],
)
def test_create_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(CatalogError, match=message):
        Catalog.create(tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


def test_create_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "file.txt").write_text("x")
    with pytest.raises(CatalogError, match="already exists"):
        Catalog.create(tmp_path / "c", dim=DIM, encoder_id=ENC)


def test_info_reports_counts_generation_and_size(catalog):
    info = catalog.info()
    assert isinstance(info, CatalogInfo)
    assert (info.count, info.dim, info.dtype, info.encoder_id) == (50, DIM, "int8", ENC)
    assert info.generation == 1 and info.format_version == catalog_store.FORMAT_VERSION
    assert info.bytes_on_disk > 50 * DIM and info.segments == 1 and info.dead_rows == 0


def test_close_is_idempotent_and_a_closed_catalog_refuses_use(catalog):
    catalog.close()
    catalog.close()
    with pytest.raises(CatalogError, match="closed"):
        len(catalog)
    with pytest.raises(CatalogError, match="closed"):
        catalog.add(["z"], _vectors(1))


# ------------------------------------------------------------------ changes


def test_each_change_commits_exactly_one_generation(catalog):
    g = catalog.generation
    catalog.add(["new"], _vectors(1))
    catalog.update(["new"], metadata=[{"a": 1}])
    catalog.remove(["new"])
    assert catalog.generation == g + 3
    with pytest.raises(CatalogError):
        catalog.remove(["new"])
    assert catalog.generation == g + 3


def test_empty_changes_commit_nothing(catalog):
    g = catalog.generation
    catalog.add([], np.zeros((0, DIM), np.float32))
    catalog.update([], metadata=[])
    catalog.remove([])
    assert catalog.generation == g and len(catalog) == 50


def test_update_replaces_vectors_or_metadata_and_keeps_the_other(catalog):
    before = catalog.get("item1")
    new = _vectors(1, seed=9)
    catalog.update(["item1"], vectors=new)
    after = catalog.get("item1")
    assert after.metadata == before.metadata
    assert np.all(np.abs(after.vector - new[0]) <= _int8_tolerance(new)[0])
    catalog.update(["item1"], metadata=[{"label": "bag"}])
    assert catalog.get("item1").metadata == {"label": "bag"}
    assert np.array_equal(catalog.get("item1").vector, after.vector)
    catalog.verify()


def test_removed_ids_can_be_added_again(catalog):
    catalog.remove(["item1", "item2"])
    assert "item1" not in catalog and len(catalog) == 48
    catalog.add(["item1"], _vectors(1, seed=5), [{"back": True}])
    assert catalog.get("item1").metadata == {"back": True}
    catalog.verify()


def test_small_adds_append_a_segment_instead_of_rewriting_the_catalog(tmp_path):
    with Catalog.create(tmp_path / "c", dim=DIM, encoder_id=ENC) as cat:
        cat.add(_ids(2000), _vectors(2000))
        (big,) = (tmp_path / "c" / "segments").glob("*.vec.npy")
        stamp = (big.stat().st_ino, big.stat().st_mtime_ns)
        for j in range(4):
            cat.add(_ids(20, prefix=f"n{j}-"), _vectors(20, seed=j + 1))
        assert (big.stat().st_ino, big.stat().st_mtime_ns) == stamp
        info = cat.info()
        assert info.count == 2080 and 2 <= info.segments <= 3
        cat.verify()


def test_removing_over_a_quarter_compacts_into_one_segment(tmp_path):
    x = _vectors(400)
    with Catalog.create(tmp_path / "c", dim=DIM, encoder_id=ENC) as cat:
        cat.add(_ids(400), x)
        cat.add(_ids(10, prefix="t"), _vectors(10, seed=3))
        kept = {i: cat.get(i).vector for i in _ids(400)[150:]}
        cat.remove(_ids(400)[:90])
        assert cat.info().dead_rows == 90
        cat.remove(_ids(400)[90:150])
        info = cat.info()
        assert (info.count, info.dead_rows, info.segments) == (260, 0, 1)
        assert all(np.array_equal(cat.get(i).vector, v) for i, v in kept.items())
        cat.verify()
        cat.remove(list(cat))
        assert cat.info().segments == 0 and len(cat) == 0
        cat.verify()


def test_compact_keeps_every_item(catalog):
    catalog.remove(["item0"])
    before = {i: catalog.get(i) for i in catalog}
    catalog.compact()
    assert catalog.info().dead_rows == 0
    assert {i: catalog.get(i).metadata for i in catalog} == {i: b.metadata for i, b in
                                                              before.items()}
    assert all(np.array_equal(catalog.get(i).vector, b.vector) for i, b in before.items())


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("ids", "vectors", "metadata", "message"),
    [
        (["a", "a"], _vectors(2), None, "repeat within one call"),
        (["item3", "zz"], _vectors(2), None, "already in the catalog.*'item3'.*use update"),
        ("abc", _vectors(3), None, "list of str ids"),
        (["a", 5], _vectors(2), None, "non-empty str"),
        (["a"], _vectors(1, dim=DIM + 1), None, r"shape \(1, 16\)"),
        (["a", "b"], np.array([[np.nan] * DIM, [0] * DIM], np.float32), None, "'a'.*NaN or inf"),
        (["a"], np.full((1, DIM), np.inf, np.float32), None, "NaN or inf"),
        (["a"], _vectors(1), [{"t": object()}], "not JSON-serialisable"),
        (["a"], _vectors(1), [{"t": float("nan")}], "not JSON-serialisable"),
        (["a"], _vectors(1), [{1: 2}], "str keys"),
        (["a"], _vectors(1), [{}, {}], "2 entries for 1 ids"),
        (["a"], _vectors(1), {"t": 1}, "one dict"),
    ],
)
def test_add_rejects_bad_input_and_changes_nothing(catalog, ids, vectors, metadata, message):
    g = catalog.generation
    with pytest.raises(CatalogError, match=message):
        catalog.add(ids, vectors, metadata)
    assert catalog.generation == g and len(catalog) == 50 and "a" not in catalog


def test_float16_catalog_rejects_values_out_of_range(tmp_path):
    cat = Catalog.create(tmp_path / "c", dim=DIM, encoder_id=ENC, dtype="float16")
    with cat, pytest.raises(CatalogError, match="float16 range"):
        cat.add(["a"], np.full((1, DIM), 1e6, np.float32))


def test_update_and_remove_name_unknown_ids_and_change_nothing(catalog):
    g = catalog.generation
    with pytest.raises(CatalogError, match=r"not in the catalog \('ghost1', 'ghost2'\)"):
        catalog.update(["item1", "ghost1", "ghost2"], metadata=[{}, {}, {}])
    with pytest.raises(CatalogError, match="'ghost'"):
        catalog.remove(["item1", "ghost"])
    with pytest.raises(CatalogError, match="needs vectors, metadata or both"):
        catalog.update(["item1"])
    with pytest.raises(CatalogError, match="no item 'ghost'"):
        catalog.get("ghost")
    assert catalog.generation == g and "item1" in catalog


def test_encoder_mismatch_is_refused_on_add_and_search(catalog):
    with pytest.raises(EncoderMismatchError, match="rebuild the catalog with this bundle"):
        catalog.add(["x"], _vectors(1), encoder_id="enc-b")
    with pytest.raises(EncoderMismatchError, match="use the bundle that built it"):
        catalog.search(_vectors(1)[0], encoder_id="enc-b")
    catalog.add(["x"], _vectors(1), encoder_id=ENC)
    assert len(catalog.search(_vectors(1)[0], encoder_id=ENC)) == 10


# ------------------------------------------------------------------ damaged catalogs


def _segment_files(path: Path, suffix: str = ".vec.npy") -> list[Path]:
    return sorted((path / "segments").glob(f"*{suffix}"))


def test_open_fails_on_missing_or_foreign_folder(tmp_path):
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog.open(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    with pytest.raises(CatalogError, match=r"catalog\.json is missing"):
        Catalog.open(tmp_path / "other")


def test_open_fails_on_a_newer_format_version(catalog):
    catalog.close()
    header = catalog.path / "catalog.json"
    data = json.loads(header.read_text())
    data["format_version"] = catalog_store.FORMAT_VERSION + 1
    header.write_text(json.dumps(data))
    with pytest.raises(CatalogError, match="upgrade edgerec"):
        Catalog.open(catalog.path, readonly=True)


def test_open_fails_on_truncated_vectors_file(catalog):
    catalog.close()
    (seg,) = _segment_files(catalog.path)
    os.truncate(seg, seg.stat().st_size - 7)
    with pytest.raises(CatalogError, match=r"truncated.*Catalog\.verify.*rebuild"):
        Catalog.open(catalog.path)


def test_open_fails_on_a_segment_of_the_wrong_dtype(catalog):
    catalog.close()
    (seg,) = _segment_files(catalog.path, ".scale.npy")
    np.save(seg, np.zeros(50, np.float64))
    with pytest.raises(CatalogError, match=r"float64.*expects"):
        Catalog.open(catalog.path, readonly=True)


def test_verify_detects_a_tampered_segment(catalog):
    catalog.verify()
    catalog.close()
    (seg,) = _segment_files(catalog.path)
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0x55
    seg.write_bytes(bytes(data))
    cat = Catalog.open(catalog.path, readonly=True)
    with cat, pytest.raises(CatalogError, match=r"sha256.*rebuild"):
        cat.verify()


def test_verify_detects_items_pointing_at_removed_rows(catalog):
    catalog.close()
    with sqlite3.connect(catalog.path / "catalog.sqlite") as conn:
        conn.execute("UPDATE items SET row = 3 WHERE id = 'item4'")
    with Catalog.open(catalog.path) as cat, pytest.raises(CatalogError, match="share one"):
        cat.verify()


# ------------------------------------------------------------------ read-only views, locks


def test_readonly_view_refuses_writes_and_follows_new_generations(catalog):
    with Catalog.open(catalog.path, readonly=True) as view:
        assert view.readonly and len(view) == 50
        for call in (
            lambda: view.add(["n"], _vectors(1)),
            lambda: view.update(["item1"], metadata=[{}]),
            lambda: view.remove(["item1"]),
            view.compact,
        ):
            with pytest.raises(CatalogError, match="read-only"):
                call()
        catalog.add(["n"], _vectors(1, seed=4))
        assert len(view) == 51 and "n" in view
        assert view.search(_vectors(1, seed=4)[0], k=1).ids[0] == "n"


def test_readonly_open_on_read_only_media_reads_without_a_wal_index(catalog, monkeypatch):
    catalog.close()
    for f in catalog.path.glob("catalog.sqlite-*"):
        f.unlink()
    monkeypatch.setattr(catalog_module.os, "access", lambda *args, **kwargs: False)
    with Catalog.open(catalog.path, readonly=True) as view:
        assert len(view) == 50
        assert view.search(view.get("item5").vector, k=1).ids[0] == "item5"
    assert not list(catalog.path.glob("catalog.sqlite-*"))


def test_second_writer_waits_for_the_timeout_then_raises_catalog_locked(catalog):
    other = sqlite3.connect(catalog.path / "catalog.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer in the middle of a commit
    try:
        with Catalog.open(catalog.path, lock_timeout=0.3) as second:
            start = time.monotonic()
            with pytest.raises(CatalogLockedError, match="another process is writing"):
                second.add(["x"], _vectors(1))
            assert time.monotonic() - start >= 0.25
            assert len(second) == 50  # reading is never blocked
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_second_writer_proceeds_once_the_first_releases_the_lock(catalog):
    other = sqlite3.connect(catalog.path / "catalog.sqlite", isolation_level=None,
                            check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: other.execute("ROLLBACK"))
    release.start()
    try:
        with Catalog.open(catalog.path, lock_timeout=5.0) as second:
            start = time.monotonic()
            second.add(["x"], _vectors(1))
            assert time.monotonic() - start >= 0.2
            assert "x" in second
    finally:
        release.join()
        other.close()


def test_writer_open_deletes_stale_uncommitted_files_and_reader_open_does_not(catalog):
    catalog.close()
    folder = catalog.path / "segments"
    stale = [folder / "seg-00000099-0.vec.npy", folder / "seg-00000099-0.scale.npy.tmp"]
    for f in stale:
        f.write_bytes(b"half-written")
    Catalog.open(catalog.path, readonly=True).close()
    assert all(f.exists() for f in stale)
    with Catalog.open(catalog.path) as cat:
        assert not any(f.exists() for f in stale)
        assert len(cat) == 50
        cat.verify()


# ------------------------------------------------------------------ crashes and concurrency


@cache
def _expected_vectors(batch: int, version: int) -> np.ndarray:
    return worker.vectors_of(batch, version)


def _catalog_state(cat: Catalog) -> dict[int, int]:
    """``{batch: version}`` of a catalog the worker wrote; asserts batches are whole."""
    groups: dict[int, list] = defaultdict(list)
    for item_id in cat:
        item = cat.get(item_id)
        groups[item.metadata["batch"]].append(item)
    state = {}
    for batch, items in groups.items():
        assert len(items) == worker.BATCH, f"batch {batch} is half present"
        (version,) = {it.metadata["v"] for it in items}
        got = np.stack([it.vector for it in sorted(items, key=lambda it: it.metadata["i"])])
        want = _expected_vectors(batch, version)
        assert np.all(np.abs(got - want) <= _int8_tolerance(want))
        state[batch] = version
    return state


def _run_worker(path: Path, start: int, die_at: str | None, kill_after: float | None):
    cmd = [sys.executable, str(WORKER_PATH), str(path), str(start), str(start + 10_000)]
    cmd += ["--die-at", die_at] if die_at else []
    # unbuffered: a buffered readline() could read "done" lines ahead that communicate(),
    # reading the raw pipe, would then never return
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    first = b""
    if kill_after is not None:
        first = proc.stdout.readline()
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    err = err.decode(errors="replace")
    done = done_steps(first + out)
    return proc.returncode, done, err


def test_killed_writer_leaves_the_last_committed_generation_intact(tmp_path):
    path = tmp_path / "cat"
    Catalog.create(path, dim=worker.DIM, encoder_id=worker.ENCODER).close()
    committed = 0
    rounds = [("segment:3", None), ("generation:4", None), ("finish:5", None),
              (None, 0.2), (None, 0.45), (None, 0.7)]
    for die_at, kill_after in rounds:
        rc, done, err = _run_worker(path, committed, die_at, kill_after)
        assert rc == -signal.SIGKILL, err
        last = done[-1] + 1 if done else committed
        with Catalog.open(path) as cat:  # a writer's open also sweeps stale files
            cat.verify()
            state = _catalog_state(cat)
            with sqlite3.connect(path / "catalog.sqlite") as conn:
                referenced = catalog_store.referenced_files(conn)
            assert {f.name for f in (path / "segments").iterdir()} == referenced
        if die_at:  # killed before its commit: exactly the printed steps are there
            assert state == worker.state_after(last)
        else:  # killed anywhere: the printed steps, and maybe one more
            assert state in (worker.state_after(last), worker.state_after(last + 1))
        committed = last if state == worker.state_after(last) else last + 1
    assert committed >= 15


def test_readers_see_whole_generations_while_a_writer_commits(tmp_path):
    path = tmp_path / "cat"
    Catalog.create(path, dim=worker.DIM, encoder_id=worker.ENCODER).close()
    cmd = [sys.executable, str(WORKER_PATH), str(path), "0", "40"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = np.random.default_rng(0)
    snapshots = set()
    with Catalog.open(path, readonly=True) as reader:
        while proc.poll() is None or not snapshots:
            q = rng.standard_normal(worker.DIM).astype(np.float32)
            hits = reader.search(q, k=10_000)
            per_batch = defaultdict(int)
            for hit in hits:
                b, i, v = (hit.metadata[k] for k in ("batch", "i", "v"))
                per_batch[b] += 1
                x = _expected_vectors(b, v)[i]
                tol = np.abs(q).sum() * np.abs(x).max() / 254 + 1e-4
                assert abs(hit.score - float(x @ q)) <= tol, "vectors and metadata disagree"
            assert all(n == worker.BATCH for n in per_batch.values()), "a half-applied batch"
            snapshots.add(len(hits))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(snapshots) >= 2
