"""Decoding every kind of input, and refusing every kind of bad one."""

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import sample_images
from edgerec.sdk import (
    ImageLimits,
    InvalidImageError,
    Layout,
    Preprocessing,
    ResizeMode,
    load_image,
    preprocess,
)
from PIL import Image

PRE = Preprocessing(input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))


def test_every_input_kind_gives_the_same_tensor(jpeg_bytes, tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes)
    pil = Image.open(io.BytesIO(jpeg_bytes))
    array = np.asarray(pil.convert("RGB"))
    kinds = [path, str(path), jpeg_bytes, bytearray(jpeg_bytes), io.BytesIO(jpeg_bytes), pil, array]
    tensors = [preprocess([k], PRE) for k in kinds]
    for t in tensors[1:]:
        np.testing.assert_array_equal(t, tensors[0])
    assert tensors[0].shape == (1, 3, 64, 64) and tensors[0].dtype == np.float32


def test_nhwc_is_the_transpose_of_nchw(jpeg_bytes):
    nchw = preprocess([jpeg_bytes], PRE, Layout.NCHW)
    nhwc = preprocess([jpeg_bytes], PRE, Layout.NHWC)
    np.testing.assert_array_equal(nchw.transpose(0, 2, 3, 1), nhwc)


def test_normalisation_uses_per_channel_mean_and_std():
    pre = Preprocessing(input_size=8, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    img = np.full((8, 8, 3), 255, np.uint8)
    x = preprocess([img], pre, Layout.NHWC)[0, 0, 0]
    np.testing.assert_allclose(x, [1.0, 1.0, 0.0], atol=1e-6)


def test_shorter_side_resize_then_centre_crop_keeps_the_middle():
    img = np.zeros((40, 120, 3), np.uint8)  # wide: left third red, middle green, right blue
    img[:, :40, 0] = 255
    img[:, 40:80, 1] = 255
    img[:, 80:, 2] = 255
    pre = Preprocessing(input_size=20, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest")
    x = preprocess([img], pre, Layout.NHWC)[0]
    assert x.shape == (20, 20, 3)
    assert np.allclose(x[..., 1], 1.0) and np.allclose(x[..., [0, 2]], 0.0)
    stretched = preprocess([img], Preprocessing(
        input_size=30, mean=(0, 0, 0), std=(1, 1, 1), resize=ResizeMode.STRETCH,
        interpolation="nearest"), Layout.NHWC)[0]
    assert stretched[:, 0, 0].min() == 1.0 and stretched[:, -1, 2].min() == 1.0


def test_crop_pct_below_one_crops_tighter():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:10] = 255  # a white band at the top
    full = preprocess([img], Preprocessing(input_size=50, mean=(0,) * 3, std=(1,) * 3))
    tight = preprocess([img], Preprocessing(input_size=50, crop_pct=0.5, mean=(0,) * 3,
                                            std=(1,) * 3))
    assert full[0, 0, 0].mean() > 0.5 and tight[0, 0].max() < 0.01


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    upright = load_image(buf.getvalue())
    assert upright.size == (20, 40)
    top = np.asarray(upright)[:10].mean((0, 1))
    assert top[2] > 200 and top[0] < 60  # blue came to the top


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "1", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_any_pil_mode_becomes_rgb(mode):
    base = Image.new("RGB", (16, 16), (200, 100, 50))
    img = base.convert(mode) if mode not in ("I;16", "I", "F") else Image.new(mode, (16, 16), 200)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (16, 16)


def test_transparent_pixels_are_composited_on_white():
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert np.asarray(load_image(_png(img))).min() == 255
    half = Image.new("RGBA", (16, 16), (0, 0, 0, 128))
    assert 120 <= np.asarray(load_image(half)).mean() <= 135
    pal = Image.new("P", (16, 16), 0)
    pal.info["transparency"] = 0
    assert np.asarray(load_image(pal)).min() == 255


def test_sixteen_bit_grey_is_scaled_not_clipped():
    img = Image.fromarray(np.full((16, 16), 32768, np.uint16))
    assert 126 <= np.asarray(load_image(img)).mean() <= 130


def test_grey_and_rgba_arrays_are_accepted():
    assert load_image(np.zeros((16, 16), np.uint8)).mode == "RGB"
    assert load_image(np.zeros((16, 16, 4), np.uint8)).mode == "RGB"


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(buf.getvalue()))[..., 0].mean() > 200


def _truncated(jpeg: bytes) -> bytes:
    return jpeg[: len(jpeg) // 2]


BAD = {
    "empty bytes": lambda j, t: b"",
    "text bytes": lambda j, t: b"hello, not an image",
    "truncated jpeg": lambda j, t: _truncated(j),
    "corrupted jpeg body": lambda j, t: j[:600] + bytes(len(j) - 600),
    "missing file": lambda j, t: t / "missing.jpg",
    "directory": lambda j, t: t,
    "html named jpg": lambda j, t: (t / "x.jpg").write_text("<html></html>") and t / "x.jpg",
    "huge header": lambda j, t: _png_header_only(100_000, 100_000),
    "over pixel limit": lambda j, t: _png_header_only(9000, 8000),
    "tiny image": lambda j, t: _png(Image.new("RGB", (2, 2))),
    "float array": lambda j, t: np.zeros((16, 16, 3), np.float32),
    "two-channel array": lambda j, t: np.zeros((16, 16, 2), np.uint8),
    "4-d array": lambda j, t: np.zeros((1, 16, 16, 3), np.uint8),
    "text file object": lambda j, t: io.StringIO("abc"),
    "an int": lambda j, t: 42,
    "none": lambda j, t: None,
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_images_raise_invalid_image_error(kind, jpeg_bytes, tmp_path):
    source = BAD[kind](jpeg_bytes, tmp_path)
    with pytest.raises(InvalidImageError) as info:
        preprocess([source], PRE)
    assert str(info.value).startswith("Image 0: ") and len(str(info.value)) > 30


def test_corrupt_image_in_a_batch_is_named_by_position(jpeg_bytes):
    with pytest.raises(InvalidImageError, match="Image 2: "):
        preprocess([jpeg_bytes, jpeg_bytes, b"junk"], PRE)


def test_limits_are_configurable():
    small = ImageLimits(max_pixels=100, min_side=1)
    with pytest.raises(InvalidImageError, match="100-pixel limit"):
        load_image(np.zeros((11, 10), np.uint8), small)
    assert load_image(np.zeros((3, 3), np.uint8), small).size == (3, 3)


def test_a_single_image_instead_of_a_list_is_a_type_error(jpeg_bytes):
    with pytest.raises(TypeError, match="sequence"):
        preprocess(jpeg_bytes, PRE)


def test_contract_round_trips_through_json_form():
    pre = Preprocessing(input_size=160, crop_pct=0.875, interpolation="bicubic")
    assert Preprocessing.from_dict(pre.to_dict()) == pre


@pytest.mark.parametrize("bad", [{"input_size": 2}, {"crop_pct": 1.5}, {"std": (1, 0, 1)},
                                 {"mean": (0.5, 0.5)}])
def test_contract_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        Preprocessing(**bad)


def test_real_sample_photos_decode():
    for path, _ in sample_images(2):
        img = load_image(path)
        assert img.mode == "RGB" and min(img.size) >= 100
