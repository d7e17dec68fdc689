"""Copy-detection metrics, as in the DISC 2021 image similarity challenge.

A method emits predictions ``(query, candidate, score)``; all predictions of all queries are
ranked together by score (higher = surer). ``is_match`` says whether each prediction names the
query's original, and ``n_relevant`` is the number of queries whose original is in the index
(queries without one only ever add false positives).

Tied scores are one threshold: a group of equal scores enters the ranking all at once, so the
result never depends on the order of ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _curve(
    scores: Sequence[float] | np.ndarray, is_match: Sequence[bool] | np.ndarray, n_relevant: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (distinct scores, descending) with precision and recall at each."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = np.asarray(is_match, dtype=bool).ravel()
    if s.shape != m.shape:
        raise ValueError("scores and is_match must have the same length")
    if n_relevant <= 0:
        raise ValueError("n_relevant must be positive")
    if int(m.sum()) > n_relevant:
        raise ValueError("more true matches than relevant queries")
    if s.size == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    order = np.argsort(-s, kind="stable")
    s, m = s[order], m[order]
    tp = np.cumsum(m)
    # last index of each group of equal scores
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    thresholds = s[last]
    precision = tp[last] / (last + 1)
    recall = tp[last] / n_relevant
    return thresholds, precision, recall


def micro_average_precision(
    scores: Sequence[float] | np.ndarray, is_match: Sequence[bool] | np.ndarray, n_relevant: int
) -> float:
    """Micro AP: sum over thresholds of (recall gained) x (precision there).

    Example:
        >>> micro_average_precision([0.9, 0.8, 0.7], [False, True, True], 2)  # (1/2 + 2/3) / 2
        0.5833333333333333
    """
    _, precision, recall = _curve(scores, is_match, n_relevant)
    if recall.size == 0:
        return 0.0
    gained = np.diff(np.r_[0.0, recall])
    return float(np.sum(gained * precision))


def recall_at_precision(
    scores: Sequence[float] | np.ndarray,
    is_match: Sequence[bool] | np.ndarray,
    n_relevant: int,
    precision: float = 0.99,
) -> tuple[float, float]:
    """The highest recall at any threshold whose precision is at least ``precision``.

    Returns ``(recall, threshold)``: accept predictions with ``score >= threshold``.
    ``(0.0, inf)`` when no threshold is precise enough.
    """
    thresholds, p, r = _curve(scores, is_match, n_relevant)
    ok = np.flatnonzero(p >= precision - 1e-12)
    if ok.size == 0:
        return 0.0, math.inf
    best = ok[np.argmax(r[ok])]  # argmax: the first (highest) threshold reaching that recall
    if r[best] == 0.0:
        return 0.0, math.inf
    return float(r[best]), float(thresholds[best])


def recall_at_1(is_match: Sequence[bool] | np.ndarray, n_relevant: int) -> float:
    """Share of the queries with an indexed original whose top-1 prediction is that original."""
    if n_relevant <= 0:
        raise ValueError("n_relevant must be positive")
    return float(np.sum(np.asarray(is_match, dtype=bool))) / n_relevant
