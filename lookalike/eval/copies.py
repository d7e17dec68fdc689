"""Random copy generator for copy-detection evaluation (DISC 2021 style edits).

Every transform takes an RGB image and a ``numpy.random.Generator`` and returns a new RGB image;
all randomness comes from the generator, so a fixed seed gives the same copies. ``make_copy``
applies a random mix of one to three of them.

Example::

    rng = np.random.default_rng(0)
    copy, applied = make_copy(image, rng)   # e.g. applied == ["crop", "text"]
"""

from __future__ import annotations

import io
import string
from collections.abc import Callable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]

MIN_SIDE = 8  # no transform returns a side smaller than this


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = rng.integers(0, 256, size=3)
    return int(r), int(g), int(b)


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    size = (max(MIN_SIDE, int(width)), max(MIN_SIDE, int(height)))
    return image.resize(size, Image.Resampling.BICUBIC)


def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep 30-90 % of each side (independently), at a random position."""
    w, h = image.size
    cw = max(1, round(w * rng.uniform(0.3, 0.9)))
    ch = max(1, round(h * rng.uniform(0.3, 0.9)))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    out = image.crop((left, top, left + cw, top + ch))
    if min(out.size) < MIN_SIDE:
        out = _resize(out, max(cw, MIN_SIDE), max(ch, MIN_SIDE))
    return _rgb(out)


def rescale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Resize by a factor between 0.1 and 1.5 (mostly down)."""
    factor = float(rng.choice([rng.uniform(0.1, 0.9), rng.uniform(1.1, 1.5)], p=[0.8, 0.2]))
    w, h = image.size
    return _rgb(_resize(image, round(w * factor), round(h * factor)))


def jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Recompress as JPEG at quality 10-90."""
    buffer = io.BytesIO()
    _rgb(image).save(buffer, format="JPEG", quality=int(rng.integers(10, 91)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate up to 30 degrees either way; corners filled with a random colour."""
    degrees = float(rng.uniform(-30, 30))
    expand = bool(rng.integers(0, 2))
    return _rgb(image).rotate(
        degrees, resample=Image.Resampling.BICUBIC, expand=expand, fillcolor=_colour(rng)
    )


def hflip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror left to right."""
    return _rgb(ImageOps.mirror(image))


def vflip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror top to bottom."""
    return _rgb(ImageOps.flip(image))


def colour_jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random brightness, contrast and saturation (0.5-1.5) and a hue shift (up to 0.15 turn)."""
    out = _rgb(image)
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.5, 1.5)))
    out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.5, 1.5)))
    out = ImageEnhance.Color(out).enhance(float(rng.uniform(0.5, 1.5)))
    shift = int(round(rng.uniform(-0.15, 0.15) * 256))
    hsv = np.asarray(out.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def greyscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Drop the colour (still returned as RGB)."""
    return image.convert("L").convert("RGB")


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur, radius 0.5-2.5 % of the shorter side (at least 0.5 px)."""
    radius = max(0.5, float(rng.uniform(0.005, 0.025)) * min(image.size))
    return _rgb(image).filter(ImageFilter.GaussianBlur(radius))


def noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian noise, sigma 5-30 grey levels."""
    pixels = np.asarray(_rgb(image), dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(5, 30), size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(8, size))  # Pillow >= 10.1
    except TypeError:  # pragma: no cover - older Pillow: fixed-size bitmap font
        return ImageFont.load_default()


