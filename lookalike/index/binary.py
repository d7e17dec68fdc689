"""Exact Hamming search over packed binary codes with 64-bit ids (faiss), saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np

from lookalike.atomic import write_atomic
from lookalike.index import subset
from lookalike.index.base import Capabilities
from lookalike.index.flat import _as_ids

#: Distance faiss gives a missing result slot (id -1) of a Hamming search.
MISSING_DISTANCE = np.iinfo(np.int32).max


class BinaryIndex:
    """Brute-force Hamming search over ``bits``-bit codes packed in uint8 [N, bits/8]."""

    capabilities: ClassVar[Capabilities] = Capabilities(exact=True)
    kind: ClassVar[str] = "binary"

    def __init__(self, bits: int, index: faiss.IndexBinaryIDMap | None = None) -> None:
        if bits <= 0 or bits % 8:
            raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
        self.bits = int(bits)
        if index is None:
            index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(self.bits))
        if index.d != self.bits:
            raise ValueError(f"index has {index.d} bits, expected {self.bits}")
        self._index = index
        self._sorted_ids: np.ndarray | None = None  # for filtered searches; reset on changes

    @property
    def code_bytes(self) -> int:
        return self.bits // 8

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _as_codes(self, codes: np.ndarray) -> np.ndarray:
        array = np.asarray(codes)
        if array.dtype != np.uint8:
            raise ValueError(f"codes must be uint8 (packed bits), got {array.dtype}")
        if array.ndim != 2 or array.shape[1] != self.code_bytes:
            raise ValueError(
                f"expected codes of shape (N, {self.code_bytes}) for {self.bits} bits, "
                f"got {array.shape}"
            )
        return np.ascontiguousarray(array)

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add codes under ids (the caller keeps ids unique)."""
        ids = _as_ids(ids)
        codes = self._as_codes(codes)
        if len(ids) != len(codes):
            raise ValueError(f"{len(ids)} ids for {len(codes)} codes")
        if len(ids):
            self._index.add_with_ids(codes, ids)
            self._sorted_ids = None

    def ids(self) -> np.ndarray:
        """Every id in the index."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def sorted_ids(self) -> np.ndarray:
        """Every id in the index, sorted (cached until the index changes)."""
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(self.ids())
        return self._sorted_ids

    def remove(self, ids: np.ndarray) -> int:
        """Remove codes by id; returns how many were removed."""
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        self._sorted_ids = None
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(
        self, codes: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances int32 [Q, k], ids int64 [Q, k])``, nearest first; missing slots id -1.

        ``ids``: rank only these codes (ids not in the index are ignored). A Hamming scan is
        cheap, so a faiss id selector serves every size of allowed set.
        """
        codes = self._as_codes(codes)
        if k <= 0:
            raise ValueError("k must be positive")
        if ids is None:
            distances, found = self._index.search(codes, k)
        else:
            allowed = subset.present(ids, self.sorted_ids())
            if not len(allowed):
                return (
                    np.full((len(codes), k), MISSING_DISTANCE, dtype=np.int32),
                    np.full((len(codes), k), -1, dtype=np.int64),
                )
            params, _keep = subset.selector(allowed)
            distances, found = self._index.search(codes, k, params=params)
        return distances.astype(np.int32, copy=False), found.astype(np.int64, copy=False)

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, rename."""
        path = Path(path)
        write_atomic(path, faiss.serialize_index_binary(self._index).tobytes())

    @classmethod
    def load(cls, path: Path, bits: int) -> BinaryIndex:
        """Read an index written by :meth:`save`."""
        data = np.fromfile(path, dtype=np.uint8)
        index = faiss.deserialize_index_binary(data)
        if not isinstance(index, faiss.IndexBinaryIDMap):
            raise ValueError(f"expected a faiss IndexBinaryIDMap, got {type(index).__name__}")
        return cls(bits, index)
