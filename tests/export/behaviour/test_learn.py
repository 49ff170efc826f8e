"""Learning the behaviour signals from real photos' vectors and events generated from their
labels (the sample's owners own one photo each, so their events have no shared item)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import label_events, sample_images
from edgerec.export.behaviour import build_behaviour, learn_behaviour, listwise_regression
from edgerec.export.behaviour.learn import cooccurrence_neighbours
from edgerec.export.errors import ExportError
from edgerec.export.options import BehaviourOptions
from edgerec.sdk import SourceItem, build_catalog
from edgerec.sdk.behaviour import BehaviourModel
from edgerec.sdk.bundle.manifest import UserVectorRecipe
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.evaluation.events import EventKind, Interaction, holdout_split, read_events

OPTIONS = BehaviourOptions(dim=4, neighbours=3, iterations=5, validation_users=40)


@pytest.fixture(scope="module")
def shop(tiny_bundle, tmp_path_factory):
    """100 real photos (10 labels) embedded by the tiny network, their ids, labels, vectors."""
    out = tmp_path_factory.mktemp("behaviour-shop") / "catalog"
    pairs = sample_images(10)
    items = [SourceItem(p.stem, p, {"label": label}) for p, label in pairs]
    build_catalog(tiny_bundle, out, items, dtype="float16")
    with Catalog.open(out, readonly=True) as cat:
        ids = list(cat)
        _, vectors = cat.vectors(ids)
    labels = {p.stem: label for p, label in pairs}
    return ids, [labels[i] for i in ids], vectors


@pytest.fixture(scope="module")
def log(shop, tmp_path_factory):
    ids, labels, _ = shop
    path = label_events(tmp_path_factory.mktemp("events") / "events.csv",
                        list(zip(ids, labels)))
    return read_events(path, known_items=ids)


def test_learns_popularity_neighbours_and_collaborative_vectors_from_shared_items(shop, log):
    ids, labels, vectors = shop
    learned = learn_behaviour(holdout_split(log, test_fraction=0).train, ids, vectors, OPTIONS,
                              log=lambda _m: None)
    model = learned.model
    assert model is not None and learned.reason == ""
    assert model.ids == tuple(ids) and model.collab.shape == (100, 4)
    bought = {e.item_id for e in log.interactions}
    warm = np.array([i in bought for i in ids])
    assert (model.learned == warm).all() and (model.popularity[~warm] == 0).all()
    assert (model.popularity[warm] > 0).all() and model.count.max() >= 3
    # every neighbour of a bought item was bought by someone with the same label
    for j in np.flatnonzero(warm):
        nb = model.neighbours[j][model.neighbours[j] >= 0]
        assert len(nb) and all(labels[n] == labels[j] and n != j for n in nb)
        assert (np.diff(model.neighbour_scores[j][: len(nb)]) <= 0).all()
    # cold items get their collaborative vector from the image mapping
    np.testing.assert_allclose(model.collab[~warm], model.map_vectors(vectors[~warm]),
                               atol=0.05 * np.abs(model.collab).max())


def test_the_file_round_trips_without_pickle_in_about_sixty_bytes_per_item(shop, log):
    ids, _, vectors = shop
    model = learn_behaviour(holdout_split(log, test_fraction=0).train, ids, vectors,
                            BehaviourOptions(dim=32, neighbours=4, iterations=2),
                            log=lambda _m: None).model
    data = model.to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    back = BehaviourModel.from_arrays(arrays)
    assert back.ids == model.ids and (back.neighbours == model.neighbours).all()
    np.testing.assert_allclose(back.collab, model.collab, atol=1e-6)
    per_item, model_bytes = BehaviourModel.sizes(arrays)
    assert per_item == 4 + 6 * 4 + 32 + 13 / 100 and model_bytes < 40_000  # 13 bytes of bits


def test_events_without_a_shared_item_learn_nothing_and_say_why(shop, tmp_path):
    ids, labels, vectors = shop
    path = label_events(tmp_path / "one-each.csv", list(zip(ids, labels)), users=10,
                        per_user=1, pool=1)  # user u buys label u's first item: no sharing
    train = holdout_split(read_events(path, known_items=ids), test_fraction=0).train
    learned = learn_behaviour(train, ids, vectors, OPTIONS, log=lambda _m: None)
    assert learned.model is None and "two different users" in learned.reason
    build = build_behaviour(train, ids, vectors, tmp_path / "work", OPTIONS,
                            recipe=UserVectorRecipe(), candidates=50, log=lambda _m: None)
    assert not build.record.shipped and build.file is None
    assert "two different users" in build.record.reason


def test_fusion_is_fitted_on_a_validation_cut_and_recorded(shop, log, tmp_path):
    ids, _, vectors = shop
    build = build_behaviour(holdout_split(log, test_fraction=0).train, ids, vectors,
                            tmp_path / "work", OPTIONS, recipe=UserVectorRecipe(),
                            candidates=30, log=lambda _m: None)
    fusion = build.record.fusion
    assert build.record.shipped and build.file is not None and build.file.is_file()
    assert fusion is not None and fusion.fitted and len(fusion.weights) == len(fusion.features)
    assert fusion.validation["users"] > 0 and 0 < fusion.validation["candidate_recall"] <= 1
    assert build.record.items == 100 and build.record.dim == 4 and build.record.neighbours == 3


def test_listwise_regression_puts_the_informative_feature_first():
    rng = np.random.default_rng(0)
    xs, positives = [], []
    for _ in range(50):
        x = rng.normal(size=(20, 2))
        pos = int(rng.integers(20))
        x[pos, 0] += 2.0  # feature 0 marks the positive, feature 1 is noise
        xs.append(x)
        positives.append(pos)
    w = listwise_regression(xs, positives, l2=0.1)
    assert w[0] > 1.0 and abs(w[1]) < 0.5


def test_sessions_split_a_users_events_at_long_gaps_and_add_their_co_occurrence():
    from edgerec.export.behaviour.learn import _neighbours, _sessions
    from edgerec.sdk.evaluation.events import Interaction

    ids = ["a", "b", "c", "d"]
    index = {item: j for j, item in enumerate(ids)}
    hour = 3600.0

    def events(user, pairs):
        return [Interaction(user, item, timestamp=t, line=n) for n, (item, t) in enumerate(pairs)]

    # both users buy a, b, c; only within a session do a and c go together
    train = {"u1": events("u1", [("a", 0), ("c", 0.1 * hour), ("b", 5 * hour)]),
             "u2": events("u2", [("a", 0), ("c", 0.2 * hour), ("b", 9 * hour), ("d", 9 * hour)])}
    sessions = _sessions(train, index, gap_minutes=60)
    assert sessions.shape == (4, 4)  # u1: {a, c}, {b}; u2: {a, c}, {b, d}
    assert sorted(map(tuple, sessions.toarray().astype(int).tolist())) == [
        (0, 1, 0, 0), (0, 1, 0, 1), (1, 0, 1, 0), (1, 0, 1, 0)]
    assert _sessions(train, index, gap_minutes=0) is None
    untimed = {"u1": [Interaction("u1", "a"), Interaction("u1", "b")]}
    assert _sessions(untimed, index, gap_minutes=60) is None
    from scipy.sparse import csr_matrix

    users = csr_matrix(np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float64))
    count = np.asarray(users.sum(axis=0)).ravel()
    _, plain_s = _neighbours(users, count, 3, 5.0)
    both, both_s = _neighbours(users, count, 3, 5.0, sessions, 1.0)
    a = index["a"]
    assert plain_s[a, 0] == pytest.approx(plain_s[a, 1])  # b and c tie on users alone
    assert both[a, 0] == index["c"] and both_s[a, 0] > plain_s[a, 0]
    # shrink 0 (allowed): the 4th item has no users; scores stay finite (0 for it, never NaN)
    lonely = csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0]], np.float64))
    _, scores = _neighbours(lonely, np.asarray(lonely.sum(axis=0)).ravel(), 3, 0.0,
                            lonely, 1.0)
    assert np.isfinite(scores).all()
    assert scores[a, 0] == pytest.approx(2 * 1 / np.sqrt(2 * 1))  # users + sessions, a-b


def test_cooccurrence_neighbours_score_shared_users_among_the_given_items_only():
    def events(user, *items, kind=EventKind.PURCHASE):
        return tuple(Interaction(user, item, kind) for item in items)

    train = {"u1": events("u1", "a", "b"), "u2": events("u2", "a", "b", "c"),
             "u3": events("u3", "c", "d", "x"),
             "u4": events("u4", "a", "d", kind=EventKind.DISMISS)}
    rows, scores = cooccurrence_neighbours(train, ["a", "b", "c", "d"], k=2, shrink=1.0)
    assert rows.shape == scores.shape == (4, 2) and rows.dtype == np.int64
    assert rows[0].tolist() == [1, 2]  # a: b (two users), then c (one); never d (a dismiss)
    np.testing.assert_allclose(scores[0], [2 / (2 + 1), 1 / (np.sqrt(2 * 2) + 1)], rtol=1e-6)
    assert rows[3].tolist() == [2, -1] and scores[3, 1] == 0  # "x" is not among the items
    twice, twice_scores = cooccurrence_neighbours(train, ["a", "b", "c", "d", "b"], k=2)
    assert twice[4].tolist() == twice[1].tolist() and twice[0].tolist() == [1, 2]
    np.testing.assert_array_equal(twice_scores[4], twice_scores[1])
    with pytest.raises(ExportError, match="at least 1"):
        cooccurrence_neighbours(train, ["a"], k=0)
