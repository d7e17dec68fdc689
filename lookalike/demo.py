"""`lookalike demo`: index scikit-image's sample photos, then search with altered copies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
    for name, transform in DEMO_QUERIES:
        target = queries_dir / f"{name}-{transform}.jpg"
        if not target.exists():
            STANDARD[transform](photos[name]).save(target, quality=92)
    return photos_dir, queries_dir


def run_demo(folder: Path, *, as_json: bool = False, progress: bool = False) -> int:
    """Build the demo collection in ``folder`` and search it; returns an exit status."""
    folder = folder.absolute()
    try:
        photos_dir, queries_dir = write_demo_photos(folder)
    except SamplesUnavailable as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return 1
    with lookalike.open(folder / "index") as col:
        report = col.add([photos_dir], prune=True, progress=progress)
        found = 0
        rows = []
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
        print(json.dumps({"index": str(folder / "index"), "indexed": report.as_dict(),
                          "queries": rows, "found": found}))
    else:
        print(f"demo collection: {report.embedded + report.unchanged} photos in {photos_dir}")
        print(f"index: {folder / 'index'}\n")
        print(f"  {'query':<40} {'top match':<28} {'score':>6}")
        for row in rows:
            mark = "ok" if row["found"] else "MISS"
            top = Path(row["top"]).name if row["top"] else "-"
            print(f"  {Path(row['query']).name:<40} {top:<28} {row['score']:>6}  {mark}")
        print(f"\n{found} of {len(rows)} altered copies found their original first.")
        print(f"Try your own: lookalike search --db {folder / 'index'} IMAGE")
    return 0 if found == len(rows) else 1
