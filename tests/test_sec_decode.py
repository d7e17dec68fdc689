"""Hostile shapes and headers: bounded work for any image, and refusals before any decoding."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.images import MAX_ASPECT_RATIO, ImageError, load_image, normalize_image
from tests.conftest import make_images

TOKEN = "s" * 32


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def strip_png(width: int, height: int) -> bytes:
    """A valid 1-bit gray PNG of ``width`` x ``height`` (a few hundred KB even for 99 M rows)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    rows_per_chunk = max(1, (1 << 20) // len(row))
    parts, left = [], height
    while left:
        n = min(left, rows_per_chunk)
        parts.append(comp.compress(row * n))
        left -= n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def strips() -> dict[str, bytes]:
    return {"1x20000": strip_png(1, 20000), "1x99000000": strip_png(1, 99_000_000)}


# -- item 1: extreme aspect ratios ------------------------------------------------------------


def test_extreme_strips_are_refused_from_the_header(strips: dict[str, bytes]) -> None:
    for name, data in strips.items():
        with pytest.raises(ImageError, match="unsupported shape") as err:
            load_image(data)
        assert name in err.value.reason
    with pytest.raises(ImageError, match="unsupported shape"):
        normalize_image(Image.new("RGB", (20000, 1)))
    # the cap itself is accepted, and works
    edge = Image.new("RGB", (2, 2 * MAX_ASPECT_RATIO), (200, 10, 10))
    buf = io.BytesIO()
    edge.save(buf, "PNG")
    assert load_image(buf.getvalue()).image.size == (2, 2 * MAX_ASPECT_RATIO)


_DESCRIBE_ALL = textwrap.dedent(
    """
    import resource, sys
    from PIL import Image
    from lookalike.features import color, efficientnet, hashes, shape, texture
    from lookalike.features.lite2 import preprocess_lite2
    funcs = [efficientnet.preprocess, preprocess_lite2, texture.lbp_histogram,
             texture.glcm_features, shape.hog_descriptor, shape.edge_orientation_histogram,
             color.color_histogram, color.color_moments, hashes.ahash_code, hashes.dhash_code,
             hashes.phash_code, hashes.whash_code, hashes.pdq_code]
    for f in funcs:  # warm up imports and buffers on an ordinary image
        f(Image.new("RGB", (300, 200), (1, 2, 3)))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for size in ((1, 20000), (20000, 1), (3, 600000)):
        image = Image.new("RGB", size, (10, 200, 30))
        for f in funcs:
            f(image)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
    """
)


def test_every_descriptor_is_bounded_on_elongated_images() -> None:
    """Before: the deep preprocessing of a 1 x 20000 strip made a 224 x 4,480,000 image (4 GB)."""
    out = subprocess.run(
        [sys.executable, "-c", _DESCRIBE_ALL], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    grown_mb = int(out.stdout.split()[-1])
    assert grown_mb < 300, f"peak memory grew by {grown_mb} MB"


def test_preprocess_keeps_its_output_for_ordinary_images() -> None:
    """The bounded path resamples the same centres as resize-then-crop: nearly equal pixels."""
    from lookalike.features.efficientnet import WHOLE_RESIZE_LIMIT, preprocess

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (40, 3, 3), dtype=np.uint8), np.ones((50, 50, 1)))
    tall = Image.fromarray(smooth.astype(np.uint8))  # 150 x 2000
    tall = tall.resize((30, 2000 * 2))  # aspect 133: past the whole-resize limit
    w, h = tall.size
    assert (224 * h / w) * 224 > WHOLE_RESIZE_LIMIT * 224 * 224
    box = preprocess(tall)
    full = tall.resize((224, round(h * 224 / w)), Image.Resampling.BICUBIC)
    top = (full.size[1] - 224) // 2
    ref = np.asarray(full.crop((0, top, 224, top + 224)))
    assert np.abs(box.astype(int) - ref).mean() < 1.0


def test_bounded_query_reduces_only_oversized_queries() -> None:
    from lookalike.copies.check import MAX_QUERY_PIXELS, bounded_query

    small = Image.new("RGB", (896, 4000))
    assert bounded_query(small) is small
    big = Image.new("RGB", (400, 80000))  # 32 MP, 1:200
    reduced = bounded_query(big)
    assert reduced.width * reduced.height <= MAX_QUERY_PIXELS
    assert reduced.width * reduced.height > MAX_QUERY_PIXELS // 4


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    from fastapi.testclient import TestClient

    import lookalike
    from lookalike.server import ServerConfig, create_app

    root = tmp_path_factory.mktemp("sec_decode")
    make_images(root / "photos", 3)
    with lookalike.open(root / "index") as col:
        col.add([root / "photos"], workers=1)
    config = ServerConfig(db=root / "index", token=TOKEN, allow_roots=[root], workers=1, readers=1)
    with TestClient(create_app(config), base_url="http://localhost") as c:
        yield c


def test_http_search_and_check_refuse_strips_without_5xx(client, strips) -> None:
    for name, data in strips.items():
        for endpoint in ("/api/search", "/api/check"):
            r = client.post(endpoint, files={"image": ("q.png", data, "image/png")})
            assert r.status_code == 400, (name, endpoint, r.status_code, r.text)
            assert "unsupported shape" in r.text


def test_check_and_index_skip_strips(tmp_path: Path, strips: dict[str, bytes]) -> None:
    import lookalike
    from lookalike.copies.check import check_copy

    photos = tmp_path / "photos"
    make_images(photos, 2)
    (photos / "strip.png").write_bytes(strips["1x20000"])
    with lookalike.open(tmp_path / "index") as col:
        report = col.add([photos], workers=1)
        errors = dict((e["path"], e["error"]) for e in report.as_dict()["errors"])
        assert "unsupported shape" in errors[str(photos / "strip.png")]
        with pytest.raises(ImageError, match="unsupported shape"):
            check_copy(col, strips["1x99000000"])


