"""Perceptual hashes: aHash, dHash, pHash, wHash (via ``imagehash``) and PDQ (via ``pdqhash``).

Every hash is stored as a packed ``uint8`` code compared with the Hamming distance.

Bit order: a hash's bits are taken in **row-major** order of ``imagehash``'s boolean matrix
(``hash.flatten()``) and packed **most significant bit first** (``np.packbits``, bit order
``"big"``): bit ``k`` of the hash is bit ``7 - k % 8`` of byte ``k // 8``. Hence
``code.tobytes().hex() == str(imagehash.phash(image))``. PDQ codes pack the 256 bits in the order
``pdqhash.compute`` returns them, with the same MSB-first convention.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.features.base import ComputedFeature

__all__ = [
    "AHASH",
    "DHASH",
    "FEATURES",
    "PDQ",
    "PHASH",
    "WHASH",
    "ahash_code",
    "dhash_code",
    "pdq_code",
    "pdq_with_quality",
    "phash_code",
    "whash_code",
]


def _pack(bits: np.ndarray) -> np.ndarray:
    """Pack a boolean / 0-1 array row-major, MSB first, into ``uint8`` bytes."""
    return np.packbits(np.asarray(bits, dtype=bool).ravel())


def ahash_code(image: Image.Image) -> np.ndarray:
    """aHash (``imagehash.average_hash``): 8x8 gray thumbnail thresholded at its mean; 8 bytes."""
    import imagehash

    return _pack(imagehash.average_hash(image).hash)


def dhash_code(image: Image.Image) -> np.ndarray:
    """dHash (``imagehash.dhash``): signs of horizontal differences of a 9x8 gray thumbnail."""
    import imagehash

    return _pack(imagehash.dhash(image).hash)


def phash_code(image: Image.Image) -> np.ndarray:
    """pHash (``imagehash.phash``): low 8x8 DCT coefficients of a 32x32 gray image vs median."""
    import imagehash

    return _pack(imagehash.phash(image).hash)


def whash_code(image: Image.Image) -> np.ndarray:
    """wHash (``imagehash.whash``): Haar-wavelet 8x8 low band (DC removed) vs its median."""
    import imagehash

    return _pack(imagehash.whash(image).hash)


def pdq_with_quality(image: Image.Image) -> tuple[np.ndarray, int]:
    """PDQ hash of an image: ``(code uint8[32], quality 0-100)``.

    Quality below about 50 means a flat / featureless image whose hash is unreliable.
    """
    import pdqhash

    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    bits, quality = pdqhash.compute(rgb)
    return _pack(bits), int(quality)


def pdq_code(image: Image.Image) -> np.ndarray:
    """PDQ hash (``pdqhash.compute``): 256 bits packed into 32 bytes; the quality is dropped."""
    return pdq_with_quality(image)[0]


AHASH = ComputedFeature(
    "ahash",
    "hash",
    64,
    np.uint8,
    "hamming",
    ahash_code,
    "aHash: 8x8 gray thumbnail vs its mean, 64 bits (imagehash.average_hash)",
)
DHASH = ComputedFeature(
    "dhash",
    "hash",
    64,
    np.uint8,
    "hamming",
    dhash_code,
    "dHash: horizontal gradient signs of a 9x8 gray thumbnail, 64 bits (imagehash.dhash)",
)
PHASH = ComputedFeature(
    "phash",
    "hash",
    64,
    np.uint8,
    "hamming",
    phash_code,
    "pHash: DCT of a 32x32 gray image, 64 bits (imagehash.phash)",
)
WHASH = ComputedFeature(
    "whash",
    "hash",
    64,
    np.uint8,
    "hamming",
    whash_code,
    "wHash: Haar wavelet low band of a gray image, 64 bits (imagehash.whash)",
)
PDQ = ComputedFeature(
    "pdq",
    "hash",
    256,
    np.uint8,
    "hamming",
    pdq_code,
    "PDQ: Meta's 16x16 DCT hash of a filtered 64x64 luma image, 256 bits (pdqhash)",
)

FEATURES: tuple[ComputedFeature, ...] = (AHASH, DHASH, PHASH, WHASH, PDQ)
