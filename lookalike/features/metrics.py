"""Distances and scores for every metric in :data:`lookalike.features.base.METRICS`.

The single definition the rest of lookalike uses. All functions compare a batch of query rows
``[N, D]`` with database rows ``[M, D]`` and return ``[N, M]``; the database is processed in
blocks so that temporary memory stays bounded (a few tens of MB) however large ``M`` is.

Binary codes are ``uint8`` rows of packed bits (see :mod:`lookalike.features.hashes` for the bit
order; Hamming distance does not depend on it as long as both sides use the same).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lookalike.features.base import METRICS

__all__ = [
    "chi2_distance",
    "cosine_similarity",
    "hamming_distance",
    "intersection",
    "l2_distance",
    "scores",
]

#: Budget, in array elements, for the ``[N, block, D]`` temporaries of the pairwise metrics
#: (small enough to stay in cache: measured fastest among 2**18..2**22).
_ELEMENT_BUDGET = 1 << 18
#: Database rows per block for the matrix-product metrics (l2, cosine).
_MATMUL_BLOCK = 16384

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _rows(array: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
    """A 1-D vector becomes one row; everything else must already be 2-D."""
    array = np.asarray(array, dtype=dtype)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"expected a [rows, values] array, got shape {array.shape}")
    return array


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"width mismatch: {a.shape[1]} vs {b.shape[1]}")


def _float(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    return _rows(a, dtype), _rows(b, dtype)


def _block_rows(n: int, width: int) -> int:
    return max(1, _ELEMENT_BUDGET // max(1, n * width))


def _pairwise(
    a: np.ndarray,
    b: np.ndarray,
    reduce: Callable[[np.ndarray, np.ndarray], np.ndarray],
    out_dtype: np.dtype | type,
) -> np.ndarray:
    """``out[i, j] = reduce(a[i], b[j])`` via broadcasting over bounded database blocks."""
    n, m = a.shape[0], b.shape[0]
    out = np.empty((n, m), dtype=out_dtype)
    step = _block_rows(n, a.shape[1])
    left = a[:, None, :]
    for start in range(0, m, step):
        stop = min(m, start + step)
        out[:, start:stop] = reduce(left, b[None, start:stop, :])
    return out


def hamming_distance(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """Number of differing bits between packed ``uint8`` codes: ``[N, B] x [M, B] -> int32``."""
    a, b = _rows(codes_a, np.uint8), _rows(codes_b, np.uint8)
    _check(a, b)
    width = a.shape[1]
    if width % 8 == 0 and width > 0:  # compare 64 bits at a time
        a = np.ascontiguousarray(a).view(np.uint64)
        b = np.ascontiguousarray(b).view(np.uint64)

    if hasattr(np, "bitwise_count"):  # numpy >= 2.0

        def popcount(x: np.ndarray) -> np.ndarray:
            return np.bitwise_count(x)

    else:  # pragma: no cover - numpy < 2
        a, b = a.view(np.uint8), b.view(np.uint8)

        def popcount(x: np.ndarray) -> np.ndarray:
            return _POPCOUNT[x]

    def reduce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return popcount(x ^ y).sum(axis=-1, dtype=np.int32)

    return _pairwise(a, b, reduce, np.int32)


def chi2_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chi-squared distance ``0.5 * sum((a - b)^2 / (a + b))`` with ``0 / 0 := 0``: ``[N, M]``.

    For histograms summing to 1 it lies in [0, 1]: 0 for identical, 1 for disjoint ones.
    Entries must be non-negative.
    """
    a, b = _float(a, b)
    _check(a, b)

    def reduce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        total = x + y
        diff = x - y
        np.multiply(diff, diff, out=diff)
        total += total == 0  # where a + b == 0, a - b == 0 too: 0 / 1 = 0
        np.divide(diff, total, out=diff)
        return diff.sum(axis=-1)

    return np.multiply(_pairwise(a, b, reduce, a.dtype), 0.5)


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Histogram intersection ``sum(min(a, b))``: ``[N, M]`` (1 identical, 0 disjoint)."""
    a, b = _float(a, b)
    _check(a, b)

    def reduce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.minimum(x, y).sum(axis=-1)

    return _pairwise(a, b, reduce, a.dtype)


def l2_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance ``[N, D] x [M, D] -> [N, M]`` (computed in float64, returned float32)."""
    a, b = _rows(a, np.float64), _rows(b)
    _check(a, b)
    n, m = a.shape[0], b.shape[0]
    out = np.empty((n, m), dtype=np.float32)
    a_sq = np.einsum("ij,ij->i", a, a)[:, None]
    for start in range(0, m, _MATMUL_BLOCK):
        block = np.asarray(b[start : start + _MATMUL_BLOCK], dtype=np.float64)
        squared = a @ block.T
        squared *= -2.0
        squared += a_sq
        squared += np.einsum("ij,ij->i", block, block)[None, :]
        np.maximum(squared, 0.0, out=squared)
        out[:, start : start + len(block)] = np.sqrt(squared)
    return out


def _norms(x: np.ndarray) -> np.ndarray:
    """Row norms, with 1 for zero rows (so that a zero vector scores 0 against everything)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0] = 1
    return norms


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity ``[N, D] x [M, D] -> [N, M]`` in [-1, 1]; a zero vector scores 0."""
    a, b = _float(a, b)
    _check(a, b)
    n, m = a.shape[0], b.shape[0]
    out = np.empty((n, m), dtype=a.dtype)
    unit_a = a / _norms(a)[:, None]
    for start in range(0, m, _MATMUL_BLOCK):
        block = b[start : start + _MATMUL_BLOCK]
        similarity = unit_a @ block.T
        similarity /= _norms(block)[None, :]
        out[:, start : start + len(block)] = similarity
    return np.clip(out, -1.0, 1.0, out=out)


def scores(
    metric: str, query: np.ndarray, database: np.ndarray, bits: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(score, distance)``, each float32 ``[N, M]``, as :data:`METRICS` defines them.

    ``score`` is a similarity (larger is closer) in [0, 1] ([-1, 1] for cosine). ``bits`` is
    the code length for "hamming" (default: 8 bits per byte of the codes).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if metric == "hamming":
        query = _rows(query, np.uint8)
        nbits = bits if bits is not None else 8 * query.shape[1]
        distance = hamming_distance(query, database).astype(np.float32)
        score = 1.0 - distance / np.float32(max(1, nbits))
    elif metric == "cosine":
        score = cosine_similarity(query, database).astype(np.float32)
        distance = 1.0 - score
    elif metric == "l2":
        distance = l2_distance(query, database)
        score = 1.0 / (1.0 + distance)
    elif metric == "chi2":
        distance = chi2_distance(query, database).astype(np.float32)
        score = np.clip(1.0 - distance, 0.0, 1.0)
    else:  # intersection
        score = intersection(query, database).astype(np.float32)
        distance = 1.0 - score
    return score.astype(np.float32, copy=False), distance.astype(np.float32, copy=False)
