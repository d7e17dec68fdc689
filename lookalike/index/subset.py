"""Search restricted to a set of ids (what a metadata or folder filter allows).

Every index's ``search(queries, k, ids=...)`` ranks only the vectors whose id is in ``ids``, so
that ``k`` results come back whenever ``k`` allowed vectors exist. A small allowed set is
scored exactly from its own vectors (cheaper than a scan of the whole index); a large one is
searched by faiss with an id selector, which skips the other vectors during the scan.
"""

from __future__ import annotations

import faiss
import numpy as np

#: Allowed sets up to this many vectors are always scored directly...
EXACT_MAX = 2048
#: ... and larger ones too while they are under this share of the index and this many bytes.
#: (faiss's selector scan only computes the distances of members: at 100k 1280-d vectors it
#: beats direct scoring from about 3,000 allowed ones.)
EXACT_FRACTION = 0.01
EXACT_BYTES = 64 << 20


def as_id_array(ids: object) -> np.ndarray:
    """Unique int64 ids, sorted."""
    return np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))


def present(ids: object, sorted_index_ids: np.ndarray) -> np.ndarray:
    """Those of ``ids`` that are in the index (whose ids, sorted, are ``sorted_index_ids``)."""
    wanted = as_id_array(ids)
    if not len(wanted) or not len(sorted_index_ids):
        return wanted[:0]
    pos = np.minimum(np.searchsorted(sorted_index_ids, wanted), len(sorted_index_ids) - 1)
    return wanted[sorted_index_ids[pos] == wanted]


def score_directly(allowed: int, total: int, row_bytes: int) -> bool:
    """Whether ``allowed`` of ``total`` vectors are few enough to score from their vectors."""
    if allowed <= EXACT_MAX:
        return True
    return allowed <= EXACT_FRACTION * total and allowed * row_bytes <= EXACT_BYTES


def selector(ids: np.ndarray) -> tuple[faiss.SearchParameters, object]:
    """faiss search parameters admitting only ``ids`` (for flat and binary indexes), and the
    selector they point at: keep it alive while searching."""
    chosen = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
    # faiss's Python layer takes fields as keywords; its stubs do not know
    return faiss.SearchParameters(sel=chosen), chosen  # type: ignore[call-arg]


def top_k(
    values: np.ndarray, ids: np.ndarray, k: int, *, largest: bool, fill: float | np.floating
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of each row of ``values`` [Q, M] (columns labelled by ``ids`` [M]).

    Returns ``(values [Q, k], ids [Q, k])``, best first; slots beyond M hold ``fill`` and -1,
    as faiss reports missing results.
    """
    n_q, m = values.shape
    out_values = np.full((n_q, k), fill, dtype=values.dtype)
    out_ids = np.full((n_q, k), -1, dtype=np.int64)
    if m == 0 or n_q == 0:
        return out_values, out_ids
    key = -values if largest else values
    take = min(k, m)
    if take < m:
        part = np.argpartition(key, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(m), (n_q, m))
    order = np.take_along_axis(key, part, axis=1).argsort(axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    out_values[:, :take] = np.take_along_axis(values, best, axis=1)
    out_ids[:, :take] = ids[best]
    return out_values, out_ids
