"""The one reader of item listings: folders and CSVs, their ids, labels and reported problems."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE, sample_images
from edgerec.sdk.catalog.ingest import (
    ItemListing,
    ProblemKind,
    SourceItem,
    items_from_csv,
    items_from_folder,
    listing_from_csv,
    listing_from_folder,
)
from edgerec.sdk.errors import CatalogError


def _photo(k: int = 0) -> Path:
    return sample_images(1)[k][0]


def _put(dst: Path, k: int = 0) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_photo(k), dst)
    return dst


def _problems(listing: ItemListing) -> list[tuple[str, ProblemKind]]:
    return [(p.where, p.kind) for p in listing.problems]


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    """Repeated stems in two labels, a nested folder, hidden entries, a non-image file."""
    root = tmp_path / "photos"
    _put(root / "loose.jpg", 0)
    _put(root / "hat" / "img.jpg", 1)
    _put(root / "shoes" / "img.JPG", 2)
    _put(root / "shoes" / "summer" / "deep.png", 3)
    _put(root / "hat" / ".hidden.jpg", 4)
    _put(root / ".cache" / "thumb.jpg", 5)
    (root / "hat" / "notes.txt").write_text("not an image")
    return root


def test_folder_is_walked_recursively_with_first_level_labels_and_path_ids(messy: Path) -> None:
    listing = listing_from_folder(messy)
    assert [(s.item_id, s.label) for s in listing] == [
        ("hat/img", "hat"),
        ("loose", None),
        ("shoes/img", "shoes"),
        ("deep", "shoes"),
    ]
    assert [s.metadata["path"] for s in listing] == [
        "hat/img.jpg", "loose.jpg", "shoes/img.JPG", "shoes/summer/deep.png"]
    assert "label" not in listing[1].metadata
    assert all(s.image.is_file() for s in listing)
    assert _problems(listing) == [(str(messy / "hat" / "notes.txt"), ProblemKind.NOT_AN_IMAGE)]
    assert not listing.problems[0].drops_item
    assert [s.item_id for s in items_from_folder(messy)] == [s.item_id for s in listing]


def test_same_stem_in_one_folder_is_a_repeated_id_reported_and_skipped(tmp_path: Path) -> None:
    _put(tmp_path / "dress" / "a.jpg", 0)
    _put(tmp_path / "dress" / "a.png", 1)
    _put(tmp_path / "dress" / "b.jpg", 2)
    listing = listing_from_folder(tmp_path)
    assert [(s.item_id, s.image.name) for s in listing] == [("dress/a", "a.jpg"), ("b", "b.jpg")]
    (problem,) = listing.problems
    assert problem.kind is ProblemKind.DUPLICATE_ID and problem.drops_item
    assert problem.where == str(tmp_path / "dress" / "a.png")
    assert problem.duplicate_of == str(tmp_path / "dress" / "a.jpg")
    with pytest.raises(CatalogError, match=r"duplicate_id.*a\.png"):
        items_from_folder(tmp_path)


def test_links_are_followed_once_and_broken_ones_reported(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _put(root / "hat" / "x.jpg")
    os.symlink(root, root / "hat" / "loop")  # a cycle: walked once
    os.symlink(tmp_path / "gone.jpg", root / "hat" / "broken.jpg")
    listing = listing_from_folder(root)
    assert [s.item_id for s in listing] == ["x"]
    assert _problems(listing) == [(str(root / "hat" / "broken.jpg"), ProblemKind.UNREADABLE)]


def test_folder_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="is not a folder"):
        listing_from_folder(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    listing = listing_from_folder(tmp_path)
    assert len(listing) == 0 and len(listing.problems) == 1
    with pytest.raises(CatalogError, match=r"lists no usable items.*notes.txt"):
        listing.require()
    with pytest.raises(CatalogError, match="lists no usable items"):
        items_from_folder(tmp_path)


def test_csv_derives_empty_ids_like_a_folder_and_keeps_labels_as_strings(tmp_path: Path) -> None:
    for k, rel in enumerate(["hat/img.jpg", "shoes/img.jpg", "loose.jpg", "x/b.jpg", "y/c.jpg"]):
        _put(tmp_path / rel, k)
    absolute = _photo(6)
    (tmp_path / "items.csv").write_text(
        "item_id, path ,label,price,kids,code\n"
        ",hat/img.jpg,hat,3.5,true,0042\n"
        ",shoes/img.jpg,42,,,\n"       # stem repeated: the path without suffix
        ",loose.jpg,,,,\n"              # unique stem: the stem
        "c,x/b.jpg,,,,\n"
        ",y/c.jpg,,,,\n"                # the stem is another row's item_id: the path
        f"abs,{absolute},True,,,\n"
    )
    listing = listing_from_csv(tmp_path / "items.csv")
    assert listing.problems == ()
    assert [(s.item_id, s.label) for s in listing] == [
        ("hat/img", "hat"), ("shoes/img", "42"), ("loose", None), ("c", None), ("y/c", None),
        ("abs", "True")]
    assert listing[0].metadata == {"path": "hat/img.jpg", "label": "hat", "price": 3.5,
                                   "kids": True, "code": "0042"}
    assert listing[1].metadata == {"path": "shoes/img.jpg", "label": "42"}
    assert listing[5].image == absolute
    assert items_from_csv(tmp_path / "items.csv") == listing.require()


def test_csv_paths_can_start_from_another_base(tmp_path: Path) -> None:
    csv_path = tmp_path / "lists" / "items.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("item_id,path\n" f"a,{_photo().relative_to(SAMPLE)}\n")
    assert listing_from_csv(csv_path, base=SAMPLE)[0].image == SAMPLE / _photo().relative_to(SAMPLE)
    assert listing_from_csv(csv_path).problems[0].kind is ProblemKind.MISSING


def test_bad_csv_rows_are_reported_with_their_line_and_skipped(tmp_path: Path) -> None:
    for k, name in enumerate("abcd"):
        _put(tmp_path / f"{name}.jpg", k)
    csv_path = tmp_path / "items.csv"
    csv_path.write_text(
        "item_id,path,label\n"
        "a,a.jpg,hat\n"
        "nopath,,hat\n"                 # line 3: no path
        "\n"                            # line 4: blank, ignored
        "b,b.jpg,hat,surplus\n"         # line 5: more cells than the header
        "a,c.jpg,hat\n"                 # line 6: a repeated id
        "gone,nope.jpg,hat\n"           # line 7: no such file
        "d,d.jpg,hat,\n"                # an empty surplus cell is harmless
    )
    listing = listing_from_csv(csv_path)
    assert [s.item_id for s in listing] == ["a", "d"]
    assert _problems(listing) == [
        (f"{csv_path}:3", ProblemKind.BAD_ROW), (f"{csv_path}:5", ProblemKind.BAD_ROW),
        (f"{csv_path}:6", ProblemKind.DUPLICATE_ID), (f"{csv_path}:7", ProblemKind.MISSING)]
    repeated = listing.problems[2]
    assert repeated.path == str(tmp_path / "c.jpg")
    assert repeated.duplicate_of == str(tmp_path / "a.jpg")
    assert repeated.to_dict()["kind"] == "duplicate_id"
    with pytest.raises(CatalogError, match=r"4 entries .* skipped .*items.csv:3: The row has no"):
        items_from_csv(csv_path)


def test_one_bad_row_in_many_costs_only_itself(tmp_path: Path) -> None:
    _put(tmp_path / "p.jpg")
    rows = [f"item{i},p.jpg" for i in range(20_000)]
    rows[12_345] = "item12345,"
    (tmp_path / "items.csv").write_text("item_id,path\n" + "\n".join(rows) + "\n")
    listing = listing_from_csv(tmp_path / "items.csv")
    assert len(listing) == 19_999
    assert _problems(listing) == [(f"{tmp_path / 'items.csv'}:12347", ProblemKind.BAD_ROW)]


def test_unreadable_csvs_and_missing_columns_raise(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("id,path\na,b.jpg\n")
    with pytest.raises(CatalogError, match=r"has no item_id column .*it has id, path"):
        listing_from_csv(tmp_path / "bad.csv")
    (tmp_path / "latin.csv").write_bytes("item_id,path\né,x.jpg\n".encode("latin-1"))
    with pytest.raises(CatalogError, match=r"Cannot read the items CSV .*UTF-8"):
        listing_from_csv(tmp_path / "latin.csv")
    with pytest.raises(CatalogError, match="Cannot read"):
        listing_from_csv(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CatalogError, match="has no item_id or path column"):
        listing_from_csv(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("item_id,path\n")
    with pytest.raises(CatalogError, match="lists no usable items"):
        items_from_csv(tmp_path / "header.csv")


def test_results_are_small_and_readable(messy: Path) -> None:
    listing = listing_from_folder(messy)
    assert repr(listing) == f"ItemListing(4 items, 1 problems, source={str(messy)!r})"
    assert list(listing) == list(listing.items) and len(listing) == 4
    assert SourceItem("x", Path("x.jpg"), {"label": 7}).label == "7"
    assert SourceItem("x", Path("x.jpg")).label is None
