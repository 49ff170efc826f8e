"""Many readers on one catalog while a thread and another process write (issue 16): 8 threads
share one read-only ``Catalog`` and run 1,000 searches each while a writer thread (its own
``Catalog``) and the crash worker's process commit batches. Every search must succeed and show
one committed generation: each hit's score is the inner product with the vector its metadata
names (batch, row, version), and the item count is always whole batches."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from edgerec.sdk.catalog.catalog import Catalog

WORKER_PATH = Path(__file__).with_name("catalog_crash_worker.py")
_spec = importlib.util.spec_from_file_location("catalog_crash_worker", WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

THREADS, QUERIES = 8, 1000
THREAD_BATCHES = range(1000, 1012)  # the writer thread's batches (the worker's are 0..39)


def _thread_writer(path: Path, errors: list[BaseException], steps: list[int]) -> None:
    """Adds its batches, then updates every other one to version 1."""
    try:
        with Catalog.open(path, lock_timeout=60) as cat:
            for b in THREAD_BATCHES:
                meta = [{"batch": b, "i": i, "v": 0} for i in range(worker.BATCH)]
                cat.add(worker.item_ids(b), worker.vectors_of(b, 0), meta,
                        encoder_id=worker.ENCODER)
                steps.append(b)
            for b in THREAD_BATCHES[::2]:
                meta = [{"batch": b, "i": i, "v": 1} for i in range(worker.BATCH)]
                cat.update(worker.item_ids(b), worker.vectors_of(b, 1), meta)
                steps.append(b)
    except BaseException as exc:
        errors.append(exc)


def _reader(cat: Catalog, seed: int, errors: list[BaseException], counts: list[int],
            generations: set[int]) -> None:
    rng = np.random.default_rng(seed)
    try:
        for n in range(QUERIES):
            q = rng.standard_normal(worker.DIM).astype(np.float32)
            hits = cat.search(q, k=20)
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            for hit in hits:
                b, i, v = (hit.metadata[k] for k in ("batch", "i", "v"))
                x = worker.vectors_of(b, v)[i]
                tol = np.abs(q).sum() * np.abs(x).max() / 254 + 1e-4  # int8 storage
                assert abs(hit.score - float(x @ q)) <= tol, "vector and metadata disagree"
            if n % 10 == 0:
                assert len(cat) % worker.BATCH == 0, "a half-applied batch"
                generations.add(cat.generation)
        counts.append(QUERIES)
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.slow
def test_eight_threads_query_one_catalog_while_a_thread_and_a_process_write(tmp_path):
    path = tmp_path / "cat"
    Catalog.create(path, dim=worker.DIM, encoder_id=worker.ENCODER).close()
    # unbuffered: a buffered readline() could read "done" lines ahead, which communicate()
    # (reading the raw pipe) would then never return
    proc = subprocess.Popen([sys.executable, str(WORKER_PATH), str(path), "0", "40"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdout.readline() == b"ready\n"
    errors: list[BaseException] = []
    steps: list[int] = []
    counts: list[int] = []
    generations: set[int] = set()
    with Catalog.open(path, readonly=True) as reader:
        threads = [threading.Thread(target=_thread_writer, args=(path, errors, steps))]
        threads += [threading.Thread(target=_reader, args=(reader, seed, errors, counts,
                                                           generations))
                    for seed in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        out, err = proc.communicate(timeout=120)
    assert not errors, errors[:3]
    assert proc.returncode == 0, err
    assert sum(counts) == THREADS * QUERIES
    print("generations seen by the readers:", len(generations))
    assert len(generations) >= 10, generations  # the readers really ran during the writes
    assert len(steps) == len(THREAD_BATCHES) + len(THREAD_BATCHES[::2])
    assert out.count(b"done") == 40  # the worker's 40 steps all committed
    with Catalog.open(path, readonly=True) as cat:  # the end state holds both writers' work
        cat.verify()
        assert len(cat) == worker.BATCH * (len(worker.state_after(40)) + len(THREAD_BATCHES))
