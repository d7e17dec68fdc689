"""Shape descriptors: a HOG layout descriptor and a global edge-orientation histogram."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.features.base import ComputedFeature
from lookalike.features.prepare import working_gray

__all__ = [
    "EDGE_BINS",
    "EDGES",
    "FEATURES",
    "HOG_SIZE",
    "SHAPE",
    "edge_orientation_histogram",
    "hog_descriptor",
]

#: HOG works on a HOG_SIZE x HOG_SIZE gray resize (aspect ratio not kept).
HOG_SIZE = 128
HOG_ORIENTATIONS = 9
HOG_CELL = 32  # pixels per cell side: a 4x4 grid of cells
HOG_BLOCK = 2  # cells per block side: 3x3 overlapping blocks
HOG_DIM = HOG_ORIENTATIONS * HOG_BLOCK**2 * (HOG_SIZE // HOG_CELL - HOG_BLOCK + 1) ** 2  # 324

#: Unsigned gradient-orientation bins over [0, 180) degrees (10 degrees each).
EDGE_BINS = 18
#: The edge histogram works on a gray copy with shorter side EDGE_SIDE (longer side capped).
EDGE_SIDE = 256
EDGE_MAX_SIDE = 1024
#: Lower bound of Canny's high threshold (3x3 Sobel magnitude, 0..~1440), so that flat or noisy
#: images do not turn faint noise into edges.
EDGE_MIN_THRESHOLD = 40.0


def hog_descriptor(image: Image.Image) -> np.ndarray:
    """HOG of a 128x128 gray resize: 9 orientations, 32 px cells, 2x2-cell blocks (L2-Hys).

    3 x 3 blocks x 4 cells x 9 bins = 324 values, L2-normalised float32.
    """
    from skimage.feature import hog

    gray = image.convert("L").resize(
        (HOG_SIZE, HOG_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0
    )
    vector = hog(
        np.asarray(gray, dtype=np.float32),
        orientations=HOG_ORIENTATIONS,
        pixels_per_cell=(HOG_CELL, HOG_CELL),
        cells_per_block=(HOG_BLOCK, HOG_BLOCK),
        block_norm="L2-Hys",
        feature_vector=True,
    ).astype(np.float32)
    norm = float(np.linalg.norm(vector))
    if norm > 0:
        return vector / norm
    return np.full(vector.shape, 1.0 / np.sqrt(vector.size), dtype=np.float32)


def edge_orientation_histogram(image: Image.Image) -> np.ndarray:
    """Magnitude-weighted histogram of gradient orientations on Canny edges, float32 [18].

    Gray image (shorter side 256) blurred with a 5x5 Gaussian; 3x3 Sobel gradients feed both
    Canny (high threshold = 90th percentile of the magnitude, at least 40; low = half of it)
    and the orientations. Unsigned orientations (0-180 degrees, so contrast inversion does not
    matter) are linearly interpolated between the two nearest of 18 bins. L1-normalised; an
    image without edges gets the uniform histogram.
    """
    import cv2

    gray = cv2.GaussianBlur(working_gray(image, EDGE_SIDE, EDGE_MAX_SIDE), (5, 5), 0)
    dx = cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3)
    dy = cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3)
    fx, fy = dx.astype(np.float32), dy.astype(np.float32)
    magnitude = np.hypot(fx, fy)
    high = max(EDGE_MIN_THRESHOLD, float(np.percentile(magnitude, 90)))
    edges = cv2.Canny(dx, dy, 0.5 * high, high, L2gradient=True) > 0
    if not edges.any():
        return np.full(EDGE_BINS, 1.0 / EDGE_BINS, dtype=np.float32)
    weight = magnitude[edges]
    angle = np.mod(np.arctan2(fy[edges], fx[edges]), np.pi)  # [0, pi)
    position = angle * (EDGE_BINS / np.pi) - 0.5  # bin centres at integer positions
    lower = np.floor(position)
    frac = position - lower
    lower_bin = lower.astype(np.intp) % EDGE_BINS
    upper_bin = (lower_bin + 1) % EDGE_BINS
    hist = np.bincount(lower_bin, weight * (1 - frac), minlength=EDGE_BINS)
    hist += np.bincount(upper_bin, weight * frac, minlength=EDGE_BINS)
    total = float(hist.sum())
    if total <= 0:
        return np.full(EDGE_BINS, 1.0 / EDGE_BINS, dtype=np.float32)
    return (hist / total).astype(np.float32)


SHAPE = ComputedFeature(
    "shape",
    "shape",
    HOG_DIM,
    np.float32,
    "cosine",
    hog_descriptor,
    "HOG layout: gradient orientations of a 128x128 gray resize, 4x4 cells x 9 bins (324)",
)
EDGES = ComputedFeature(
    "edges",
    "shape",
    EDGE_BINS,
    np.float32,
    "chi2",
    edge_orientation_histogram,
    "Edge orientations: magnitude-weighted histogram of Canny edge directions, 18 bins",
)

FEATURES: tuple[ComputedFeature, ...] = (SHAPE, EDGES)
