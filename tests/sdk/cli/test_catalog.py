"""`edgerec catalog build|add|remove|info|verify` and `edgerec recommend`, end to end."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import pytest
from conftest import SAMPLE, sample_images
from edgerec.sdk import Catalog, CatalogError, items_from_csv, items_from_folder
from edgerec.sdk.catalog.ingest import parse_value
from edgerec.sdk.cli.app import build_parser, main
from edgerec.sdk.cli.recommend import filters_from_args


def _walk(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if "--json" in argv and out.out.strip() else out.out), out


def _write_items(path, rows):
    """A CSV in the sample's format with absolute photo paths."""
    with open(SAMPLE / "items.csv", newline="") as f:
        sample = {r["item_id"]: r for r in csv.DictReader(f)}
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "path", "label", "owner_id", "kids"])
        for item_id, image in rows:
            meta = sample.get(item_id, {"label": "", "owner_id": "", "kids": ""})
            writer.writerow([item_id, image, meta["label"], meta["owner_id"], meta["kids"]])
    return path


def _sample_rows(per_label):
    return [(p.stem, str(p)) for p, _ in sample_images(per_label)]


def test_the_new_commands_have_help_everywhere():
    commands = {" ".join(p) for p, _ in _walk(build_parser())}
    assert {"catalog build", "catalog add", "catalog remove", "catalog info", "catalog verify",
            "recommend"} <= commands


def test_build_info_verify_recommend_round_trip(tiny_bundle, tmp_path, capsys):
    items = _write_items(tmp_path / "items.csv", _sample_rows(3))
    cat = tmp_path / "cat"
    code, built, _ = _run(capsys, "catalog", "build", "--bundle", tiny_bundle.path, "--items",
                          items, "--out", cat, "--json")
    assert code == 0 and built["added"] == 30 and built["count"] == 30
    assert built["failed_count"] == 0 and built["skipped_existing"] == 0
    code, info, _ = _run(capsys, "catalog", "info", cat, "--json")
    assert code == 0 and info["count"] == 30 and info["dim"] == 16
    assert info["encoder_id"] == tiny_bundle.encoder_id and info["segments"] == 1
    code, ok, _ = _run(capsys, "catalog", "verify", cat, "--json")
    assert code == 0 and ok["ok"] is True
    first = _sample_rows(3)[0][0]
    with Catalog.open(cat, readonly=True) as c:
        assert c.get(first).metadata == {"path": _sample_rows(3)[0][1], "label": "dress",
                                         "owner_id": 267, "kids": False}

    common = ("recommend", "--bundle", tiny_bundle.path, "--catalog", cat, "-k", "4", "--json")
    code, by_item, _ = _run(capsys, *common, "--item", first, "--filter", "label=hat")
    assert code == 0 and len(by_item["results"]) == 3  # the catalog has 3 hats
    assert all(r["metadata"]["label"] == "hat" for r in by_item["results"])
    assert by_item["results"][0]["reason"] == f"looks like {first}"

    code, by_user, _ = _run(capsys, *common, "--history", f"{first},{_sample_rows(3)[5][0]}:view")
    assert code == 0 and len(by_user["results"]) == 4
    assert by_user["scorer_used"] is False and "no scorer" in by_user["note"]
    assert {r["because"] for r in by_user["results"]} <= {first, _sample_rows(3)[5][0]}
    assert first not in [r["item_id"] for r in by_user["results"]]

    photo = sample_images(3)[7][0]
    code, by_photo, _ = _run(capsys, *common, "--image", photo, "--filter", "owner_id>0")
    assert code == 0 and by_photo["results"][0]["reason"] == "looks like your photo"

    code, text, captured = _run(capsys, "recommend", "--bundle", tiny_bundle.path, "--catalog",
                                cat, "--history", first, "-k", "2")
    assert code == 0 and "you bought" in text  # the results alone on stdout, for a pipe
    assert "note:" not in text and "note: bundle has no scorer" in captured.err


