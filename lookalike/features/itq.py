"""Learned binary codes from deep features: ITQ (Gong & Lazebnik 2011) and a sign-of-PCA baseline.

Both map a float vector ``x`` [D] to ``bits`` bits as ``(x - mean) @ projection > 0`` where
``projection`` [D, bits] is the PCA basis (top ``bits`` principal directions), for ITQ followed
by a learned orthogonal rotation folded into the same matrix. Codes are packed 8 bits a byte
with :func:`numpy.packbits` in its default **big-endian** bit order: bit ``j`` of the code is the
most significant bit first, i.e. byte ``j // 8``, mask ``0x80 >> (j % 8)``. Compare codes by
Hamming distance (``METRICS["hamming"]``: score = 1 - distance / bits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np

from lookalike.atomic import savez_atomic


def _as_matrix(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors [N, D], got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (N, {dim}), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("vectors contain NaN or infinite values")
    return array


def _check_bits(bits: int, dim: int) -> None:
    if bits <= 0 or bits % 8:
        raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
    if bits > dim:
        raise ValueError(f"bits ({bits}) cannot exceed the vector dimension ({dim})")


def _pca(vectors: np.ndarray, bits: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [D], basis [D, bits])``: the top ``bits`` principal directions, largest first."""
    n, dim = vectors.shape
    _check_bits(bits, dim)
    if n < bits:
        raise ValueError(
            f"need at least {bits} vectors to fit {name}{bits}, got {n}"
            f" (fitting {bits}-bit codes needs as many samples as bits)"
        )
    x = vectors.astype(np.float64)
    mean = x.mean(axis=0)
    x -= mean
    cov = (x.T @ x) / max(n - 1, 1)
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
    basis = eigvecs[:, ::-1][:, :bits]
    # fix the sign of each direction so fitting is deterministic across LAPACK builds
    signs = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(bits)])
    basis = basis * np.where(signs == 0, 1.0, signs)
    return mean, basis


class _LinearBinaryCode:
    """Shared encode/save/load for codes of the form ``sign((x - mean) @ projection)``."""

    kind = "linear"

    def __init__(self, bits: int, mean: np.ndarray, projection: np.ndarray) -> None:
        mean = np.ascontiguousarray(mean, dtype=np.float32).reshape(-1)
        projection = np.ascontiguousarray(projection, dtype=np.float32)
        if projection.shape != (mean.shape[0], bits):
            raise ValueError(
                f"projection must have shape ({mean.shape[0]}, {bits}), got {projection.shape}"
            )
        _check_bits(bits, mean.shape[0])
        self.bits = int(bits)
        self.mean = mean
        self.projection = projection

    @property
    def dim(self) -> int:
        """Input vector dimension D."""
        return int(self.mean.shape[0])

    @property
    def code_bytes(self) -> int:
        """Bytes per packed code."""
        return self.bits // 8

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Real-valued projections ``(x - mean) @ projection`` [N, bits] (float32)."""
        x = _as_matrix(vectors, self.dim)
        return (x - self.mean) @ self.projection

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Packed codes uint8 [N, bits/8]; bit set where the projection is > 0 (big-endian)."""
        return np.packbits(self.project(vectors) > 0, axis=1, bitorder="big")

    def quantization_loss(self, vectors: np.ndarray) -> float:
        """Mean over vectors of ``||B - V R||^2`` with ``B`` in {-1, +1} (lower is better)."""
        v = self.project(vectors).astype(np.float64)
        b = np.where(v > 0, 1.0, -1.0)
        return float(np.sum((b - v) ** 2) / max(len(v), 1))

    def save(self, path: Path) -> None:
        """Write an .npz atomically (temporary file in the same folder, fsync, rename)."""
        savez_atomic(
            Path(path),
            kind=np.array(self.kind),
            bits=np.array(self.bits, dtype=np.int64),
            mean=self.mean,
            projection=self.projection,
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            kind = str(data["kind"])
            if kind != cls.kind:
                raise ValueError(f"{path} holds a {kind!r} model, not {cls.kind!r}")
            return cls(int(data["bits"]), data["mean"], data["projection"])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dim} -> {self.bits} bits>"


class SignPCA(_LinearBinaryCode):
    """Baseline: the sign of the top ``bits`` PCA projections (no rotation)."""

    kind = "signpca"

    @classmethod
    def fit(cls, vectors: np.ndarray, bits: int, iterations: int = 50, seed: int = 0) -> SignPCA:
        """Fit mean and PCA basis; ``iterations`` and ``seed`` are accepted and ignored."""
        del iterations, seed
        mean, basis = _pca(_as_matrix(vectors), bits, "signpca")
        return cls(bits, mean, basis)


class ITQ(_LinearBinaryCode):
    """Iterative quantisation: PCA then an orthogonal rotation minimising ``||B - V R||^2``."""

    kind = "itq"

    @classmethod
    def fit(cls, vectors: np.ndarray, bits: int, iterations: int = 50, seed: int = 0) -> ITQ:
        """Fit on ``vectors`` [N, D] (N >= bits); deterministic for a given ``seed``."""
        if iterations < 0:
            raise ValueError("iterations must be >= 0")
        mean, basis = _pca(_as_matrix(vectors), bits, "itq")
        # the big products run in float32 (fast); the small bits x bits SVD in float64
        v = ((vectors.astype(np.float64) - mean) @ basis).astype(np.float32)  # [N, bits]
        rng = np.random.default_rng(seed)
        rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
        for _ in range(iterations):
            b = np.where(v @ rotation.astype(np.float32) > 0, 1.0, -1.0).astype(np.float32)
            # orthogonal Procrustes: R = argmax tr(R^T V^T B) = U W^T for V^T B = U S W^T
            u, _, wt = np.linalg.svd((v.T @ b).astype(np.float64))
            rotation = u @ wt
        return cls(bits, mean, basis @ rotation)
