"""`compare_encoders` / `edgerec evaluate --against`: the same feed with two encoders (the real
teacher and the tiny network) paired on one split of the same events."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import behaviour_bundle, label_events, sample_images
from edgerec.sdk import SourceItem, build_catalog
from edgerec.sdk.cli.app import main
from edgerec.sdk.errors import CatalogError, EncoderMismatchError
from edgerec.sdk.evaluation.compare import RANKINGS, compare_encoders, rank_moves
from edgerec.sdk.evaluation.events import read_events
from edgerec.sdk.evaluation.protocol import EvaluateOptions

OPTIONS = EvaluateOptions(resamples=50)


@pytest.fixture(scope="module")
def shop(teacher_bundle, tiny_bundle, tmp_path_factory):
    """The same 60 sample photos as two catalogs (teacher, tiny), label-driven events, and a
    bundle with behaviour signals per encoder, learned on the leave-last-out split."""
    root = tmp_path_factory.mktemp("compare-shop")
    pairs = sample_images(6)
    items = [(p.stem, lab) for p, lab in pairs]
    sources = [SourceItem(p.stem, p, {"label": lab}) for p, lab in pairs]
    events = label_events(root / "events.csv", items, users=60, per_user=4)
    out = {"events": events, "items": items}
    for name, bundle in (("teacher", teacher_bundle), ("tiny", tiny_bundle)):
        catalog = root / f"{name}-catalog"
        build_catalog(bundle, catalog, sources, dtype="float16")
        out[name] = (behaviour_bundle(bundle, catalog, events, root / f"{name}-feed",
                                      leave_last_out=True), catalog)
        out[f"{name}-plain"] = (bundle, catalog)
    return out


def _log(shop):
    return read_events(shop["events"], known_items=[i for i, _ in shop["items"]])


def test_a_bundle_against_itself_has_zero_margins(shop):
    result = compare_encoders(shop["tiny"], shop["tiny"], _log(shop), OPTIONS,
                              labels=("first", "second"))
    assert result.device_models == {"first": "behaviour_feed", "second": "behaviour_feed"}
    assert set(result.models) == {f"{r}[{s}]" for r in RANKINGS for s in ("first", "second")}
    for ranking in RANKINGS:
        for ci in result.margins[ranking].values():
            assert (ci.mean, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert result.b_at_least_a and result.split["evaluated_users"] == 60
    for moves in result.moves.values():
        assert moves.items >= 60 and moves.changed == moves.up == moves.down == 0


def test_the_margins_are_the_paired_difference_of_the_two_encoders(shop):
    result = compare_encoders(shop["teacher"], shop["tiny"], _log(shop), OPTIONS,
                              labels=("teacher", "tiny"))
    models = result.models
    for ranking in RANKINGS:
        for metric in ("NDCG@20", "MRR"):
            diff = (models[f"{ranking}[tiny]"].all.mean(metric)
                    - models[f"{ranking}[teacher]"].all.mean(metric))
            assert result.margins[ranking][metric].mean == pytest.approx(diff, abs=1e-9)
    # users buy within one label: the teacher's pixels find the label, the tiny network's less
    assert result.margins["visual_knn"]["NDCG@20"].mean < 0
    assert json.loads(json.dumps(result.to_dict()))["labels"] == ["teacher", "tiny"]
    moves = result.moves["visual_knn"]
    assert moves.changed == moves.up + moves.down > 0 and moves.down > moves.up
    assert moves.within_k == sum(moves.by_size.values()) >= moves.crossed_k


def test_rank_moves_counts_how_far_each_held_out_item_moved():
    moves = rank_moves(np.array([1, 5, 19, 21, 40, 3]), np.array([2, 5, 21, 19, 90, 9]), k=20)
    assert (moves.items, moves.changed, moves.up, moves.down) == (6, 5, 1, 4)
    # 40 -> 90 never reaches the top 20; 19 <-> 21 cross the line both ways
    assert moves.within_k == 4 and moves.crossed_k == 2
    assert moves.by_size == {"1": 1, "2": 2, "3-5": 0, ">5": 1}
    with pytest.raises(ValueError, match="one shape"):
        rank_moves(np.array([1, 2]), np.array([1]), k=20)


def test_a_bundle_without_behaviour_or_scorer_is_compared_by_its_pixels(shop):
    result = compare_encoders(shop["teacher-plain"], shop["tiny"], _log(shop), OPTIONS)
    assert result.device_models == {"a": "visual_knn", "b": "behaviour_feed"}
    a = result.models
    assert a["device[a]"].all.mean("NDCG@20") == a["visual_knn[a]"].all.mean("NDCG@20")


def test_catalogs_of_other_items_or_another_encoder_are_refused(shop, tmp_path, tiny_bundle):
    fewer = tmp_path / "fewer"
    build_catalog(tiny_bundle, fewer, [SourceItem(p.stem, p, {"label": lab})
                                       for p, lab in sample_images(3)])
    with pytest.raises(CatalogError, match="same items file"):
        compare_encoders(shop["teacher"], (shop["tiny"][0], fewer), _log(shop), OPTIONS)
    with pytest.raises(EncoderMismatchError, match="side 'b'"):
        compare_encoders(shop["teacher"], (shop["tiny"][0], shop["teacher"][1]), _log(shop),
                         OPTIONS)
    with pytest.raises(ValueError, match="two different"):
        compare_encoders(shop["teacher"], shop["tiny"], _log(shop), OPTIONS, labels=("x", "x"))


def test_cli_evaluate_against_prints_the_margins_as_json(shop, capsys):
    (teacher, teacher_catalog), (tiny, tiny_catalog) = shop["teacher"], shop["tiny"]
    assert main(["evaluate", "--bundle", str(tiny.path), "--catalog", str(tiny_catalog),
                 "--events", str(shop["events"]), "--against", str(teacher.path),
                 str(teacher_catalog), "--labels", "teacher", "tiny", "--resamples", "50",
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["labels"] == ["teacher", "tiny"]
    assert set(payload["margins"]) == set(RANKINGS) == set(payload["moves"])
    assert payload["margins"]["device"]["NDCG@20"]["mean"] == pytest.approx(
        payload["models"]["device[tiny]"]["all"]["metrics"]["NDCG@20"]["mean"]
        - payload["models"]["device[teacher]"]["all"]["metrics"]["NDCG@20"]["mean"])
    assert main(["evaluate", "--bundle", str(tiny.path), "--catalog", str(tiny_catalog),
                 "--events", str(shop["events"]), "--against", str(teacher.path),
                 str(teacher_catalog), "--resamples", "50"]) == 0
    text = capsys.readouterr().out
    assert "margins: this minus reference" in text and "device[reference]" in text
    assert "device ranking, reference -> this: " in text and "crossed the top-20 line" in text
