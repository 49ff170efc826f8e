"""Step 1 of the export: scan, clean, split and augment the training images.

- :func:`scan_images` reads an image folder (one sub-folder per label, images directly in the
  root are unlabeled) or an items CSV (``item_id,path[,label]``) through the device's reader
  (:mod:`edgerec.sdk.catalog.ingest`, so the ids match the catalog's), decodes every image with
  :func:`edgerec.sdk.load_image` (the device's decoder, so the same files fail on both sides)
  and returns a :class:`Dataset`: the usable :class:`ImageRecord` s plus every
  :class:`DataIssue` found. Nothing is dropped silently: undecodable, truncated, too small,
  exactly duplicated and near-duplicated images are excluded *and* reported.
- :func:`split` makes a deterministic train/validation split, stratified by label (and, for
  images without labels, at random by item id).
- the views (augmentations) the teacher and student see are made by
  :mod:`edgerec.export.data.views`.

Near duplicates are found with a 64-bit perceptual hash (DCT of a 32x32 grey thumbnail) and
confirmed on colour (an 8x8 RGB thumbnail), because the grey hash alone matches different
garments photographed the same way (a blue and a black dress on one hanger). They catch
re-encoded, resized and lightly retouched copies, not crops.
"""

from __future__ import annotations

import enum
import hashlib
import io
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from edgerec.export.errors import ExportError
from edgerec.sdk import ImageLimits, load_image
from edgerec.sdk.catalog.ingest import (
    ListingProblem,
    ProblemKind,
    listing_from_csv,
    listing_from_folder,
)
from edgerec.sdk.errors import CatalogError, InvalidImageError
from edgerec.sdk.progress import track
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DataIssue",
    "Dataset",
    "ImageRecord",
    "IssueKind",
    "item_seed",
    "scan_images",
    "split",
]

PathLike = Union[str, os.PathLike]

_NEAR_DUPLICATE_COLOR = 16.0
"""Largest mean absolute difference (0..255) of two 8x8 RGB thumbnails for a near duplicate.

Re-encoded or resized copies differ by a few levels and a +10% brightness edit by about 16,
while distinct photos whose grey hashes are within 4 bits (e.g. two garments shot the same way)
differ by more than 20.
"""


class IssueKind(str, enum.Enum):
    """What is wrong with an image or a label (see :attr:`DataIssue.excluded`)."""

    MISSING = "missing"  # a CSV row whose file does not exist
    UNDECODABLE = "undecodable"  # not an image, or a format the decoder cannot read
    TRUNCATED = "truncated"  # the file ends before the image data does
    TOO_SMALL = "too_small"  # a side under ``min_side`` pixels
    TOO_LARGE = "too_large"  # over the decoder's byte or pixel limits
    EXACT_DUPLICATE = "exact_duplicate"  # same bytes as ``duplicate_of``
    NEAR_DUPLICATE = "near_duplicate"  # looks the same as ``duplicate_of``
    DUPLICATE_ITEM_ID = "duplicate_item_id"  # an item_id an earlier row or file already has
    BAD_ROW = "bad_row"  # a CSV row without a path, or with more cells than the header
    SKIPPED = "skipped"  # a non-image file, a broken link or an unreadable folder (folder mode)
    CONFLICTING_LABELS = "conflicting_labels"  # kept, but a duplicate of it has another label
    SINGLE_IMAGE_LABEL = "single_image_label"  # kept; the label cannot be validated
    EMPTY_LABEL = "empty_label"  # a label folder with no usable image left


_KEPT_KINDS = frozenset(
    {IssueKind.CONFLICTING_LABELS, IssueKind.SINGLE_IMAGE_LABEL, IssueKind.EMPTY_LABEL}
)


