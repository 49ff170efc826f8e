"""Exact search over a catalog: correctness against float32 numpy, filters, exclude, MMR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgerec.sdk.catalog import scan as search_module
from edgerec.sdk.catalog import store as store_module
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.catalog.filters import compile_filters
from edgerec.sdk.catalog.matches import BatchMatches, Match, Matches
from edgerec.sdk.catalog.scan import mmr_select
from edgerec.sdk.errors import CatalogError

DIM = 32
ENC = "enc"
LABELS = ["shoes", "hat", "bag", "shirt"]


def _unit(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _meta(i: int) -> dict:
    meta = {"label": LABELS[i % 4], "price": float(i % 100), "in_stock": i % 3 == 0,
            "tags": ["sale"] if i % 5 == 0 else ["new", "eco"]}
    if i % 7 == 0:
        meta["rating"] = i % 5  # only some items have a rating
    if i % 11 == 0:
        meta["flag"] = 1  # the number 1, not true
    return meta


def _make(
    path: Path, n: int, dtype: str, seed: int = 0, dim: int = DIM
) -> tuple[Catalog, np.ndarray, list]:
    x = _unit(n, seed, dim)
    cat = Catalog.create(path, dim=dim, encoder_id=ENC, dtype=dtype)
    ids = [f"id{i}" for i in range(n)]
    cat.add(ids, x, [_meta(i) for i in range(n)])
    return cat, x, ids


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory):
    """2000 unit vectors (int8) with metadata; brute force uses the dequantised vectors."""
    cat, _, ids = _make(tmp_path_factory.mktemp("s") / "cat", 2000, "int8", seed=1)
    stored = np.stack([cat.get(i).vector for i in ids])
    yield cat, stored, ids
    cat.close()


def _brute(stored: np.ndarray, ids: list, q: np.ndarray, k: int, keep=None) -> list:
    """Ids of the exact top-k over ``stored`` (rows where ``keep(i)``), ties by position."""
    rows = [i for i in range(len(ids)) if keep is None or keep(i)]
    s = stored[rows] @ q
    order = np.lexsort((np.arange(len(rows)), -s))[:k]
    return [ids[rows[j]] for j in order]


# ------------------------------------------------------------------ correctness


def test_float16_top_k_ids_equal_brute_force(tmp_path):
    cat, x, ids = _make(tmp_path / "c", 1500, "float16")
    q = _unit(8, seed=7)
    stored = x.astype(np.float16).astype(np.float32)
    got = cat.search(q, k=10)
    assert isinstance(got, BatchMatches) and len(got) == 8
    for qi, m in zip(q, got):
        assert list(m.ids) == _brute(stored, ids, qi, 10)
        np.testing.assert_allclose(m.scores, np.sort(stored @ qi)[::-1][:10], rtol=1e-5,
                                   atol=1e-6)
    cat.close()


def test_int8_scores_within_quantization_error_and_recall_at_10(tmp_path):
    cat, x, ids = _make(tmp_path / "c", 3000, "int8", seed=2, dim=128)  # a real embedding size
    q = _unit(40, seed=8, dim=128)
    got = cat.search(q, k=10)
    exact = x @ q.T  # (N, Q) float32 ground truth
    step = np.abs(x).max(axis=1) / 254  # half a quantisation step per item
    found = []
    for j, m in enumerate(got):
        rows = np.array([ids.index(i) for i in m.ids])
        bound = np.abs(q[j]).sum() * step[rows] + 1e-6
        assert np.all(np.abs(m.scores - exact[rows, j]) <= bound)
        truth = set(np.argsort(-exact[:, j])[:10])
        found.append(len(truth & set(rows)))
    assert sum(found) >= 0.99 * 10 * len(q)  # recall@10 >= 0.99
    cat.close()


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_search_across_segments_chunks_and_removed_rows_matches_brute_force(
    tmp_path, dtype, monkeypatch
):
    monkeypatch.setattr(search_module, "CHUNK_ROWS", 64)  # many chunks and merges
    monkeypatch.setattr(search_module, "BLOCK_BYTES", 16 * 4 * DIM)  # 16-row decode blocks
    cat, _, ids = _make(tmp_path / "c", 700, dtype, seed=3)
    for j in range(3):
        more = [f"more{j}-{i}" for i in range(40)]
        cat.add(more, _unit(40, seed=20 + j))
        ids += more
    cat.remove(ids[100:130])
    cat.update(ids[200:210], vectors=_unit(10, seed=30))
    assert cat.info().segments >= 2 and cat.info().dead_rows > 0
    live = list(cat)
    stored = np.stack([cat.get(i).vector for i in live])
    q = _unit(5, seed=9)
    for qi, m in zip(q, cat.search(q, k=25)):
        assert list(m.ids) == _brute(stored, live, qi, 25)
    cat.close()


def _segments_decoded(cat: Catalog) -> list[bool]:
    with cat._reading() as view:
        return [seg.decoded is not None for seg in view.segments]


def test_decoded_small_catalogs_give_the_same_results_bit_for_bit(tmp_path, monkeypatch):
    path = tmp_path / "c"
    cat, _, ids = _make(path, 600, "int8", seed=4, dim=64)
    for j in range(3):
        cat.add([f"more{j}-{i}" for i in range(40)], _unit(40, seed=20 + j, dim=64))
    cat.remove(ids[10:20])
    with cat._reading() as view:
        sizes = [seg.rows * 64 * 4 for seg in view.segments]
    cat.close()
    assert len(sizes) >= 2
    q = _unit(6, seed=11, dim=64)
    results = {}
    # budgets: nothing decoded, only the first segment, all of them (the default)
    expected = {"none": [False] * len(sizes), "first": [True] + [False] * (len(sizes) - 1),
                "all": [True] * len(sizes)}
    for name, budget in (("none", 0), ("first", sizes[0]), ("all", store_module.DECODED_BYTES)):
        monkeypatch.setattr(store_module, "DECODED_BYTES", budget)
        with Catalog.open(path, readonly=True) as reader:
            assert _segments_decoded(reader) == expected[name]
            got = reader.search(q, k=15)
            vectors = [reader.vectors(list(m.ids))[1] for m in got]
        results[name] = ([list(m.ids) for m in got], [m.scores for m in got], vectors)
    for name in ("first", "all"):
        assert results[name][0] == results["none"][0]
        for a, b in zip(results[name][1] + results[name][2],
                        results["none"][1] + results["none"][2]):
            np.testing.assert_array_equal(a, b)


def test_float16_catalogs_are_never_decoded(tmp_path):
    cat, _, _ = _make(tmp_path / "c", 200, "float16")
    assert _segments_decoded(cat) == [False]
    cat.close()


def test_scores_equal_the_inner_product_with_the_stored_vector(shop):
    cat = shop[0]
    q = _unit(1, seed=5)[0]
    m = cat.search(q, k=5)
    want = np.array([cat.get(i).vector @ q for i in m.ids])
    np.testing.assert_allclose(m.scores, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ results


def test_single_query_returns_matches_with_list_access(shop):
    cat, _, _ = shop
    m = cat.search(_unit(1, seed=4)[0], k=3)
    assert isinstance(m, Matches) and len(m) == 3
    assert m.ids.shape == (3,) and m.scores.dtype == np.float32
    assert np.all(np.diff(m.scores) <= 0)
    first = m[0]
    assert isinstance(first, Match) and first.id == m.ids[0] and first.metadata == m.metadata[0]
    assert [d["id"] for d in m.to_list()] == list(m.ids)
    assert set(m.to_list()[0]) == {"id", "score", "metadata"}
    assert len(m[:2]) == 2 and repr(m).startswith("Matches(3 hits:")
    with pytest.raises(ValueError):
        m.scores[0] = 0


def test_batch_results_list_one_matches_per_query(shop):
    cat, _, _ = shop
    q = _unit(3, seed=6)
    batch = cat.search(q, k=4)
    assert len(batch) == 3 and all(len(m) == 4 for m in batch)
    assert [list(m.ids) for m in batch] == [list(cat.search(qi, k=4).ids) for qi in q]
    assert len(batch.to_list()) == 3 and "3 queries" in repr(batch)


def test_a_batch_larger_than_a_query_group_runs_in_groups_with_the_same_results(
    shop, monkeypatch
):
    cat, _, _ = shop
    q = _unit(7, seed=12)
    kw = {"filters": {"label": "hat"}, "exclude": ["id1", "id5"]}
    whole = [list(m.ids) for m in cat.search(q, k=6, **kw)]
    seen = []
    real = search_module.exact_top_k

    def spy(view, queries, k, **kwargs):
        seen.append(queries.shape[0])
        return real(view, queries, k, **kwargs)

    monkeypatch.setattr(search_module, "QUERY_GROUP", 3)
    monkeypatch.setattr(search_module, "exact_top_k", spy)  # the groups' calls go through it
    grouped = cat.search(q, k=6, **kw)
    assert [list(m.ids) for m in grouped] == whole
    assert seen == [3, 3, 1]


def test_empty_catalog_returns_no_matches(tmp_path):
    with Catalog.create(tmp_path / "c", dim=DIM, encoder_id=ENC) as cat:
        m = cat.search(_unit(1, seed=0)[0], k=5)
        assert len(m) == 0 and m.to_list() == []
        assert [len(x) for x in cat.search(_unit(2, seed=0), k=5)] == [0, 0]


def test_k_larger_than_the_catalog_returns_every_item_sorted(tmp_path):
    cat, x, _ = _make(tmp_path / "c", 12, "float16")
    cat.remove(["id3"])
    m = cat.search(x[0], k=100)
    assert len(m) == 11 and "id3" not in m.ids and np.all(np.diff(m.scores) <= 0)
    cat.close()


@pytest.mark.parametrize(
    ("query", "kwargs", "message"),
    [
        (np.full(DIM, np.nan, np.float32), {}, "NaN or inf"),
        (np.ones(DIM + 1, np.float32), {}, "shape"),
        (np.ones((2, 2, DIM), np.float32), {}, "shape"),
        (np.ones(DIM, np.float32), {"k": 0}, "k must be a positive int"),
        (np.ones(DIM, np.float32), {"diversity": 1.5}, r"diversity must be a number in \[0, 1\]"),
        (np.ones(DIM, np.float32), {"exclude": "id1"}, r"for one id, pass \[id\]"),
    ],
)
def test_search_rejects_bad_queries(shop, query, kwargs, message):
    with pytest.raises(CatalogError, match=message):
        shop[0].search(query, **kwargs)


# ------------------------------------------------------------------ filters and exclude

FILTER_CASES = [
    ({"label": "shoes"}, lambda m: m["label"] == "shoes"),
    ({"in_stock": True}, lambda m: m["in_stock"] is True),
    ({"price": {"lt": 50}}, lambda m: m["price"] < 50),
    ({"price": {"gte": 10, "le": 12}}, lambda m: 10 <= m["price"] <= 12),
    ({"price": 7}, lambda m: m["price"] == 7),
    ({"label": {"in": ["shoes", "hat"]}}, lambda m: m["label"] in ("shoes", "hat")),
    ({"label": {"nin": ["shoes", "hat"]}}, lambda m: m["label"] not in ("shoes", "hat")),
    ({"label": {"ne": "bag"}}, lambda m: m["label"] != "bag"),
    ({"tags": "sale"}, lambda m: "sale" in m["tags"]),
    ({"rating": None}, lambda m: "rating" not in m),
    ({"rating": {"exists": True}}, lambda m: "rating" in m),
    ({"flag": 1}, lambda m: m.get("flag") == 1),
    ({"flag": True}, lambda m: False),  # typed: the number 1 is not true
    ({"label": "shoes", "in_stock": True, "price": {"gt": 20}},
     lambda m: m["label"] == "shoes" and m["in_stock"] and m["price"] > 20),
    ({"label": "sandals"}, lambda m: False),
]


@pytest.mark.parametrize(("filters", "keep"), FILTER_CASES, ids=[str(f) for f, _ in FILTER_CASES])
def test_filters_return_the_top_k_of_matching_items(shop, filters, keep):
    cat, stored, ids = shop
    q = _unit(1, seed=11)[0]
    m = cat.search(q, k=20, filters=filters)
    want = _brute(stored, ids, q, 20, keep=lambda i: keep(_meta(i)))
    assert list(m.ids) == want
    assert all(keep(meta) for meta in m.metadata)


def test_filters_accept_numpy_scalars_and_an_empty_filter_means_none(shop):
    cat = shop[0]
    q = _unit(1, seed=14)[0]
    want = list(cat.search(q, k=5, filters={"price": 7}).ids)
    assert list(cat.search(q, k=5, filters={"price": np.int64(7)}).ids) == want
    assert list(cat.search(q, k=5, filters={"price": {"in": np.array([7.0])}}).ids) == want
    assert list(cat.search(q, k=5, filters={}).ids) == list(cat.search(q, k=5).ids)


def test_filters_follow_updates_to_metadata(tmp_path):
    cat, x, _ = _make(tmp_path / "c", 40, "int8")
    assert "id1" not in cat.search(x[1], k=40, filters={"label": "bag"}).ids
    cat.update(["id1"], metadata=[{"label": "bag"}])
    assert cat.search(x[1], k=1, filters={"label": "bag"}).ids[0] == "id1"
    cat.close()


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"price": {"between": [1, 2]}}, "unknown operator 'between'"),
        ({"label": ["shoes", "hat"]}, "write {'label': {'in': \\[...\\]}}"),
        ({"price": {"lt": True}}, "needs a number or a str"),
        ({"label": {"in": "shoes"}}, "need a list of values"),
        ({"label": {}}, "has no operator"),
        ({"meta": {"eq": {"a": 1}}}, "is not a str, finite number or bool"),
        (["label"], "filters must be a dict"),
    ],
)
def test_bad_filters_raise_with_the_fix(shop, filters, message):
    with pytest.raises(CatalogError, match=message):
        shop[0].search(_unit(1, seed=0)[0], filters=filters)


def test_compile_filters_builds_parameterised_sql():
    sql, params = compile_filters({"label": "x'; DROP TABLE items; --"})
    assert "DROP" not in sql and params[-1] == "x'; DROP TABLE items; --"


def test_exclude_drops_ids_and_ignores_unknown_ones(shop):
    cat, stored, ids = shop
    q = _unit(1, seed=12)[0]
    top = list(cat.search(q, k=5).ids)
    m = cat.search(q, k=5, exclude=np.array([top[0], top[2], "not-an-id"]))
    assert list(m.ids) == _brute(stored, ids, q, 5, keep=lambda i: ids[i] not in top[:3:2])
    both = cat.search(q, k=5, filters={"label": "hat"}, exclude=[top[1]])
    assert top[1] not in both.ids and all(md["label"] == "hat" for md in both.metadata)


# ------------------------------------------------------------------ diversity


def _clustered(tmp_path: Path) -> Catalog:
    """5 tight clusters of 30 items; items of cluster c carry {"cluster": c}."""
    rng = np.random.default_rng(0)
    centres = _unit(5, seed=40)
    x = np.concatenate([c + 0.05 * rng.standard_normal((30, DIM)) for c in centres])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cat = Catalog.create(tmp_path / "c", dim=DIM, encoder_id=ENC)
    cat.add([f"c{i // 30}-{i % 30}" for i in range(150)], x,
            [{"cluster": i // 30} for i in range(150)])
    return cat


def test_diversity_zero_equals_plain_search(shop):
    cat, _, _ = shop
    q = _unit(2, seed=13)
    plain, div0 = cat.search(q, k=10), cat.search(q, k=10, diversity=0.0)
    for a, b in zip(plain, div0):
        assert list(a.ids) == list(b.ids) and np.array_equal(a.scores, b.scores)


def test_diversity_spreads_results_across_clusters(tmp_path):
    cat = _clustered(tmp_path)
    q = cat.get("c0-0").vector * 0.8 + cat.get("c1-0").vector * 0.2
    plain = cat.search(q, k=5)
    diverse = cat.search(q, k=5, diversity=0.7)
    assert {m["cluster"] for m in plain.metadata} == {0}
    assert {m["cluster"] for m in diverse.metadata} == {0, 1}  # the pool holds clusters 0, 1
    assert diverse.ids[0] == plain.ids[0]  # the most relevant item still comes first

    def mean_pairwise_cosine(m: Matches) -> float:
        v = np.stack([cat.get(i).vector for i in m.ids])
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return float((v @ v.T)[np.triu_indices(len(v), 1)].mean())

    assert mean_pairwise_cosine(diverse) < mean_pairwise_cosine(plain) - 0.1
    cat.close()


def test_mmr_select_with_zero_diversity_keeps_relevance_order():
    rel = np.array([0.9, 0.8, 0.7, 0.1])
    v = np.array([[1, 0], [1, 0.01], [0, 1], [0.5, 0.5]], np.float32)
    assert mmr_select(rel, v, 3, 0.0).tolist() == [0, 1, 2]
    assert mmr_select(rel, v, 2, 0.6).tolist() == [0, 2]  # not the near-duplicate 1
