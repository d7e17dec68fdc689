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
        gray = gray.resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(gray, dtype=np.uint8))
