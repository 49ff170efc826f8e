"""Property-based fuzzing of the image path (issue 16): mutated encoded images of every allowed
format, random bytes and random arrays either preprocess to a finite tensor of the contract's
shape or raise InvalidImageError naming index 0; nothing else ever escapes. Bounded to a few
seconds; ``benchmarks/fuzz.py`` runs the same properties with a large budget."""

from __future__ import annotations

import io

import numpy as np
import pytest
from edgerec.sdk import InvalidImageError, Preprocessing, preprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL on mangled metadata

PRE = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8))
    rgba = rgb.convert("RGBA")
    return [
        _encoded(rgb, "JPEG", quality=80), _encoded(rgb, "JPEG", progressive=True),
        _encoded(rgb, "PNG"), _encoded(rgba, "PNG"),
        _encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG",
                 transparency=0),
        _encoded(Image.fromarray(rng.integers(0, 65535, (20, 24), np.uint16)), "PNG"),
        _encoded(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P")]),
        _encoded(rgb, "BMP"), _encoded(rgb, "TIFF"), _encoded(rgb, "TIFF", compression="tiff_lzw"),
        _encoded(rgb, "WEBP", quality=60), _encoded(rgba, "WEBP", lossless=True),
    ]


SEEDS = _seeds()
_INTERESTING = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00",
                b"\x00\x00\x01\x00", b"\x80\x00\x00\x00"]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A seed image with up to 8 mutations: bit flips, byte sets, 32-bit field overwrites
    (header sizes), truncation, insertion and deletion."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 5, 8]))):  # mostly few
        if not data:
            break
        op = draw(st.sampled_from(["flip", "set", "field", "truncate", "insert", "delete"]))
        # mutations near the header find the size and type fields; later ones the pixel data
        pos = draw(st.one_of(st.integers(0, min(len(data) - 1, 64)),
                             st.integers(0, len(data) - 1)))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "field":
            data[pos:pos + 4] = draw(st.sampled_from(_INTERESTING))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


def check_image(source) -> str:
    """The property: a finite tensor of the contract's shape, or InvalidImageError naming
    index 0. Returns which."""
    try:
        out = preprocess([source], PRE)
    except InvalidImageError as exc:
        assert str(exc).startswith("Image 0: "), exc
        return "refused"
    assert out.shape == (1, 3, 32, 32) and out.dtype == np.float32
    assert np.isfinite(out).all()
    return "tensor"


image_bytes = st.one_of(mutated_images(), st.binary(max_size=300))


@FUZZ
@given(image_bytes)
def test_mutated_image_bytes_give_a_tensor_or_an_invalid_image_error(data):
    check_image(data)


image_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.float32, np.int16, np.bool_, np.uint16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=48))


@settings(FUZZ, max_examples=150)
@given(image_arrays)
def test_random_arrays_give_a_tensor_or_an_invalid_image_error(array):
    check_image(array)
