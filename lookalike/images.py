"""Robust, fast image decoding for lookalike.

Every supported file ends as an 8-bit ``RGB`` :class:`PIL.Image.Image` with its EXIF orientation
applied and any transparency composited on a fixed :data:`BACKGROUND`. Large JPEGs are decoded
with libjpeg's DCT scaling (``Image.draft``) so that only as many pixels as needed are produced;
other large images are box-reduced by an integer factor. Every failure on bad data becomes an
:class:`ImageError` with a short human-readable ``reason``.

Decode-speed choice (``bench/decode.py`` on 20 real 8-18 MP wallpaper JPEGs, 2 CPUs, min_side
448): full decode 9.4 img/s, Pillow draft 14.1 img/s, OpenCV ``IMREAD_REDUCED_COLOR_*`` 14.6
img/s with bit-identical pixels (both are libjpeg-turbo's scaled IDCT). Baseline JPEGs gain 2.5-4x
from draft, progressive ones only ~1.1x (entropy decoding dominates). Pillow's draft is used: same
speed and pixels, no BGR->RGB copy, one code path for EXIF / CMYK / ICC, and -- unlike OpenCV,
which grey-fills and only warns -- it raises on truncated JPEGs.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError, features

from lookalike.errors import BadInput
from lookalike.pixels import BACKGROUND, cmyk_to_rgb, composite, reduce_image, to_uint8

__all__ = [
    "BACKGROUND",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "DecodedImage",
    "ImageError",
    "QueryImage",
    "decode_query",
    "load_image",
    "read_bytes",
]

#: Decompression-bomb limit in pixels (width * height, checked from the header before decoding).
#: Overridable per call (``max_pixels=``) and via the ``LOOKALIKE_MAX_PIXELS`` environment variable.
DEFAULT_MAX_PIXELS: Final[int] = 178_956_970
MAX_PIXELS_ENV: Final[str] = "LOOKALIKE_MAX_PIXELS"

#: Longest side over shortest side above which an image is refused from its header ("unsupported
#: shape"). Generous for panoramas, long screenshots and scanned scrolls (1:20 to 1:50); a 1 x 20000
#: strip is no photo, and Pillow keeps a row pointer per row (a 1 x 99,000,000 image takes 1.2 GB).
MAX_ASPECT_RATIO: Final[int] = 200

#: Decoded sample bytes allowed per pixel of the limit: an image may need at most
#: ``4 * max_pixels`` bytes of samples (8-bit RGBA at the pixel limit) before conversion, so a
#: float32 or 16-bit multi-channel TIFF gets fewer pixels than an 8-bit one.
MAX_BYTES_PER_PIXEL: Final[int] = 4

#: Files larger than this are not read (a sparse or endless file must not fill the memory).
MAX_FILE_BYTES: Final[int] = 1 << 30

#: Lower-case file suffixes that are indexed.
IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {
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
    }
)


# ---------------------------------------------------------------------------------------------
# One-time plugin registration and global Pillow settings.
# ---------------------------------------------------------------------------------------------
try:  # HEIC / HEIF
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # pragma: no cover - optional at runtime, declared as a dependency
    pass

if not features.check("avif"):  # Pillow >= 11.2 decodes AVIF natively; else use the plugin
    with contextlib.suppress(Exception):
        import pillow_avif  # noqa: F401  (registers the AVIF opener on import)

Image.init()
# We enforce our own, configurable limit from the header (see _check_size); Pillow's own
# warning/error limit would otherwise fire at a different threshold, as a warning or traceback.
Image.MAX_IMAGE_PIXELS = None
# Truncated files must raise, never come back silently grey-filled.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Formats we let Pillow try. Excludes plugins that shell out (EPS -> Ghostscript) and formats
# with weak magic numbers (TGA, PCX, ...) that would "recognise" random bytes.
_ALLOWED_FORMATS: Final[tuple[str, ...]] = tuple(
    f
    for f in (
        "JPEG",
        "MPO",
        "PNG",
        "WEBP",
        "GIF",
        "BMP",
        "DIB",
        "TIFF",
        "HEIF",
        "AVIF",
        "ICO",
        "PPM",
        "JPEG2000",
        "QOI",
    )
    if f in Image.OPEN
)

# EXIF orientation -> transpose (the same table as ImageOps.exif_transpose).
_ORIENTATION_TAG: Final[int] = 0x0112
_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Exceptions that decoders raise on bad data.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
    EOFError,
    MemoryError,
    OverflowError,
    ZeroDivisionError,
    RuntimeError,
    Image.DecompressionBombError,
)

_TIFF_MAGIC: Final = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class ImageError(BadInput):
    """A file that cannot be used; ``reason`` is a short human-readable message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason: str = reason
        self.http_status = 413 if reason.startswith("too big") else 400


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image.

    ``image`` is mode ``RGB`` with EXIF orientation applied, possibly reduced by an integer factor
    (never below ``min_side`` on its shorter side). ``width``/``height`` are the ORIGINAL
    dimensions after orientation; ``format`` is Pillow's format name (``"JPEG"``, ``"PNG"``, ...).
    """

    image: Image.Image
    width: int
    height: int
    format: str


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def read_bytes(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a whole file, raising :class:`ImageError` ('unreadable: ...' / 'empty file' /
    'too big: ...' above ``max_bytes``, also for a file that grows while it is read)."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError("unreadable: is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("unreadable: not a regular file")
        if st.st_size > max_bytes:
            raise ImageError(f"too big: file of {st.st_size} bytes exceeds limit {max_bytes}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageError(f"too big: file grew past the limit of {max_bytes} bytes")
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("unreadable: no such file") from None
    except IsADirectoryError:
        raise ImageError("unreadable: is a directory") from None
    except PermissionError:
        raise ImageError("unreadable: permission denied") from None
    except MemoryError:
        raise ImageError("unreadable: file too large for memory") from None
    except (OSError, ValueError) as e:  # ValueError: embedded NUL in path
        msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ImageError(f"unreadable: {msg.lower()}") from None
    if not data:
        raise ImageError("empty file")
    return data


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    min_side: int = 448,
    max_pixels: int | None = None,
) -> DecodedImage:
    """Decode ``source`` (a path, or the file's bytes) into an 8-bit RGB image.

    ``min_side``: the result may be reduced by an integer factor (JPEG DCT scaling, otherwise a
    box filter) as long as its shorter side stays >= ``min_side``; ``0`` disables reduction.
    ``max_pixels``: decompression-bomb limit on width*height, checked from the header before any
    pixel is decoded; ``None`` -> ``$LOOKALIKE_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`;
    ``<= 0`` disables the check.

    Raises :class:`ImageError` for every file that cannot be used.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("empty file")
    else:
        data = read_bytes(source)
    limit = _resolve_max_pixels(max_pixels)
    try:
        return _decode(data, min_side=max(0, int(min_side)), limit=limit)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("too big: out of memory while decoding") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"too big: {e}") from None
    except _DECODE_ERRORS as e:
        raise ImageError(f"truncated or corrupt: {_describe(e)}") from None
    except Exception as e:  # a decoder bug on hostile data must not crash the pipeline
        raise ImageError(f"truncated or corrupt: {_describe(e)}") from None


# ---------------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------------
def _resolve_max_pixels(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if env:
        try:
            return int(env)
        except ValueError:
            warnings.warn(
                f"ignoring invalid {MAX_PIXELS_ENV}={env!r}", RuntimeWarning, stacklevel=3
            )
    return DEFAULT_MAX_PIXELS


def _describe(e: BaseException) -> str:
    msg = str(e).strip()
    return msg if msg else type(e).__name__


def _check_size(width: int, height: int, limit: int, sample_bytes: int = 0) -> None:
    """Refuse, from the header, a size the pipeline must not decode.

    ``sample_bytes``: bytes per pixel the decoder produces (all samples), when known; the
    decoded buffer may not exceed ``MAX_BYTES_PER_PIXEL * limit`` bytes.
    """
    if width <= 0 or height <= 0:
        raise ImageError(f"truncated or corrupt: invalid size {width}x{height}")
    if limit > 0 and width * height > limit:
        raise ImageError(f"too big: {width}x{height} pixels exceeds limit {limit}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"unsupported shape: {width}x{height} is more than {MAX_ASPECT_RATIO} times "
            "longer than wide"
        )
    if limit > 0 and sample_bytes and width * height * sample_bytes > MAX_BYTES_PER_PIXEL * limit:
        raise ImageError(
            f"too big: {width}x{height} pixels of {sample_bytes} bytes each exceed the limit of "
            f"{MAX_BYTES_PER_PIXEL * limit} decoded bytes"
        )


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1-8) from the header; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        value = int(value[0] if isinstance(value, tuple) else value)
    except Exception:  # malformed EXIF must not make the image unusable
        return 1
    return value if value in _TRANSPOSE else 1


def _decode(data: bytes, *, min_side: int, limit: int) -> DecodedImage:
    if data[:4] == b"\0\0\1\0":  # ICO: Pillow decodes an entry inside Image.open already
        _check_ico(data, limit)
    if data[:2] == b"\xff\xd8":
        _check_jpeg_segments(data)
    try:
        im = Image.open(io.BytesIO(data), formats=_ALLOWED_FORMATS)
    except UnidentifiedImageError:
        if data[:4] in _TIFF_MAGIC:  # a TIFF flavour Pillow cannot even parse
            return _decode_opencv(data, min_side=min_side, limit=limit, fmt="TIFF")
        fmt = _sniff(data)
        if fmt:  # the magic number matches but the header cannot be parsed
            raise ImageError(f"truncated or corrupt: unreadable {fmt} header") from None
        raise ImageError("not an image (unrecognised format)") from None

    try:
        fmt = "JPEG" if im.format == "MPO" else (im.format or "unknown")
        width, height = im.size
        _check_size(width, height, limit)
        orientation = _orientation(im)

        if fmt == "JPEG" and min_side and min(width, height) >= 2 * min_side:
            # DCT scaling by 1/2, 1/4 or 1/8: Pillow picks the largest scale s with
            # size // s >= requested in both axes, so requesting a square min_side keeps the
            # shorter side >= min_side. Rotation only swaps the axes, the shorter side is the same.
            im.draft("RGB", (min_side, min_side))

        try:
            im.load()
        except _DECODE_ERRORS as e:
            if fmt == "TIFF":  # e.g. float RGB, odd sample layouts
                return _decode_opencv(data, min_side=min_side, limit=limit, fmt=fmt)
            raise ImageError(f"truncated or corrupt: {_describe(e)}") from None

        rgb = reduce_image(_to_rgb(im, min_side), min_side)
        if orientation in _TRANSPOSE:
            rgb = rgb.transpose(_TRANSPOSE[orientation])
            if orientation >= 5:
                width, height = height, width
        if rgb is im:  # hand back a plain in-memory image, not the file-backed plugin object
            rgb = im.copy()
    finally:
        im.close()
    return DecodedImage(image=rgb, width=width, height=height, format=fmt)


def normalize_image(im: Image.Image, *, min_side: int = 448) -> Image.Image:
    """An image already in memory, made as :func:`load_image` hands images over.

    8-bit RGB with transparency composited on BACKGROUND, reduced by a whole factor while the
    shorter side stays at or above ``min_side``. EXIF orientation is left as it is.
    """
    _check_size(*im.size, 0)
    im.load()
    return reduce_image(_to_rgb(im, min_side), min_side)


#: What a search takes as its query: a path, the bytes of an image file, or a PIL image.
QueryImage = str | os.PathLike | bytes | Image.Image


def decode_query(query: QueryImage, *, min_side: int = 448) -> Image.Image:
    """A query image decoded (or, in memory already, normalised) as :func:`load_image` hands
    images over; ``ImageError`` when it cannot be read."""
    if isinstance(query, Image.Image):
        return normalize_image(query, min_side=min_side)
    if isinstance(query, bytes):
        return load_image(query, min_side=min_side).image
    path = Path(os.fspath(query)).expanduser()
    if not path.exists():
        raise ImageError(f"no such file: {path}")
    return load_image(str(path), min_side=min_side).image


#: EXIF segments (APP1 "Exif") a JPEG may have; cameras write one. Pillow joins them by
#: repeated concatenation, quadratic: 500 of them (a 32 MB file) took 17 s of CPU.
MAX_EXIF_SEGMENTS: Final[int] = 16


def _check_jpeg_segments(data: bytes) -> None:
    """Refuse a JPEG whose header holds more than :data:`MAX_EXIF_SEGMENTS` EXIF segments."""
    pos, count, end = 2, 0, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan / end of image: header done
            return
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
            count += 1
            if count > MAX_EXIF_SEGMENTS:
                raise ImageError(
                    f"truncated or corrupt: more than {MAX_EXIF_SEGMENTS} EXIF segments"
                )
        pos += 2 + max(length, 2)


def _check_ico(data: bytes, limit: int) -> None:
    """Check the size of every entry of an ICO from that entry's own header, before Pillow opens
    it: Pillow decodes the embedded PNG or bitmap at the size it declares, whatever the
    directory says, and it does so inside ``Image.open``."""
    corrupt = ImageError("truncated or corrupt: bad ICO entry header")
    (count,) = struct.unpack("<H", data[4:6])
    for i in range(count):
        entry = data[6 + 16 * i : 22 + 16 * i]
        if len(entry) < 16:
            raise corrupt
        (offset,) = struct.unpack("<I", entry[12:16])
        head = data[offset : offset + 32]
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise corrupt
            width, height = struct.unpack(">II", head[16:24])
        elif len(head) >= 12 and head[:4] == b"\x0c\0\0\0":  # OS/2 core header
            width, height = struct.unpack("<HH", head[4:8])
            height //= 2  # XOR image + AND mask
        elif len(head) >= 12:
            width, height = struct.unpack("<ii", head[4:12])
            width, height = abs(width), abs(height) // 2
        else:
            raise corrupt
        _check_size(max(width, 1), max(height, 1), limit)


def _sniff(data: bytes) -> str | None:
    """The allowed format whose magic number ``data`` starts with, if any."""
    prefix = data[:16]
    for fmt in _ALLOWED_FORMATS:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(prefix):
                return "JPEG" if fmt == "MPO" else fmt
        except Exception:
            continue
    return None


def _to_rgb(im: Image.Image, min_side: int = 0) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on BACKGROUND.

    Transparent images come back already reduced for ``min_side`` (see
    :func:`lookalike.pixels.composite`).
    """
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
        return composite(im if mode == "RGBA" else im.convert("RGBA"), min_side)
    if mode == "CMYK":
        return cmyk_to_rgb(im)
    if mode in ("L", "P", "1", "YCbCr", "RGBX", "HSV"):
        return im.convert("RGB")
    if mode.startswith("I") or mode == "F":  # I, I;16, I;16B, I;16L, I;16N, F
        gray = to_uint8(np.asarray(im))
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "LAB":
        from PIL import ImageCms

        rgb = ImageCms.applyTransform(
            im,
            ImageCms.buildTransform(
                ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
            ),
        )
        assert rgb is not None  # None only for a transform in place
        return rgb
    try:
        return im.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported pixel mode {mode}") from None


def _decode_opencv(data: bytes, *, min_side: int, limit: int, fmt: str) -> DecodedImage:
    """Fallback for TIFFs Pillow cannot decode (float RGB, ...). OpenCV applies orientation."""
    try:
        import cv2

        cv2.setNumThreads(1)  # decoding runs in a pool of workers already
        with contextlib.suppress(Exception):  # a bad file is our ImageError, not log lines
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except ImportError:  # pragma: no cover - declared dependency
        raise ImageError("truncated or corrupt: unsupported TIFF layout") from None

    width, height, sample_bytes = _tiff_header(data)
    _check_size(width, height, limit, sample_bytes)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if arr is None or arr.size == 0:
        raise ImageError("truncated or corrupt: cannot decode image data")
    height, width = arr.shape[:2]
    _check_size(width, height, limit)
    arr = to_uint8(arr)
    if arr.ndim == 2:
        rgb = Image.fromarray(arr, "L").convert("RGB")
    elif arr.shape[2] == 1:
        rgb = Image.fromarray(arr[:, :, 0], "L").convert("RGB")
    elif arr.shape[2] == 3:
        rgb = Image.fromarray(np.ascontiguousarray(arr[:, :, ::-1]), "RGB")
    else:  # BGRA
        rgba = np.ascontiguousarray(arr[:, :, [2, 1, 0, 3]])
        rgb = composite(Image.fromarray(rgba, "RGBA"), min_side)
    return DecodedImage(image=reduce_image(rgb, min_side), width=width, height=height, format=fmt)


_TIFF_TYPES: Final[dict[int, tuple[str, int]]] = {  # field type -> struct code, size
    1: ("B", 1), 3: ("H", 2), 4: ("I", 4), 16: ("Q", 8),
}  # fmt: skip


def _tiff_header(data: bytes) -> tuple[int, int, int]:
    """``(width, height, bytes per pixel)`` of a TIFF's first image, from its first IFD.

    The first image is the one OpenCV decodes; the bytes per pixel are summed over its samples
    (``SamplesPerPixel`` x ``BitsPerSample`` rounded up to whole bytes).
    """
    corrupt = ImageError("truncated or corrupt: unreadable TIFF header")
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 16:
        raise corrupt
    magic = struct.unpack(order + "H", data[2:4])[0]
    if magic == 42:  # classic: 2-byte count, 12-byte entries, 4-byte value field
        (offset,) = struct.unpack(order + "I", data[4:8])
        count_fmt, entry_size, value_size = "H", 12, 4
    elif magic == 43:  # BigTIFF: 8-byte count, 20-byte entries, 8-byte value field
        (offset,) = struct.unpack(order + "Q", data[8:16])
        count_fmt, entry_size, value_size = "Q", 20, 8
    else:
        raise corrupt
    count_size = struct.calcsize(count_fmt)
    if offset + count_size > len(data):
        raise corrupt
    (entries,) = struct.unpack(order + count_fmt, data[offset : offset + count_size])
    tags: dict[int, list[int]] = {}
    pos = offset + count_size
    for _ in range(min(entries, 4096)):
        entry = data[pos : pos + entry_size]
        pos += entry_size
        if len(entry) < entry_size:
            raise corrupt
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag not in (256, 257, 258, 277) or kind not in _TIFF_TYPES:
            continue
        code, size = _TIFF_TYPES[kind]
        count = min(_tiff_count(order, entry, value_size), 64)
        field = entry[entry_size - value_size :]
        if count * size > value_size:  # stored elsewhere: the field holds its offset
            (where,) = struct.unpack(order + ("I" if value_size == 4 else "Q"), field)
            field = data[where : where + count * size]
        if len(field) < count * size or count == 0:
            raise corrupt
        tags[tag] = list(struct.unpack(order + code * count, field[: count * size]))
    try:
        width, height = tags[256][0], tags[257][0]
    except KeyError:
        raise corrupt from None
    samples = tags.get(277, [1])[0]
    bits = tags.get(258, [1])
    bits = bits + [bits[-1]] * max(0, samples - len(bits))
    return width, height, sum((b + 7) // 8 for b in bits[: max(1, samples)])


def _tiff_count(order: str, entry: bytes, value_size: int) -> int:
    """The value count of an IFD entry (4 bytes in a classic TIFF, 8 in a BigTIFF)."""
    if value_size == 4:
        return struct.unpack(order + "I", entry[4:8])[0]
    return struct.unpack(order + "Q", entry[4:12])[0]
