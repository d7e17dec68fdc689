"""Decode-speed benchmark: Pillow full decode vs Pillow draft (load_image) vs OpenCV reduced.

    python bench/decode.py DIR [--limit N] [--min-side 448] [--repeat R] [--ext .jpg,.jpeg]

DIR holds the photos (``bench/get_photos.sh DIR`` fills ``DIR/photos``; if DIR itself has no
images but a ``photos/`` sub-folder, that is used). Each mode reads the file and decodes it to an
8-bit RGB ``PIL.Image``, so the numbers are comparable:

* ``pillow-full``    -- ``load_image(path, min_side=0)``: full-resolution decode.
* ``pillow-draft``   -- ``load_image(path, min_side=448)``: libjpeg DCT scaling (what we ship).
* ``opencv-reduced`` -- ``cv2.imdecode`` with ``IMREAD_REDUCED_COLOR_{2,4,8}`` at the same scale
  (the header is read with Pillow to pick it), BGR -> RGB, to ``PIL.Image``.

``measure_decode(paths, mode)`` is importable (``from bench.decode import measure_decode``).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

try:
    from lookalike.images import IMAGE_EXTENSIONS, load_image
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from lookalike.images import IMAGE_EXTENSIONS, load_image

MODES: tuple[str, ...] = ("pillow-full", "pillow-draft", "opencv-reduced")
DEFAULT_MIN_SIDE = 448


def _opencv_reduced(path: str | Path, min_side: int = DEFAULT_MIN_SIDE) -> Image.Image:
    import cv2

    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:  # header only, to pick the scale like draft does
        shorter = min(im.size)
    scale = shorter // min_side if min_side else 1
    flag = (
        cv2.IMREAD_REDUCED_COLOR_8
        if scale >= 8
        else cv2.IMREAD_REDUCED_COLOR_4
        if scale >= 4
        else cv2.IMREAD_REDUCED_COLOR_2
        if scale >= 2
        else cv2.IMREAD_COLOR
    )
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if arr is None:
        raise ValueError(f"OpenCV cannot decode {path}")
    return Image.fromarray(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB), "RGB")


def _decoder(mode: str, min_side: int) -> Callable[[str | Path], Image.Image]:
    if mode == "pillow-full":
        return lambda p: load_image(p, min_side=0).image
    if mode == "pillow-draft":
        return lambda p: load_image(p, min_side=min_side).image
    if mode == "opencv-reduced":
        return lambda p: _opencv_reduced(p, min_side)
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def measure_decode(
    paths: Sequence[str | Path],
    mode: str,
    *,
    min_side: int = DEFAULT_MIN_SIDE,
    repeat: int = 1,
) -> dict[str, float | int | str]:
    """Decode every path ``repeat`` times with ``mode`` (one of :data:`MODES`).

    Returns ``mode``, ``images`` (decodes done), ``errors``, ``wall_s``, ``cpu_s``,
    ``images_per_s``, ``cpu_s_per_image``, ``megapixels_decoded`` (mean output size).
    One warm-up decode of the first file is not counted.
    """
    decode = _decoder(mode, min_side)
    paths = list(paths)
    if paths:
        decode(paths[0])  # warm-up: imports, plugin init
    n = errors = 0
    out_pixels = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(max(1, repeat)):
        for p in paths:
            try:
                im = decode(p)
            except Exception:
                errors += 1
                continue
            n += 1
            out_pixels += im.size[0] * im.size[1]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "mode": mode,
        "images": n,
        "errors": errors,
        "wall_s": wall,
        "cpu_s": cpu,
        "images_per_s": n / wall if wall > 0 else 0.0,
        "cpu_s_per_image": cpu / n if n else 0.0,
        "megapixels_decoded": out_pixels / n / 1e6 if n else 0.0,
    }


def compare_pixels(paths: Sequence[str | Path], min_side: int = DEFAULT_MIN_SIDE) -> float:
    """Mean absolute RGB difference (0-255) between Pillow draft and OpenCV reduced decodes."""
    diffs = []
    for p in paths:
        a = np.asarray(load_image(p, min_side=min_side).image, np.int16)
        try:
            b = np.asarray(_opencv_reduced(p, min_side), np.int16)
        except Exception:
            continue
        if a.shape != b.shape:  # e.g. EXIF-rotated files: OpenCV rotates too, sizes may differ
            continue
        diffs.append(float(np.abs(a - b).mean()))
    return float(np.mean(diffs)) if diffs else float("nan")


def find_images(root: Path, exts: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in ``root`` (or in ``root/photos`` when ``root`` has none)."""
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files and (root / "photos").is_dir():
        return find_images(root / "photos", exts)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="use at most N images (0: all)")
    ap.add_argument("--min-side", type=int, default=DEFAULT_MIN_SIDE)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--ext",
        default="",
        help="comma-separated suffixes to include, e.g. .jpg,.jpeg (default: all image types)",
    )
    args = ap.parse_args(argv)

    exts = IMAGE_EXTENSIONS
    if args.ext:
        exts = frozenset(e.strip().lower() for e in args.ext.split(",") if e.strip())
    paths = find_images(args.dir, exts)
    if args.limit > 0:
        paths = paths[: args.limit]
    if not paths:
        print(f"no images in {args.dir}", file=sys.stderr)
        return 1

    mps = []
    for p in paths:
        with Image.open(p) as im:
            mps.append(im.size[0] * im.size[1] / 1e6)
    print(
        f"{len(paths)} images from {args.dir}: {np.mean(mps):.1f} MP mean "
        f"({min(mps):.1f}-{max(mps):.1f}), min_side={args.min_side}, repeat={args.repeat}"
    )
    results = {
        m: measure_decode(paths, m, min_side=args.min_side, repeat=args.repeat) for m in MODES
    }
    print(f"{'mode':<16} {'images/s':>9} {'CPU s/img':>10} {'out MP':>7} {'errors':>6}")
    for r in results.values():
        print(
            f"{r['mode']:<16} {r['images_per_s']:>9.2f} {r['cpu_s_per_image']:>10.4f} "
            f"{r['megapixels_decoded']:>7.2f} {r['errors']:>6}"
        )
    full, draft = results["pillow-full"], results["pillow-draft"]
    cv = results["opencv-reduced"]
    if full["images_per_s"] and draft["images_per_s"]:
        print(f"draft speed-up vs full decode: {draft['images_per_s'] / full['images_per_s']:.2f}x")
    if cv["images_per_s"] and draft["images_per_s"]:
        print(f"opencv-reduced vs draft:       {cv['images_per_s'] / draft['images_per_s']:.2f}x")
    print(f"mean |pixel diff| draft vs opencv-reduced: {compare_pixels(paths, args.min_side):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
