"""Pooling a convolutional feature map [N, C, H, W] into one vector per image."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale vectors to unit length (zero vectors stay zero)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def average_pool(feature_map: np.ndarray) -> np.ndarray:
    """Global average pooling, L2-normalised: ``[N, C, H, W] -> [N, C]``."""
    return l2_normalize(feature_map.mean(axis=(2, 3)))


def rmac_regions(height: int, width: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """Square regions ``(top, left, side)`` of R-MAC (Tolias, Sicre and Jégou, 2016).

    Level ``l`` has regions of side ``2 * min(H, W) / (l + 1)`` on an ``l + 1`` by ``l + 1``
    grid of positions (overlapping by about 40 %); level 1 is the whole (shorter) map.
    """
    side0 = min(height, width)
    regions: list[tuple[int, int, int]] = []
    for level in range(1, levels + 1):
        side = side0 if level == 1 else int(2 * side0 / (level + 1))
        if side < 1:
            break
        count = 1 if level == 1 else level + 1
        tops = sorted({int(t) for t in np.linspace(0, height - side, count)})
        lefts = sorted({int(t) for t in np.linspace(0, width - side, count)})
        if level == 1:
            tops, lefts = [(height - side) // 2], [(width - side) // 2]
        regions += [(t, x, side) for t in tops for x in lefts]
    return regions


def rmac(feature_map: np.ndarray, levels: int = 3) -> np.ndarray:
    """Regional maximum activations of convolutions: ``[N, C, H, W] -> [N, C]``, unit length.

    Each region is max-pooled and L2-normalised; the regional vectors are summed and the sum
    normalised again. It keeps more of where things are than global averaging, which makes
    crops and partial views of a picture find it more often.
    """
    # channels last, so each region's maximum runs over contiguous rows of C values
    fmap = np.ascontiguousarray(np.asarray(feature_map, dtype=np.float32).transpose(0, 2, 3, 1))
    n, h, w, c = fmap.shape
    total = np.zeros((n, c), dtype=np.float32)
    for top, left, side in rmac_regions(h, w, levels):
        total += l2_normalize(fmap[:, top : top + side, left : left + side].max(axis=(1, 2)))
    return l2_normalize(total)


GEM_P = 3.0


def gem(feature_map: np.ndarray, p: float = GEM_P) -> np.ndarray:
    """Generalised mean pooling (Radenović, Tolias and Chum, 2018), L2-normalised:
    ``[N, C, H, W] -> [N, C]``, ``(mean(x ** p)) ** (1 / p)`` per channel.

    ``p = 1`` is average pooling and large ``p`` tends to max pooling; activations below zero
    are clipped (the model's ReLU6 output has none).
    """
    fmap = np.clip(np.asarray(feature_map, dtype=np.float32), 1e-6, None)
    pooled = np.power(np.power(fmap, p).mean(axis=(2, 3)), 1.0 / p)
    return l2_normalize(pooled)
