"""Image preparation shared by the pixel descriptors."""

from __future__ import annotations

import numpy as np
from PIL import Image


def working_gray(image: Image.Image, short_side: int, max_side: int) -> np.ndarray:
    """8-bit gray array with shorter side ``short_side`` and longer side at most ``max_side``.

    Descriptors computed on it do not depend on the input resolution in speed or values.
    """
    gray = image.convert("L")
    width, height = gray.size
    scale = short_side / min(width, height)
    new = (
        min(max_side, max(1, round(width * scale))),
        min(max_side, max(1, round(height * scale))),
    )
    if new != gray.size:
        gray = bounded_resize(gray, new, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(gray, dtype=np.uint8))


def bounded_resize(
    image: Image.Image,
    size: tuple[int, int],
    resample: Image.Resampling,
    reducing_gap: float | None = None,
) -> Image.Image:
    """``image.resize(size, ...)`` whose temporary image stays about as small as input + output.

    Pillow resamples the rows first: an image enlarged across and shrunk along (a 1 x 20000
    strip to 256 x 1024) would pass through 256 x 20000 pixels. Such a resize is done as two
    steps, the shrinking axis first; any other resize is Pillow's own, unchanged.
    """
    (w, h), (nw, nh) = image.size, size
    bound = 4 * (w * h + nw * nh)
    if nw * h <= bound and w * nh <= bound:
        return image.resize(size, resample, reducing_gap=reducing_gap)
    first = (w, nh) if nh < h else (nw, h)
    image = image.resize(first, resample, reducing_gap=reducing_gap)
    return image.resize(size, resample, reducing_gap=reducing_gap)
