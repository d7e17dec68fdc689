"""Geometric verification: do two pictures show the same photo, under a plane transform?

SIFT keypoints on both images (grayscale, long side at most ``max_side``), Lowe's ratio test,
then RANSAC: a homography (5 px reprojection error), or a 4-degree-of-freedom similarity
(``estimateAffinePartial2D``) when no homography is found. The count of RANSAC inliers is the
evidence: unrelated photos, even of the same subject, keep a handful; copies keep dozens.
The query is also tried mirrored, so a flipped copy verifies as well as an unflipped one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import cv2

RATIO = 0.75
RANSAC_PX = 5.0
N_FEATURES = 1000


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify_pair`.

    ``inliers``: matches consistent with ``transform``; ``matches``: matches left after the
    ratio test; ``inlier_ratio``: inliers / matches (0 when no matches); ``flipped``: the
    better agreement was with the mirrored query.
    """

    inliers: int
    matches: int
    transform: str  # "homography" | "affine" | "none"
    inlier_ratio: float
    flipped: bool

    def as_dict(self) -> dict:
        return asdict(self)


NONE = Verification(0, 0, "none", 0.0, False)

Features = tuple[np.ndarray, np.ndarray | None]  # (points [n, 2] float32, descriptors [n, 128])


def _gray(image: Image.Image, max_side: int) -> np.ndarray:
    """Grayscale uint8 array with its long side at most ``max_side``."""
    gray = image.convert("L")
    w, h = gray.size
    scale = max_side / max(w, h)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = gray.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(gray)


def _sift() -> cv2.SIFT:
    import cv2

    return cv2.SIFT.create(nfeatures=N_FEATURES)


def local_features(gray: np.ndarray, sift: cv2.SIFT | None = None) -> Features:
    """SIFT keypoint positions and descriptors of a grayscale image."""
    keypoints, descriptors = (sift or _sift()).detectAndCompute(gray, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return points, descriptors


def _plausible(matrix: np.ndarray) -> bool:
    """A transform a copy could have undergone: scale within 1/20..20, no collapse or flip."""
    det = float(np.linalg.det(matrix[:2, :2]))
    if matrix.shape[0] == 3 and abs(matrix[2, 2]) > 1e-12:
        det /= float(matrix[2, 2]) ** 2
    return 1 / 400 < det < 400


def _distinct(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> int:
    """Inliers counted once per distinct position on each side (many-to-one matches collapse)."""
    keep = mask.ravel().astype(bool)
    if not keep.any():
        return 0
    a = np.unique(np.round(src[keep]).astype(np.int32), axis=0)
    b = np.unique(np.round(dst[keep]).astype(np.int32), axis=0)
    return int(min(len(a), len(b)))


def match_features(a: Features, b: Features) -> Verification:
    """Ratio-test matches from ``a`` to ``b`` and the RANSAC inliers among them."""
    import cv2

    (pa, da), (pb, db) = a, b
    if da is None or db is None or len(pa) < 2 or len(pb) < 2:
        return NONE
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    pairs = [p for p in pairs if len(p) == 2]
    if not pairs:
        return NONE
    dist = np.array([(p[0].distance, p[1].distance) for p in pairs], dtype=np.float32)
    idx = np.array([(p[0].queryIdx, p[0].trainIdx) for p in pairs], dtype=np.int64)
    good = idx[dist[:, 0] < RATIO * dist[:, 1]]
    n = len(good)
    if n < 4:
        return Verification(0, n, "none", 0.0, False)
    src, dst = pa[good[:, 0]], pb[good[:, 1]]
    transform, inliers = "none", 0
    matrix, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PX)
    if matrix is not None and mask is not None and _plausible(matrix):
        transform, inliers = "homography", _distinct(src, dst, mask)
    if inliers < 4:
        matrix, mask = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX
        )
        if matrix is not None and mask is not None and _plausible(matrix):
            transform, inliers = "affine", _distinct(src, dst, mask)
        else:
            transform, inliers = "none", 0
    return Verification(inliers, n, transform, inliers / n if n else 0.0, False)


def verify_features(query: tuple[Features, Features], candidate: Features) -> Verification:
    """Best of the query (``query[0]``) and its mirror image (``query[1]``) against a candidate."""
    straight = match_features(query[0], candidate)
    mirrored = match_features(query[1], candidate)
    if mirrored.inliers > straight.inliers:
        return Verification(
            mirrored.inliers, mirrored.matches, mirrored.transform, mirrored.inlier_ratio, True
        )
    return straight


def query_features(
    image: Image.Image, *, max_side: int = 512, sift: cv2.SIFT | None = None
) -> tuple[Features, Features]:
    """Local features of ``image`` and of its horizontal mirror (computed once, reused)."""
    sift = sift or _sift()
    gray = _gray(image, max_side)
    return local_features(gray, sift), local_features(np.ascontiguousarray(gray[:, ::-1]), sift)


def candidate_features(
    image: Image.Image, *, max_side: int = 512, sift: cv2.SIFT | None = None
) -> Features:
    """Local features of a database image."""
    return local_features(_gray(image, max_side), sift)


def verify_pair(query: Image.Image, candidate: Image.Image, *, max_side: int = 512) -> Verification:
    """Geometric agreement between ``query`` (or its mirror image) and ``candidate``.

    Example:
        >>> v = verify_pair(Image.open("copy.jpg"), Image.open("original.jpg"))
        >>> v.inliers >= 20  # the same photo
    """
    sift = _sift()
    q = query_features(query, max_side=max_side, sift=sift)
    return verify_features(q, candidate_features(candidate, max_side=max_side, sift=sift))


def same_photo_inliers(a: str | Path, b: str | Path, *, max_side: int = 0) -> int:
    """RANSAC homography inliers between two image files, without mirroring (0 when none).

    ``max_side`` 0 keeps full resolution (as ``bench/copies.py`` always did).
    """
    import cv2

    sift = cv2.SIFT.create()
    feats = []
    for path in (a, b):
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            return 0
        if max_side:
            gray = _gray(Image.fromarray(gray), max_side)
        feats.append(local_features(gray, sift))
    v = match_features(feats[0], feats[1])
    return v.inliers if v.transform == "homography" else 0
