"""Tests for lookalike.images: every input is generated in tmp_path / memory."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from lookalike import images
from lookalike.images import (
    BACKGROUND,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    DecodedImage,
    ImageError,
    load_image,
    read_bytes,
)

RED = (220, 20, 30)
BLUE = (20, 40, 220)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def pixel(d: DecodedImage, x: int, y: int) -> np.ndarray:
    return np.asarray(d.image)[y, x].astype(int)


def close(a, b, tol: int = 12) -> bool:
    return bool(np.all(np.abs(np.asarray(a, int) - np.asarray(b, int)) <= tol))


def check_rgb(d: DecodedImage) -> None:
    assert isinstance(d, DecodedImage)
    assert d.image.mode == "RGB"
    assert type(d.image) is Image.Image  # plain in-memory image, not a file-backed plugin object


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming width x height, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    idat = zlib.compress(b"\x00" * 64)  # a few bytes of the first row, then EOF
    chunk += struct.pack(">I", len(idat)) + b"IDAT" + idat
    chunk += struct.pack(">I", zlib.crc32(b"IDAT" + idat) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk


def gradient16(w: int = 256, h: int = 16) -> np.ndarray:
    return np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))


# ---------------------------------------------------------------------------------------------
# constants / API
# ---------------------------------------------------------------------------------------------
def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 178_956_970
    assert BACKGROUND == (255, 255, 255)
    assert {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
    } == IMAGE_EXTENSIONS
    assert all(e == e.lower() for e in IMAGE_EXTENSIONS)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    err = ImageError("empty file")
    assert err.reason == "empty file" and str(err) == "empty file"


# ---------------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "suffix", "kw", "tol"),
    [
        ("JPEG", ".jpg", {"quality": 95}, 12),
        ("PNG", ".png", {}, 0),
        ("WEBP", ".webp", {"lossless": True}, 0),
        ("GIF", ".gif", {}, 0),
        ("BMP", ".bmp", {}, 0),
        ("TIFF", ".tif", {}, 0),
        ("TIFF", ".tiff", {"compression": "tiff_lzw"}, 0),
    ],
)
def test_format_round_trip(tmp_path: Path, fmt: str, suffix: str, kw: dict, tol: int) -> None:
    src = Image.new("RGB", (64, 48), RED)
    src.paste(BLUE, (0, 0, 32, 48))
    path = tmp_path / f"img{suffix}"
    src.save(path, fmt, **kw)
    d = load_image(path)
    check_rgb(d)
    assert d.format == fmt
    assert (d.width, d.height) == (64, 48)
    assert d.image.size == (64, 48)
    assert close(pixel(d, 50, 20), RED, tol)
    assert close(pixel(d, 10, 20), BLUE, tol)


@pytest.mark.parametrize(("fmt", "suffix"), [("HEIF", ".heic"), ("AVIF", ".avif")])
def test_heic_avif_round_trip(tmp_path: Path, fmt: str, suffix: str) -> None:
    src = Image.new("RGB", (64, 48), RED)
    src.paste(BLUE, (0, 0, 32, 48))
    path = tmp_path / f"img{suffix}"
    try:
        src.save(path, fmt, quality=95)
    except (KeyError, OSError, ValueError) as e:
        pytest.skip(f"no {fmt} encoder available in this environment: {e}")
    d = load_image(path)
    check_rgb(d)
    assert d.format == fmt
    assert (d.width, d.height) == (64, 48)
    assert close(pixel(d, 56, 20), RED, 25)
    assert close(pixel(d, 8, 20), BLUE, 25)


def test_bytes_input_matches_path(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    noise(50, 40).save(path)
    a = load_image(path)
    b = load_image(path.read_bytes())
    c = load_image(bytearray(path.read_bytes()))
    assert a.format == b.format == c.format == "PNG"
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_mislabelled_png_as_jpg(tmp_path: Path) -> None:
    path = tmp_path / "actually_png.jpg"
    Image.new("RGB", (30, 20), RED).save(path, "PNG")
    d = load_image(path)
    assert d.format == "PNG"
    assert close(pixel(d, 5, 5), RED, 0)


def test_read_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert read_bytes(path) == b"abc"
    assert read_bytes(str(path)) == b"abc"


# ---------------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------------
def _oriented_jpeg(path: Path, orientation: int, size=(80, 40)) -> None:
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, 16, 16))  # marker at the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", quality=95, exif=exif)


@pytest.mark.parametrize(
    ("orientation", "marker_xy"),
    [
        (1, (8, 8)),  # unchanged
        (3, (80 - 8, 40 - 8)),  # 180: bottom-right
        (6, (40 - 8, 8)),  # rotate 90 CW: stored top-left -> displayed top-right
        (8, (8, 80 - 8)),  # rotate 90 CCW: stored top-left -> displayed bottom-left
    ],
)
def test_exif_orientation(tmp_path: Path, orientation: int, marker_xy: tuple[int, int]) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    _oriented_jpeg(path, orientation)
    d = load_image(path)
    check_rgb(d)
    swapped = orientation >= 5
    assert (d.width, d.height) == ((40, 80) if swapped else (80, 40))
    assert d.image.size == (d.width, d.height)
    assert close(pixel(d, *marker_xy), RED, 20)
    # the opposite corner is not the marker
    x, y = marker_xy
    assert not close(pixel(d, d.width - 1 - x, d.height - 1 - y), RED, 60)


def test_malformed_exif_is_ignored(tmp_path: Path) -> None:
    im = Image.new("RGB", (20, 10), RED)
    data = encode(im, "JPEG", exif=b"Exif\x00\x00garbage-not-tiff")
    d = load_image(data)
    assert (d.width, d.height) == (20, 10)


# ---------------------------------------------------------------------------------------------
# transparency and pixel modes
# ---------------------------------------------------------------------------------------------
def test_rgba_alpha_matters() -> None:
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:] = (10, 200, 30)
    opaque = np.dstack([rgb, np.full((20, 20), 255, np.uint8)])
    half = np.dstack([rgb, np.full((20, 20), 128, np.uint8)])
    clear = np.dstack([rgb, np.zeros((20, 20), np.uint8)])
    outs = [
        np.asarray(load_image(encode(Image.fromarray(a, "RGBA"), "PNG")).image)
        for a in (opaque, half, clear)
    ]
    assert close(outs[0][5, 5], (10, 200, 30), 0)
    assert close(outs[1][5, 5], (132, 228, 142), 2)  # 50 % over white
    assert close(outs[2][5, 5], BACKGROUND, 0)
    assert not np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[1], outs[2])


def test_palette_with_transparency() -> None:
    im = Image.new("P", (20, 20), 0)
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    im.paste(1, (0, 0, 10, 20))
    data = encode(im, "PNG", transparency=0)
    d = load_image(data)
    check_rgb(d)
    assert close(pixel(d, 5, 5), (200, 10, 10), 0)
    assert close(pixel(d, 15, 5), BACKGROUND, 0)  # transparent index -> background, not black
    # GIF keeps palette transparency too
    g = load_image(encode(im, "GIF", transparency=0))
    assert close(pixel(g, 15, 5), BACKGROUND, 0)
    assert close(pixel(g, 5, 5), (200, 10, 10), 0)


def test_la_mode() -> None:
    gray = np.full((10, 20), 60, np.uint8)
    alpha = np.zeros((10, 20), np.uint8)
    alpha[:, :10] = 255
    im = Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)])
    d = load_image(encode(im, "PNG"))
    check_rgb(d)
    assert close(pixel(d, 5, 5), (60, 60, 60), 0)
    assert close(pixel(d, 15, 5), BACKGROUND, 0)


def test_rgb_colour_key_transparency() -> None:
    im = Image.new("RGB", (20, 10), (1, 2, 3))
    im.paste(RED, (0, 0, 10, 10))
    d = load_image(encode(im, "PNG", transparency=(1, 2, 3)))
    assert close(pixel(d, 15, 5), BACKGROUND, 0)
    assert close(pixel(d, 5, 5), RED, 0)


@pytest.mark.parametrize("mode", ["L", "1", "P"])
def test_simple_modes(mode: str) -> None:
    im = Image.new("RGB", (20, 10), (255, 255, 255)).convert(mode)
    d = load_image(encode(im, "PNG"))
    check_rgb(d)
    assert close(pixel(d, 3, 3), (255, 255, 255), 0)


def test_cmyk_jpeg() -> None:
    im = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red in CMYK
    im.paste((255, 255, 0, 0), (16, 0, 32, 16))  # blue
    data = encode(im, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    d = load_image(data)
    check_rgb(d)
    assert d.format == "JPEG"
    assert close(pixel(d, 4, 8), (255, 0, 0), 20)
    assert close(pixel(d, 28, 8), (0, 0, 255), 20)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("rawmode", ["I;16", "I;16B"])
def test_16bit_grayscale_keeps_range(fmt: str, rawmode: str) -> None:
    g = gradient16()
    dtype = "<u2" if rawmode == "I;16" else ">u2"
    im = Image.frombytes(rawmode, (g.shape[1], g.shape[0]), g.astype(dtype).tobytes())
    data = encode(im, fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    a = np.asarray(load_image(data, min_side=0).image)
    assert a.min() <= 1 and a.max() >= 254
    assert close(a[0, 128], (128, 128, 128), 2)  # mid grey stays mid grey (scaled, not clipped)
    assert np.all(np.diff(a[0, :, 0].astype(int)) >= 0)  # monotonic gradient


def test_32bit_int_and_float_tiff() -> None:
    g = gradient16().astype(np.int32)
    a = np.asarray(load_image(encode(Image.fromarray(g, "I"), "TIFF")).image)
    assert a.min() <= 1 and a.max() >= 254
    f = np.tile(np.linspace(-3.0, 7.0, 64, dtype=np.float32), (8, 1))
    b = np.asarray(load_image(encode(Image.fromarray(f, "F"), "TIFF")).image)
    assert b.min() == 0 and b.max() == 255


def test_16bit_rgb_tiff_and_png() -> None:
    cv2 = pytest.importorskip("cv2")
    g = gradient16()
    rgb16 = np.dstack([g, g[:, ::-1], np.full_like(g, 30000)])
    for ext, fmt in ((".tif", "TIFF"), (".png", "PNG")):
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb16[:, :, ::-1]))  # cv2 wants BGR
        assert ok
        d = load_image(buf.tobytes(), min_side=0)
        check_rgb(d)
        assert d.format == fmt
        a = np.asarray(d.image).astype(int)
        assert close(a[0, 0], (0, 255, 117), 1)
        assert close(a[0, -1], (255, 0, 117), 1)
        assert close(a[0, 128], (128, 127, 117), 1)


def test_float_rgb_tiff_opencv_fallback() -> None:
    cv2 = pytest.importorskip("cv2")
    f = np.zeros((20, 30, 3), np.float32)
    f[:, :, 2] = 1.0  # BGR: red channel at full
    ok, buf = cv2.imencode(".tif", f)
    assert ok
    d = load_image(buf.tobytes())
    check_rgb(d)
    assert d.format == "TIFF" and (d.width, d.height) == (30, 20)
    assert close(pixel(d, 5, 5), (255, 0, 0), 0)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE, (20, 200, 20))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    d = load_image(path)
    check_rgb(d)
    assert d.format == "GIF"
    assert close(pixel(d, 10, 10), RED, 8)


# ---------------------------------------------------------------------------------------------
# reduced (draft) decoding
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize((4000, 3000), Image.Resampling.BILINEAR)
    return encode(im, "JPEG", quality=85)


def test_draft_large_jpeg(big_jpeg: bytes) -> None:
    d = load_image(big_jpeg, min_side=448)
    check_rgb(d)
    assert (d.width, d.height) == (4000, 3000)
    w, h = d.image.size
    assert 448 <= min(w, h) < 3000
    assert abs(w / h - 4 / 3) < 0.01
    # and the reduced decode looks like the full image, downscaled
    full = load_image(big_jpeg, min_side=0)
    assert full.image.size == (4000, 3000)
    ref = np.asarray(full.image.resize((w, h), Image.Resampling.BOX)).astype(int)
    assert np.abs(ref - np.asarray(d.image).astype(int)).mean() < 4


@pytest.mark.parametrize("min_side", [1, 100, 300, 448, 750, 1000, 1600])
def test_draft_never_below_min_side(big_jpeg: bytes, min_side: int) -> None:
    d = load_image(big_jpeg, min_side=min_side)
    assert min(d.image.size) >= min_side
    assert (d.width, d.height) == (4000, 3000)


def test_draft_rotated_large_jpeg() -> None:
    im = Image.new("RGB", (4000, 3000), BLUE)
    im.paste(RED, (0, 0, 400, 400))
    exif = Image.Exif()
    exif[0x0112] = 6
    d = load_image(encode(im, "JPEG", quality=85, exif=exif), min_side=448)
    assert (d.width, d.height) == (3000, 4000)
    w, h = d.image.size
    assert 448 <= w < 3000 and h > w
    assert abs(h / w - 4 / 3) < 0.01
    assert close(pixel(d, w - 5, 5), RED, 20)  # stored top-left -> displayed top-right


def test_large_png_reduced_but_not_below_min_side() -> None:
    im = Image.new("RGB", (2000, 1000), RED)
    d = load_image(encode(im, "PNG"), min_side=448)
    assert (d.width, d.height) == (2000, 1000)
    assert 448 <= min(d.image.size) < 1000
    assert close(pixel(d, 5, 5), RED, 0)


def test_large_rgba_reduced_equals_composite_then_reduce() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (1000, 1800, 3), dtype=np.uint8)
    alpha = np.zeros((1000, 1800), np.uint8)
    alpha[:, 900:] = 255
    alpha[::2, :900] = 128  # semi-transparent stripes: box-averaging straight alpha would bleed
    data = encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")
    small = load_image(data, min_side=448)
    full = load_image(data, min_side=0)
    assert (small.width, small.height) == (full.width, full.height) == (1800, 1000)
    w, h = small.image.size
    assert 448 <= h < 1000
    ref = np.asarray(full.image.resize((w, h), Image.Resampling.BOX)).astype(int)
    assert np.abs(ref - np.asarray(small.image).astype(int)).max() <= 3


# ---------------------------------------------------------------------------------------------
# decompression bombs
# ---------------------------------------------------------------------------------------------
def test_bomb_limit_from_header_only() -> None:
    data = png_header_only(20000, 20000)  # no pixel data: a decode attempt would fail otherwise
    with pytest.raises(ImageError) as ei:
        load_image(data)
    assert ei.value.reason == "too big: 20000x20000 pixels exceeds limit 178956970"


def test_bomb_limit_per_call_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.new("RGB", (100, 100), RED), "PNG")
    with pytest.raises(ImageError, match=r"^too big: 100x100 pixels exceeds limit 9999$"):
        load_image(data, max_pixels=9999)
    assert load_image(data, max_pixels=10000).width == 100
    monkeypatch.setenv("LOOKALIKE_MAX_PIXELS", "5000")
    with pytest.raises(ImageError, match="too big"):
        load_image(data)
    assert load_image(data, max_pixels=20000).width == 100  # explicit argument wins


def test_pillow_bomb_machinery_does_not_escape() -> None:
    # Above Pillow's own default error threshold (2 * 89 MP): must be our ImageError, no warning.
    data = png_header_only(30000, 30000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="too big"):
            load_image(data)
        # limit disabled: the (absent) pixel data is the problem, not a Pillow bomb error
        with pytest.raises(ImageError, match="truncated or corrupt"):
            load_image(data, max_pixels=0)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    for src in (path, b""):
        with pytest.raises(ImageError) as ei:
            load_image(src)
        assert ei.value.reason == "empty file"
    with pytest.raises(ImageError, match="^empty file$"):
        read_bytes(path)


@pytest.mark.parametrize("data", [os.urandom(5000), b"hello world, not an image", b"\x00" * 64])
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(ImageError) as ei:
        load_image(data)
    assert ei.value.reason == "not an image (unrecognised format)"


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [
        ("JPEG", {"quality": 90}),
        ("PNG", {}),
        ("JPEG", {"quality": 90, "progressive": True}),
        ("WEBP", {}),
        ("GIF", {}),
    ],
)
def test_truncated_raises(tmp_path: Path, fmt: str, kw: dict) -> None:
    data = encode(noise(256, 256), fmt, **kw)
    cut = data[: len(data) // 2]
    with pytest.raises(ImageError, match="^truncated or corrupt: "):
        load_image(cut)
    path = tmp_path / "cut.img"
    path.write_bytes(cut)
    with pytest.raises(ImageError, match="^truncated or corrupt: "):
        load_image(path)


def test_truncated_header_is_corrupt_not_unknown() -> None:
    data = encode(noise(64, 64), "PNG")[:20]  # signature + part of IHDR
    with pytest.raises(ImageError, match="^truncated or corrupt: "):
        load_image(data)


def test_truncated_large_jpeg_with_draft(big_jpeg: bytes) -> None:
    with pytest.raises(ImageError, match="^truncated or corrupt: "):
        load_image(big_jpeg[: len(big_jpeg) * 2 // 3], min_side=448)


def test_corrupt_png_header_crc() -> None:
    data = bytearray(encode(noise(64, 64), "PNG"))
    data[8 + 8 + 13] ^= 0xFF  # first byte of the IHDR CRC
    with pytest.raises(ImageError, match="^truncated or corrupt: "):
        load_image(bytes(data))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as ei:
        load_image(tmp_path)
    assert ei.value.reason == "unreadable: is a directory"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as ei:
        load_image(tmp_path / "nope.jpg")
    assert ei.value.reason == "unreadable: no such file"
    with pytest.raises(ImageError, match="^unreadable: "):
        read_bytes(tmp_path / "nope.jpg")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod 000 does not stop root from reading the file",
)
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(ImageError) as ei:
            load_image(path)
        assert ei.value.reason == "unreadable: permission denied"
    finally:
        path.chmod(0o644)


def test_fifo_is_not_read(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    with pytest.raises(ImageError, match="^unreadable: not a regular file$"):
        load_image(path)


def test_disallowed_format_not_recognised() -> None:
    # EPS would shell out to Ghostscript; it is deliberately not among the formats we open.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError, match="^not an image"):
        load_image(eps)


def test_module_exports() -> None:
    for name in images.__all__:
        assert hasattr(images, name)
