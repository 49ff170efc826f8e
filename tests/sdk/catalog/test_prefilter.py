"""The ONNX Runtime int8 search kernel: exact integer products, exact top-k, lazy engine."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from edgerec.runtimes import int8_matmul
from edgerec.runtimes.int8_matmul import Int8MatMul
from edgerec.sdk.catalog import prefilter as sk
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.catalog.scan import exact_top_k
from edgerec.sdk.errors import RuntimeUnavailableError

ENC = "enc"


@pytest.fixture(params=["columns", "rows"])
def kernel(request, monkeypatch: pytest.MonkeyPatch):
    """The onnxruntime kernel on small catalogs, in small blocks (so several per segment),
    in each layout of its copy."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(sk, "MIN_ROWS", 0)
    monkeypatch.setattr(sk, "CHUNK_ROWS", 1500)
    previous = sk.set_search_kernel("onnxruntime")
    previous_layout = sk.set_search_layout(request.param)
    yield sk
    sk.set_search_kernel(previous)
    sk.set_search_layout(previous_layout)


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _catalog(path: Path, x: np.ndarray, parts: int = 1, dtype: str = "int8") -> Catalog:
    cat = Catalog.create(path, dim=x.shape[1], encoder_id=ENC, dtype=dtype)
    ids = [f"id{i}" for i in range(len(x))]
    meta = [{"even": i % 2 == 0, "price": i % 10} for i in range(len(x))]
    for part in np.array_split(np.arange(len(x)), parts):  # one segment per add
        cat.add([ids[i] for i in part], x[part], [meta[i] for i in part])
    return cat


def _exact(cat: Catalog, q: np.ndarray) -> np.ndarray:
    """float64 scores of every row: scale_i * sum_j c_ij q_j, from the stored codes."""
    with cat._reading() as view:
        codes = np.concatenate([np.asarray(s.vectors, np.float64) for s in view.segments])
        scales = np.concatenate([np.asarray(s.scales, np.float64) for s in view.segments])
    return (codes @ q.astype(np.float64).T) * scales[:, None]


def _search(cat: Catalog, q: np.ndarray, k: int, kernel: str, **kw) -> list:
    previous = sk.set_search_kernel(kernel)
    try:
        got = cat.search(q, k=k, **kw)
    finally:
        sk.set_search_kernel(previous)
    return [got] if q.ndim == 1 else list(got)


# ------------------------------------------------------------------ the integer product


@pytest.mark.parametrize("n_queries", [1, 3, 8, 20])  # one-row path and batched path
def test_integer_products_are_exact_at_the_extremes_of_int8(kernel, n_queries):
    """Codes at -128 and 127 against query codes 127 and 1: where AVX2's u8 x s8 pairs
    would saturate int16 if the query used the full uint8 range."""
    rng = np.random.default_rng(0)
    codes = np.full((4000, 96), -128, np.int8)
    codes[1::2] = 127
    codes[2::5] = rng.integers(-128, 128, (len(range(2, 4000, 5)), 96), dtype=np.int8)
    a = rng.integers(1, 128, (n_queries, 96), dtype=np.uint8)
    a[0] = 127
    engine = Int8MatMul.create()
    codes_t, sums = engine.prepare(codes)
    np.testing.assert_array_equal(codes_t, codes.T)
    np.testing.assert_array_equal(sums[0], codes.astype(np.int64).sum(axis=1))
    offset = np.zeros(4000, np.int32)
    got = engine.scaled_product(a, codes_t, offset, np.ones(4000, np.float32))
    want = a.astype(np.int64) @ codes.T.astype(np.int64)
    np.testing.assert_array_equal(got.astype(np.int64), want)  # < 2**24: exact in float32
    shifted = engine.shift(codes)  # the other layout: codes + 128 with zero point 128
    np.testing.assert_array_equal(shifted.astype(np.int16) - 128, codes)
    q = (a.astype(np.int16) - 64).astype(np.int8)  # the query's levels, in [-63, 63]
    rows = engine.scaled_product_rows(shifted, np.ascontiguousarray(q.T),
                                      np.ones((4000, 1), np.float32))
    np.testing.assert_array_equal(rows.T.astype(np.int64), q.astype(np.int64) @ codes.T)