@dataclass(frozen=True)
class ImageRecord:
    """One usable image.

    Attributes:
        item_id: the catalog id, as :mod:`edgerec.sdk.catalog.ingest` gives it (CSV
            ``item_id``; in folder mode the file name without its suffix, or the relative path
            without suffix where two files share a name).
        path: the image file.
        label: its label, or ``None`` when unlabeled.
        sha256: hex digest of the file's bytes.
        width: upright width in pixels (after the EXIF orientation).
        height: upright height in pixels.
    """

    item_id: str
    path: Path
    label: Optional[str]
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class DataIssue:
    """One thing wrong with the data, as it goes into the export report.

    Attributes:
        path: the file (or, for label issues, the label) concerned.
        kind: an :class:`IssueKind`.
        detail: a sentence saying what was found and what to do.
        duplicate_of: for duplicates, the path of the image that was kept instead.
    """

    path: str
    kind: IssueKind
    detail: str
    duplicate_of: Optional[str] = None

    @property
    def excluded(self) -> bool:
        """Whether the image was left out of :attr:`Dataset.records`."""
        return self.kind not in _KEPT_KINDS

    def to_dict(self) -> dict[str, Any]:
        out = {"path": self.path, "kind": self.kind.value, "detail": self.detail}
        if self.duplicate_of is not None:
            out["duplicate_of"] = self.duplicate_of
        return out


@dataclass
class Dataset:
    """The result of :func:`scan_images`: usable records (sorted by item_id) and all issues."""

    records: list[ImageRecord]
    issues: list[DataIssue] = field(default_factory=list)
    source: str = ""

    @property
    def labels(self) -> list[str]:
        """Distinct labels of the records, sorted; unlabeled records add none."""
        return sorted({r.label for r in self.records if r.label is not None})

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (
            f"Dataset({len(self.records)} records, {len(self.labels)} labels, "
            f"{len(self.issues)} issues, source={self.source!r})"
        )

    def to_report(self) -> dict[str, Any]:
        """JSON-ready summary for the export report.

        Keys: ``source``; ``images_scanned`` (records + excluded: every image file or CSV row
        considered, skipped non-image files not counted); ``records``; ``excluded``; ``labels``
        (records per label); ``unlabeled``; ``issues_by_kind``; ``issues`` (every
        :class:`DataIssue` as a dict).
        """
        per_label = Counter(r.label for r in self.records if r.label is not None)
        excluded = sum(1 for i in self.issues if i.excluded and i.kind is not IssueKind.SKIPPED)
        return {
            "source": self.source,
            "images_scanned": len(self.records) + excluded,
            "records": len(self.records),
            "excluded": excluded,
            "labels": {label: per_label[label] for label in sorted(per_label)},
            "unlabeled": sum(1 for r in self.records if r.label is None),
            "issues_by_kind": dict(sorted(Counter(i.kind.value for i in self.issues).items())),
            "issues": [i.to_dict() for i in self.issues],
        }


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Entry:
    item_id: str
    path: Path
    label: Optional[str]


@dataclass(frozen=True)
class _Decoded:
    record: ImageRecord
    phash: int
    thumb: np.ndarray  # (8, 8, 3) float32


def scan_images(
    root: Optional[PathLike] = None,
    *,
    items_csv: Optional[PathLike] = None,
    min_side: int = 32,
    near_duplicate_bits: Optional[int] = 4,
    progress: bool = False,
) -> Dataset:
    """Scan, decode and clean a set of images.

    The entries (ids, files, labels) come from the device's reader,
    :func:`edgerec.sdk.catalog.ingest.listing_from_folder` / ``listing_from_csv``, so the ids
    are the ones ``edgerec catalog build`` gives the same folder or CSV. Folder mode
    (``items_csv`` is None): searched recursively, ``root/<label>/...`` gives ``label`` (the
    first-level sub-folder), images directly in ``root`` are unlabeled, id = the file stem, or
    the relative path without suffix where stems repeat; non-image files are reported as
    ``skipped``. CSV mode: columns ``item_id,path`` and optionally ``label`` (empty =
    unlabeled; other columns are ignored here), an empty item_id derived from the path, paths
    relative to ``root`` when given, else to the CSV's folder; rows without a path, missing
    files and repeated ids are reported and skipped.

    Every image is decoded with :func:`edgerec.sdk.load_image`. Exact duplicates (same sha256)
    and near duplicates (perceptual hashes within ``near_duplicate_bits`` bits, confirmed on
    colour; None turns this off) keep the first item by item_id and report the others.

    Returns:
        a :class:`Dataset` whose records are sorted by item_id.

    Raises:
        ExportError: the folder or CSV is missing or unreadable, it holds no images, or none
            of its images is usable.
    """
    if near_duplicate_bits is not None and not 0 <= near_duplicate_bits <= 64:
        raise ValueError(
            f"near_duplicate_bits must be in [0, 64] or None, got {near_duplicate_bits}."
        )
    if min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}.")
    issues: list[DataIssue] = []
    entries = _list_entries(root, items_csv, issues)
    source = str(items_csv if items_csv is not None else root)
    if not entries:
        raise ExportError(_empty_message(source, items_csv is not None, issues))

    entries.sort(key=lambda e: (e.item_id, str(e.path)))
    decoded: list[_Decoded] = []
    limits = ImageLimits(min_side=1)
    for entry in _progress(entries, progress, "scan images"):
        result = _decode(entry, min_side, limits)
        if isinstance(result, DataIssue):
            issues.append(result)
        else:
            decoded.append(result)
    if not decoded:
        raise ExportError(_unusable_message(source, len(entries), issues))

    decoded = _drop_exact_duplicates(decoded, issues)
    if near_duplicate_bits is not None:
        decoded = _drop_near_duplicates(decoded, near_duplicate_bits, issues)
    records = [d.record for d in decoded]
    issues.extend(_label_issues(records, entries))
    return Dataset(records=records, issues=issues, source=source)


