"""The feed's hot path: the catalog reads it uses (ids and scores without metadata,
``search_ids``/``search_rows``; vectors by storage row pinned to a generation, ``item_rows``,
``vectors_at``) give what the general reads give, and the batched co-occurrence features
equal the per-item loop they replaced."""

from __future__ import annotations

import numpy as np
import pytest
from edgerec.sdk import Catalog, CatalogError
from edgerec.sdk.behaviour import BehaviourIndex, BehaviourModel, UserHistory, feature_rows
from edgerec.sdk.behaviour.feed import FEATURES


@pytest.fixture()
def catalog(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((60, 16)).astype(np.float32)
    ids = [f"sku-{j}" for j in range(60)]
    cat = Catalog.create(tmp_path / "catalog", dim=16, encoder_id="enc")
    cat.add(ids, vectors, [{"label": "ab"[j % 2]} for j in range(60)])
    cat.remove(["sku-3"])  # a dead row: storage rows and insertion order now differ
    yield cat
    cat.close()


def test_search_ids_gives_the_ids_and_scores_of_search(catalog):
    query = np.random.default_rng(4).standard_normal(16).astype(np.float32)
    for filters, exclude in ((None, None), ({"label": "a"}, ["sku-0", "sku-2"])):
        full = catalog.search(query, 12, filters=filters, exclude=exclude)
        ids, scores = catalog.search_ids(query, 12, filters=filters, exclude=exclude)
        assert ids == tuple(full.ids) and np.array_equal(scores, np.asarray(full.scores))
    with pytest.raises(CatalogError):
        catalog.search_ids(np.zeros((2, 16), np.float32), 3)


def test_vectors_at_reads_by_storage_row_until_the_generation_changes(catalog):
    generation, ids, rows = catalog.item_rows()
    assert ids == tuple(catalog) and generation == catalog.generation
    pick = [5, 0, 40]
    _, expected = catalog.vectors([ids[j] for j in pick])
    assert np.array_equal(catalog.vectors_at(rows[pick], generation), expected)
    catalog.add(["new"], np.ones((1, 16), np.float32))
    assert catalog.vectors_at(rows[pick], generation) is None


def test_search_rows_names_the_items_of_search_through_item_rows(catalog):
    query = np.random.default_rng(5).standard_normal(16).astype(np.float32)
    generation, rows, scores = catalog.search_rows(query, 10, exclude=["sku-1"])
    at_generation, ids, storage = catalog.item_rows()
    by_row = dict(zip(storage.tolist(), ids))
    full = catalog.search(query, 10, exclude=["sku-1"])
    assert generation == at_generation
    assert [by_row[r] for r in rows.tolist()] == list(full.ids)
    assert np.array_equal(scores, np.asarray(full.scores))


def _loop_cooc(rows, history, index, recent):
    """The co-occurrence features as first written: one history item at a time."""
    position = np.full(len(index), -1, np.int64)
    position[rows] = np.arange(len(rows))
    recent_rows, recent_w = history.rows[-recent:], history.weights[-recent:]
    cooc, best = np.zeros(len(rows)), np.zeros(len(rows))
    cooc_from = np.full(len(rows), -1, np.int64)
    offset = len(history) - len(recent_rows)
    for h in range(len(recent_rows)):
        targets = index.neighbours[recent_rows[h]]
        ok = targets >= 0
        pos = position[targets[ok]]
        term = recent_w[h] * index.neighbour_scores[recent_rows[h]][ok]
        keep = pos >= 0
        pos, term = pos[keep], term[keep]
        np.add.at(cooc, pos, term)
        better = term > best[pos]
        best[pos[better]] = term[better]
        cooc_from[pos[better]] = offset + h
    return cooc, cooc_from


def test_the_batched_co_occurrence_features_equal_the_per_item_loop():
    rng = np.random.default_rng(6)
    n, d = 300, 4
    neighbours = np.array([rng.choice(n, 5, replace=False) for _ in range(n)], np.int64)
    neighbours[rng.random((n, 5)) < 0.2] = -1
    scores = rng.choice([0.0, 0.25, 0.5, 1.0], (n, 5)).astype(np.float32)  # ties, zeros
    collab = rng.standard_normal((n, d)).astype(np.float32)
    model = BehaviourModel(
        ids=tuple(f"i{j}" for j in range(n)), popularity=rng.random(n).astype(np.float32),
        count=np.ones(n, np.float32), neighbours=neighbours, neighbour_scores=scores,
        collab=collab, learned=np.ones(n, bool), gram=(collab.T @ collab).astype(np.float32),
        mapping_w=np.zeros((8, d), np.float32), mapping_b=np.zeros(d, np.float32),
        regularization=0.1, alpha=1.0)
    index = BehaviourIndex.build(model, model.ids, lambda ids: np.zeros((len(ids), 8)))
    for seed in range(5):
        pick = np.random.default_rng(seed)
        history = UserHistory(pick.choice(n, 30, replace=False),
                              pick.choice([0.5, 1.0, 2.0], 30), ())
        rows = pick.choice(n, 120, replace=False)
        features, cooc_from = feature_rows(rows, np.zeros(120, np.uint8), np.zeros(120),
                                           np.zeros(120), history, index, 20)
        cooc, expected_from = _loop_cooc(rows, history, index, 20)
        assert np.array_equal(features[:, FEATURES.index("cooc")], cooc.astype(np.float32))
        assert np.array_equal(cooc_from, expected_from)