def test_the_graphs_are_valid_onnx():
    onnx = pytest.importorskip("onnx")
    for model in (int8_matmul.score_model(), int8_matmul.prepare_model(),
                  int8_matmul.score_rows_model()):
        onnx.checker.check_model(onnx.load_from_string(model), full_check=True)


# ------------------------------------------------------------------ exact top-k


@pytest.mark.parametrize("n_queries", [1, 3, 9])
def test_top_k_equals_the_exact_reference_and_the_numpy_kernel(kernel, tmp_path, n_queries):
    x = _unit(7000, 48, seed=1)
    cat = _catalog(tmp_path / "c", x, parts=3)
    q = _unit(n_queries, 48, seed=2)
    exact = _exact(cat, q)
    got = _search(cat, q, 10, "onnxruntime")
    ref = _search(cat, q, 10, "numpy")
    for j, (m, r) in enumerate(zip(got, ref)):
        rows = [int(i[2:]) for i in m.ids]
        np.testing.assert_allclose(np.sort(exact[rows, j])[::-1],
                                   np.sort(exact[:, j])[::-1][:10], atol=1e-6)
        assert list(m.ids) == list(r.ids)
        np.testing.assert_allclose(m.scores, r.scores, rtol=1e-6, atol=1e-7)
    cat.close()


@pytest.mark.parametrize("n_queries", [1, 12])  # one query takes its own path
def test_candidates_hold_every_query_top_k_and_few_more(kernel, tmp_path, n_queries):
    cat = _catalog(tmp_path / "c", _unit(9000, 64, seed=3), parts=2)
    q = _unit(n_queries, 64, seed=4)
    exact = _exact(cat, q)
    with cat._reading() as view:
        rows = sk.candidate_rows(view, q, 10, [None] * len(view.segments))
    assert rows is not None and np.all(np.diff(rows) > 0)  # sorted, unique
    for j in range(len(q)):
        assert set(np.argsort(-exact[:, j])[:10]) <= set(rows.tolist())
    assert rows.size < n_queries * 10 * 10  # a band, not a scan
    cat.close()


@pytest.mark.parametrize("n_queries", [1, 4])
def test_removed_rows_filters_and_exclusions_are_respected(kernel, tmp_path, n_queries):
    x = _unit(6000, 32, seed=5)
    cat = _catalog(tmp_path / "c", x, parts=2)
    cat.remove([f"id{i}" for i in range(0, 6000, 3)])
    q = _unit(n_queries, 32, seed=6)
    kw = {"filters": {"even": True}, "exclude": ["id2", "id4", "id8"]}
    for a, b in zip(_search(cat, q, 15, "onnxruntime", **kw), _search(cat, q, 15, "numpy", **kw)):
        assert list(a.ids) == list(b.ids)
        assert all(int(i[2:]) % 3 and int(i[2:]) % 2 == 0 for i in a.ids)
        assert not {"id2", "id4", "id8"} & set(a.ids)
    cat.close()


def test_near_duplicates_stay_exact(kernel, tmp_path):
    """Hundreds of items within the quantization band of the k-th best."""
    rng = np.random.default_rng(7)
    centre = _unit(1, 64, seed=8)[0]
    x = centre + 0.01 * rng.standard_normal((3000, 64)).astype(np.float32)
    x = np.concatenate([x / np.linalg.norm(x, axis=1, keepdims=True), _unit(3000, 64, seed=9)])
    cat = _catalog(tmp_path / "c", x)
    q = (centre + 0.02 * rng.standard_normal(64)).astype(np.float32)
    q /= np.linalg.norm(q)
    a, b = _search(cat, q, 20, "onnxruntime")[0], _search(cat, q, 20, "numpy")[0]
    assert list(a.ids) == list(b.ids)
    cat.close()