def _progress(items: Sequence[Any], enabled: bool, desc: str) -> Iterable[Any]:
    return track(items, desc) if enabled else items


def _list_entries(root: Optional[PathLike], items_csv: Optional[PathLike],
                  issues: list[DataIssue]) -> list[_Entry]:
    """The entries of the device's reader (so ids match the catalog's); its problems as issues."""
    try:
        if items_csv is not None:
            listing = listing_from_csv(items_csv, base=root)
        elif root is not None:
            listing = listing_from_folder(root)
        else:
            raise ValueError("scan_images() needs a folder (root) or an items CSV "
                             "(items_csv=...).")
    except CatalogError as exc:
        raise ExportError(f"{exc}.") from exc
    issues.extend(_listing_issue(p) for p in listing.problems)
    return [_Entry(s.item_id, s.image, s.label) for s in listing.items]


_PROBLEM_KINDS = {
    ProblemKind.NOT_AN_IMAGE: IssueKind.SKIPPED,
    ProblemKind.UNREADABLE: IssueKind.SKIPPED,
    ProblemKind.BAD_ROW: IssueKind.BAD_ROW,
    ProblemKind.MISSING: IssueKind.MISSING,
    ProblemKind.DUPLICATE_ID: IssueKind.DUPLICATE_ITEM_ID,
}


def _listing_issue(problem: ListingProblem) -> DataIssue:
    """A reader's problem as a data issue: about the file when there is one, else the row."""
    detail = problem.detail
    if problem.path is not None and problem.where != problem.path:
        detail = f"{problem.where}: {detail}"
    return DataIssue(problem.path or problem.where, _PROBLEM_KINDS[problem.kind], detail,
                     duplicate_of=problem.duplicate_of)


def _empty_message(source: str, csv_mode: bool, issues: list[DataIssue]) -> str:
    if csv_mode:
        msg = f"The items CSV {source} lists no existing image files"
        bad = [i for i in issues if i.kind in (IssueKind.MISSING, IssueKind.BAD_ROW)]
        if bad:
            msg += f" ({len(bad)} rows point nowhere, e.g. {bad[0].path})"
        return msg + "; check the paths (relative to the CSV's folder unless root is given)."
    msg = (
        f"No images found in {source}; put them in one sub-folder per label "
        f"({source}/<label>/<image>.jpg) or directly in it for unlabeled images, or list "
        "them in a CSV with columns item_id,path[,label] and pass items_csv"
    )
    skipped = [i for i in issues if i.kind is IssueKind.SKIPPED]
    if skipped:
        msg += f" ({len(skipped)} entries skipped, e.g. {skipped[0].path}: {skipped[0].detail})"
    return msg + "."


