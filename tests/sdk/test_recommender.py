"""The recommender on real engines and real photos: similar, for_user, reasons, the scorer seam."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import reversing_scorer_bundle, sample_images
from edgerec.sdk import (
    ArtifactNotFoundError,
    Bundle,
    Catalog,
    CatalogError,
    EncoderMismatchError,
    Event,
    EventKind,
    ModelError,
    Profile,
    ProfileError,
    Recommendation,
    Recommendations,
    Recommender,
    RecommenderOptions,
    Role,
    SourceItem,
    build_catalog,
)
from edgerec.sdk.bundle.manifest import ScorerRecord, UserVectorRecipe
from edgerec.sdk.bundle.writer import NewArtifact, write_bundle
from edgerec.sdk.recommender import NO_SCORER_NOTE, NOT_SHIPPED_NOTE, SCORER_OFF_NOTE
from edgerec.sdk.scorer import ScorerOptions

DAY = 86400.0
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def shop(tiny_bundle, tmp_path_factory):
    """A float16 catalog of 100 real photos (10 per label) embedded by the tiny network."""
    out = tmp_path_factory.mktemp("shop") / "catalog"
    items = [SourceItem(p.stem, p, {"label": label, "n": i})
             for i, (p, label) in enumerate(sample_images(10))]
    build_catalog(tiny_bundle, out, items, dtype="float16")
    return out


@pytest.fixture()
def rec(tiny_bundle, shop):
    with Recommender.create_from_bundle(tiny_bundle, shop) as r:
        yield r


def _ids(catalog_path):
    with Catalog.open(catalog_path, readonly=True) as cat:
        return list(cat)


def _vec(rec, item_id):
    return rec.catalog.get(item_id).vector


# ------------------------------------------------------------------ similar


def test_similar_to_an_item_excludes_it_and_says_why(rec, shop):
    item = _ids(shop)[0]
    recs = rec.similar(item_id=item, k=5)
    assert isinstance(recs, Recommendations) and len(recs) == 5
    assert item not in recs.ids
    assert all(r.reason == f"looks like {item}" and r.because == item for r in recs)
    assert list(recs.scores) == sorted(recs.scores, reverse=True)
    expected = rec.catalog.search(_vec(rec, item), 6)
    assert recs.ids == [i for i in expected.ids if i != item][:5]
    assert not recs.scorer_used and recs.note == ""


def test_similar_applies_filters_and_exclusions(rec, shop):
    item = _ids(shop)[0]
    recs = rec.similar(item_id=item, k=8, filters={"label": "hat"})
    assert len(recs) == 8 and {r.metadata["label"] for r in recs} == {"hat"}
    banned = recs.ids[:3]
    again = rec.similar(item_id=item, k=8, filters={"label": "hat"}, exclude=banned)
    assert not set(banned) & set(again.ids)
    ranged = rec.similar(item_id=item, k=50, filters={"n": {"lt": 20}})
    assert len(ranged) == 19 and all(r.metadata["n"] < 20 for r in ranged)
    diverse = rec.similar(item_id=item, k=5, diversity=0.7)
    assert len(diverse) == 5 and item not in diverse.ids


def test_similar_to_a_photo_finds_that_photo_first(teacher_bundle, tmp_path):
    items = [SourceItem(p.stem, p, {"label": label}) for p, label in sample_images(3)]
    build_catalog(teacher_bundle, tmp_path / "cat", items)
    with Recommender.create_from_bundle(teacher_bundle, tmp_path / "cat") as rec:
        photo, label = sample_images(3)[4]
        recs = rec.similar(photo.read_bytes(), k=3)
    assert recs[0].item_id == photo.stem and recs[0].score > 0.95
    assert recs[0].metadata == {"label": label}
    assert all(r.reason == "looks like your photo" and r.because is None for r in recs)


def test_similar_rejects_unknown_items_and_ambiguous_queries(rec):
    with pytest.raises(CatalogError, match="no item 'nope'"):
        rec.similar(item_id="nope")
    item = _ids(rec.catalog.path)[0]
    with pytest.raises(TypeError, match=f"pass item_id='{item}'"):
        rec.similar(item)
    with pytest.raises(TypeError, match="exactly one"):
        rec.similar()
    with pytest.raises(TypeError, match="exactly one"):
        rec.similar(b"x", item_id="a")
    with pytest.raises(CatalogError, match="k must be"):
        rec.similar(item_id=_ids(rec.catalog.path)[0], k=0)
    with pytest.raises(CatalogError, match="list of ids"):
        rec.similar(item_id=_ids(rec.catalog.path)[0], exclude="abc")


# ------------------------------------------------------------------ for_user


def test_for_user_excludes_seen_and_dismissed_items(tiny_bundle, shop, rec):
    ids = _ids(shop)
    history = [Event(ids[0], "purchase", T0), Event(ids[1], "view", T0),
               Event(ids[2], "dismiss", T0)]
    recs = rec.for_user(history, k=20)
    assert len(recs) == 20 and not {ids[0], ids[1], ids[2]} & set(recs.ids)
    keep_seen = RecommenderOptions(exclude_seen=False)
    with Recommender.create_from_bundle(tiny_bundle, shop, keep_seen) as r2:
        full = r2.for_user(history, k=100)
    assert {ids[0], ids[1]} <= set(full.ids) and ids[2] not in full.ids


def test_recent_events_pull_the_ranking_towards_them(rec, shop):
    ids = _ids(shop)
    a, b = ids[0], ids[55]  # different labels
    seen = [a, b]
    near_a = rec.catalog.search(_vec(rec, a), 1, exclude=seen).ids[0]
    near_b = rec.catalog.search(_vec(rec, b), 1, exclude=seen).ids[0]
    assert near_a != near_b
    a_recent = rec.for_user([Event(b, "purchase", T0), Event(a, "purchase", T0 + 365 * DAY)], 1)
    b_recent = rec.for_user([Event(a, "purchase", T0), Event(b, "purchase", T0 + 365 * DAY)], 1)
    assert a_recent.ids == [near_a] and b_recent.ids == [near_b]


def test_a_dismiss_pushes_look_alikes_of_the_item_down(rec, shop):
    ids = _ids(shop)
    bought = [Event(ids[30], "purchase", T0)]
    before = rec.for_user(bought, k=21)
    dismissed = before.ids[0]
    after = rec.for_user([*bought, Event(dismissed, "dismiss", T0 + 60)], k=20)
    assert dismissed not in after.ids
    d = _vec(rec, dismissed)

    def closeness(recs):
        return float(np.mean([_vec(rec, i) @ d for i in recs.ids[:5]]))

    old_top = Recommendations(before.items[1:])
    assert closeness(after) < closeness(old_top)


def test_reasons_name_the_closest_history_item_and_its_strongest_event(rec, shop):
    ids = _ids(shop)
    hat, shoe = ids[20], ids[60]  # sample_images sorts labels: dress, hat, ... shoes, ...
    history = [Event(hat, "view", T0), Event(shoe, "view", T0 + 1),
               Event(shoe, "purchase", T0 + 2)]
    recs = rec.for_user(history, k=30)
    hv, sv = _vec(rec, hat), _vec(rec, shoe)
    for r in recs:
        v = _vec(rec, r.item_id)
        closest = hat if v @ hv > v @ sv else shoe
        assert r.because == closest
        verb = "viewed" if closest == hat else "bought"
        assert r.reason == f"looks like {closest} you {verb}"
    assert {r.because for r in recs} == {hat, shoe}


def test_for_user_applies_filters_and_exclusions(rec, shop):
    ids = _ids(shop)
    recs = rec.for_user([Event(ids[0], "purchase", T0)], k=5, filters={"label": "shorts"},
                        exclude=[ids[75]])
    assert len(recs) == 5 and {r.metadata["label"] for r in recs} == {"shorts"}
    assert ids[75] not in recs.ids


def test_without_a_scorer_the_result_says_it_ranked_by_inner_product(rec, shop):
    ids = _ids(shop)
    u = rec.user_vector([Event(ids[0], "purchase", T0), Event(ids[9], "click", T0)])
    recs = rec.for_user([Event(ids[0], "purchase", T0), Event(ids[9], "click", T0)], k=5)
    assert not rec.has_scorer and not recs.scorer_used and recs.note == NO_SCORER_NOTE
    expected = rec.catalog.search(u, 5, exclude=[ids[0], ids[9]])
    assert recs.ids == list(expected.ids)
    np.testing.assert_allclose(recs.scores, expected.scores, rtol=1e-6)


def test_unknown_history_items_are_ignored_and_reported(rec, shop):
    ids = _ids(shop)
    recs = rec.for_user([Event("gone-1", "purchase", T0), Event(ids[3], "click", T0)], k=3)
    assert len(recs) == 3 and recs.ignored == ("gone-1",)
    assert "ignored 1 history item(s) not in the catalog (gone-1)" in recs.note
    empty = rec.for_user([Event("gone-1", "purchase", T0)], k=3)
    assert len(empty) == 0 and empty.ignored == ("gone-1",) and "no usable history" in empty.note
    nothing = rec.for_user([], k=3)
    assert len(nothing) == 0 and "the history is empty" in nothing.note


def test_for_user_by_id_reads_the_profile_store_and_forget_erases_it(tiny_bundle, shop,
                                                                    tmp_path):
    ids = _ids(shop)
    with Recommender.create_from_bundle(tiny_bundle, shop, profiles=tmp_path / "p.sqlite") as rec:
        rec.profiles.record("alice", [Event(ids[40], "purchase", T0),
                                      Event(ids[41], "add_to_cart", T0 + 5)])
        by_id = rec.for_user("alice", k=5)
        assert by_id.ids == rec.for_user(rec.profiles.profile("alice"), k=5).ids
        assert by_id[0].reason.endswith(("you bought", "you added to your cart"))
        assert rec.profiles.forget("alice") == 2
        assert len(rec.for_user("alice", k=5)) == 0 and rec.profiles.users() == []
    with Recommender.create_from_bundle(tiny_bundle, shop) as rec, \
            pytest.raises(ProfileError, match="no profile store"):
        rec.for_user("alice")


# ------------------------------------------------------------------ the scorer seam


def test_a_bundle_scorer_re_ranks_the_candidates(tiny_bundle, shop, tmp_path):
    bundle = reversing_scorer_bundle(tiny_bundle, tmp_path / "b", 3 * tiny_bundle.embedding_dim)
    assert bundle.encoder_id == tiny_bundle.encoder_id
    ids = _ids(shop)
    history = [Event(ids[12], "purchase", T0)]
    options = RecommenderOptions(candidates=20)
    with Recommender.create_from_bundle(bundle, shop, options) as rec:
        assert rec.has_scorer
        recs = rec.for_user(history, k=5)
        u = rec.user_vector(history)
        pool = rec.catalog.search(u, 20, exclude=[ids[12]])
    assert recs.scorer_used and recs.note == ""
    ip = dict(zip(pool.ids, pool.scores))
    assert set(recs.ids) <= set(ip)
    for r in recs:  # the score is the scorer's logit, -u.v
        np.testing.assert_allclose(r.score, -ip[r.item_id], atol=1e-4)
    rest = [s for i, s in ip.items() if i not in recs.ids]
    assert max(ip[i] for i in recs.ids) <= min(rest) + 1e-4  # the 5 lowest of the 20
    assert list(recs.scores) == sorted(recs.scores, reverse=True)
    off_options = RecommenderOptions(candidates=20, use_scorer=False)
    with Recommender.create_from_bundle(bundle, shop, off_options) as plain:
        off = plain.for_user(history, k=5)
    assert not off.scorer_used and off.note == SCORER_OFF_NOTE and off.ids == list(pool.ids[:5])


def test_scorer_mode_and_precision_choose_how_the_scorer_runs(tiny_bundle, shop, tmp_path):
    bundle = reversing_scorer_bundle(tiny_bundle, tmp_path / "b", 3 * tiny_bundle.embedding_dim)
    engine = RecommenderOptions(scorer=ScorerOptions(mode="engine"))
    with Recommender.create_from_bundle(bundle, shop, engine) as rec:
        assert rec.has_scorer and "scorer/onnx/fp32" in repr(rec)
    with pytest.raises(ArtifactNotFoundError):  # this bundle has no folded weights
        Recommender.create_from_bundle(bundle, shop,
                                       RecommenderOptions(scorer=ScorerOptions(mode="folded")))
    with pytest.raises(ArtifactNotFoundError):  # nor an int8 scorer
        Recommender.create_from_bundle(bundle, shop, RecommenderOptions(
            scorer=ScorerOptions(mode="engine", precision="int8")))
    with pytest.raises(ValueError):
        ScorerOptions(mode="gpu-please")


def test_a_scorer_of_the_wrong_width_is_refused(tiny_bundle, shop, tmp_path):
    bundle = reversing_scorer_bundle(tiny_bundle, tmp_path / "b", 2 * tiny_bundle.embedding_dim)
    with pytest.raises(ModelError, match=r"\[u, v, u\*v\]"):
        Recommender.create_from_bundle(bundle, shop)


# ------------------------------------------------------------------ wiring and results


def test_a_catalog_from_another_encoder_is_refused(teacher_bundle, shop):
    with pytest.raises(EncoderMismatchError, match="rebuild the catalog"):
        Recommender.create_from_bundle(teacher_bundle, shop)


def test_a_passed_catalog_stays_open_and_a_path_is_closed(tiny_bundle, shop):
    with Catalog.open(shop, readonly=True) as cat:
        rec = Recommender.create_from_bundle(tiny_bundle, cat)
        rec.close()
        rec.close()
        assert len(cat) == 100
    rec = Recommender.create_from_bundle_path(tiny_bundle.path, str(shop))
    catalog = rec.catalog
    rec.close()
    with pytest.raises(CatalogError, match="closed"):
        len(catalog)


def test_results_are_small_json_ready_dataclasses(rec, shop):
    recs = rec.for_user(Profile("u", (Event(_ids(shop)[5], EventKind.CLICK, T0),)), k=4)
    assert isinstance(recs[0], Recommendation) and len(recs[1:3]) == 2
    data = json.loads(json.dumps(recs.to_dict()))
    assert [d["item_id"] for d in data["results"]] == recs.ids
    assert set(data["results"][0]) == {"item_id", "score", "metadata", "reason", "because"}
    assert data["scorer_used"] is False and data["note"] == NO_SCORER_NOTE
    assert repr(recs).startswith("Recommendations(4 items: ")


def test_options_are_validated():
    with pytest.raises(ValueError, match="candidates"):
        RecommenderOptions(candidates=0)
    with pytest.raises(ValueError, match="half_life_days"):
        RecommenderOptions(half_life_days=-1)
    with pytest.raises(ProfileError, match="unknown event kind"):
        RecommenderOptions(event_weights={"like": 1})
    opts = RecommenderOptions(event_weights={"view": 1.0})
    assert opts.event_weights[EventKind.VIEW] == 1.0
    assert opts.event_weights[EventKind.PURCHASE] == 2.0


def test_catalog_vectors_returns_the_known_ids_in_the_order_asked(rec, shop):
    ids = _ids(shop)
    found, vectors = rec.catalog.vectors([ids[3], "nope", ids[1], ids[3]])
    assert found == (ids[3], ids[1], ids[3]) and vectors.shape == (3, 16)
    np.testing.assert_array_equal(vectors[1], _vec(rec, ids[1]))
    assert rec.catalog.vectors(["nope"])[1].shape == (0, 16)


def test_the_bundles_scorer_record_sets_c_and_the_user_vector_recipe(tiny_bundle, shop,
                                                                      tmp_path):
    """The device ranks with the C and the user-vector recipe the scorer was trained and gated
    with; options still override them."""
    record = ScorerRecord(candidates=12, user_vector=UserVectorRecipe(
        half_life_days=2.0, event_weights={"view": 1.5}))
    bundle = reversing_scorer_bundle(tiny_bundle, tmp_path / "b",
                                     3 * tiny_bundle.embedding_dim, scorer=record)
    assert Bundle.open(bundle.path).manifest.scorer == record
    ids = _ids(shop)
    history = [Event(ids[3], "purchase", T0), Event(ids[40], "view", T0 + 5 * DAY)]
    with Recommender.create_from_bundle(bundle, shop) as rec:
        assert rec.candidates == 12 and rec.half_life_days == 2.0
        assert rec.event_weights[EventKind.VIEW] == 1.5
        recorded = rec.for_user(history, k=5)
    explicit = RecommenderOptions(candidates=12, half_life_days=2.0,
                                  event_weights={"view": 1.5})
    plain = reversing_scorer_bundle(tiny_bundle, tmp_path / "plain",
                                    3 * tiny_bundle.embedding_dim)
    with Recommender.create_from_bundle(plain, shop, explicit) as rec:
        assert rec.for_user(history, k=5).ids == recorded.ids
    with Recommender.create_from_bundle(bundle, shop, RecommenderOptions(candidates=30)) as rec:
        assert rec.candidates == 30 and rec.half_life_days == 2.0


def test_a_scorer_the_export_left_out_is_said_so(tiny_bundle, shop, tmp_path):
    record = ScorerRecord(shipped=False, reason="validation NDCG@10 0.012 < u.v 0.013")
    arts = [NewArtifact(tiny_bundle.artifact_path(a), a.role, a.precision, a.inputs,
                        a.outputs, a.output, a.layout, a.file, a.engine)
            for a in tiny_bundle.artifacts(Role.ENCODER)]
    bundle = write_bundle(tmp_path / "b", artifacts=arts, preprocessing=tiny_bundle.preprocessing,
                          embedding_dim=tiny_bundle.embedding_dim, scorer=record)
    with Recommender.create_from_bundle(bundle, shop) as rec:
        recs = rec.for_user([Event(_ids(shop)[3], "purchase", T0)], k=3)
    assert not recs.scorer_used and len(recs) == 3
    assert recs.note.startswith(NOT_SHIPPED_NOTE) and "0.012" in recs.note