def test_a_dense_crowd_of_look_alikes_is_settled_by_a_second_query_level(kernel, tmp_path,
                                                                          monkeypatch):
    """Half the catalog within the one-level bound of the k-th best: the second pass, with the
    query's rounding residual as a second level, narrows it to a few rows, exactly."""
    rng = np.random.default_rng(14)
    q = _unit(1, 64, seed=15)[0]
    near = q + 0.05 * rng.standard_normal((3000, 64)).astype(np.float32) / 8
    x = np.concatenate([near / np.linalg.norm(near, axis=1, keepdims=True),
                        _unit(3000, 64, seed=16)])
    cat = _catalog(tmp_path / "c", x)
    passes = []
    real = sk._scan
    monkeypatch.setattr(sk, "_scan", lambda *a: passes.append(len(a[3])) or real(*a))
    with cat._reading() as view:
        rows = sk.candidate_rows(view, q[None], 10, [None])
    assert passes == [1, 2] and rows is not None and 10 <= len(rows) < 300
    a, b = _search(cat, q, 10, "onnxruntime")[0], _search(cat, q, 10, "numpy")[0]
    assert list(a.ids) == list(b.ids)
    cat.close()


def test_the_first_floor_is_sampled_so_that_a_repeating_order_cannot_hide_look_alikes():
    """Rows like the query at every 32nd place (a catalog added in a repeating order, as the
    bench's is): every 16th row would never see one and set the first floor at 0."""
    scores = np.zeros((1, 65536), np.float32)
    scores[0, 5::32] = 1.0
    band = sk._Band(10, 1, cap=4096)
    assert band._kth(scores)[0] == 1.0
    assert band.push(scores, np.zeros(1), 0) and band.count == 65536 // 32


def test_identical_items_make_the_kernel_give_way_to_numpy(kernel, tmp_path):
    x = np.tile(_unit(1, 32, seed=10), (5000, 1))
    cat = _catalog(tmp_path / "c", x)
    q = _unit(1, 32, seed=11)
    with cat._reading() as view:
        assert sk.candidate_rows(view, q, 10, [None]) is None  # every row ties
        rows, scores = exact_top_k(view, q, 10)
    assert len(rows[0]) == 10 and np.ptp(scores[0]) == 0  # numpy scanned it all
    cat.close()


def test_k_larger_than_the_catalog_returns_every_live_item(kernel, tmp_path):
    cat = _catalog(tmp_path / "c", _unit(300, 16, seed=12))
    cat.remove(["id0", "id1"])
    got = _search(cat, _unit(1, 16, seed=13)[0], 500, "onnxruntime")[0]
    assert len(got) == 298 and np.all(np.diff(got.scores) <= 0)
    cat.close()


# ------------------------------------------------------------------ choice and lifecycle