def _unusable_message(source: str, n: int, issues: list[DataIssue]) -> str:
    kinds = Counter(i.kind.value for i in issues if i.excluded and i.kind is not IssueKind.SKIPPED)
    first = " ".join([f"{i.path}: {i.detail}" for i in issues if i.excluded][:3])
    return (
        f"None of the {n} images in {source} is usable ({dict(sorted(kinds.items()))}). "
        f"Replace or re-encode the files and scan again. First problems: {first}"
    )


def _decode(entry: _Entry, min_side: int, limits: ImageLimits) -> Union[_Decoded, DataIssue]:
    """Read, check and decode one file; an issue instead of an exception for a bad one."""
    path = str(entry.path)
    try:
        size = entry.path.stat().st_size
        if size > limits.max_bytes:
            return DataIssue(path, IssueKind.TOO_LARGE, f"The file is {size} bytes, over the "
                             f"{limits.max_bytes}-byte limit; downscale or re-encode it.")
        data = entry.path.read_bytes()
    except OSError as exc:
        return DataIssue(path, IssueKind.MISSING, f"Cannot read the file ({exc}); check it.")
    try:  # header only: size checks before any pixel is decoded
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
    except Image.DecompressionBombError as exc:
        return DataIssue(path, IssueKind.TOO_LARGE, f"{exc}; downscale it.")
    except UnidentifiedImageError:
        what = "The file is empty" if not data else "Not an image in a format PIL can read"
        return DataIssue(path, IssueKind.UNDECODABLE, f"{what} (JPEG, PNG, WebP, GIF, BMP, "
                         "TIFF); replace or re-encode it.")
    except (OSError, ValueError, SyntaxError) as exc:
        kind = IssueKind.TRUNCATED if "truncat" in str(exc).lower() else IssueKind.UNDECODABLE
        return DataIssue(path, kind, f"Not a decodable image ({exc}); replace or re-encode it.")
    if width * height > limits.max_pixels:
        return DataIssue(path, IssueKind.TOO_LARGE, f"{width}x{height} pixels is over the "
                         f"{limits.max_pixels}-pixel limit; downscale it.")
    if min(width, height) < min_side:
        return DataIssue(path, IssueKind.TOO_SMALL, f"{width}x{height} pixels; images need at "
                         f"least {min_side} on each side (min_side). Use a larger photo.")
    try:
        img = load_image(data, limits)
    except InvalidImageError as exc:
        cause = str(exc.__cause__ or exc)
        kind = IssueKind.TRUNCATED if "truncat" in cause.lower() else IssueKind.UNDECODABLE
        return DataIssue(path, kind, f"The decoder failed ({cause}); the file is probably "
                         "truncated or corrupt: re-download or re-encode it.")
    record = ImageRecord(entry.item_id, entry.path, entry.label,
                         hashlib.sha256(data).hexdigest(), img.width, img.height)
    return _Decoded(record, _phash(img), _thumb(img))


_DCT = np.cos(np.pi * (2 * np.arange(32)[None, :] + 1) * np.arange(8)[:, None] / 64)


def _phash(img: Image.Image) -> int:
    """64-bit perceptual hash: 8x8 low frequencies of a 32x32 grey DCT, against their median."""
    grey = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BOX), np.float64)
    coeffs = _DCT @ grey @ _DCT.T
    bits = np.packbits((coeffs > np.median(coeffs)).ravel())
    return int(bits.view(">u8")[0])


def _thumb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.resize((8, 8), Image.Resampling.BOX), np.float32)


def _drop_exact_duplicates(decoded: list[_Decoded], issues: list[DataIssue]) -> list[_Decoded]:
    first: dict[str, _Decoded] = {}
    kept = []
    for d in decoded:
        original = first.setdefault(d.record.sha256, d)
        if original is d:
            kept.append(d)
        else:
            issues.extend(_duplicate_issues(d.record, original.record, IssueKind.EXACT_DUPLICATE))
    return kept


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


