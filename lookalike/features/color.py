"""Global colour descriptors: an HSV histogram and Lab colour moments.

Both work on a copy reduced (never enlarged) to fit :data:`WORKING_SIZE` so that speed does not
depend on the input size; colour statistics barely change under such a reduction.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.features.base import ComputedFeature

__all__ = [
    "COLOR",
    "COLOR_MOMENTS",
    "FEATURES",
    "HSV_BINS",
    "WORKING_SIZE",
    "color_histogram",
    "color_moments",
]

#: Images are reduced to fit in a WORKING_SIZE x WORKING_SIZE box before computing colour.
WORKING_SIZE = 256

#: Hue x saturation x value bins. Hue gets most of the resolution (8 bins of 45 degrees); 4
#: saturation and 4 value bins separate greys, pastels and vivid colours, dark and light.
#: 8x4x4 = 128 bins: coarse enough to be robust to small colour shifts and compression.
HSV_BINS = (8, 4, 4)


def _reduced_rgb(image: Image.Image, size: int = WORKING_SIZE) -> np.ndarray:
    """The image as a uint8 RGB array, reduced to fit in ``size`` x ``size`` (never enlarged)."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    scale = size / max(width, height)
    if scale < 1:
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def color_histogram(image: Image.Image) -> np.ndarray:
    """HSV colour histogram, 8 hue x 4 saturation x 4 value bins, L1-normalised float32 [128].

    Bin index ``(h * 4 + s) * 4 + v`` (OpenCV HSV: hue 0-180, saturation and value 0-256).
    """
    import cv2

    hsv = cv2.cvtColor(_reduced_rgb(image), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(HSV_BINS), [0, 180, 0, 256, 0, 256])
    hist = hist.ravel().astype(np.float32)
    total = float(hist.sum())
    return hist / total if total > 0 else np.full_like(hist, 1.0 / hist.size)


def color_moments(image: Image.Image) -> np.ndarray:
    """Colour moments in CIE Lab: mean, standard deviation and skewness per channel, float32 [9].

    Order ``[mean L, mean a, mean b, std L, std a, std b, skew L, skew a, skew b]``. Channels
    are OpenCV's 8-bit Lab scaled to [0, 1]; skewness is the cube root of the third central
    moment (same units as the mean and std, so all nine values are comparable under L2).
    """
    import cv2

    lab = cv2.cvtColor(_reduced_rgb(image), cv2.COLOR_RGB2LAB)
    values = np.ascontiguousarray(lab.reshape(-1, 3).T, dtype=np.float64) / 255.0  # [3, pixels]
    mean = values.mean(axis=1)
    centred = values - mean[:, None]
    squared = centred * centred
    std = np.sqrt(squared.mean(axis=1))
    skew = np.cbrt((squared * centred).mean(axis=1))
    return np.concatenate([mean, std, skew]).astype(np.float32)


COLOR = ComputedFeature(
    "color",
    "color",
    int(np.prod(HSV_BINS)),
    np.float32,
    "chi2",
    color_histogram,
    "HSV colour histogram, 8 hue x 4 saturation x 4 value bins, L1-normalised",
)
COLOR_MOMENTS = ComputedFeature(
    "colormoments",
    "color",
    9,
    np.float32,
    "l2",
    color_moments,
    "Colour moments: mean, std and skewness of each CIE Lab channel (9 values)",
)

FEATURES: tuple[ComputedFeature, ...] = (COLOR, COLOR_MOMENTS)
