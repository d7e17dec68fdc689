"""Copy check: is this picture (or a crop, flip, resize, recompression of it) in the collection?

Two stages. Recall: the deep descriptor of the whole query, of its mirror image and of a grid
of regional crops (so a picture pasted into a larger canvas, or a small crop of one, still finds
its source) are searched in the collection and the candidates pooled by content. Precision: the
few best candidates are verified geometrically (:mod:`lookalike.copies.geometry`, SIFT +
RANSAC); a copy keeps dozens of inliers, a different photo only a handful.

Example::

    import lookalike
    from lookalike.copies.check import check_copy
    col = lookalike.open("~/my-index")
    result = check_copy(col, "suspect.jpg")
    print(result.verdict, result.score, result.match and result.match.path)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image, ImageOps

from lookalike.collection import Collection
from lookalike.copies.geometry import candidate_features, query_features, verify_features
from lookalike.features.models import MIN_SIDE
from lookalike.features.registry import DEEP
from lookalike.images import ImageError, QueryImage, decode_query, load_image
from lookalike.search import Match

#: RANSAC inliers that make a copy: twice the worst non-copy in the calibration (bench/README.md,
#: "Copy check calibration").
MIN_INLIERS = 12
#: best cosine at which a candidate counts as a copy without geometric evidence (near-identical;
#: no non-copy came above 0.82 in the calibration)
NEAR_IDENTICAL_COSINE = 0.97
#: score = sigmoid(SCORE_SLOPE * (log1p(inliers) - log1p(MIN_INLIERS))): 0.5 at the default
#: threshold, ~0.04 at 5 inliers (the worst non-copy measured), 0.99 at 40 inliers.
SCORE_SLOPE = 4.0

MAX_SIDE = 512  # long side for SIFT
VERIFY_TOP = 5  # candidates verified geometrically
STRONG_INLIERS = 100  # stop verifying further candidates once one has this many
#: A query image is box-reduced to at most this many pixels before its regions are cut: the
#: ~14 regions copy about 5 times the image. Decoding already reduces all but elongated images
#: (shorter side near 448 px) far below it, so only those are affected.
MAX_QUERY_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check_copy`.

    ``match``: the best candidate (the source when ``verdict`` is "copy"; the nearest picture
    otherwise; None for an empty collection). ``score``: :func:`copy_score`, a confidence in
    0..1 that depends only on the geometric evidence, so it compares across queries and
    collections: 0.5 at the calibrated threshold, ~0.04 for the worst non-copy measured.
    ``evidence``: how the verdict was reached (cosine, region, inliers, candidates, ...).
    """

    query: str
    verdict: str  # "copy" | "no_copy"
    match: Match | None
    score: float
    evidence: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "query": self.query,
            "verdict": self.verdict,
            "match": self.match.as_dict() if self.match else None,
            "score": self.score,
            "evidence": self.evidence,
        }


def copy_score(inliers: int, cosine: float = 0.0) -> float:
    """Calibrated confidence (0..1) that a query with this evidence is a copy.

    0.5 exactly at the calibrated ``MIN_INLIERS``; rises with the inliers on a log scale; a
    near-identical cosine (>= ``NEAR_IDENTICAL_COSINE``) is worth at least the threshold.
    """
    z = SCORE_SLOPE * (math.log1p(max(0, inliers)) - math.log1p(MIN_INLIERS))
    score = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
    return max(score, 0.5) if cosine >= NEAR_IDENTICAL_COSINE else score


def _box(image: Image.Image, keep: float, fx: float, fy: float) -> Image.Image:
    w, h = image.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = round((w - cw) * fx), round((h - ch) * fy)
    return image.crop((left, top, left + cw, top + ch))


def bounded_query(image: Image.Image, max_pixels: int = MAX_QUERY_PIXELS) -> Image.Image:
    """``image``, box-reduced by the smallest whole factor that brings it to ``max_pixels``."""
    w, h = image.size
    factor = math.ceil(math.sqrt(w * h / max_pixels)) if w * h > max_pixels else 1
    while factor > 1 and math.ceil(w / factor) * math.ceil(h / factor) > max_pixels:
        factor += 1
    return image.reduce(factor) if factor > 1 else image


def regions(image: Image.Image) -> dict[str, Image.Image]:
    """Query regions: whole, mirrored, 2x2 grid at 60 %, 3x3 grid at 45 %, centre 70 %."""
    out = {"whole": image, "flip": ImageOps.mirror(image), "centre70": _box(image, 0.7, 0.5, 0.5)}
    for n, keep in ((2, 0.6), (3, 0.45)):
        for i in range(n):
            for j in range(n):
                out[f"grid{n}_{i}{j}_{round(keep * 100)}"] = _box(
                    image, keep, j / (n - 1), i / (n - 1)
                )
    return out