def test_a_re_run_of_build_adds_only_the_missing_items(tiny_bundle, tmp_path, capsys):
    cat = tmp_path / "cat"
    rows = _sample_rows(2)
    half = _write_items(tmp_path / "half.csv", rows[:8])
    full = _write_items(tmp_path / "full.csv", rows)
    argv = ("catalog", "build", "--bundle", tiny_bundle.path, "--out", cat, "--chunk-size", "3",
            "--json")
    code, first, _ = _run(capsys, *argv, "--items", half)
    assert code == 0 and first["added"] == 8
    code, second, _ = _run(capsys, *argv, "--items", full)
    assert code == 0 and (second["added"], second["skipped_existing"]) == (12, 8)
    code, third, _ = _run(capsys, *argv, "--items", full)
    assert code == 0 and (third["added"], third["skipped_existing"], third["count"]) == (0, 20, 20)
    with Catalog.open(cat, readonly=True) as c:
        assert c.info().segments == 1  # compacted after the chunked commits
        c.verify()


def test_bad_images_and_bad_rows_are_skipped_and_reported(tiny_bundle, tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = _sample_rows(1)[:3]
    rows = [*good, ("broken", str(tmp_path / "broken.jpg")),
            ("missing", str(tmp_path / "nope.jpg")),  # line 6: no such file
            (good[0][0], good[1][1]),                  # line 7: a repeated id
            ("nopath", "")]                            # line 8: no path
    items = _write_items(tmp_path / "items.csv", rows)
    code, report, _ = _run(capsys, "catalog", "build", "--bundle", tiny_bundle.path, "--items",
                           items, "--out", tmp_path / "cat", "--json")
    assert code == 0 and report["added"] == 3 and report["failed_count"] == 1
    assert [f["item_id"] for f in report["failed"]] == ["broken"]
    assert "not a decodable image" in report["failed"][0]["error"]
    assert report["listing_problem_count"] == 3
    assert [(p["where"], p["kind"]) for p in report["listing_problems"]] == [
        (f"{items}:6", "missing"), (f"{items}:7", "duplicate_id"), (f"{items}:8", "bad_row")]
    code, text, _ = _run(capsys, "catalog", "build", "--bundle", tiny_bundle.path, "--items",
                         items, "--out", tmp_path / "cat")
    assert code == 0 and "skipped broken" in text and "3 already present" in text
    assert "3 listing entries skipped" in text and f"skipped {items}:6: No file" in text


def test_build_from_a_folder_uses_stems_as_ids_and_sub_folders_as_labels(tiny_bundle, tmp_path,
                                                                        capsys):
    photos = tmp_path / "photos"
    for path, label in sample_images(2)[:6]:
        (photos / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, photos / label / path.name)
    code, report, _ = _run(capsys, "catalog", "build", "--bundle", tiny_bundle.path, "--images",
                           photos, "--out", tmp_path / "cat", "--dtype", "float16", "--json")
    assert code == 0 and report["added"] == 6
    code, err, _ = _run(capsys, "catalog", "build", "--bundle", tiny_bundle.path, "--images",
                        photos, "--out", tmp_path / "cat", "--dtype", "int8", "--json")
    assert code == 1 and "stores float16 vectors" in err["message"]
    with Catalog.open(tmp_path / "cat", readonly=True) as c:
        assert c.dtype == "float16"
        path, label = sample_images(2)[3]
        assert c.get(path.stem).metadata == {"label": label, "path": f"{label}/{path.name}"}


def test_add_remove_and_their_errors(tiny_bundle, tmp_path, capsys):
    cat = tmp_path / "cat"
    rows = _sample_rows(1)
    _run(capsys, "catalog", "build", "--bundle", tiny_bundle.path, "--items",
         _write_items(tmp_path / "a.csv", rows[:4]), "--out", cat)
    new = [sample_images(2)[1][0], sample_images(2)[3][0]]
    code, added, _ = _run(capsys, "catalog", "add", cat, *new, "--bundle", tiny_bundle.path,
                          "--meta", "season=summer", "--meta", "price=19.5", "--json")
    assert code == 0 and added["added"] == 2 and added["count"] == 6
    with Catalog.open(cat, readonly=True) as c:
        assert c.get(new[0].stem).metadata == {"path": str(new[0]), "season": "summer",
                                               "price": 19.5}
    code, err, _ = _run(capsys, "catalog", "add", cat, new[0], "--bundle", tiny_bundle.path,
                        "--json")
    assert code == 1 and "already in the catalog" in err["message"]
    code, removed, _ = _run(capsys, "catalog", "remove", cat, new[0].stem, rows[0][0],
                            "--compact", "--json")
    assert code == 0 and removed["count"] == 4
    code, err, _ = _run(capsys, "catalog", "remove", cat, "nope", "--json")
    assert code == 1 and err["error"] == "CatalogError"
    code, _, out = _run(capsys, "catalog", "add", cat, "--bundle", tiny_bundle.path)
    assert code == 1 and "exactly one of" in out.err


def test_commands_refuse_the_wrong_encoder_and_unknown_ids(tiny_bundle, teacher_bundle,
                                                           tmp_path, capsys):
    cat = tmp_path / "cat"
    items = _write_items(tmp_path / "a.csv", _sample_rows(1)[:3])
    _run(capsys, "catalog", "build", "--bundle", tiny_bundle.path, "--items", items, "--out", cat)
    code, err, _ = _run(capsys, "catalog", "build", "--bundle", teacher_bundle.path, "--items",
                        items, "--out", cat, "--json")
    assert code == 1 and err["error"] == "EncoderMismatchError"
    code, err, _ = _run(capsys, "recommend", "--bundle", teacher_bundle.path, "--catalog", cat,
                        "--item", "x", "--json")
    assert code == 1 and err["error"] == "EncoderMismatchError"
    base = ("recommend", "--bundle", tiny_bundle.path, "--catalog", cat, "--json")
    code, err, _ = _run(capsys, *base, "--item", "nope")
    assert code == 1 and "no item 'nope'" in err["message"]
    code, err, _ = _run(capsys, *base, "--history", "nope,gone")
    assert code == 1 and "none of the --history ids" in err["message"]
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--bundle", "b", "--catalog", "c", "--history", "a:like"])
    assert exit_info.value.code == 2 and "unknown event kind" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["recommend", "--bundle", "b", "--catalog", "c", "--item", "a", "--filter", "oops"])