def test_float16_and_small_catalogs_use_numpy(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    f16 = _catalog(tmp_path / "f", _unit(200, 16, seed=14), dtype="float16")
    small = _catalog(tmp_path / "s", _unit(200, 16, seed=15))
    with f16._reading() as v16, small._reading() as v8:
        assert sk.active_kernel(v16) is sk.SearchKernel.NUMPY
        assert sk.active_kernel(v8) is sk.SearchKernel.NUMPY  # below MIN_ROWS
        monkeypatch.setattr(sk, "MIN_ROWS", 0)
        assert sk.active_kernel(v8) is sk.SearchKernel.ONNXRUNTIME
        previous = sk.set_search_kernel("numpy")
        assert sk.active_kernel(v8) is sk.SearchKernel.NUMPY
        sk.set_search_kernel(previous)
    f16.close()
    small.close()


def test_asking_for_onnxruntime_without_it_raises(tmp_path, monkeypatch):
    cat = _catalog(tmp_path / "c", _unit(100, 16, seed=16))
    monkeypatch.setitem(sk._state, "engine", None)
    previous = sk.set_search_kernel("onnxruntime")
    try:
        with pytest.raises(RuntimeUnavailableError, match="pip install"):
            cat.search(_unit(1, 16, seed=17)[0])
        sk.set_search_kernel("auto")
        monkeypatch.setattr(sk, "MIN_ROWS", 0)
        assert len(cat.search(_unit(1, 16, seed=17)[0], k=5)) == 5  # auto: numpy
    finally:
        sk.set_search_kernel(previous)
        sk._state.pop("engine", None)
    cat.close()


def test_the_copy_goes_away_with_the_catalog(kernel, tmp_path):
    cat = _catalog(tmp_path / "c", _unit(2000, 16, seed=18))
    before = len(sk._caches)
    cat.search(_unit(1, 16, seed=19)[0])
    assert len(sk._caches) == before + 1
    cat.close()
    gc.collect()
    assert len(sk._caches) == before


def test_auto_layout_times_both_once_per_dimension_and_keeps_the_results(tmp_path,
                                                                         monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(sk, "MIN_ROWS", 0)
    monkeypatch.setitem(sk._state, "measured", {})
    timed = []
    real = sk._time_layouts
    monkeypatch.setattr(sk, "_time_layouts", lambda e, d: timed.append(d) or real(e, d))
    previous, previous_layout = sk.set_search_kernel("onnxruntime"), sk.set_search_layout("auto")
    x = _unit(3000, 24, seed=30)
    q = _unit(4, 24, seed=31)
    try:
        with _catalog(tmp_path / "c", x) as cat:
            got = _search(cat, q, 7, "onnxruntime")
            _search(cat, q, 7, "onnxruntime")
            assert timed == [24] and sk.active_layout(24) in (sk.SearchLayout.COLUMNS,
                                                              sk.SearchLayout.ROWS)
            want = _search(cat, q, 7, "numpy")
    finally:
        sk.set_search_kernel(previous)
        sk.set_search_layout(previous_layout)
    assert [[m.id for m in g] for g in got] == [[m.id for m in w] for w in want]


def test_the_layout_can_be_asked_for_before_any_search_made_the_engine(monkeypatch):
    # active_layout once held the module lock while _engine took it again: a caller asking for
    # the layout first (a benchmark's report) waited forever
    pytest.importorskip("onnxruntime")
    monkeypatch.delitem(sk._state, "engine", raising=False)
    monkeypatch.setitem(sk._state, "measured", {})
    previous = sk.set_search_layout("auto")
    try:
        done = []
        worker = threading.Thread(target=lambda: done.append(sk.active_layout(40)), daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert done and done[0] in (sk.SearchLayout.COLUMNS, sk.SearchLayout.ROWS)
    finally:
        sk.set_search_layout(previous)


def test_a_bad_setting_says_what_to_choose(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="auto, numpy, onnxruntime"):
        sk.set_search_kernel("fast")
    monkeypatch.delitem(sk._state, "kernel", raising=False)
    monkeypatch.setenv("EDGEREC_SEARCH_KERNEL", "fast")
    cat = _catalog(tmp_path / "c", _unit(100, 16, seed=20))
    with pytest.raises(ValueError, match="EDGEREC_SEARCH_KERNEL must be one of"):
        cat.search(_unit(1, 16, seed=21)[0])
    monkeypatch.setenv("EDGEREC_SEARCH_KERNEL", " NumPy ")
    assert sk.search_kernel() is sk.SearchKernel.NUMPY
    cat.close()
    with pytest.raises(ValueError, match="auto, columns, rows"):
        sk.set_search_layout("diagonal")
    monkeypatch.delitem(sk._state, "layout", raising=False)
    monkeypatch.setenv("EDGEREC_SEARCH_LAYOUT", "diagonal")
    with pytest.raises(ValueError, match="EDGEREC_SEARCH_LAYOUT must be one of"):
        sk.search_layout()
    monkeypatch.setenv("EDGEREC_SEARCH_LAYOUT", " Rows")
    assert sk.search_layout() is sk.SearchLayout.ROWS


def test_no_engine_is_loaded_until_a_large_int8_catalog_is_searched(tmp_path):
    code = """
import json, sys
import numpy as np
from edgerec.sdk import Catalog
from edgerec.sdk.catalog import prefilter as sk
x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
with Catalog.create(sys.argv[1], dim=16, encoder_id="e") as cat:
    cat.add([f"i{i}" for i in range(500)], x)
    cat.search(x[0], k=5)
print(json.dumps(["onnxruntime" in sys.modules, sk.search_kernel().value]))
"""
    for setting in ("numpy", "auto"):  # auto: 500 rows are below MIN_ROWS
        env = {**os.environ, "EDGEREC_SEARCH_KERNEL": setting}
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / setting)],
                             capture_output=True, text=True, check=True, env=env)
        assert json.loads(out.stdout) == [False, setting]
