"""The behaviour feed on the device: Recommender.for_user with a bundle that has behaviour
signals (learned here from events generated from the labels of 100 real photos), its sources,
reasons and updates; a bundle without them ranks as before and says what it lacks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import behaviour_bundle, label_events, sample_images
from edgerec.sdk import (
    Bundle,
    BundleIntegrityError,
    Catalog,
    Encoder,
    Event,
    EventKind,
    Recommender,
    RecommenderOptions,
    SourceItem,
    add_images,
    build_catalog,
)
from edgerec.sdk.behaviour import SOURCES, BehaviourModel, load_behaviour
from edgerec.sdk.recommender import FEED_NOTE

T0 = 1_700_000_000.0
REASONS = ("bought together with ", "people who liked ", "looks like ", "popular ")


@pytest.fixture(scope="module")
def shop(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("feed-shop") / "catalog"
    pairs = sample_images(10)
    build_catalog(tiny_bundle, out, [SourceItem(p.stem, p, {"label": lab}) for p, lab in pairs],
                  dtype="float16")
    return out, {p.stem: lab for p, lab in pairs}


@pytest.fixture(scope="module")
def feed_bundle(tiny_bundle, shop, tmp_path_factory):
    """The tiny encoder plus behaviour signals learned from label-generated events."""
    path, labels = shop
    work = tmp_path_factory.mktemp("feed-bundle")
    events = label_events(work / "events.csv", list(labels.items()))
    return behaviour_bundle(tiny_bundle, path, events, work / "bundle")


def _pool(labels, label, n=5):
    return [i for i in sorted(labels, key=list(labels).index) if labels[i] == label][:n]


def _history(items, kind=EventKind.PURCHASE):
    return [Event(i, kind, T0 + 3600 * n) for n, i in enumerate(items)]


def test_the_bundle_lists_its_behaviour_file_with_its_hash(feed_bundle):
    record = feed_bundle.manifest.behaviour
    assert record.shipped and len(record.sha256) == 64 and record.fusion.fitted
    assert Bundle.open(feed_bundle.path).manifest.behaviour == record
    model, _, lacking = load_behaviour(feed_bundle)
    assert isinstance(model, BehaviourModel) and lacking == ""


def test_a_tampered_behaviour_file_is_refused(feed_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(feed_bundle.path, copy)
    with open(copy / feed_bundle.manifest.behaviour.file, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleIntegrityError):
        Bundle.open(copy)


def test_for_user_ranks_candidates_from_tagged_sources_with_the_strongest_reason(
        feed_bundle, shop):
    path, labels = shop
    label = sorted(set(labels.values()))[0]
    pool = _pool(labels, label)
    history = _history(pool[:2])
    with Recommender.create_from_bundle(feed_bundle, path) as rec:
        assert rec.has_behaviour and rec.lacks == ()
        recs = rec.for_user(history, k=10)
    assert recs.note.startswith(FEED_NOTE) and not recs.scorer_used and recs.lacks == ()
    assert len(recs) == 10 and not set(recs.ids) & set(pool[:2])
    assert all(r.sources and set(r.sources) <= set(SOURCES) for r in recs)
    assert all(r.reason.startswith(REASONS) for r in recs)
    # the items bought with the history by users of the same label come first, and say so
    assert len(set(recs.ids[:3]) & set(pool[2:])) >= 2
    top = recs[0]
    assert "cooc" in top.sources and top.because in pool[:2]
    assert top.reason in (f"bought together with {top.because}",
                          f"people who liked {top.because} liked this")
    assert "sources" in top.to_dict() and recs.to_dict()["lacks"] == []


def test_a_new_event_changes_the_next_for_user(feed_bundle, shop):
    path, labels = shop
    first, second = sorted(set(labels.values()))[:2]
    history = _history(_pool(labels, first)[:2])
    with Recommender.create_from_bundle(feed_bundle, path) as rec:
        before = rec.for_user(history, k=5).ids
        newer = [*history, Event(_pool(labels, second)[0], EventKind.PURCHASE, T0 + 86400 * 30)]
        after = rec.for_user(newer, k=5).ids
    assert before != after and set(after) & set(_pool(labels, second))


def test_an_item_added_on_the_device_is_rankable_at_once_through_its_photo(
        feed_bundle, shop, tmp_path):
    path, labels = shop
    copy = tmp_path / "catalog"
    shutil.copytree(path, copy)
    new = [(p, lab) for p, lab in sample_images(11) if p.stem not in labels][:3]
    with Catalog.open(copy) as cat, Recommender.create_from_bundle(feed_bundle, cat) as rec:
        before = rec.behaviour_index()
        with Encoder.create_from_bundle(feed_bundle) as encoder:
            add_images(cat, encoder, [SourceItem(p.stem, p, {"label": lab}) for p, lab in new])
        index = rec.behaviour_index()
        assert index is not before and len(index) == len(before) + 3
        rows = [index.row[p.stem] for p, _ in new]
        assert not index.learned[rows].any() and (index.popularity[rows] == 0).all()
        assert (index.neighbours[rows] == -1).all() and np.abs(index.collab[rows]).sum() > 0
        everything = rec.for_user(_history(_pool(labels, sorted(set(labels.values()))[0])[:2]),
                                  k=len(index))
    assert {p.stem for p, _ in new} <= set(everything.ids)


def test_a_bundle_without_behaviour_ranks_as_before_and_says_what_it_lacks(
        tiny_bundle, feed_bundle, shop):
    path, labels = shop
    history = _history(_pool(labels, sorted(set(labels.values()))[0])[:2])
    with Recommender.create_from_bundle(tiny_bundle, path) as plain:
        assert not plain.has_behaviour and plain.behaviour_index() is None
        recs = plain.for_user(history, k=8)
    assert recs.lacks and "no behaviour signals" in recs.lacks[0]
    assert all(not r.sources and r.reason.startswith("looks like ") for r in recs)
    options = RecommenderOptions(use_behaviour=False)
    with Recommender.create_from_bundle(feed_bundle, path, options) as off:
        same = off.for_user(history, k=8)
    assert same.ids == recs.ids and "turned off" in same.lacks[0]


def test_filters_and_exclusions_hold_for_every_source(feed_bundle, shop):
    path, labels = shop
    first, second = sorted(set(labels.values()))[:2]
    pool = _pool(labels, first)
    with Recommender.create_from_bundle(feed_bundle, path) as rec:
        recs = rec.for_user(_history(pool[:2]), k=5, filters={"label": second},
                            exclude=[_pool(labels, second)[0]])
    assert len(recs) == 5 and all(r.metadata["label"] == second for r in recs)
    assert _pool(labels, second)[0] not in recs.ids
