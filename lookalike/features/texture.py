"""Texture descriptors: a multi-scale LBP histogram and a GLCM (co-occurrence) summary.

Both work on a gray copy resized so that its shorter side is :data:`WORKING_SIDE` pixels (longer
side at most :data:`MAX_SIDE`), so speed and values do not depend on the input resolution.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.features.base import ComputedFeature
from lookalike.features.prepare import working_gray

__all__ = [
    "FEATURES",
    "GLCM",
    "GLCM_LEVELS",
    "MAX_SIDE",
    "TEXTURE",
    "WORKING_SIDE",
    "glcm_features",
    "lbp_histogram",
]

#: Shorter side of the gray working image.
WORKING_SIDE = 256
#: Cap on its longer side (very elongated images are squeezed rather than made huge).
MAX_SIDE = 1024

#: (points, radius) of the two uniform rotation-invariant LBP scales; P + 2 bins each.
LBP_SCALES = ((8, 1), (16, 2))

#: Gray levels of the quantised image the co-occurrence matrices are built from.
GLCM_LEVELS = 32
GLCM_DISTANCES = (1, 2)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
#: Properties kept. ``ASM`` is left out: it is exactly ``energy ** 2`` and would only
#: double-count energy under the L2 distance.
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
#: Per-property location and scale used to standardise the (transformed, see
#: :func:`glcm_features`) values; measured over scikit-image's sample photos, pooled over
#: distances and angles, so that every property weighs about the same in the L2 distance.
GLCM_MEAN = np.array([0.0650, 0.0330, 0.7156, -1.5100, 0.8887])
GLCM_STD = np.array([0.0349, 0.0236, 0.1729, 0.6615, 0.1378])


def lbp_histogram(image: Image.Image) -> np.ndarray:
    """Uniform rotation-invariant LBP histograms at (P=8, R=1) and (P=16, R=2), float32 [28].

    The 10-bin and 18-bin histograms are each normalised, concatenated and halved, so the whole
    vector sums to 1 with both scales weighted equally.
    """
    from skimage.feature import local_binary_pattern

    gray = working_gray(image, WORKING_SIDE, MAX_SIDE)
    parts = []
    for points, radius in LBP_SCALES:
        codes = local_binary_pattern(gray, points, radius, method="uniform")
        counts = np.bincount(codes.astype(np.intp).ravel(), minlength=points + 2)
        parts.append(counts[: points + 2] / max(1, codes.size))
    return (np.concatenate(parts) / len(parts)).astype(np.float32)


def glcm_features(image: Image.Image) -> np.ndarray:
    """Standardised GLCM statistics, float32 [40].

    Co-occurrence matrices of the gray image quantised to 32 levels at distances 1 and 2 and
    angles 0, 45, 90 and 135 degrees (symmetric, normalised). Per matrix: contrast and
    dissimilarity (as ``sqrt(contrast) / 31`` and ``dissimilarity / 31``), homogeneity,
    ``log(energy)`` and correlation, each standardised with fixed :data:`GLCM_MEAN` /
    :data:`GLCM_STD`. Order: property-major, then distance, then angle.
    """
    from skimage.feature import graycomatrix, graycoprops

    gray = working_gray(image, WORKING_SIDE, MAX_SIDE)
    quantised = (gray // (256 // GLCM_LEVELS)).astype(np.uint8)
    matrix = graycomatrix(
        quantised,
        distances=list(GLCM_DISTANCES),
        angles=list(GLCM_ANGLES),
        levels=GLCM_LEVELS,
        symmetric=True,
        normed=True,
    )
    top = GLCM_LEVELS - 1
    values = np.stack([graycoprops(matrix, prop) for prop in GLCM_PROPS])  # [5, dist, angle]
    values = np.nan_to_num(values, nan=1.0, posinf=1.0, neginf=-1.0)
    values[0] = np.sqrt(np.maximum(values[0], 0.0)) / top
    values[1] = values[1] / top
    values[3] = np.log(np.maximum(values[3], 1e-6))
    standardised = (values - GLCM_MEAN[:, None, None]) / GLCM_STD[:, None, None]
    return standardised.ravel().astype(np.float32)


TEXTURE = ComputedFeature(
    "texture",
    "texture",
    sum(points + 2 for points, _ in LBP_SCALES),
    np.float32,
    "chi2",
    lbp_histogram,
    "LBP texture: uniform rotation-invariant local binary patterns, P=8 R=1 and P=16 R=2",
)
GLCM = ComputedFeature(
    "glcm",
    "texture",
    len(GLCM_PROPS) * len(GLCM_DISTANCES) * len(GLCM_ANGLES),
    np.float32,
    "l2",
    glcm_features,
    "GLCM texture: gray co-occurrence contrast, homogeneity, energy, correlation... (40 values)",
)

FEATURES: tuple[ComputedFeature, ...] = (TEXTURE, GLCM)
