"""The device's ranking (edgerec.sdk.ranking): one function for the recommender, the evaluation
and the export's parity gate."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reversing_scorer_bundle, sample_images
from edgerec.sdk import Catalog, Event, Recommender, RecommenderOptions, SourceItem, build_catalog
from edgerec.sdk.evaluation.protocol import DeviceRanker
from edgerec.sdk.evaluation.task import CatalogData, EvalTask
from edgerec.sdk.ranking import MatrixCandidates, pool_size, rank_for_user, top_rows
from edgerec.sdk.scorer import Scorer

T0 = 1_700_000_000.0


def _reverse(u, vectors):
    """A pure-logic stand-in scorer: the negated inner product (reverses stage 1's order)."""
    return -(np.asarray(vectors) @ np.asarray(u)).astype(np.float32)


def test_top_rows_breaks_ties_by_the_tiebreak_and_never_returns_excluded_rows():
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert top_rows(scores, 3).tolist() == [1, 2, 4]
    assert top_rows(scores, 3, tiebreak=np.array([0, 9, 5, 0, 1])).tolist() == [4, 2, 1]
    assert top_rows(scores, 3, exclude=np.array([2])).tolist() == [1, 4, 3]
    assert top_rows(scores, 10, exclude=np.arange(5)).tolist() == []


def test_without_a_scorer_the_top_k_is_the_inner_product_order():
    v = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    u = v[0]
    ranking = rank_for_user(u, MatrixCandidates(v), None, k=5, candidates=20)
    assert not ranking.reranked and len(ranking.candidates) == 5  # no need for C
    assert ranking.keys.tolist() == np.argsort(-(v @ u), kind="stable")[:5].tolist()


def test_a_scorer_re_ranks_only_the_top_c():
    v = np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32)
    u = v[3]
    ranking = rank_for_user(u, MatrixCandidates(v, exclude=np.array([3])), _reverse, k=4,
                            candidates=30)
    ip = v @ u
    top30 = np.argsort(-ip, kind="stable")
    top30 = top30[top30 != 3][:30]
    assert ranking.reranked and len(ranking.candidates) == 30
    assert ranking.keys.tolist() == top30[::-1][:4].tolist()  # the 4 lowest of the 30
    np.testing.assert_allclose(ranking.scores, -ip[ranking.keys], rtol=1e-5)
    assert pool_size(50, 30, True) == 50 and pool_size(50, 30, False) == 50


@pytest.fixture(scope="module")
def shop(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranking") / "catalog"
    items = [SourceItem(p.stem, p, {"label": label}) for p, label in sample_images(10)]
    build_catalog(tiny_bundle, out, items, dtype="float16")
    return out


def test_the_recommender_and_the_evaluation_rank_alike(tiny_bundle, shop, tmp_path):
    """Recommender.for_user and the evaluation's device model call the same function: given
    the same history they return the same items in the same order."""
    bundle = reversing_scorer_bundle(tiny_bundle, tmp_path / "b", 3 * tiny_bundle.embedding_dim)
    with Catalog.open(shop, readonly=True) as cat:
        data = CatalogData.load(cat)
    history = [Event(data.ids[i], "purchase", T0 + i) for i in (4, 17, 33)]
    options = RecommenderOptions(candidates=25)
    with Recommender.create_from_bundle(bundle, shop, options) as rec, \
            Scorer.create_from_bundle(bundle) as scorer:
        device = rec.for_user(history, k=8)
        u = rec.user_vector(history)
        banned = np.array(sorted(data.index[e.item_id] for e in history))
        task = EvalTask(("alice",), (banned,), (np.array([0]),), u[None], np.zeros(0, np.int64),
                        np.zeros(0, np.int64), {"alice": 0}, np.zeros(len(data.ids)),
                        np.zeros(len(data.ids), bool), 0, 0)
        order = np.arange(len(data.ids))  # the catalog breaks ties by row, as here
        evaluated = DeviceRanker(scorer, task, data, 25, order).top(0, banned, 8)
    assert device.scorer_used
    assert device.ids == [data.ids[j] for j in evaluated]