def test_filter_arguments_become_catalog_filters():
    parser = build_parser()
    args = parser.parse_args(["recommend", "--bundle", "b", "--catalog", "c", "--item", "a",
                              "--filter", "label=shoes", "--filter", "label=hat",
                              "--filter", "price<50", "--filter", "price>=10.5",
                              "--filter", "kids=false", "--filter", "brand!=acme"])
    assert filters_from_args(args.filter) == {
        "label": {"in": ["shoes", "hat"]}, "price": {"lt": 50, "gte": 10.5},
        "kids": False, "brand": {"nin": ["acme"]},
    }
    assert filters_from_args([]) is None
    assert ([parse_value(v) for v in ("42", "0042", "-1.5", "1e3", "True", "nan", "x", "1.")]
            == [42, "0042", -1.5, 1000.0, True, "nan", "x", 1.0])


def test_item_sources_are_all_or_nothing_and_the_cli_says_why(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("id,path\na,b.jpg\n")
    with pytest.raises(CatalogError, match="item_id"):
        items_from_csv(tmp_path / "bad.csv")
    shutil.copy(sample_images(1)[0][0], tmp_path / "x.jpg")
    (tmp_path / "dup.csv").write_text("item_id,path\na,x.jpg\na,x.jpg\n")
    with pytest.raises(CatalogError, match=r"dup.csv:3: The id 'a' already belongs"):
        items_from_csv(tmp_path / "dup.csv")
    for sub in ("x", "y"):  # the same stem in two folders: path ids, not an error
        (tmp_path / "imgs" / sub).mkdir(parents=True)
        shutil.copy(sample_images(1)[0][0], tmp_path / "imgs" / sub / "same.jpg")
    assert [s.item_id for s in items_from_folder(tmp_path / "imgs")] == ["x/same", "y/same"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="lists no usable items"):
        items_from_folder(tmp_path / "empty")
    code, err, _ = _run(capsys, "catalog", "build", "--bundle", "b", "--images",
                        tmp_path / "empty", "--out", tmp_path / "cat", "--json")
    assert code == 1 and "lists no usable items" in err["message"]
