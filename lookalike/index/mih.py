"""Binary codes at scale: multi-index hashing (faiss ``IndexBinaryMultiHash``) with 64-bit ids.

Beyond about ten million codes an exact Hamming scan costs more than looking up each query's
substrings in hash tables. :class:`MihIndex` keeps faiss's multi-hash index (whose own ids are
row numbers) and an id array beside it; a removed code's id becomes -1 (a tombstone) until the
store rebuilds the index. Filtered searches scan the allowed codes exactly.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar, cast

import faiss
import numpy as np

from lookalike.atomic import write_atomic
from lookalike.index import subset
from lookalike.index.base import Capabilities, VectorIndex
from lookalike.index.binary import MISSING_DISTANCE, BinaryIndex
from lookalike.index.flat import _as_ids

#: Bits per hash table (substring length) and how many bits each lookup may flip.
HASH_BITS = 16
NFLIP = 2
COMPACT_FRACTION = 0.2


class MihIndex:
    """Approximate k-nearest-neighbour Hamming search by multi-index hashing."""

    capabilities: ClassVar[Capabilities] = Capabilities(exact=False)
    kind: ClassVar[str] = "binary"

    def __init__(self, bits: int, index: faiss.IndexBinary | None = None,
                 ids: np.ndarray | None = None) -> None:  # fmt: skip
        if bits <= 0 or bits % HASH_BITS:
            raise ValueError(f"bits must be a positive multiple of {HASH_BITS}, got {bits}")
        self.bits = int(bits)
        if index is None:
            index = faiss.IndexBinaryMultiHash(self.bits, self.bits // HASH_BITS, HASH_BITS)
        if not isinstance(index, faiss.IndexBinaryMultiHash):
            raise ValueError("expected a faiss IndexBinaryMultiHash")
        self._index = index  # as faiss made it: a downcast copy would not own the index
        self._index.nflip = NFLIP
        self._ids = np.zeros(0, np.int64) if ids is None else _as_ids(ids).copy()
        self._sorted: np.ndarray | None = None

    @property
    def code_bytes(self) -> int:
        return self.bits // 8

    def __len__(self) -> int:
        return int((self._ids >= 0).sum())

    def tombstones(self) -> int:
        return int((self._ids < 0).sum())

    def needs_compaction(self) -> bool:
        """Whether removed entries exceed :data:`COMPACT_FRACTION` of all (time to rebuild)."""
        total = len(self._ids)
        return total > 0 and self.tombstones() > COMPACT_FRACTION * total

    def ids(self) -> np.ndarray:
        return self._ids[self._ids >= 0].copy()

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        ids = _as_ids(ids)
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] != self.code_bytes or len(codes) != len(ids):
            raise ValueError(f"expected {len(ids)} codes of shape (N, {self.code_bytes})")
        if len(ids):
            self._index.add(codes)
            self._ids = np.concatenate([self._ids, ids])
            self._sorted = None

    def remove(self, ids: np.ndarray) -> int:
        hit = np.isin(self._ids, _as_ids(ids)) & (self._ids >= 0)
        self._ids[hit] = -1
        self._sorted = None
        return int(hit.sum())

    def _codes(self) -> np.ndarray:
        # fields faiss's stubs leave out: the hash index's flat storage and its codes
        storage = faiss.downcast_IndexBinary(self._index.storage)  # type: ignore[attr-defined]
        codes = faiss.vector_to_array(storage.xb)  # type: ignore[attr-defined]
        return codes.reshape(-1, self.code_bytes)

    def search(
        self, codes: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances int32 [Q, k], ids int64 [Q, k])``, nearest first; missing slots id -1."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if k <= 0:
            raise ValueError("k must be positive")
        if ids is not None:
            if self._sorted is None:
                self._sorted = np.sort(self.ids())
            allowed = subset.present(ids, self._sorted)
            rows = np.nonzero(np.isin(self._ids, allowed))[0]
            exact = BinaryIndex(self.bits)
            exact.add(self._ids[rows], self._codes()[rows])
            return exact.search(codes, k)
        want = min(int(self._index.ntotal), k + self.tombstones())
        out_d = np.full((len(codes), k), MISSING_DISTANCE, dtype=np.int32)
        out_i = np.full((len(codes), k), -1, dtype=np.int64)
        if want <= 0:
            return out_d, out_i
        distances, rows = self._index.search(codes, want)
        labels = np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)
        for q in range(len(codes)):
            keep = labels[q] >= 0
            found, dist = labels[q][keep][:k], distances[q][keep][:k]
            out_i[q, : len(found)], out_d[q, : len(found)] = found, dist
        return out_d, out_i

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        data = faiss.serialize_index_binary(self._index)
        np.savez(buffer, index=data, ids=self._ids, bits=np.array(self.bits))
        write_atomic(Path(path), buffer.getvalue())


def load_binary(path: Path, bits: int) -> BinaryIndex | MihIndex:
    """Read a binary index file: exact (faiss) or multi-index hashing (an ``.npz``)."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic != b"PK":
        return BinaryIndex.load(path, bits)
    with np.load(path, allow_pickle=False) as data:
        if int(data["bits"]) != bits:
            raise ValueError(f"{path} holds {int(data['bits'])}-bit codes, not {bits}")
        index = faiss.deserialize_index_binary(data["index"])
        return MihIndex(bits, index, data["ids"])


def kind_of(index: VectorIndex) -> str:
    """``mih`` for a multi-index hashing index (the approximate binary kind), else ``flat``."""
    return "mih" if index.kind == "binary" and not index.capabilities.exact else "flat"


def needs_compaction(index: VectorIndex) -> bool:
    """Whether ``index`` is a multi-index hashing index due for a rebuild."""
    return kind_of(index) == "mih" and cast(MihIndex, index).needs_compaction()


def new_binary(kind: str, bits: int) -> BinaryIndex | MihIndex:
    """An empty binary index of ``kind`` (``flat`` or ``mih``)."""
    if kind == "mih" and bits % HASH_BITS == 0:
        return MihIndex(bits)
    return BinaryIndex(bits)
