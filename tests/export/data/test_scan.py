"""Data step of the export: scanning, cleaning, splitting and augmenting real photos."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE, sample_images
from edgerec.export.data.scan import (
    Dataset,
    ImageRecord,
    IssueKind,
    item_seed,
    scan_images,
    split,
)
from edgerec.export.errors import ExportError
from edgerec.sdk import Catalog, load_image
from edgerec.sdk.catalog.ingest import (
    ProblemKind,
    items_from_csv,
    items_from_folder,
    listing_from_csv,
    listing_from_folder,
)
from edgerec.sdk.cli.app import main


@pytest.fixture(scope="module")
def sample() -> Dataset:
    return scan_images(SAMPLE / "images")


def _photos(n: int) -> list[Path]:
    """``n`` real photos from different labels of the sample."""
    return [p for p, _ in sample_images(1)][:n]


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _issues(ds: Dataset, kind: IssueKind) -> dict[str, object]:
    return {Path(i.path).name: i for i in ds.issues if i.kind is kind}


def test_scan_folder_takes_labels_from_subfolders(sample: Dataset) -> None:
    assert len(sample) == 200
    assert sample.labels == sorted(p.name for p in (SAMPLE / "images").iterdir())
    assert len(sample.labels) == 10
    assert sample.issues == []
    ids = [r.item_id for r in sample.records]
    assert ids == sorted(ids)
    with open(SAMPLE / "items.csv", newline="") as f:
        expected = {row["item_id"]: row["label"] for row in csv.DictReader(f)}
    assert {r.item_id: r.label for r in sample.records} == expected
    first = sample.records[0]
    assert (first.width, first.height) == load_image(first.path).size
    assert len(first.sha256) == 64


def test_scan_csv_gives_the_same_records_as_the_folder(sample: Dataset) -> None:
    ds = scan_images(items_csv=SAMPLE / "items.csv")
    assert [(r.item_id, r.label, r.sha256) for r in ds.records] == [
        (r.item_id, r.label, r.sha256) for r in sample.records
    ]
    assert [r.path.resolve() for r in ds.records] == [r.path.resolve() for r in sample.records]


def test_scan_csv_reports_missing_files_and_repeated_ids(tmp_path: Path) -> None:
    a, b, c = _photos(3)
    csv_path = tmp_path / "lists" / "items.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "item_id,path,label,extra\n"
        f"a,{a.relative_to(SAMPLE)},shirt,x\n"
        f"b,{b.relative_to(SAMPLE)},,x\n"  # empty label: unlabeled
        f"a,{c.relative_to(SAMPLE)},shirt,x\n"  # item_id used twice
        "gone,images/shirt/nope.jpg,shirt,x\n"
        f",{c.relative_to(SAMPLE)},hat,x\n"  # no item_id: the file name
    )
    ds = scan_images(SAMPLE, items_csv=csv_path)  # paths relative to root, not the CSV
    got = {(r.item_id, r.label) for r in ds.records}
    assert got == {("a", "shirt"), ("b", None), (c.stem, "hat")}
    assert ds.labels == ["hat", "shirt"]
    assert _issues(ds, IssueKind.MISSING).keys() == {"nope.jpg"}
    repeated = _issues(ds, IssueKind.DUPLICATE_ITEM_ID)[c.name]
    assert repeated.duplicate_of == str(SAMPLE / a.relative_to(SAMPLE))


def test_scan_reports_and_excludes_each_kind_of_bad_image(tmp_path: Path) -> None:
    photos = _photos(6)
    for k, p in enumerate(photos):
        _copy(p, tmp_path / ("a" if k % 2 else "b") / p.name)
    (tmp_path / "a" / "corrupt.jpg").write_bytes(b"this is not a JPEG at all" * 40)
    data = photos[0].read_bytes()
    (tmp_path / "a" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    load_image(photos[1]).resize((24, 30)).save(tmp_path / "a" / "tiny.jpg", quality=90)
    _copy(photos[2], tmp_path / "b" / "zz-exact.jpg")
    img = load_image(photos[3])
    img.resize((img.width * 9 // 10, img.height * 9 // 10)).save(
        tmp_path / "a" / "zz-near.jpg", quality=70
    )
    (tmp_path / "a" / "notes.txt").write_text("not an image")

    ds = scan_images(tmp_path)

    assert sorted(r.path.name for r in ds.records) == sorted(p.name for p in photos)
    assert _issues(ds, IssueKind.UNDECODABLE).keys() == {"corrupt.jpg"}
    assert _issues(ds, IssueKind.TRUNCATED).keys() == {"truncated.jpg"}
    assert _issues(ds, IssueKind.TOO_SMALL).keys() == {"tiny.jpg"}
    assert _issues(ds, IssueKind.SKIPPED).keys() == {"notes.txt"}
    exact = _issues(ds, IssueKind.EXACT_DUPLICATE)
    near = _issues(ds, IssueKind.NEAR_DUPLICATE)
    assert exact.keys() == {"zz-exact.jpg"} and near.keys() == {"zz-near.jpg"}
    assert Path(exact["zz-exact.jpg"].duplicate_of).name == photos[2].name
    assert Path(near["zz-near.jpg"].duplicate_of).name == photos[3].name
    assert all(i.excluded for i in ds.issues)
    # photos[3] sits in "a" and so does its near copy; photos[2] is in "b" like its copy
    assert not _issues(ds, IssueKind.CONFLICTING_LABELS)

    report = json.loads(json.dumps(ds.to_report()))
    assert report["records"] == 6 and report["excluded"] == 5 and report["images_scanned"] == 11
    assert report["labels"] == {"a": 3, "b": 3}
    assert report["issues_by_kind"] == {
        "exact_duplicate": 1, "near_duplicate": 1, "skipped": 1, "too_small": 1,
        "truncated": 1, "undecodable": 1,
    }


def test_duplicate_under_another_label_is_reported_as_conflicting(tmp_path: Path) -> None:
    p, q = _photos(2)
    _copy(p, tmp_path / "shorts" / "1.jpg")
    _copy(q, tmp_path / "shorts" / "2.jpg")
    _copy(p, tmp_path / "skirt" / "3.jpg")
    _copy(q, tmp_path / "skirt" / "4.jpg")
    ds = scan_images(tmp_path)
    assert [r.item_id for r in ds.records] == ["1", "2"]
    conflicts = _issues(ds, IssueKind.CONFLICTING_LABELS)
    assert conflicts.keys() == {"1.jpg", "2.jpg"}
    assert not any(i.excluded for i in conflicts.values())
    assert _issues(ds, IssueKind.EMPTY_LABEL).keys() == {"skirt"}


def test_near_duplicate_detection_can_be_turned_off(tmp_path: Path) -> None:
    (p,) = _photos(1)
    _copy(p, tmp_path / "x" / "a.jpg")
    load_image(p).save(tmp_path / "x" / "b.jpg", quality=60)
    assert len(scan_images(tmp_path)) == 1
    assert len(scan_images(tmp_path, near_duplicate_bits=None)) == 2


def test_same_file_name_in_two_labels_gets_path_ids(tmp_path: Path) -> None:
    p, q, r = _photos(3)
    _copy(p, tmp_path / "hat" / "img.jpg")
    _copy(q, tmp_path / "shoes" / "img.jpg")
    _copy(r, tmp_path / "loose.jpg")
    ds = scan_images(tmp_path)
    assert {(x.item_id, x.label) for x in ds.records} == {
        ("hat/img", "hat"), ("shoes/img", "shoes"), ("loose", None)
    }


def test_scan_empty_folder_raises_export_error_saying_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"No images found.*one sub-folder per label"):
        scan_images(tmp_path)


def test_scan_folder_walks_nested_folders_under_their_first_level_label(tmp_path: Path) -> None:
    p, q, r = _photos(3)
    _copy(p, tmp_path / "train" / "dress" / "a.jpg")
    _copy(q, tmp_path / "train" / ".hidden.jpg")
    _copy(r, tmp_path / ".thumbs" / "b.jpg")
    ds = scan_images(tmp_path)
    assert [(x.item_id, x.label) for x in ds.records] == [("a", "train")]
    assert [i.kind for i in ds.issues] == [IssueKind.SINGLE_IMAGE_LABEL]


def test_scan_folder_without_images_says_what_it_skipped(tmp_path: Path) -> None:
    (tmp_path / "dress").mkdir()
    (tmp_path / "dress" / "notes.txt").write_text("x")
    with pytest.raises(ExportError, match=r"No images found.*1 entries skipped.*notes.txt"):
        scan_images(tmp_path)


def test_scan_missing_folder_or_bad_csv_raises_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a folder"):
        scan_images(tmp_path / "nowhere")
    bad = tmp_path / "items.csv"
    bad.write_text("id,file\n1,a.jpg\n")
    with pytest.raises(ExportError, match="item_id or path column"):
        scan_images(items_csv=bad)
    with pytest.raises(ExportError, match="Cannot read"):
        scan_images(items_csv=tmp_path / "none.csv")


def test_scan_all_corrupt_folder_raises_export_error(tmp_path: Path) -> None:
    data = _photos(1)[0].read_bytes()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"\x00" * 500)
    (tmp_path / "a" / "2.jpg").write_bytes(data[:3000])
    (tmp_path / "a" / "3.png").write_bytes(b"")
    with pytest.raises(ExportError, match=r"None of the 3 images .* is usable"):
        scan_images(tmp_path)


def test_one_image_label_is_reported_and_trains(tmp_path: Path) -> None:
    photos = _photos(5)
    for p in photos[:4]:
        _copy(p, tmp_path / "many" / p.name)
    _copy(photos[4], tmp_path / "lonely" / photos[4].name)
    ds = scan_images(tmp_path)
    single = _issues(ds, IssueKind.SINGLE_IMAGE_LABEL)
    assert single.keys() == {"lonely"} and not single["lonely"].excluded
    assert len(ds) == 5
    train, val = split(ds, val_fraction=0.5)
    assert [r.label for r in val] == ["many", "many"]
    assert sum(r.label == "lonely" for r in train) == 1


def test_split_is_deterministic_stratified_and_order_independent(sample: Dataset) -> None:
    train, val = split(sample, val_fraction=0.1, seed=3)
    shuffled = list(sample.records)
    random.Random(0).shuffle(shuffled)
    assert split(shuffled, val_fraction=0.1, seed=3) == (train, val)
    assert {r.item_id for r in train}.isdisjoint(r.item_id for r in val)
    assert len(train) + len(val) == 200
    for label in sample.labels:  # 20 per label -> 2 in validation
        assert sum(r.label == label for r in val) == 2
    assert split(sample, val_fraction=0.1, seed=4)[1] != val
    assert split(sample, val_fraction=0.0)[1] == []


def test_split_keeps_one_of_each_side_and_unlabeled_in_train(sample: Dataset) -> None:
    label = sample.labels[0]
    recs = [r for r in sample.records if r.label == label][:2] + [
        ImageRecord(f"u{k}", Path("u.jpg"), None, "0" * 64, 10, 10) for k in range(5)
    ]
    train, val = split(recs, val_fraction=0.01)
    assert len(val) == 1 and val[0].label == label
    assert sum(r.label is None for r in train) == 5
    with pytest.raises(ValueError, match="val_fraction"):
        split(recs, val_fraction=1.0)


def test_split_can_hold_out_unlabelled_images_at_random(sample: Dataset) -> None:
    flat = [ImageRecord(r.item_id, r.path, None, r.sha256, r.width, r.height)
            for r in sample.records]
    train, val = split(flat, val_fraction=0.1, seed=3, split_unlabelled=True)
    assert len(val) == 20 and len(train) == 180
    assert {r.item_id for r in train}.isdisjoint(r.item_id for r in val)
    shuffled = list(flat)
    random.Random(0).shuffle(shuffled)
    assert split(shuffled, val_fraction=0.1, seed=3, split_unlabelled=True) == (train, val)
    assert split(flat, val_fraction=0.1, seed=4, split_unlabelled=True)[1] != val
    # a random split: the held-out images do not follow the (hidden) labels' proportions
    by_label = {r.item_id: r.label for r in sample.records}
    assert len({by_label[r.item_id] for r in val}) > 1
    assert split(flat, val_fraction=0.1)[1] == []  # by default unlabelled images all train


def test_item_seed_is_stable() -> None:
    assert item_seed("abc", 0) == item_seed("abc", 0) != item_seed("abc", 1)
    assert 0 <= item_seed("abc") < 2**63


# --------------------------------------------------------------------------- catalog parity


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    """Repeated stems in two labels, a nested folder, hidden entries, a non-image file."""
    root = tmp_path / "photos"
    photos = _photos(7)
    for k, rel in enumerate(["loose.jpg", "hat/img.jpg", "shoes/img.jpg", "shoes/summer/deep.jpg",
                             "dress/a.jpg", "hat/.hidden.jpg", ".cache/t.jpg"]):
        _copy(photos[k], root / rel)
    (root / "hat" / "notes.txt").write_text("not an image")
    return root


def _built(bundle: Path, out: Path, capsys: pytest.CaptureFixture, *source: object) -> dict:
    """``edgerec catalog build ... --json``: its report and the catalog's {id: label}."""
    code = main(["catalog", "build", "--bundle", str(bundle), "--out", str(out), "--json",
                 *map(str, source)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    with Catalog.open(out, readonly=True) as c:
        report["labels"] = {i: c.get(i).metadata.get("label") for i in c}
    return report


def test_a_folder_gives_the_export_and_the_catalog_the_same_ids_and_labels(
    messy: Path, tiny_bundle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ds = scan_images(messy)
    exported = {r.item_id: r.label for r in ds.records}
    assert exported == {"loose": None, "hat/img": "hat", "shoes/img": "shoes", "deep": "shoes",
                        "a": "dress"}
    assert {s.item_id: s.label for s in items_from_folder(messy)} == exported
    built = _built(tiny_bundle.path, tmp_path / "cat", capsys, "--images", messy)
    assert built["labels"] == exported
    assert _issues(ds, IssueKind.SKIPPED).keys() == {"notes.txt"}
    assert [p["kind"] for p in built["listing_problems"]] == ["not_an_image"]


def test_same_stem_in_one_folder_is_skipped_on_both_sides(tmp_path: Path) -> None:
    p, q, r = _photos(3)
    _copy(p, tmp_path / "dress" / "a.jpg")
    _copy(q, tmp_path / "dress" / "a.png")
    _copy(r, tmp_path / "dress" / "b.jpg")
    ds = scan_images(tmp_path)
    listing = listing_from_folder(tmp_path)
    assert [r.item_id for r in ds.records] == ["b", "dress/a"]
    assert sorted(s.item_id for s in listing) == ["b", "dress/a"]
    (dup,) = _issues(ds, IssueKind.DUPLICATE_ITEM_ID).values()
    assert Path(dup.path).name == "a.png" and Path(dup.duplicate_of).name == "a.jpg"
    assert [x.kind for x in listing.problems] == [ProblemKind.DUPLICATE_ID]


def test_a_csv_gives_the_export_and_the_catalog_the_same_ids_and_labels(
    messy: Path, tiny_bundle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clean = messy / "items.csv"
    clean.write_text(
        "item_id,path,label,price\n"
        ",hat/img.jpg,hat,3\n"            # the stem repeats: the path without suffix
        ",shoes/img.jpg,42,\n"            # a label that looks like a number stays a string
        ",loose.jpg,,\n"                  # a unique stem: the stem; no label
        "deep,shoes/summer/deep.jpg,shoes,\n"
    )
    messy_csv = messy / "messy.csv"
    messy_csv.write_text(clean.read_text() + (
        "deep,dress/a.jpg,dress,\n"       # line 6: a repeated id
        "nopath,,dress,\n"                # line 7: no path
        "gone,nope.jpg,dress,\n"          # line 8: no such file
    ))
    expected = {"hat/img": "hat", "shoes/img": "42", "loose": None, "deep": "shoes"}
    assert {s.item_id: s.label for s in items_from_csv(clean)} == expected
    for n, csv_path in enumerate([clean, messy_csv]):
        ds = scan_images(items_csv=csv_path)
        assert {r.item_id: r.label for r in ds.records} == expected
        assert {s.item_id: s.label for s in listing_from_csv(csv_path)} == expected
        built = _built(tiny_bundle.path, tmp_path / f"cat{n}", capsys, "--items", csv_path)
        assert built["labels"] == expected
    assert [(p["where"], p["kind"]) for p in built["listing_problems"]] == [
        (f"{messy_csv}:6", "duplicate_id"), (f"{messy_csv}:7", "bad_row"),
        (f"{messy_csv}:8", "missing")]
    assert sorted(i.kind.value for i in ds.issues if i.excluded) == [
        "bad_row", "duplicate_item_id", "missing"]
    assert _issues(ds, IssueKind.BAD_ROW).keys() == {"messy.csv:7"}
    assert f"{messy_csv}:8" in _issues(ds, IssueKind.MISSING)["nope.jpg"].detail
