"""Re-ranking by neighbourhood: alpha query expansion and database-side augmentation.

Both replace a unit vector by a weighted sum of itself and its nearest neighbours, weight
``cosine ** alpha`` (Radenović, Tolias and Chum, 2018): close neighbours count, far ones hardly.
Query expansion (alpha-QE) does it to the query with its top results and searches again;
database-side augmentation (DBA) does it once to every database vector with its neighbours in
the database.
"""

from __future__ import annotations

import numpy as np

from lookalike.features.pooling import l2_normalize

QE_K = 2  # more finds more of a category but loses copies (bench/quality.py)
DBA_K = 10
ALPHA = 1.0
BLOCK = 1024


def _weighted_sum(
    vectors: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float
) -> np.ndarray:
    """``normalise(v + sum_j max(s_j, 0) ** alpha * n_j)`` for each row."""
    weights = np.power(np.clip(sims, 0.0, None), alpha).astype(np.float32)
    return l2_normalize(vectors + np.einsum("qk,qkd->qd", weights, neighbours)).astype(np.float32)


def top_neighbours(
    queries: np.ndarray, database: np.ndarray, k: int, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``[Q, k]`` and cosines of each query's ``k`` nearest database vectors
    (exact; ``exclude_self`` drops row ``i``'s own position ``i``)."""
    k = min(k, len(database) - (1 if exclude_self else 0))
    out_idx = np.empty((len(queries), max(k, 0)), np.int64)
    out_sim = np.empty((len(queries), max(k, 0)), np.float32)
    if k <= 0:
        return out_idx, out_sim
    for b in range(0, len(queries), BLOCK):
        s = queries[b : b + BLOCK] @ database.T
        if exclude_self:
            rows = np.arange(len(s))
            s[rows, b + rows] = -np.inf
        idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(s, idx, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        out_idx[b : b + BLOCK] = np.take_along_axis(idx, order, axis=1)
        out_sim[b : b + BLOCK] = np.take_along_axis(part, order, axis=1)
    return out_idx, out_sim


def augment_database(database: np.ndarray, k: int = DBA_K, alpha: float = ALPHA) -> np.ndarray:
    """DBA: every database vector mixed with its ``k`` nearest other database vectors."""
    db = np.asarray(database, dtype=np.float32)
    if k < 1 or len(db) < 2:
        return db.copy()
    idx, sims = top_neighbours(db, db, k, exclude_self=True)
    return _weighted_sum(db, db[idx], sims, alpha)


def expand_queries(
    queries: np.ndarray, database: np.ndarray, k: int = QE_K, alpha: float = ALPHA
) -> np.ndarray:
    """alpha-QE: each query mixed with its ``k`` nearest database vectors; search again with
    the result. A query that is in the database finds itself first, which only adds weight to
    the query itself."""
    q = np.asarray(queries, dtype=np.float32)
    db = np.asarray(database, dtype=np.float32)
    if k < 1 or len(db) == 0:
        return q.copy()
    idx, sims = top_neighbours(q, db, k)
    return _weighted_sum(q, db[idx], sims, alpha)