# -- item 2: TIFFs through OpenCV are sized from their header -----------------------------------


def _float_tiff(width: int, height: int, **kwargs) -> bytes:
    import tifffile

    buf = io.BytesIO()
    data = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    tifffile.imwrite(buf, data, photometric="rgb", **kwargs)
    return buf.getvalue()


@pytest.fixture
def no_opencv_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode ran on a file the header refuses")

    monkeypatch.setattr(cv2, "imdecode", refuse)


@pytest.mark.parametrize("bigtiff", [False, True])
def test_float_tiff_over_the_pixel_limit_is_refused_before_decoding(
    no_opencv_decode: None, bigtiff: bool
) -> None:
    data = _float_tiff(64, 48, bigtiff=bigtiff)
    with pytest.raises(ImageError, match="too big: 64x48 pixels"):
        load_image(data, max_pixels=64 * 48 - 1)


def test_float_tiff_over_the_byte_limit_is_refused_before_decoding(no_opencv_decode) -> None:
    """12 bytes a pixel (float32 RGB): fewer pixels than an 8-bit image may have."""
    data = _float_tiff(64, 48)
    with pytest.raises(ImageError, match="too big: .* bytes"):
        load_image(data, max_pixels=64 * 48 * 2)


def test_float_tiff_under_the_limits_still_decodes() -> None:
    decoded = load_image(_float_tiff(64, 48), max_pixels=64 * 48 * 3)
    assert (decoded.width, decoded.height, decoded.format) == (64, 48, "TIFF")


# -- ICO entries whose own header is larger than the directory says ----------------------------


def _ico(entry: bytes, bpp: int = 32) -> bytes:
    head = struct.pack("<HHH", 0, 1, 1)
    dirent = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, bpp, len(entry), 6 + 16)
    return head + dirent + entry


def test_ico_with_a_huge_embedded_png_is_refused() -> None:
    """The directory says 16x16; the PNG inside is 6000x6000 (before: decoded, 144 MB)."""
    buf = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buf, "PNG")
    data = _ico(buf.getvalue())
    with pytest.raises(ImageError, match="too big: 6000x6000"):
        load_image(data, max_pixels=1_000_000)


def test_ico_with_a_huge_bitmap_header_is_refused() -> None:
    dib = struct.pack("<IiiHHIIiiII", 40, 4000, 8000, 1, 32, 0, 0, 0, 0, 0, 0) + b"\0" * 64
    with pytest.raises(ImageError, match="too big: 4000x4000"):
        load_image(_ico(dib), max_pixels=1_000_000)


# -- item 11: index folders inside an indexed folder are skipped -------------------------------


def test_index_folder_inside_the_indexed_folder_is_skipped(tmp_path: Path) -> None:
    import lookalike
    from lookalike.pipeline import scan

    photos = tmp_path / "photos"
    make_images(photos, 2)
    db = photos / "idx"
    with lookalike.open(db):
        pass  # an index folder, as `lookalike index` or `serve` lay it out
    make_images(db / "thumbs" / "ab", 2, seed=5)
    make_images(db / "uploads", 2, seed=6)
    with lookalike.open(db) as col:
        col.add([db / "uploads" / p.name for p in sorted((db / "uploads").iterdir())], workers=1)
        col.add([photos], workers=1, prune=True)
        paths = set(col.catalog.files_by_path())
    assert not any("/thumbs/" in p for p in paths), paths
    # the server's own uploads stay, the prune of `photos` does not forget them
    assert {p for p in paths if "/uploads/" in p} == {str(p) for p in (db / "uploads").iterdir()}
    assert len(paths) == 4
    # a root that is an index folder is skipped too, and reported to the caller
    skipped: list[str] = []
    assert list(scan([db], skipped)) == [] and skipped == [str(db)]


# -- the adversarial pass: decoders' own hostile inputs -----------------------------------------


def _jpeg(exif_segments: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 99, 199)).save(buf, "JPEG")
    body = b"Exif\0\0MM\0*\0\0\0\x08" + b"\0" * 1000
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    data = buf.getvalue()
    return data[:2] + app1 * exif_segments + data[2:]


def test_jpeg_with_many_exif_segments_is_refused_before_pillow_joins_them() -> None:
    """Pillow joins EXIF segments quadratically: 500 x 64 KB took 17 s of CPU in Image.open."""
    assert load_image(_jpeg(2)).width == 32
    with pytest.raises(ImageError, match="EXIF segments"):
        load_image(_jpeg(17))


def test_png_text_and_profile_bombs_are_refused() -> None:
    def png(extra: bytes) -> bytes:
        raw = (b"\0" + b"\0" * 24) * 8
        ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
        idat = _chunk(b"IDAT", zlib.compress(raw))
        return b"\x89PNG\r\n\x1a\n" + ihdr + extra + idat + _chunk(b"IEND", b"")

    bomb = zlib.compress(b"\0" * 50_000_000)
    for extra in (_chunk(b"iCCP", b"x\0\0" + bomb), _chunk(b"zTXt", b"k\0\0" + bomb)):
        with pytest.raises(ImageError, match="too large"):
            load_image(png(extra))


def test_multipage_tiff_decodes_only_its_first_page(no_opencv_decode) -> None:
    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        tw.write(np.zeros((8, 8), np.uint8))
        tw.write(np.zeros((2000, 2000), np.float32), compression="zlib")
    assert load_image(buf.getvalue(), max_pixels=100).image.size == (8, 8)
