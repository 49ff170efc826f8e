"""Property-based fuzzing of a catalog's on-disk headers (issue 16): ``catalog.json`` with
random values in its fields or mangled bytes, and a segment's ``.npy`` header with mangled
bytes. ``Catalog.open`` (read-only) and a search either work or raise a CatalogError; nothing
else ever escapes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.errors import CatalogError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
DIM = 8

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.sampled_from([0, -1, 1, 8, 9, 10**9, 2**63])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10)
           | st.sampled_from(["int8", "float16", "float32", "edgerec.catalog", "enc"]))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)


def make_catalog(root: Path) -> Path:
    """The catalog every case starts from: 20 items, int8, one segment."""
    vectors = np.random.default_rng(0).standard_normal((20, DIM)).astype(np.float32)
    with Catalog.create(root, dim=DIM, encoder_id="enc") as cat:
        cat.add([f"i{n}" for n in range(20)], vectors, [{"n": n} for n in range(20)])
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_catalog(tmp_path_factory.mktemp("fuzz") / "cat")


def _fresh(pristine: Path, scratch: Path) -> Path:
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(pristine, scratch)
    return scratch


def check_catalog(root: Path) -> str:
    """The property: a read-only open and a search work, or raise CatalogError."""
    try:
        with Catalog.open(root, readonly=True) as cat:
            matches = cat.search(np.ones(cat.dim, np.float32), k=3)
            assert len(matches) <= 3
    except CatalogError:
        return "refused"
    return "searched"


def write_header(pristine: Path, scratch: Path, text: bytes) -> Path:
    root = _fresh(pristine, scratch)
    (root / "catalog.json").write_bytes(text)
    return root


def write_segment_edits(pristine: Path, scratch: Path, edits: list[tuple[int, bytes]]) -> Path:
    root = _fresh(pristine, scratch)
    path = sorted(root.rglob("*.npy"))[0]
    data = bytearray(path.read_bytes())
    for pos, value in edits:
        data[pos:pos + len(value)] = value
    path.write_bytes(bytes(data))
    return root


segment_edits = st.lists(st.tuples(st.integers(0, 127), st.binary(min_size=1, max_size=4)),
                         min_size=1, max_size=4)


@st.composite
def headers(draw: st.DrawFn, base: dict) -> bytes:
    data = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*base, "extra"]))
        if draw(st.booleans()):
            data[key] = draw(json_values)
        else:
            data.pop(key, None)
    text = json.dumps(data).encode() if draw(st.integers(0, 9)) else draw(
        st.sampled_from([b"", b"[" * 5000, b"\xff\xfe", b"null", b'{"dim": 1e999}']))
    if draw(st.booleans()):
        pos = draw(st.integers(0, max(len(text) - 1, 0)))
        text = text[:pos] + draw(st.binary(max_size=4)) + text[pos + 1:]
    return text


def test_a_fuzzed_catalog_header_opens_or_raises_catalog_error(pristine, tmp_path):
    base = json.loads((pristine / "catalog.json").read_text())

    @FUZZ
    @given(headers(base))
    def check(text: bytes) -> None:
        check_catalog(write_header(pristine, tmp_path / "c", text))

    check()


def test_a_fuzzed_segment_header_opens_or_raises_catalog_error(pristine, tmp_path):
    @FUZZ
    @given(segment_edits)
    def check(edits: list[tuple[int, bytes]]) -> None:
        check_catalog(write_segment_edits(pristine, tmp_path / "c", edits))

    check()
