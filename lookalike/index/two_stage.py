"""Two-stage search: a shortlist from one index, re-ranked exactly by another feature's vectors.

:func:`rerank` is the second stage as ``lookalike search --rerank FEATURE`` runs it (any
metric, row by row, after the first feature's index and filters chose the candidates);
:func:`two_stage_search` is the pair for unit vectors and their binary codes: a Hamming
shortlist re-ranked by inner product, many queries at a time.

``vectors_of(ids) -> [n, D]`` supplies the vectors of shortlisted ids: an index's own
``vectors_of`` (:class:`lookalike.index.base.KeepsVectors`), the catalog, or, vectorised,
:class:`VectorTable` (a numpy matrix plus an id -> row map, the fastest) or
:func:`flat_vectors_of` (a faiss ``IndexIDMap2``, e.g. the exact ``FlatIndex``, with one
``reconstruct_batch`` call).
"""

from __future__ import annotations

import faiss
import numpy as np

from lookalike.features.metrics import scores as metric_scores
from lookalike.index.base import VectorsOf
from lookalike.index.binary import BinaryIndex
from lookalike.index.flat import FlatIndex

#: Score of a missing result slot (id -1), as faiss reports for inner-product search.
MISSING_SCORE = np.float32(-np.finfo(np.float32).max)

#: Upper bound on the float32 re-rank buffer built per chunk of queries (small enough that
#: malloc reuses it instead of page-faulting a fresh mapping per chunk).
_CHUNK_BYTES = 8 << 20


class VectorTable:
    """Float vectors held in a numpy matrix with a vectorised id -> row lookup."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"{len(ids)} ids for vectors of shape {vectors.shape}")
        order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[order]
        if len(ids) > 1 and np.any(self._sorted_ids[1:] == self._sorted_ids[:-1]):
            raise ValueError("ids must be unique")
        self._rows = order
        # contiguous ids 0..n-1 in order: rows are the ids themselves
        self._identity = bool(np.array_equal(ids, np.arange(len(ids))))
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id; KeyError if any id is unknown."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._identity:
            if len(ids) and (ids.min() < 0 or ids.max() >= len(self._rows)):
                raise KeyError("unknown ids")
            return ids
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        if len(ids) and (not len(self._sorted_ids) or np.any(self._sorted_ids[pos] != ids)):
            raise KeyError("unknown ids")
        return self._rows[pos]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.vectors[self.rows(ids)]


def flat_vectors_of(index: faiss.Index | FlatIndex) -> VectorsOf:
    """``vectors_of`` reading from a faiss ``IndexIDMap2`` (or a ``FlatIndex``) by id."""
    if not isinstance(index, faiss.Index):
        return index.vectors_of  # the same reconstruct_batch of its IndexIDMap2
    inner = index

    def vectors_of(ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return np.zeros((0, inner.d), dtype=np.float32)
        return inner.reconstruct_batch(ids)

    return vectors_of


def rerank(
    queries: np.ndarray, candidates: np.ndarray, vectors_of: VectorsOf, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(score, distance, ids)`` ``[Q, S]``: each row of candidate ids ``[Q, S]`` (-1: none)
    ordered by ``metric`` between its query and the candidates' vectors, best first; the
    missing slots move to the end with score -inf, distance inf and id -1."""
    rows_score, rows_distance, rows_ids = [], [], []
    for query, row in zip(queries, candidates, strict=True):
        ids = row[row >= 0]
        score, distance = metric_scores(metric, query[None], vectors_of(ids))
        order = np.argsort(-score[0], kind="stable")
        pad = len(row) - len(ids)
        rows_score.append(np.pad(score[0][order], (0, pad), constant_values=-np.inf))
        rows_distance.append(np.pad(distance[0][order], (0, pad), constant_values=np.inf))
        rows_ids.append(np.pad(ids[order], (0, pad), constant_values=-1))
    return np.array(rows_score), np.array(rows_distance), np.array(rows_ids)


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` per row of ``scores`` [Q, S], largest first."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        ids = np.take_along_axis(ids, part, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def two_stage_search(
    query_vectors: np.ndarray,
    query_codes: np.ndarray,
    binary: BinaryIndex,
    vectors_of: VectorsOf,
    k: int,
    shortlist: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores float32 [Q, k], ids int64 [Q, k])`` best first; missing slots id -1.

    Takes the ``shortlist`` nearest codes by Hamming distance, then scores those candidates by
    exact inner product with ``query_vectors`` (cosine for unit vectors). Missing slots score
    :data:`MISSING_SCORE`.
    """
    queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
    if queries.ndim != 2:
        raise ValueError(f"expected query vectors [Q, D], got shape {queries.shape}")
    if len(query_codes) != len(queries):
        raise ValueError(f"{len(queries)} query vectors for {len(query_codes)} query codes")
    if k <= 0:
        raise ValueError("k must be positive")
    if shortlist < k:
        raise ValueError(f"shortlist ({shortlist}) must be at least k ({k})")
    n_q, dim = queries.shape
    out_scores = np.full((n_q, k), MISSING_SCORE, dtype=np.float32)
    out_ids = np.full((n_q, k), -1, dtype=np.int64)
    if n_q == 0 or len(binary) == 0:
        return out_scores, out_ids

    _, cand = binary.search(query_codes, shortlist)  # [Q, S]
    width = cand.shape[1]
    chunk = max(1, _CHUNK_BYTES // max(1, width * dim * 4))
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        ids = cand[start:stop]
        valid = ids >= 0
        found = ids[valid]
        vecs = np.asarray(vectors_of(found), dtype=np.float32)
        if vecs.shape != (len(found), dim):
            raise ValueError(
                f"vectors_of returned shape {vecs.shape}, expected ({len(found)}, {dim})"
            )
        if valid.all():
            block = vecs.reshape(stop - start, width, dim)
        else:
            block = np.zeros((stop - start, width, dim), dtype=np.float32)
            block[valid] = vecs
        # single-threaded and memory-bound: no BLAS thread pool to fight faiss's OpenMP threads
        scores = np.einsum("qsd,qd->qs", block, queries[start:stop])
        scores[~valid] = MISSING_SCORE
        top_scores, top_ids = _top_k(scores, ids, k)
        top_ids = np.where(top_scores == MISSING_SCORE, -1, top_ids)
        kk = top_scores.shape[1]
        out_scores[start:stop, :kk] = top_scores
        out_ids[start:stop, :kk] = top_ids
    return out_scores, out_ids
