"""Exact inner-product search over ids with faiss, saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np

from lookalike.atomic import write_atomic
from lookalike.index import subset
from lookalike.index.base import Capabilities

#: Score faiss gives a missing result slot (id -1) of an inner-product search.
MISSING_SCORE = np.float32(-np.finfo(np.float32).max)
#: Up to this many queries on an index of at least SCAN_MIN vectors: one BLAS product instead.
SCAN_QUERIES = 8
SCAN_MIN = 20_000


def _as_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (N, {dim}), got {array.shape}")
    return array


def _as_ids(ids: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)


def id_map(index: faiss.Index) -> faiss.IndexIDMap:
    """``index`` as the IndexIDMap it must be (faiss returns an index read as its own class)."""
    if not isinstance(index, faiss.IndexIDMap):
        raise ValueError(f"expected a faiss IndexIDMap, got {type(index).__name__}")
    return index


class FlatIndex:
    """Exact inner-product (cosine on unit vectors) search with 64-bit ids."""

    capabilities: ClassVar[Capabilities] = Capabilities(exact=True, keeps_vectors=True)
    kind: ClassVar[str] = "flat"

    def __init__(self, dim: int, index: faiss.IndexIDMap | None = None) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if self._index.d != dim:
            raise ValueError(f"index has dimension {self._index.d}, expected {dim}")
        self._sorted_ids: np.ndarray | None = None  # for filtered searches; reset on changes
        self._row_ids: np.ndarray | None = None  # id of each stored row, for _scan

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under ids (the caller keeps ids unique)."""
        ids = _as_ids(ids)
        vectors = _as_vectors(vectors, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids):
            self._index.add_with_ids(vectors, ids)
            self._sorted_ids = self._row_ids = None

    def ids(self) -> np.ndarray:
        """Every id in the index."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def sorted_ids(self) -> np.ndarray:
        """Every id in the index, sorted (cached until the index changes)."""
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(self.ids())
        return self._sorted_ids

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for ``ids`` (all must be present), in that order."""
        ids = _as_ids(ids)
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id; returns how many were removed."""
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        self._sorted_ids = self._row_ids = None
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [Q, k], ids [Q, k])``, best first; missing slots have id -1.

        ``ids``: rank only these vectors (ids not in the index are ignored).
        """
        queries = _as_vectors(queries, self.dim)
        if k <= 0:
            raise ValueError("k must be positive")
        if ids is None:
            if len(queries) <= SCAN_QUERIES and len(self) >= SCAN_MIN:
                return self._scan(queries, k)
            return self._index.search(queries, k)
        allowed = subset.present(ids, self.sorted_ids())
        if subset.score_directly(len(allowed), len(self), 4 * self.dim):
            scores = queries @ self.vectors_of(allowed).T
            return subset.top_k(scores, allowed, k, largest=True, fill=MISSING_SCORE)
        params, _keep = subset.selector(allowed)
        return self._index.search(queries, k, params=params)

    def _scan(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """A few queries as one matrix product over faiss's own storage (BLAS threads): faiss
        scans for a single query on one thread, a fraction of the memory bandwidth."""
        n = len(self)
        inner = faiss.downcast_index(self._index.index)
        assert isinstance(inner, faiss.IndexFlat)
        stored = faiss.rev_swig_ptr(inner.get_xb(), n * self.dim).reshape(n, self.dim)
        scores = np.ascontiguousarray((stored @ queries.T).T)  # [Q, N]
        if self._row_ids is None:
            self._row_ids = self.ids()
        return subset.top_k(scores, self._row_ids, k, largest=True, fill=MISSING_SCORE)

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, rename."""
        path = Path(path)
        write_atomic(path, faiss.serialize_index(self._index))  # an array: no second copy

    @classmethod
    def load(cls, path: Path, dim: int) -> FlatIndex:
        """Read an index written by :meth:`save`."""
        return cls(dim, id_map(faiss.read_index(str(path))))  # straight from the file: one copy
