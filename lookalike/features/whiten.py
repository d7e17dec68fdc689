"""PCA whitening of unit vectors, learned on a collection, with shrinkage.

Whitening divides each principal direction by its spread, so the few directions in which all
images of a collection vary together (the "bursty", shared ones) stop dominating cosine
similarity. A collection of a few thousand images gives noisy small eigenvalues; shrinking the
covariance towards a multiple of the identity keeps them from being blown up:
``C' = (1 - s) C + s * mean(eigenvalues) * I``. Keeping the ``dim`` leading directions makes
the vectors smaller too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.atomic import savez_atomic
from lookalike.features.pooling import l2_normalize

DEFAULT_SHRINKAGE = 0.5


@dataclass
class Whitening:
    """``project(x) = normalise((x - mean) @ matrix)``; ``matrix`` is ``[D, dim]``."""

    mean: np.ndarray
    matrix: np.ndarray
    shrinkage: float

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @classmethod
    def fit(
        cls, vectors: np.ndarray, dim: int | None = None, shrinkage: float = DEFAULT_SHRINKAGE
    ) -> Whitening:
        """Learn the whitening of ``vectors`` ``[N, D]``, keeping ``dim`` directions (all by
        default, at most ``D``)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError("whitening needs at least 2 vectors")
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError("shrinkage must be in [0, 1]")
        dim = x.shape[1] if dim is None else int(dim)
        if not 1 <= dim <= x.shape[1]:
            raise ValueError(f"dim must be in [1, {x.shape[1]}]")
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)
        values, vecs = np.linalg.eigh(cov)
        values, vecs = values[::-1][:dim], vecs[:, ::-1][:, :dim]
        values = np.clip(values, 0.0, None)
        floor = float(np.trace(cov)) / x.shape[1]
        shrunk = (1.0 - shrinkage) * values + shrinkage * floor
        matrix = vecs / np.sqrt(np.maximum(shrunk, 1e-12))
        return cls(mean.astype(np.float32), matrix.astype(np.float32), float(shrinkage))

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Whitened, L2-normalised ``[N, dim]`` float32 vectors."""
        x = np.asarray(vectors, dtype=np.float32)
        return l2_normalize((x - self.mean) @ self.matrix).astype(np.float32)

    def save(self, path: Path) -> None:
        """Write to ``path`` (``.npz``) atomically."""
        savez_atomic(path, mean=self.mean, matrix=self.matrix, shrinkage=np.float64(self.shrinkage))

    @classmethod
    def load(cls, path: Path) -> Whitening:
        """Read what :meth:`save` wrote."""
        with np.load(Path(path)) as data:
            return cls(data["mean"], data["matrix"], float(data["shrinkage"]))
