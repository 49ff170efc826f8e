"""The behaviour feed in `edgerec evaluate`: the device's own ranking with the bundle's
behaviour signals, evaluated on the split they were learned around, as the reference."""

from __future__ import annotations

import pytest
from conftest import behaviour_bundle, label_events, sample_images
from edgerec.sdk import SourceItem, build_catalog
from edgerec.sdk.evaluation.events import read_events
from edgerec.sdk.evaluation.protocol import EvaluateOptions, evaluate
from edgerec.sdk.evaluation.ranker import BaselineOptions

QUICK = BaselineOptions(skip=("visual_knn_mean", "label_popularity", "item_knn", "ease", "bpr",
                              "als", "vbpr"))


@pytest.fixture(scope="module")
def shop(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-feed-shop") / "catalog"
    pairs = sample_images(10)
    build_catalog(tiny_bundle, out, [SourceItem(p.stem, p, {"label": lab}) for p, lab in pairs],
                  dtype="float16")
    return out, [(p.stem, lab) for p, lab in pairs]


def test_the_behaviour_feed_is_the_reference_and_learns_from_shared_items(
        tiny_bundle, shop, tmp_path):
    catalog, items = shop
    events = label_events(tmp_path / "events.csv", items, users=60, per_user=4)
    bundle = behaviour_bundle(tiny_bundle, catalog, events, tmp_path / "bundle",
                              leave_last_out=True)
    log = read_events(events, known_items=[i for i, _ in items])
    result = evaluate(bundle, catalog, log, EvaluateOptions(resamples=50, latency_users=10,
                                                            baselines=QUICK))
    assert result.reference == "behaviour_feed" and result.split["protocol"] == "leave-last-out"
    assert not [w for w in result.warnings if "WARNING" in w]  # learned without held-out items
    feed, pixels = result.models["behaviour_feed"], result.models["visual_knn"]
    assert feed.all.mean("NDCG@20") > max(pixels.all.mean("NDCG@20"),
                                          result.models["random"].all.mean("NDCG@20"))
    assert feed.extras["fusion_fitted"] and result.latency.agreement >= 0.8
