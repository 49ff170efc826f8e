import numpy as np
import pytest
from edgerec.sdk.evaluation.retrieval import label_retrieval, label_retrieval_per_query


def test_label_retrieval_matches_hand_computed_values():
    # 1-D "embeddings" on a line; inner product ranks by the other value times the query's.
    v = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]], np.float32)
    labels = ["a", "b", "a", "a"]
    r = label_retrieval(v, labels, k=2)
    # query 0: sims to 1,2,3 = .9, 0, .8 -> top2 = [1(b), 3(a)] -> rel [0,1]
    #   AP = (P@2 * 1) / min(2, 2) = 0.5 / 2 = 0.25; P@2 = 0.5; R@2 = 1/2
    # query 1 (b): no other b -> skipped
    # query 2: sims .0 .1 .2 -> top2 = [3(a), 1(b)] -> rel [1,0] -> AP = 1/2, P 0.5, R 1/2
    # query 3: sims .8 .74 .2 -> top2 = [0(a), 1(b)] -> rel [1,0] -> AP = 1/2, P 0.5, R 1/2
    assert r.queries == 3 and r.k == 2
    assert r.map_at_k == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert r.precision_at_k == pytest.approx(0.5)
    assert r.recall_at_k == pytest.approx(0.5)


def test_perfect_clusters_score_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    v = np.repeat(centres, 5, axis=0) + rng.normal(scale=1e-3, size=(15, 8))
    r = label_retrieval(v, np.repeat(["x", "y", "z"], 5), k=4)
    assert r.map_at_k == pytest.approx(1.0) and r.recall_at_k == pytest.approx(1.0)


def test_label_retrieval_refuses_mismatched_inputs():
    with pytest.raises(ValueError):
        label_retrieval(np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(ValueError):
        label_retrieval(np.zeros((1, 2)), ["a"])


def test_per_query_figures_average_to_the_report_and_name_their_rows():
    v = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]], np.float32)
    labels = ["a", "b", "a", "a"]
    q = label_retrieval_per_query(v, labels, k=2)
    # the same hand-computed queries as above: row 1 (the only "b") is skipped
    assert q.rows.tolist() == [0, 2, 3] and q.k == 2
    assert q.ap.tolist() == pytest.approx([0.25, 0.5, 0.5])
    r = label_retrieval(v, labels, k=2)
    assert q.ap.mean() == pytest.approx(r.map_at_k)
    assert q.precision.mean() == pytest.approx(r.precision_at_k)
    assert q.recall.mean() == pytest.approx(r.recall_at_k)


def test_two_encoders_on_the_same_labels_give_aligned_queries():
    rng = np.random.default_rng(1)
    labels = [*np.repeat(["x", "y", "z"], 6).tolist(), "alone"]
    a = label_retrieval_per_query(rng.normal(size=(19, 4)), labels, k=5)
    b = label_retrieval_per_query(rng.normal(size=(19, 8)), labels, k=5)
    assert a.rows.tolist() == b.rows.tolist() == list(range(18))
    assert a.ap.shape == b.ap.shape == (18,)


def test_queries_can_search_a_gallery_of_the_same_items_embedded_another_way():
    v = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]], np.float32)
    labels = ["a", "b", "a", "a"]
    same = label_retrieval_per_query(v, labels, k=2, gallery=v.copy())
    assert same.ap.tolist() == label_retrieval_per_query(v, labels, k=2).ap.tolist()
    # a gallery where item 2 moved next to item 0: query 0 now finds it first
    g = v.copy()
    g[2] = [0.95, 0.05]
    q = label_retrieval_per_query(v, labels, k=2, gallery=g)
    # query 0 now ranks item 2 ("a") first, then item 1 ("b"): AP@2 0.5 (0.25 before)
    assert q.ap[0] == pytest.approx(0.5) and same.ap[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="gallery"):
        label_retrieval_per_query(v, labels, gallery=v[:3])
