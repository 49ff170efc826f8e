"""One Recommender shared by 8 threads while a thread and another process write its catalog
(issue 16): 8 threads x 1,000 queries (``similar`` by photo through the shared encoder,
``similar`` by item, ``for_user``), on ONNX Runtime and on LiteRT. Every query must succeed
and show one committed generation: each result's score is the product of the query with the
vector its metadata names (batch, row, version), and the catalog always holds whole batches.
A photo's query vector must be the one the encoder gives single-threaded."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import sample_images
from edgerec.runtimes import Engine
from edgerec.sdk import Catalog, EncoderOptions, Event, Recommender
from PIL import Image

WORKER_PATH = Path(__file__).parent / "catalog" / "catalog_crash_worker.py"
_spec = importlib.util.spec_from_file_location("catalog_crash_worker", WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

THREADS, QUERIES = 8, 1000
BASE = 5000  # a batch nobody changes: the for_user histories and similar-by-item queries
THREAD_BATCHES = range(1000, 1012)  # the writer thread's (the process's are 0..39)


def _meta(batch: int, version: int) -> list[dict[str, int]]:
    return [{"batch": batch, "i": i, "v": version} for i in range(worker.BATCH)]


def _thread_writer(path: Path, dim: int, errors: list[BaseException]) -> None:
    try:
        with Catalog.open(path, lock_timeout=60) as cat:
            for b in THREAD_BATCHES:
                cat.add(worker.item_ids(b), worker.vectors_of(b, 0, dim), _meta(b, 0))
            for b in THREAD_BATCHES[::2]:
                cat.update(worker.item_ids(b), worker.vectors_of(b, 1, dim), _meta(b, 1))
    except BaseException as exc:
        errors.append(exc)


def _check(results, query: np.ndarray, clip: bool) -> None:
    for r in results:
        b, i, v = (r.metadata[k] for k in ("batch", "i", "v"))
        x = worker.vectors_of(b, v, query.size)[i]
        want = float(np.clip(x @ query, -1, 1)) if clip else float(x @ query)
        tol = np.abs(query).sum() * np.abs(x).max() * 2e-3 + 1e-4  # float16 storage
        assert abs(r.score - want) <= tol, f"{r.id}: score {r.score} is not {want}"


def _reader(rec: Recommender, seed: int, photos: list[np.ndarray], embedded: np.ndarray,
            histories: list[list[Event]], users: list[np.ndarray],
            errors: list[BaseException], counts: list[int], generations: set[int]) -> None:
    rng = np.random.default_rng(seed)
    base_ids = worker.item_ids(BASE)
    try:
        for n in range(QUERIES):
            kind = n % 3
            if kind == 0:
                j = int(rng.integers(len(photos)))
                got = rec.encoder().embed_one(photos[j])
                assert np.allclose(got, embedded[j], atol=1e-5), "a shared encoder mixed runs"
                _check(rec.similar(photos[j], k=10), embedded[j], clip=True)
            elif kind == 1:
                j = int(rng.integers(worker.BATCH))
                query = worker.vectors_of(BASE, 0, embedded.shape[1])[j]
                _check(rec.similar(item_id=base_ids[j], k=10), query, clip=True)
            else:
                j = int(rng.integers(len(histories)))
                result = rec.for_user(histories[j], k=10)
                # the candidates' vectors are read after the search: an item removed in
                # between drops out (documented), so a result may be short
                assert 10 - worker.BATCH <= len(result) <= 10, result
                _check(result, users[j], clip=False)
            if n % 10 == 0:
                assert len(rec.catalog) % worker.BATCH == 0, "a half-applied batch"
                generations.add(rec.catalog.generation)
        counts.append(QUERIES)
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.slow
@pytest.mark.parametrize("engine", [Engine.ONNX, Engine.TFLITE])
def test_eight_threads_query_one_recommender_while_a_thread_and_a_process_write(
        tiny_bundle, tmp_path, engine):
    dim = tiny_bundle.embedding_dim
    path = tmp_path / "cat"
    with Catalog.create(path, tiny_bundle, dtype="float16") as cat:
        cat.add(worker.item_ids(BASE), worker.vectors_of(BASE, 0, dim), _meta(BASE, 0))
    photos = [np.asarray(Image.open(p).convert("RGB")) for p, _ in sample_images(1)[:4]]
    histories = [[Event(worker.item_ids(BASE)[j], "view", 1e9 + j) for j in range(s, s + 3)]
                 for s in range(0, 15, 3)]
    opts = EncoderOptions(engine=engine)
    with Catalog.open(path, readonly=True) as reader, \
            Recommender.create_from_bundle(tiny_bundle, reader, encoder_options=opts) as rec:
        embedded = rec.encoder().embed(photos)
        users = [rec.user_vector(h) for h in histories]
        proc = subprocess.Popen([sys.executable, str(WORKER_PATH), str(path), "0", "40",
                                 "--dim", str(dim), "--encoder", tiny_bundle.encoder_id],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        errors: list[BaseException] = []
        counts: list[int] = []
        generations: set[int] = set()
        threads = [threading.Thread(target=_thread_writer, args=(path, dim, errors))]
        threads += [threading.Thread(target=_reader, args=(
            rec, seed, photos, embedded, histories, users, errors, counts, generations))
            for seed in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        out, err = proc.communicate(timeout=120)
    assert not errors, errors[:3]
    assert proc.returncode == 0, err
    assert out.count("done") == 40
    assert sum(counts) == THREADS * QUERIES
    print(f"{engine.value}: generations seen by the readers: {len(generations)}")
    assert len(generations) >= 5, generations  # the readers really ran during the writes
    with Catalog.open(path, readonly=True) as cat:
        cat.verify()
        assert len(cat) == worker.BATCH * (1 + len(worker.state_after(40)) + len(THREAD_BATCHES))
