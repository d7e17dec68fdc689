"""Each image's ImageNet class probabilities, kept sparse, scored against class weights.

The ``classes`` vector stored per image is the model's ``TOP_K`` most probable classes: ``TOP_K``
little-endian uint16 class ids followed by their ``TOP_K`` float16 probabilities, 128 bytes in
all (:func:`pack`, :func:`unpack`). In memory :class:`ClassIndex` keeps them as a sparse matrix,
so scoring every image against a weight vector over the 1000 classes is one sparse
matrix-vector product (a few milliseconds for 100,000 images).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from lookalike.atomic import savez_atomic
from lookalike.index.base import Capabilities

NUM_CLASSES = 1000
TOP_K = 32
WIDTH = 4 * TOP_K  # bytes per image


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits ``[N, C]``, float32."""
    x = np.asarray(logits, dtype=np.float32)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)


def pack(probabilities: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """``uint8 [N, 4k]``: each row's ``k`` most probable classes (ids, then float16 values),
    most probable first."""
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected probabilities [N, {NUM_CLASSES}], got {p.shape}")
    top = np.argpartition(-p, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(p, top, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1).astype("<u2")
    values = np.take_along_axis(values, order, axis=1).astype("<f2")
    return np.ascontiguousarray(np.concatenate([top.view(np.uint8), values.view(np.uint8)], 1))


def unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(class ids int64 [N, k], probabilities float32 [N, k])`` from :func:`pack`'s rows."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] % 4:
        raise ValueError(f"expected packed class rows [N, 4k], got {packed.shape}")
    half = packed.shape[1] // 2
    classes = packed[:, :half].copy().view("<u2").astype(np.int64)
    values = packed[:, half:].copy().view("<f2").astype(np.float32)
    if len(classes) and classes.max() >= NUM_CLASSES:
        raise ValueError("packed class rows name a class beyond 1000")
    return classes, values


def dense(packed: np.ndarray) -> np.ndarray:
    """``float32 [N, 1000]`` probabilities (zero outside each row's top classes)."""
    classes, values = unpack(packed)
    out = np.zeros((len(classes), NUM_CLASSES), dtype=np.float32)
    np.put_along_axis(out, classes, values, axis=1)
    return out


class ClassIndex:
    """Sparse class probabilities of many images under 64-bit ids.

    ``scores(weights)`` gives every image's ``sum_k p_k w_k`` for rows of class weights;
    ``search`` takes packed rows (a query image's own classes) like the other indexes do.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(exact=True, keeps_vectors=True)
    kind: ClassVar[str] = "classes"

    width = WIDTH

    def __init__(self) -> None:
        self._ids = np.zeros(0, dtype=np.int64)
        self._packed = np.zeros((0, WIDTH), dtype=np.uint8)
        self._matrix = None  # scipy CSR [N, 1000], built on first use
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def _changed(self) -> None:
        self._matrix = None
        self._sorted = None

    def add(self, ids: np.ndarray, packed: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        packed = np.ascontiguousarray(packed, dtype=np.uint8)
        if packed.ndim != 2 or packed.shape[1] != WIDTH or len(packed) != len(ids):
            raise ValueError(f"expected {len(ids)} rows of shape (N, {WIDTH}), got {packed.shape}")
        unpack(packed)  # validates
        self._ids = np.concatenate([self._ids, ids])
        self._packed = np.concatenate([self._packed, packed])
        self._changed()

    def remove(self, ids: np.ndarray) -> int:
        keep = ~np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        removed = int((~keep).sum())
        if removed:
            self._ids, self._packed = self._ids[keep], self._packed[keep]
            self._changed()
        return removed

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Packed rows of ``ids`` (all must be present), in that order."""
        return self._packed[self.rows(ids)]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id; KeyError if one is missing."""
        if self._sorted is None:
            order = np.argsort(self._ids, kind="stable")
            self._sorted = (self._ids[order], order)
        sorted_ids, order = self._sorted
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
        if len(ids) and (not len(sorted_ids) or np.any(sorted_ids[pos] != ids)):
            raise KeyError("unknown ids")
        return order[pos]

    @property
    def matrix(self):
        """The probabilities as a scipy CSR matrix ``[N, 1000]`` (float32)."""
        if self._matrix is None:
            from scipy.sparse import csr_matrix

            classes, values = unpack(self._packed)
            n, k = classes.shape
            self._matrix = csr_matrix(
                (values.ravel(), classes.ravel(), np.arange(0, n * k + 1, k)),
                shape=(n, NUM_CLASSES),
            )
        return self._matrix

    def scores(self, weights: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """``float32 [Q, N]`` (or ``[Q, len(ids)]``): each image's probability mass on each row
        of class ``weights`` ``[Q, 1000]``, in :meth:`ids` order (or the given ``ids``')."""
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim == 1:
            weights = weights[None]
        if weights.shape[1] != NUM_CLASSES:
            raise ValueError(f"expected class weights [Q, {NUM_CLASSES}], got {weights.shape}")
        matrix = self.matrix if ids is None else self.matrix[self.rows(ids)]
        return np.ascontiguousarray((matrix @ weights.T).T, dtype=np.float32)

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [Q, k], ids [Q, k])`` for packed query rows, best first (missing: id -1).

        The score is the probability that the query and the image show the same class.
        ``ids``: rank only these images (ids not in the index are ignored).
        """
        allowed = self._ids
        if ids is not None:
            allowed = self._ids[np.isin(self._ids, np.asarray(ids, dtype=np.int64))]
        return top_k(self.scores(dense(queries), allowed if ids is not None else None),
                     allowed, k)  # fmt: skip

    def save(self, path: Path) -> None:
        savez_atomic(path, ids=self._ids, packed=self._packed)

    @classmethod
    def load(cls, path: Path) -> ClassIndex:
        index = cls()
        with np.load(path, allow_pickle=False) as data:
            index.add(data["ids"], data["packed"])
        return index


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of each row of ``scores [Q, N]`` (``ids [N]``), largest first; rows shorter
    than ``k`` are padded with score -inf and id -1."""
    q, n = scores.shape
    out_scores = np.full((q, k), -np.inf, dtype=np.float32)
    out_ids = np.full((q, k), -1, dtype=np.int64)
    take = min(k, n)
    if take == 0:
        return out_scores, out_ids
    part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((np.take(ids, part), -values), axis=1)  # ties: smaller id first
    best = np.take_along_axis(part, order, axis=1)
    out_scores[:, :take] = np.take_along_axis(scores, best, axis=1)
    out_ids[:, :take] = ids[best]
    return out_scores, out_ids