def text(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Overlay one to three random words in a random colour, size and place."""
    out = _rgb(image).copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    letters = np.array(list(string.ascii_letters + string.digits + "  !?"))
    for _ in range(int(rng.integers(1, 4))):
        words = "".join(rng.choice(letters, size=int(rng.integers(3, 16))))
        font = _font(int(h * rng.uniform(0.05, 0.2)))
        xy = (int(rng.integers(0, max(1, w * 3 // 4))), int(rng.integers(0, max(1, h * 7 // 8))))
        draw.text(xy, words, fill=_colour(rng), font=font)
    return out


def _logo(size: int, rng: np.random.Generator) -> Image.Image:
    """A random RGBA "logo": a few filled ellipses, rectangles and polygons."""
    logo = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(logo)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = (int(v) for v in rng.integers(0, max(1, size * 2 // 3), size=2))
        x1, y1 = (int(v) for v in rng.integers(max(2, size // 4), size + 1, size=2))
        box = [x0, y0, max(x0, min(x0 + x1, size - 1)), max(y0, min(y0 + y1, size - 1))]
        fill = (*_colour(rng), int(rng.integers(160, 256)))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            points = [tuple(int(v) for v in p) for p in rng.integers(0, size, size=(3, 2))]
            draw.polygon(points, fill=fill)
    return logo


def overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Paste one or two random shape "logos" (emoji-like patches), 10-35 % of the shorter side."""
    out = _rgb(image).copy()
    w, h = out.size
    for _ in range(int(rng.integers(1, 3))):
        size = max(4, int(min(w, h) * rng.uniform(0.1, 0.35)))
        logo = _logo(size, rng)
        xy = (
            int(rng.integers(0, max(1, w - size + 1))),
            int(rng.integers(0, max(1, h - size + 1))),
        )
        out.paste(logo, xy, logo)
    return out


def border(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Pad each side by 0-20 % of the image with one random colour."""
    w, h = image.size
    left, right = (int(v) for v in rng.integers(0, max(1, w // 5) + 1, size=2))
    top, bottom = (int(v) for v in rng.integers(0, max(1, h // 5) + 1, size=2))
    out = Image.new("RGB", (w + left + right, h + top + bottom), _colour(rng))
    out.paste(_rgb(image), (left, top))
    return out


def aspect(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Stretch one side: width/height ratio multiplied by 0.6-1.6."""
    w, h = image.size
    ratio = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    if ratio >= 1:
        return _rgb(_resize(image, round(w * ratio), h))
    return _rgb(_resize(image, w, round(h / ratio)))


def screenshot(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Paste the picture at 30-70 % of a larger canvas with a background and UI-like bars."""
    w, h = image.size
    frac = float(rng.uniform(0.3, 0.7))
    cw, ch = max(MIN_SIDE, round(w / frac)), max(MIN_SIDE, round(h / frac))
    if rng.integers(0, 2):  # plain background
        canvas = Image.new("RGB", (cw, ch), _colour(rng))
    else:  # smooth random gradient
        a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
        t = np.linspace(0.0, 1.0, ch, dtype=np.float32)[:, None, None]
        rows = (a * (1 - t) + b * t).astype(np.uint8)
        canvas = Image.fromarray(np.ascontiguousarray(np.broadcast_to(rows, (ch, cw, 3))), "RGB")
    draw = ImageDraw.Draw(canvas)
    bar = max(2, ch // 12)
    draw.rectangle([0, 0, cw, bar], fill=_colour(rng))  # title bar
    if rng.integers(0, 2):
        draw.rectangle([0, ch - bar, cw, ch], fill=_colour(rng))  # bottom bar
    for _ in range(int(rng.integers(0, 4))):  # a few "buttons" / text lines
        x, y = int(rng.integers(0, cw)), int(rng.integers(0, ch))
        draw.rectangle([x, y, x + cw // 8, y + max(2, bar // 2)], fill=_colour(rng))
    left = int(rng.integers(0, cw - w + 1))
    top = int(rng.integers(min(bar, ch - h), ch - h + 1))
    canvas.paste(_rgb(image), (left, top))
    return canvas


TRANSFORMS: dict[str, Transform] = {
    "crop": crop,
    "rescale": rescale,
    "jpeg": jpeg,
    "rotate": rotate,
    "hflip": hflip,
    "vflip": vflip,
    "colour": colour_jitter,
    "greyscale": greyscale,
    "blur": blur,
    "noise": noise,
    "text": text,
    "overlay": overlay,
    "border": border,
    "aspect": aspect,
    "screenshot": screenshot,
}
"""Every copy transform, by name."""

#: Relative weight of each transform when ``make_copy`` draws a mix (vflip is rarer online).
DEFAULT_MIX: dict[str, float] = {name: 1.0 for name in TRANSFORMS} | {"vflip": 0.5}


def make_copy(
    image: Image.Image,
    rng: np.random.Generator,
    mix: Mapping[str, float] = DEFAULT_MIX,
    max_transforms: int = 3,
) -> tuple[Image.Image, list[str]]:
    """Apply 1 to ``max_transforms`` distinct transforms drawn from ``mix`` (name -> weight).

    Returns the RGB copy and the names applied, in order.
    """
    names = list(mix)
    weights = np.array([mix[n] for n in names], dtype=np.float64)
    count = int(rng.integers(1, min(max_transforms, len(names)) + 1))
    chosen = rng.choice(len(names), size=count, replace=False, p=weights / weights.sum())
    out = _rgb(image)
    applied = [names[int(i)] for i in chosen]
    for name in applied:
        out = TRANSFORMS[name](out, rng)
    return _rgb(out), applied
