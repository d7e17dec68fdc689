"""Calibrate ``lookalike.copies.check``: inliers and cosine of true copies against non-copies.

Index a fixed random sample (seed 0) of a data set's photos, then run ``check_copy`` on
transformed copies (``STANDARD`` plus a picture pasted into a larger canvas, a text overlay and
a 40 % crop) of (a) indexed originals, which should be found, and (b) originals that are NOT
indexed, which should not. A query of (b) whose verdict points at an unlisted re-save of its
original (full-resolution SIFT check, ``same_photo_inliers`` >= 20) is relabelled a true copy,
as is a hit on an original's listed duplicate. Prints precision/recall for each inlier threshold,
the chosen threshold (lowest with precision >= 0.99) and the logistic score fit.

    python -m bench.check_calibration [--indexed 500] [--per-group 20]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import lookalike
from lookalike.copies.check import NEAR_IDENTICAL_COSINE, check_copy
from lookalike.copies.geometry import same_photo_inliers
from lookalike.eval.transforms import STANDARD, crop
from lookalike.images import load_image

from .copies import DATASETS, _dataset_paths, _duplicates


def paste_in_canvas(image: Image.Image) -> Image.Image:
    """The picture at 60 % size pasted off-centre on a plain canvas twice its size."""
    w, h = image.size
    small = image.resize((max(1, w * 3 // 5), max(1, h * 3 // 5)), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (w, h), (235, 230, 220))
    canvas.paste(small, (w // 10, h // 4))
    return canvas


def text_overlay(image: Image.Image) -> Image.Image:
    """Captions drawn across the picture."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for i in range(4):
        draw.rectangle((0, h * i // 4, w, h * i // 4 + h // 14), fill=(0, 0, 0))
        draw.text((w // 20, h * i // 4 + 2), "SALE 50% OFF lookalike " * 3, fill=(255, 255, 0))
    return out


HARD = {
    "canvas": paste_in_canvas,
    "text": text_overlay,
    "crop40": lambda im: crop(im, 0.4, 0.6, 0.4),
}
TRANSFORMS = {**STANDARD, **HARD}


def calibrate(name: str = "mfood7", indexed: int = 500, per_group: int = 20, seed: int = 0):
    root = DATASETS / name
    rel_paths = _dataset_paths(root)
    dups = _duplicates(root)
    rng = random.Random(seed)
    shuffled = rel_paths[:]
    rng.shuffle(shuffled)
    in_index = set(shuffled[:indexed])
    # originals NOT indexed: nor any listed duplicate of them
    outside = [p for p in shuffled[indexed:] if not (dups.get(p, {p}) & in_index)]
    group_in = shuffled[:per_group]
    group_out = outside[:per_group]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="lk-check-") as tmp:
        col = lookalike.open(Path(tmp) / "index")
        start = time.perf_counter()
        col.add([root / p for p in sorted(in_index)], workers=2)
        index_seconds = time.perf_counter() - start
        prefix = str(root.absolute()) + "/"
        start = time.perf_counter()
        for group, originals in (("indexed", group_in), ("outside", group_out)):
            for rel in originals:
                image = load_image(str(root / rel), min_side=0).image
                for tname, transform in TRANSFORMS.items():
                    r = check_copy(col, transform(image).convert("RGB"), min_inliers=10**9)
                    found = r.match.path.removeprefix(prefix) if r.match else ""
                    correct = bool(found) and found in dups.get(rel, {rel})
                    if found and not correct and r.evidence["inliers"] >= 8:
                        correct = same_photo_inliers(root / rel, root / found) >= 20
                    rows.append(
                        {
                            "group": group,
                            "transform": tname,
                            "original": rel,
                            "found": found,
                            "correct": correct,
                            "inliers": r.evidence["inliers"],
                            "cosine": r.evidence["cosine"],
                            "top_cosine": r.evidence["top_cosine"],
                            "seconds": r.evidence["seconds"],
                        }
                    )
        check_seconds = time.perf_counter() - start
        col.close()
    return rows, {"index_seconds": index_seconds, "check_seconds": check_seconds}


def evaluate(rows: list[dict], threshold: int) -> dict:
    """Precision and recall of the verdict at ``threshold`` inliers."""
    inl = np.array([r["inliers"] for r in rows])
    top = np.array([r["top_cosine"] for r in rows])
    correct = np.array([r["correct"] for r in rows])
    # a copy is in the index: an indexed original's transform, or a relabelled re-save
    is_copy = np.array([r["group"] == "indexed" or r["correct"] for r in rows])
    predicted = (inl >= threshold) | (top >= NEAR_IDENTICAL_COSINE)
    tp = int((predicted & correct).sum())
    fp = int((predicted & ~correct).sum())
    positives = int(is_copy.sum())
    return {
        "threshold": threshold,
        "tp": tp,
        "fp": fp,
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, positives),
        "positives": positives,
    }


def fit_logistic(rows: list[dict], ridge: float = 1e-2) -> list[float]:
    """(bias, w_log1p_inliers, w_cosine) by Newton's method on the calibration rows."""
    x = np.array([(1.0, np.log1p(r["inliers"]), r["cosine"]) for r in rows])
    y = np.array([float(r["correct"]) for r in rows])
    w = np.zeros(3)
    for _ in range(50):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ (p - y) + ridge * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(3)
        w -= np.linalg.solve(hess, grad)
    return [float(v) for v in w]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mfood7")
    parser.add_argument("--indexed", type=int, default=500)
    parser.add_argument("--per-group", type=int, default=20)
    parser.add_argument("--out", type=Path, help="write the raw rows as JSON here")
    args = parser.parse_args()
    rows, timing = calibrate(args.dataset, args.indexed, args.per_group)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    table = [evaluate(rows, t) for t in (4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40)]
    for t in table:
        print(json.dumps(t))
    good = [t for t in table if t["precision"] >= 0.99]
    chosen = good[0] if good else table[-1]
    pos = [r["inliers"] for r in rows if r["correct"]]
    neg = [r["inliers"] for r in rows if not r["correct"]]
    negcos = [r["top_cosine"] for r in rows if not r["correct"]]
    summary = {
        "queries": len(rows),
        "chosen": chosen,
        "non_copy_inliers_max": max(neg, default=0),
        "non_copy_inliers_p99": float(np.percentile(neg, 99)) if neg else 0.0,
        "non_copy_top_cosine_max": max(negcos, default=0.0),
        "copy_inliers_median": float(np.median(pos)) if pos else 0.0,
        "logistic": fit_logistic(rows),
        "seconds_per_check": timing["check_seconds"] / max(1, len(rows)),
        **timing,
    }
    per_transform = {}
    for tname in TRANSFORMS:
        sub = [r for r in rows if r["transform"] == tname and r["group"] == "indexed"]
        per_transform[tname] = sum(
            r["correct"] and r["inliers"] >= chosen["threshold"] for r in sub
        )
    summary["found_per_transform_indexed"] = per_transform
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
