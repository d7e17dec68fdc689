"""Exact search in numpy for metrics faiss does not offer (chi-square, intersection, L2)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from lookalike.atomic import savez_atomic
from lookalike.index.base import Capabilities


class ExactIndex:
    """Brute-force search under ``metric``; ``search`` returns distances, smallest first."""

    capabilities: ClassVar[Capabilities] = Capabilities(exact=True, keeps_vectors=True)
    kind: ClassVar[str] = "exact"

    def __init__(self, dim: int, metric: str, dtype: np.dtype | type = np.float32) -> None:
        self.dim, self.metric, self.dtype = dim, metric, np.dtype(dtype)
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=self.dtype)

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=self.dtype)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(ids):
            raise ValueError(
                f"expected {len(ids)} vectors of shape (N, {self.dim}), got {vectors.shape}"
            )
        self._ids = np.concatenate([self._ids, ids])
        self._vectors = np.concatenate([self._vectors, vectors])

    def remove(self, ids: np.ndarray) -> int:
        keep = ~np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        removed = int((~keep).sum())
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]
        return removed

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for ``ids`` (all must be present)."""
        order = np.argsort(self._ids)
        rows = order[np.searchsorted(self._ids, ids, sorter=order)]
        return self._vectors[rows]

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances [Q, k], ids [Q, k])``, closest first; missing slots have id -1.

        ``ids``: rank only these vectors (ids not in the index are ignored).
        """
        from lookalike.features.metrics import scores

        queries = np.ascontiguousarray(queries, dtype=self.dtype)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries of shape (Q, {self.dim}), got {queries.shape}")
        stored_ids, stored = self._ids, self._vectors
        if ids is not None:
            keep = np.isin(stored_ids, np.asarray(ids, dtype=np.int64).reshape(-1))
            stored_ids, stored = stored_ids[keep], stored[keep]
        n = len(stored_ids)
        distances = np.full((len(queries), k), np.inf, dtype=np.float32)
        found = np.full((len(queries), k), -1, dtype=np.int64)
        if n == 0:
            return distances, found
        _, dist = scores(self.metric, queries, stored)
        take = min(k, n)
        part = np.argpartition(dist, take - 1, axis=1)[:, :take]
        order = np.take_along_axis(dist, part, axis=1).argsort(axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
        distances[:, :take] = np.take_along_axis(dist, best, axis=1)
        found[:, :take] = stored_ids[best]
        return distances, found

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, fsync, rename)."""
        savez_atomic(path, ids=self._ids, vectors=self._vectors, metric=np.array(self.metric))

    @classmethod
    def load(cls, path: Path, dim: int, metric: str, dtype: np.dtype | type) -> ExactIndex:
        with np.load(path, allow_pickle=False) as data:
            if str(data["metric"]) != metric or data["vectors"].shape[1:] != (dim,):
                raise ValueError(f"{path} holds another metric or dimension")
            index = cls(dim, metric, dtype)
            index.add(data["ids"], data["vectors"])
        return index
