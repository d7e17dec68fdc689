"""Copy-detection transforms: what happens to a picture between its source and a query."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageOps


def crop(image: Image.Image, keep: float = 0.7, dx: float = 0.5, dy: float = 0.5) -> Image.Image:
    """Keep ``keep`` of each side; ``dx``/``dy`` place the window (0 left/top, 1 right/bottom)."""
    w, h = image.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = round((w - cw) * dx), round((h - ch) * dy)
    return image.crop((left, top, left + cw, top + ch))


def rescale(image: Image.Image, factor: float) -> Image.Image:
    """Resize both sides by ``factor`` (bicubic)."""
    w, h = image.size
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, quality: int = 30) -> Image.Image:
    """Recompress as JPEG at ``quality``."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def hflip(image: Image.Image) -> Image.Image:
    """Mirror left to right."""
    return ImageOps.mirror(image)


def rotate(image: Image.Image, degrees: float = 10.0) -> Image.Image:
    """Rotate, keeping the whole picture (the corners filled with black)."""
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)


# The everyday copies a search engine must see through, by name.
STANDARD: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop70": lambda im: crop(im, 0.7),
    "crop50_corner": lambda im: crop(im, 0.5, 0.2, 0.3),
    "half_size": lambda im: rescale(im, 0.5),
    "double_size": lambda im: rescale(im, 2.0),
    "jpeg30": lambda im: jpeg(im, 30),
    "jpeg10": lambda im: jpeg(im, 10),
    "hflip": hflip,
    "rotate10": lambda im: rotate(im, 10),
    "crop80_jpeg50": lambda im: jpeg(crop(im, 0.8, 0.3, 0.6), 50),
}
