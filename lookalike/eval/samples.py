"""Sample photos bundled with scikit-image: a small collection that needs no download."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.errors import Unavailable

# Bundled with scikit-image (no network). `cat` is the same picture as `chelsea`.
SAMPLE_NAMES = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "colorwheel", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina",
    "rocket", "text", "clock", "cell", "horse",
)  # fmt: skip


class SamplesUnavailable(Unavailable, RuntimeError):
    """scikit-image is not installed."""


def sample_photos() -> dict[str, Image.Image]:
    """The sample photos as RGB PIL images, by name (plus both stereo motorcycle views)."""
    try:
        import skimage.data as data
    except ImportError as exc:
        raise SamplesUnavailable(
            "the sample photos come from scikit-image: pip install scikit-image"
        ) from exc
    photos = {name: _to_rgb(getattr(data, name)()) for name in SAMPLE_NAMES}
    left, right, _ = data.stereo_motorcycle()
    photos["motorcycle_left"] = _to_rgb(left)
    photos["motorcycle_right"] = _to_rgb(right)
    return photos


def _to_rgb(array: np.ndarray) -> Image.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(array)
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")