def _near_pairs(hashes: np.ndarray, bits: int) -> Iterator[tuple[int, int]]:
    """(i, j) with i < j and Hamming distance <= bits, in blocks of rows (O(N^2) bit ops)."""
    n = len(hashes)
    step = max(1, (1 << 22) // max(n, 1))
    for start in range(0, n, step):
        block = hashes[start:start + step, None] ^ hashes[None, :]
        rows, cols = np.nonzero(_popcount(block) <= bits)
        for i, j in zip((rows + start).tolist(), cols.tolist()):
            if i < j:
                yield i, j


def _drop_near_duplicates(
    decoded: list[_Decoded], bits: int, issues: list[DataIssue]
) -> list[_Decoded]:
    hashes = np.array([d.phash for d in decoded], dtype=np.uint64)
    earlier: dict[int, list[int]] = defaultdict(list)
    for i, j in _near_pairs(hashes, bits):
        if np.abs(decoded[i].thumb - decoded[j].thumb).mean() <= _NEAR_DUPLICATE_COLOR:
            earlier[j].append(i)
    dropped: set[int] = set()
    for j in sorted(earlier):
        keeper = next((i for i in sorted(earlier[j]) if i not in dropped), None)
        if keeper is not None:
            dropped.add(j)
            issues.extend(_duplicate_issues(
                decoded[j].record, decoded[keeper].record, IssueKind.NEAR_DUPLICATE))
    return [d for k, d in enumerate(decoded) if k not in dropped]


def _duplicate_issues(
    copy: ImageRecord, original: ImageRecord, kind: IssueKind
) -> list[DataIssue]:
    how = "the same bytes as" if kind is IssueKind.EXACT_DUPLICATE else "a near copy of"
    out = [DataIssue(
        str(copy.path), kind,
        f"Item {copy.item_id!r} is {how} item {original.item_id!r}, which was kept; remove one "
        "of them, or keep both only if they are really different items.",
        duplicate_of=str(original.path),
    )]
    if copy.label != original.label:
        out.append(DataIssue(
            str(original.path), IssueKind.CONFLICTING_LABELS,
            f"Kept with label {original.label!r}, but its duplicate {copy.item_id!r} is labelled "
            f"{copy.label!r}; check which label is right.", duplicate_of=str(copy.path),
        ))
    return out


def _label_issues(records: list[ImageRecord], entries: list[_Entry]) -> list[DataIssue]:
    counts = Counter(r.label for r in records if r.label is not None)
    out = [
        DataIssue(label, IssueKind.SINGLE_IMAGE_LABEL,
                  f"Label {label!r} has one usable image; it goes to train and cannot be "
                  "validated. Add more images of it or merge it into another label.")
        for label in sorted(counts) if counts[label] == 1
    ]
    lost = sorted({e.label for e in entries if e.label is not None} - set(counts))
    out += [
        DataIssue(label, IssueKind.EMPTY_LABEL,
                  f"Every image of label {label!r} was excluded (see the issues above); the "
                  "label is dropped. Replace its images to keep it.")
        for label in lost
    ]
    return out


# --------------------------------------------------------------------------- split


def item_seed(item_id: str, seed: int = 0) -> int:
    """A stable 63-bit integer from ``(seed, item_id)``, the same in every process and run."""
    digest = hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def split(
    dataset: Union[Dataset, Sequence[ImageRecord]],
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    split_unlabelled: bool = False,
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Deterministic train/validation split, stratified by label.

    Within each label the records are ordered by :func:`item_seed` of ``(seed, item_id)`` and
    the first ``round(val_fraction * n)`` go to validation, clamped so that a label with two or
    more images has at least one in each part (when ``val_fraction > 0``). A label with one
    image goes to train. Unlabelled records go to train, or with ``split_unlabelled`` are split
    the same way as one more group (a random split by item id, for images without labels). The
    result depends only on the set of records, not on their order.

    Returns:
        ``(train, validation)``, each sorted by item_id.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    records = dataset.records if isinstance(dataset, Dataset) else list(dataset)
    by_label: dict[Optional[str], list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_label[r.label].append(r)
    train: list[ImageRecord] = [] if split_unlabelled else list(by_label.pop(None, []))
    val: list[ImageRecord] = []
    for group in by_label.values():
        group.sort(key=lambda r: (item_seed(r.item_id, seed), r.item_id))
        n_val = 0
        if len(group) >= 2 and val_fraction > 0:
            n_val = min(max(round(val_fraction * len(group)), 1), len(group) - 1)
        val += group[:n_val]
        train += group[n_val:]
    return sorted(train, key=lambda r: r.item_id), sorted(val, key=lambda r: r.item_id)
