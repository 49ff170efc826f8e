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
    resize_and_crop,
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
    encoded = [path, str(path), jpeg_bytes, bytearray(jpeg_bytes), io.BytesIO(jpeg_bytes)]
    tensors = [preprocess([k], PRE) for k in encoded]
    for t in tensors[1:]:
        np.testing.assert_array_equal(t, tensors[0])
    assert tensors[0].shape == (1, 3, 64, 64) and tensors[0].dtype == np.float32
    # Decoded pixels (a PIL image, an array) are resized from full size; the encoded JPEG
    # (400x533, over twice the 64-px input) is decoded at a reduced DCT scale first: the
    # same tensor up to a fraction of a grey level on average.
    decoded = [preprocess([k], PRE) for k in (pil, array)]
    np.testing.assert_array_equal(decoded[0], decoded[1])
    assert np.abs(decoded[0] - tensors[0]).mean() * 127.5 < 1.0


@pytest.fixture()
def draft_sizes(monkeypatch) -> list:
    """The frame size PIL's JPEG decoder settles on at each ``draft()`` call."""
    from PIL import JpegImagePlugin

    sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return sizes


def test_a_jpeg_twice_the_input_is_decoded_at_half_scale(jpeg_bytes, draft_sizes):
    pre = Preprocessing(input_size=192, crop_pct=1.0)  # the shipped student's
    full = Image.open(io.BytesIO(jpeg_bytes)).size
    out = preprocess([jpeg_bytes], pre)
    assert draft_sizes == [(-(-full[0] // 2), -(-full[1] // 2))]
    assert out.shape == (1, 3, 192, 192)
    draft_sizes.clear()
    preprocess([jpeg_bytes], Preprocessing(input_size=224, crop_pct=0.875))  # 256 > 400 / 2
    assert draft_sizes == []


def test_nhwc_is_the_transpose_of_nchw(jpeg_bytes):
    nchw = preprocess([jpeg_bytes], PRE, Layout.NCHW)
    nhwc = preprocess([jpeg_bytes], PRE, Layout.NHWC)
    np.testing.assert_array_equal(nchw.transpose(0, 2, 3, 1), nhwc)


def test_normalisation_uses_per_channel_mean_and_std():
    pre = Preprocessing(input_size=8, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    img = np.full((8, 8, 3), 255, np.uint8)
    x = preprocess([img], pre, Layout.NHWC)[0, 0, 0]
    np.testing.assert_allclose(x, [1.0, 1.0, 0.0], atol=1e-6)


def test_normalisation_is_bit_for_bit_the_broadcast_formula_in_both_layouts():
    # the per-plane (NCHW) and tiled-row (NHWC) paths must give the bits the parity gates saw
    pre = Preprocessing(input_size=24, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    mean = np.asarray(pre.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(pre.std, np.float32) * 255.0)
    want = np.stack([(x.astype(np.float32) - mean) * inv_std for x in images])
    np.testing.assert_array_equal(preprocess(images, pre, Layout.NHWC), want)
    np.testing.assert_array_equal(preprocess(images, pre, Layout.NCHW),
                                  want.transpose(0, 3, 1, 2))
    assert preprocess(images, pre, Layout.NCHW).flags.c_contiguous


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


# ---------------------------------------------------------------- issue 16: hostile inputs


def _png_strip(width: int, height: int) -> bytes:
    """A real, tiny (compressed) grey PNG of width x height."""
    return _png(Image.new("L", (width, height), 128))


@pytest.mark.parametrize("source", [
    lambda: _png_header_only(100_000, 8),       # the 872-byte panorama of the issue
    lambda: _png_header_only(8, 8_000_000),     # 64 Mpx, inside the pixel limit
    lambda: np.zeros((8, 4000, 3), np.uint8),   # an 8 x 4000 array
    lambda: Image.new("RGB", (4000, 8)),        # and a PIL image
])
def test_an_extreme_aspect_ratio_is_refused_before_decoding(source):
    with pytest.raises(InvalidImageError, match=r"Image 0: .*aspect ratio"):
        preprocess([source()], PRE)


def test_the_aspect_ratio_limit_is_configurable():
    wide = np.zeros((8, 800, 3), np.uint8)
    with pytest.raises(InvalidImageError, match="aspect ratio"):
        load_image(wide, ImageLimits(max_aspect_ratio=50))
    assert load_image(wide, ImageLimits(max_aspect_ratio=200)).size == (800, 8)


def test_decoded_bytes_are_limited_from_the_header():
    # 4000 x 4000 RGB decodes to 64 MB (4 bytes a pixel in PIL): over a 32 MB limit.
    limits = ImageLimits(max_decoded_bytes=32 * 1024 * 1024)
    with pytest.raises(InvalidImageError, match="decoded"):
        load_image(_png_header_only(4000, 4000), limits)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(draft_sizes):
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1500), (90, 120, 200)).save(buf, format="JPEG")
    out = preprocess([buf.getvalue()], PRE, Layout.NHWC)
    assert draft_sizes and draft_sizes[0][1] <= 1500 // 4  # a quarter-size frame (or smaller)
    np.testing.assert_allclose(out[0].mean((0, 1)), (np.array([90, 120, 200]) / 255 - 0.5) / 0.5,
                               atol=0.02)


def test_reduced_decoding_matches_the_exact_resize():
    """draft/reduce before the resize changes the tensor by less than JPEG noise does."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (40, 30, 3), np.uint8)
    img = Image.fromarray(base).resize((3000, 4000), Image.Resampling.BICUBIC)
    pre = Preprocessing(input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    exact = np.asarray(img.resize((64, round(64 * 4000 / 3000)), Image.Resampling.BILINEAR,
                                  reducing_gap=None), np.float32)
    top = (exact.shape[0] - 64) // 2
    exact = (exact[top:top + 64] / 255.0 - 0.5) / 0.5
    got = preprocess([img], pre, Layout.NHWC)[0]
    assert np.abs(got - exact).mean() < 0.01


def test_the_resize_box_is_the_crop_not_the_whole_image():
    """A large wide image is resampled only where the crop is: resize-then-crop up to rounding."""
    img = _smooth(6000, 800, seed=2)
    pre = Preprocessing(input_size=16)
    full = img.resize((120, 16), Image.Resampling.BILINEAR, reducing_gap=None)
    want = np.asarray(full.crop((52, 0, 68, 16)), np.float32)
    got = np.asarray(resize_and_crop(img, pre), np.float32)
    assert np.abs(got - want).max() <= 1


def _eps() -> bytes:
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
            b"newpath 0 0 moveto 16 16 lineto stroke showpage\n%%EOF\n")


def test_formats_outside_the_allow_list_never_reach_their_decoder(monkeypatch):
    from PIL import EpsImagePlugin

    called = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        lambda self: called.append(1) or (_ for _ in ()).throw(SyntaxError()))
    with pytest.raises(InvalidImageError, match=r"Image 0: .*allowed formats"):
        preprocess([_eps()], PRE)
    assert not called


def test_the_format_allow_list_can_be_widened():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, format="PCX")
    with pytest.raises(InvalidImageError, match="allowed formats"):
        load_image(buf.getvalue())
    wider = ImageLimits(formats=(*ImageLimits().formats, "PCX"))
    assert load_image(buf.getvalue(), wider).getpixel((0, 0)) == (10, 200, 30)


def test_sixteen_bit_grey_is_scaled_by_its_bit_depth_not_its_maximum():
    dark = Image.fromarray(np.full((16, 16), 255, np.uint16))  # 255/65535: nearly black
    assert np.asarray(load_image(dark)).max() <= 1
    darker = np.full((16, 16), 255, np.uint16)
    darker[0, 0] = 256
    a, b = np.asarray(load_image(dark)), np.asarray(load_image(Image.fromarray(darker)))
    assert abs(int(a[8, 8, 0]) - int(b[8, 8, 0])) <= 1
    png = _png(Image.fromarray(np.full((16, 16), 65535, np.uint16)))
    assert np.asarray(load_image(png)).min() == 255


def test_an_h_w_1_array_is_the_same_as_h_w():
    grey = np.random.default_rng(3).integers(0, 255, (16, 16), np.uint8)
    np.testing.assert_array_equal(load_image(grey[..., None]), load_image(grey))


def test_none_instead_of_a_list_is_an_invalid_image_error():
    with pytest.raises(InvalidImageError, match="None"):
        preprocess(None, PRE)  # type: ignore[arg-type]


def _old_resize_and_crop(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """The contract as first written: resize the whole image, then crop (the reference)."""
    from PIL import ImageOps

    img = (ImageOps.exif_transpose(img) or img).convert("RGB")
    size = pre.input_size
    if pre.resize is ResizeMode.STRETCH:
        return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    short = max(size, round(size / pre.crop_pct))
    scale = short / min(img.size)
    new_w, new_h = max(size, round(img.size[0] * scale)), max(size, round(img.size[1] * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), np.float32)


def _smooth(width: int, height: int, seed: int) -> Image.Image:
    small = np.random.default_rng(seed).integers(0, 255, (6, 9, 3), np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("size", "crop_pct", "resize", "tolerance"), [
    ((90, 50), 1.0, ResizeMode.SHORTER_CENTER_CROP, 0.51),   # no reduction: the same pixels
    ((61, 97), 0.875, ResizeMode.SHORTER_CENTER_CROP, 0.51),
    ((1200, 400), 0.875, ResizeMode.SHORTER_CENTER_CROP, 2.0),  # reduced 3x before the resize
    ((400, 1200), 1.0, ResizeMode.STRETCH, 2.0),
    ((1600, 800), 1.0, ResizeMode.SHORTER_CENTER_CROP, 3.0),  # JPEG: drafted at 1/8 scale
])
def test_bounded_decoding_matches_the_whole_image_resize(orientation, size, crop_pct, resize,
                                                         tolerance):
    img = _smooth(*size, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if size[0] == 1600 else "PNG", exif=exif.tobytes(), quality=95)
    pre = Preprocessing(input_size=32, crop_pct=crop_pct, resize=resize, mean=(0, 0, 0),
                        std=(1 / 255, 1 / 255, 1 / 255))
    want = _old_resize_and_crop(Image.open(io.BytesIO(buf.getvalue())), pre)
    got = preprocess([buf.getvalue()], pre, Layout.NHWC)[0]
    assert np.abs(got - want).max() <= tolerance * 4 and np.abs(got - want).mean() <= tolerance


def test_a_callers_lazy_pil_image_is_not_shrunk_by_preprocessing():
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1500), (90, 120, 200)).save(buf, format="JPEG")
    img = Image.open(io.BytesIO(buf.getvalue()))
    preprocess([img], PRE)
    assert img.size == (2000, 1500)