def _query_name(query: QueryImage) -> str:
    if isinstance(query, Image.Image):
        return "<image>"
    if isinstance(query, bytes):
        return f"<{len(query)} bytes>"
    return str(query)


def check_copy(
    col: Collection,
    query: QueryImage,
    *,
    k: int = 10,
    min_inliers: int | None = None,
    verify_top: int = VERIFY_TOP,
    load: Callable[[str], Image.Image] | None = None,
) -> CheckResult:
    """Whether ``query`` is a copy of a picture in ``col`` (needs only the deep feature).

    Args:
        col: the collection to look in.
        query: a path, the bytes of an image file, or a PIL image.
        k: results per query region searched.
        min_inliers: inliers that make a copy (default ``MIN_INLIERS``, calibrated).
        verify_top: how many pooled candidates are verified geometrically.
        load: how to read a candidate file (default: ``load_image`` at SIFT resolution).

    Raises:
        ImageError: the query cannot be decoded.
    """
    start = time.perf_counter()
    threshold = MIN_INLIERS if min_inliers is None else min_inliers
    name = _query_name(query)
    image = bounded_query(decode_query(query, min_side=MIN_SIDE))
    if col.catalog.count_contents() == 0:
        empty = {"reason": "empty collection", "candidates": [], "inliers": 0}
        return CheckResult(name, "no_copy", None, 0.0, empty)

    parts = regions(image)
    vectors = col.describe(list(parts.values()), [DEEP.name])[DEEP.name]
    results = col.search_vectors(vectors, k, feature=DEEP.name)
    pooled: dict[int, dict] = {}
    for region, matches in zip(parts, results, strict=True):
        for m in matches:
            entry = pooled.get(m.content_id)
            if entry is None or m.score > entry["cosine"]:
                pooled[m.content_id] = {"match": m, "cosine": m.score, "region": region}
    ranked = sorted(pooled.values(), key=lambda e: -e["cosine"])

    read = load or (lambda path: load_image(path, min_side=MAX_SIDE).image)
    qfeat = query_features(image, max_side=MAX_SIDE)
    considered = []
    for entry in ranked[:verify_top]:
        try:
            cand = read(entry["match"].path)
        except (ImageError, OSError) as exc:
            entry["verification"] = None
            entry["error"] = str(exc)
            continue
        entry["verification"] = verify_features(qfeat, candidate_features(cand, max_side=MAX_SIDE))
        considered.append(entry)
        if entry["verification"].inliers >= STRONG_INLIERS:
            break

    best = max(
        considered,
        key=lambda e: (e["verification"].inliers, e["cosine"]),
        default=ranked[0] if ranked else None,
    )
    top = ranked[0] if ranked else None
    near_identical = top is not None and top["cosine"] >= NEAR_IDENTICAL_COSINE
    inliers = best["verification"].inliers if best and best.get("verification") else 0
    if top is not None and near_identical and inliers < threshold:
        best = top
        inliers = best["verification"].inliers if best.get("verification") else 0
    verdict = "copy" if best is not None and (inliers >= threshold or near_identical) else "no_copy"

    evidence: dict = {
        "cosine": best["cosine"] if best else 0.0,
        "top_cosine": top["cosine"] if top else 0.0,
        "region": best["region"] if best else None,
        "inliers": inliers,
        "threshold": threshold,
        "near_identical": bool(near_identical),
        "candidates": [_describe(e) for e in ranked[:verify_top]],
        "seconds": 0.0,
    }
    ver = best.get("verification") if best else None
    if ver is not None:
        evidence.update(
            matches=ver.matches,
            transform=ver.transform,
            flipped=ver.flipped,
            inlier_ratio=ver.inlier_ratio,
        )
    score = copy_score(inliers, evidence["cosine"])
    evidence["seconds"] = time.perf_counter() - start
    return CheckResult(name, verdict, best["match"] if best else None, score, evidence)


def _describe(entry: dict) -> dict:
    m: Match = entry["match"]
    ver = entry.get("verification")
    out = {
        "path": m.path,
        "content_id": m.content_id,
        "cosine": entry["cosine"],
        "region": entry["region"],
        "inliers": ver.inliers if ver else None,
    }
    if entry.get("error"):
        out["error"] = entry["error"]
    return out
