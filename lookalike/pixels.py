"""Pixels to 8-bit RGB: transparency composited on a fixed background, wide samples scaled,
CMYK through its colour profile, and box reduction by whole factors."""

from __future__ import annotations

import io
from typing import Final

import numpy as np
from PIL import Image

#: Fixed colour that transparent pixels are composited on.
BACKGROUND: Final[tuple[int, int, int]] = (255, 255, 255)


def reduce_factor(size: tuple[int, int], min_side: int) -> int:
    """The whole factor by which ``size`` shrinks with its shorter side kept >= ``min_side``."""
    return min(size) // min_side if min_side else 1


def reduce_image(im: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps the shorter side >= min_side."""
    factor = reduce_factor(im.size, min_side)
    return im.reduce(factor) if factor >= 2 else im


def composite(rgba: Image.Image, min_side: int = 0) -> Image.Image:
    """Alpha-composite an RGBA image on BACKGROUND, reduced like :func:`reduce_image` on the way.

    A large image is box-reduced in premultiplied space ("RGBa") first, which gives the same
    result as compositing at full size and reducing afterwards, at about half the cost.
    """
    factor = reduce_factor(rgba.size, min_side)
    if factor >= 2:
        rgba = rgba.convert("RGBa").reduce(factor).convert("RGBA")
    out = Image.new("RGB", rgba.size, BACKGROUND)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def row_chunks(arr: np.ndarray, elements: int = 1 << 20) -> list[slice]:
    """Slices of ``arr``'s first axis of about ``elements`` values each."""
    per_row = max(1, arr.size // max(1, arr.shape[0])) if arr.ndim else 1
    step = max(1, elements // per_row)
    return [slice(i, i + step) for i in range(0, arr.shape[0] if arr.ndim else 1, step)]


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a 16-bit / 32-bit int / float array to uint8 without clipping its range.

    Works through the rows in chunks, so the temporary wide copies stay small whatever the size.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.ndim == 0 or arr.size == 0:
        return np.zeros(arr.shape, np.uint8)
    chunks = row_chunks(arr)
    out = np.empty(arr.shape, np.uint8)
    if arr.dtype == np.uint16 or (
        arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 0xFFFF
    ):
        # full 16-bit range -> 8 bit with rounding: round(v * 255 / 65535)
        for c in chunks:
            out[c] = (arr[c].astype(np.uint32) * 255 + 32767) // 65535
        return out

    def finite(c: slice) -> np.ndarray:
        return np.nan_to_num(arr[c].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)

    lo, hi = np.inf, -np.inf  # chunks is not empty: both become finite
    for c in chunks:
        a = finite(c)
        lo = min(lo, float(a.min()))
        hi = max(hi, float(a.max()))
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0  # normalised float data: keep absolute brightness
    if hi <= lo:
        out.fill(0)
        return out
    for c in chunks:
        out[c] = np.rint((finite(c) - lo) * (255.0 / (hi - lo)))
    return out


def cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK -> RGB through the embedded ICC profile when there is one, else Pillow's formula."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            out = ImageCms.profileToProfile(
                im, io.BytesIO(icc), ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if out is not None:
                return out
        except Exception:  # broken or unsupported profile: fall back to the naive formula
            pass
    return im.convert("RGB")
