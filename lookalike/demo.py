"""`lookalike demo`: index scikit-image's sample photos, then search with altered copies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lookalike
from lookalike.eval.samples import SamplesUnavailable, sample_photos
from lookalike.eval.transforms import STANDARD

# (sample, transform) pairs searched by the demo: each should find its original first.
DEMO_QUERIES = (
    ("astronaut", "crop70"),
    ("coffee", "half_size"),
    ("rocket", "jpeg10"),
    ("chelsea", "hflip"),
    ("retina", "crop80_jpeg50"),
)


# Copies of photos that are not queried, so that `lookalike dups` and the web page's
# duplicates view have something to show: (sample, file name, transform).
DEMO_DUPLICATES = (
    ("horse", "horse-copy", "jpeg30"),
    ("moon", "moon-small", "half_size"),
)

# A made-up shop catalogue of the sample photos, attached as metadata (category, price, title)
# so that searches can be filtered: `lookalike serve` shows a control for each key.
DEMO_CATALOGUE = {
    "astronaut": ("people", 120, "Astronaut portrait"),
    "brick": ("textures", 15, "Brick wall"),
    "camera": ("people", 80, "Cameraman"),
    "chelsea": ("animals", 45, "Chelsea the cat"),
    "coffee": ("food", 8, "Cup of coffee"),
    "coins": ("objects", 30, "Greek coins"),
    "colorwheel": ("graphics", 5, "Colour wheel"),
    "grass": ("textures", 12, "Grass"),
    "gravel": ("textures", 10, "Gravel"),
    "hubble_deep_field": ("science", 200, "Hubble deep field"),
    "immunohistochemistry": ("science", 150, "Stained tissue"),
    "logo": ("graphics", 3, "scikit-image logo"),
    "moon": ("science", 90, "Moon surface"),
    "page": ("documents", 2, "Scanned page"),
    "retina": ("science", 110, "Retina"),
    "rocket": ("objects", 250, "Rocket launch"),
    "text": ("documents", 4, "Text on a board"),
    "clock": ("objects", 60, "Clock"),
    "cell": ("science", 70, "Cell"),
    "horse": ("animals", 55, "Horse silhouette"),
    "motorcycle_left": ("objects", 180, "Motorcycle (left view)"),
    "motorcycle_right": ("objects", 175, "Motorcycle (right view)"),
}


def write_demo_photos(folder: Path) -> tuple[Path, Path]:
    """Write the sample photos to ``folder/photos`` and altered copies to ``folder/queries``."""
    photos_dir, queries_dir = folder / "photos", folder / "queries"
    photos_dir.mkdir(parents=True, exist_ok=True)
    queries_dir.mkdir(parents=True, exist_ok=True)
    photos = sample_photos()
    for name, image in photos.items():
        target = photos_dir / f"{name}.jpg"
        if not target.exists():
            image.save(target, quality=92)
    for name, copy, transform in DEMO_DUPLICATES:
        target = photos_dir / f"{copy}.jpg"
        if name in photos and not target.exists():
            STANDARD[transform](photos[name]).save(target, quality=92)
    for name, transform in DEMO_QUERIES:
        target = queries_dir / f"{name}-{transform}.jpg"
        if not target.exists():
            STANDARD[transform](photos[name]).save(target, quality=92)
    return photos_dir, queries_dir


def write_demo_catalogue(folder: Path, photos_dir: Path) -> Path:
    """Write ``folder/catalogue.csv``: path, title, category and price of every demo photo."""
    target = folder / "catalogue.csv"
    rows = ["path,title,category,price"]
    copies = {copy: name for name, copy, _ in DEMO_DUPLICATES}
    for photo in sorted(photos_dir.glob("*.jpg")):
        entry = DEMO_CATALOGUE.get(copies.get(photo.stem, photo.stem))
        if entry is not None:
            category, price, title = entry
            rows.append(f"{photo.relative_to(folder)},{title},{category},{price}")
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return target


def run_demo(folder: Path, *, as_json: bool = False, progress: bool = False) -> int:
    """Build the demo collection in ``folder`` and search it; returns an exit status."""
    folder = folder.absolute()
    try:
        photos_dir, queries_dir = write_demo_photos(folder)
    except SamplesUnavailable as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return 1
    catalogue = write_demo_catalogue(folder, photos_dir)
    with lookalike.open(folder / "index") as col:
        report = col.add([photos_dir], prune=True, progress=progress, metadata=catalogue)
        found = 0
        rows: list[dict[str, Any]] = []
        for name, transform in DEMO_QUERIES:
            query = queries_dir / f"{name}-{transform}.jpg"
            matches = col.search(query, k=3)
            top = matches[0] if matches else None
            hit = top is not None and Path(top.path).stem == name
            found += hit
            rows.append(
                {
                    "query": str(query),
                    "expected": name,
                    "top": top.path if top else None,
                    "score": round(top.score, 4) if top else None,
                    "found": hit,
                }
            )
    if as_json:
        summary = {
            "index": str(folder / "index"),
            "indexed": report.as_dict(),
            "queries": rows,
            "found": found,
        }
        print(json.dumps(summary))
    else:
        print(f"demo collection: {report.embedded + report.unchanged} photos in {photos_dir}")
        print(f"index: {folder / 'index'}\n")
        print(f"  {'query':<40} {'top match':<28} {'score':>6}")
        for row in rows:
            mark = "ok" if row["found"] else "MISS"
            shown = Path(row["top"]).name if row["top"] else "-"
            print(f"  {Path(row['query']).name:<40} {shown:<28} {row['score']:>6}  {mark}")
        print(f"\n{found} of {len(rows)} altered copies found their original first.")
        print(f"Try your own: lookalike search --db {folder / 'index'} IMAGE")
        print(f"In a browser: lookalike serve --db {folder / 'index'}")
    return 0 if found == len(rows) else 1
