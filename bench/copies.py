"""Copy detection on real photos: recall@1 of transformed copies against their originals.

Index every image of a data set in ``../shared/datasets`` (read in place, never copied into
the repository), take a fixed random sample (seed 0) of originals, write transformed copies
(``lookalike.eval.transforms.STANDARD``) as lossless PNG to a temporary folder, search with each
and count a hit when the best match is the original -- or one of the original's natural
duplicates listed in the data set's ``duplicates.json`` (identical content ties on score, so either
file may come first).

The data sets also hold many unlisted near-duplicates: the same photo saved again slightly
cropped or resized. A second, "verified" figure also counts a best match that is such a copy of
the original, judged independently of our descriptor: at least ``SAME_PHOTO_INLIERS`` SIFT
matches between the two database images survive a RANSAC homography (different photos of the
same dish give fewer than 10; copies give dozens to hundreds).
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import lookalike
from lookalike.eval.transforms import STANDARD
from lookalike.images import load_image

DATASETS = Path(
    os.environ.get(
        "LOOKALIKE_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"
    )
)
GOAL = 0.98
#: "cropped, rescaled and recompressed copies" of the acceptance test; the other STANDARD
#: transforms (a 25 % off-centre crop, a flip, a rotation) are reported beside them.
ACCEPTANCE = ("crop70", "crop80_jpeg50", "half_size", "double_size", "jpeg30", "jpeg10")
SAME_PHOTO_INLIERS = 20


def same_photo_inliers(a: Path, b: Path) -> int:
    """RANSAC-verified SIFT matches between two images (0 when none can be computed)."""
    from lookalike.copies.geometry import same_photo_inliers as inliers

    return inliers(a, b)


def _dataset_paths(root: Path) -> list[str]:
    with (root / "labels.csv").open(newline="") as fh:
        return sorted(row["path"] for row in csv.DictReader(fh))


def _duplicates(root: Path) -> dict[str, set[str]]:
    """Path -> every path in its natural duplicate cluster (itself included)."""
    clusters: dict[str, set[str]] = {}
    file = root / "duplicates.json"
    if file.exists():
        for group in json.loads(file.read_text()):
            members = set(group)
            for p in group:
                clusters.setdefault(p, {p}).update(members)
    return clusters


def measure_copies(name: str = "mfood7", sample: int = 200, seed: int = 0, batch: int = 32) -> dict:
    """recall@1 per transform and overall; ``{"skipped": reason}`` when the data set is absent."""
    root = DATASETS / name
    if not (root / "labels.csv").exists():
        return {"dataset": name, "skipped": f"{root} not found (data set absent on this machine)"}
    rel_paths = _dataset_paths(root)
    dups = _duplicates(root)
    originals = random.Random(seed).sample(rel_paths, min(sample, len(rel_paths)))
    out: dict = {"dataset": name, "indexed": len(rel_paths), "originals": len(originals)}
    with tempfile.TemporaryDirectory(prefix="lk-copies-") as tmp:
        tmp_path = Path(tmp)
        # through the CLI, as a user would: the first run, then a re-run on the unchanged folder
        exe = Path(sys.executable).with_name("lookalike")
        command = [str(exe), "index", str(root / "images"), "--db", str(tmp_path / "index"), "-q"]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        out["index_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        rerun = subprocess.run(command + ["--json"], check=True, capture_output=True, text=True)
        out["reindex_seconds"] = time.perf_counter() - start
        out["reindex_embedded"] = json.loads(rerun.stdout)["embedded"]
        col = lookalike.open(tmp_path / "index", create=False)
        out["index_failed"] = col.info()["errors"]
        # transformed copies, lossless, so only the transform itself changes the pixels
        queries: list[tuple[str, str, Path]] = []
        qdir = tmp_path / "queries"
        qdir.mkdir()
        start = time.perf_counter()
        for i, rel in enumerate(originals):
            image = load_image(str(root / rel), min_side=0).image
            for tname, transform in STANDARD.items():
                qpath = qdir / f"{i:04d}-{tname}.png"
                transform(image).convert("RGB").save(qpath, compress_level=1)
                queries.append((rel, tname, qpath))
        out["make_copies_seconds"] = time.perf_counter() - start
        hits: dict[str, list[bool]] = {t: [] for t in STANDARD}
        hits5: list[bool] = []
        misses: list[dict] = []
        copy_hits: dict[str, int] = {t: 0 for t in STANDARD}
        verified: dict[tuple[str, str], int] = {}
        prefix = str((root).absolute()) + "/"
        start = time.perf_counter()
        for b in range(0, len(queries), batch):
            chunk = queries[b : b + batch]
            vectors = col.embed([str(q[2]) for q in chunk])
            for (rel, tname, _), matches in zip(
                chunk, col.search_vectors(vectors, k=5), strict=True
            ):
                top = matches[0].path.removeprefix(prefix) if matches else ""
                wanted = dups.get(rel, {rel})
                ok = top in wanted
                hits5.append(any(m.path.removeprefix(prefix) in wanted for m in matches[:5]))
                if not ok and top:
                    # an unlisted copy of the original in the database?
                    inliers = verified.get((rel, top))
                    if inliers is None:
                        inliers = same_photo_inliers(root / rel, root / top)
                        verified[(rel, top)] = inliers
                    if inliers >= SAME_PHOTO_INLIERS:
                        copy_hits[tname] += 1
                hits[tname].append(ok)
                if not ok:
                    misses.append({"original": rel, "transform": tname, "top1": top})
        out["search_seconds"] = time.perf_counter() - start
        col.close()
    out["recall_at_1"] = {t: float(np.mean(v)) for t, v in hits.items()}
    out["recall_at_1_verified"] = {t: (sum(v) + copy_hits[t]) / len(v) for t, v in hits.items()}
    out["overall_acceptance"] = float(np.mean([x for t in ACCEPTANCE for x in hits[t]]))
    out["overall_acceptance_verified"] = sum(sum(hits[t]) + copy_hits[t] for t in ACCEPTANCE) / sum(
        len(hits[t]) for t in ACCEPTANCE
    )
    out["overall_all"] = float(np.mean([x for v in hits.values() for x in v]))
    out["unlisted_copies_hit"] = sum(copy_hits.values())
    out["recall_at_5_all"] = float(np.mean(hits5))
    out["queries"] = len(queries)
    out["goal"] = GOAL
    out["misses"] = misses[:100]
    return out


if __name__ == "__main__":
    print(json.dumps(measure_copies(), indent=2))
