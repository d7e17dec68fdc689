"""Category-retrieval metrics: every image a query, relevant = same label.

The inputs are a score matrix (``[Q, N]``, larger is closer), which database items are relevant
to each query and which are excluded from its ranking (the query itself and its exact
duplicates). Per query: average precision, precision@k, recall@k and NDCG@k (binary gains);
averaged over the queries that have at least one relevant item, overall and per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

KS = (1, 5, 10)
RECALL_KS = (10, 100)
NDCG_K = 10
PR_LEVELS = np.linspace(0.0, 1.0, 21)


@dataclass
class QueryMetrics:
    """Per-query figures, one entry per query (NaN where a query has no relevant item)."""

    ap: np.ndarray
    precision: dict[int, np.ndarray]
    recall: dict[int, np.ndarray]
    ndcg: np.ndarray
    pr: np.ndarray  # [Q, len(PR_LEVELS)] interpolated precision at each recall level
    top: np.ndarray  # [Q, top_k] database positions of the best results, -1 past the end
    relevant_count: np.ndarray


def metric_names() -> list[str]:
    """Column names of :func:`summarise`, in order."""
    return ["mAP"] + [f"P@{k}" for k in KS] + [f"R@{k}" for k in RECALL_KS] + [f"NDCG@{NDCG_K}"]


def query_metrics(
    score: np.ndarray,
    relevant: np.ndarray,
    excluded: np.ndarray,
    top_k: int = 10,
) -> QueryMetrics:
    """All per-query figures for one block of queries.

    Args:
        score: ``[Q, N]`` similarities (larger is closer).
        relevant: ``[Q, N]`` booleans, True where the database item has the query's label.
        excluded: ``[Q, N]`` booleans, True for items left out of the query's ranking.
        top_k: how many best results to keep per query (for reports).

    Ties are broken by database position (a stable sort), so results never depend on chance.
    """
    score = np.asarray(score, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool) & ~np.asarray(excluded, dtype=bool)
    score = np.where(excluded, -np.inf, score)
    order = np.argsort(-score, axis=1, kind="stable")
    rel = np.take_along_axis(relevant, order, axis=1)
    kept = (~np.take_along_axis(np.asarray(excluded, bool), order, axis=1)).sum(axis=1)
    n_rel = rel.sum(axis=1)
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, score.shape[1] + 1)
    has = n_rel > 0
    denom = np.maximum(n_rel, 1)
    with np.errstate(invalid="ignore"):
        ap = np.where(rel, hits / ranks, 0.0).sum(axis=1) / denom
        precision = {k: hits[:, min(k, rel.shape[1]) - 1] / k for k in KS}
        recall = {k: hits[:, min(k, rel.shape[1]) - 1] / denom for k in RECALL_KS}
        k = min(NDCG_K, rel.shape[1])
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        dcg = (rel[:, :k] * discounts).sum(axis=1)
        ideal = np.array([discounts[: min(int(n), k)].sum() for n in n_rel])
        ndcg = dcg / np.maximum(ideal, 1e-12)
        # interpolated precision: the best precision at any rank reaching each recall level
        prec_at = hits / ranks
        rec_at = hits / denom[:, None]
        best_after = np.maximum.accumulate(prec_at[:, ::-1], axis=1)[:, ::-1]
        pr = np.empty((len(score), len(PR_LEVELS)))
        for i in range(len(score)):
            pos = np.searchsorted(rec_at[i], PR_LEVELS - 1e-12, side="left")
            pr[i] = best_after[i, np.minimum(pos, rec_at.shape[1] - 1)]
    nan = np.where(has, 1.0, np.nan)
    top = order[:, :top_k].copy()
    top[np.arange(top.shape[1])[None, :] >= kept[:, None]] = -1
    return QueryMetrics(
        ap=ap * nan,
        precision={k: v * nan for k, v in precision.items()},
        recall={k: v * nan for k, v in recall.items()},
        ndcg=ndcg * nan,
        pr=pr * nan[:, None],
        top=top,
        relevant_count=n_rel,
    )


def concat(parts: Sequence[QueryMetrics]) -> QueryMetrics:
    """Join the figures of consecutive query blocks."""
    return QueryMetrics(
        ap=np.concatenate([p.ap for p in parts]),
        precision={k: np.concatenate([p.precision[k] for p in parts]) for k in KS},
        recall={k: np.concatenate([p.recall[k] for p in parts]) for k in RECALL_KS},
        ndcg=np.concatenate([p.ndcg for p in parts]),
        pr=np.concatenate([p.pr for p in parts]),
        top=np.concatenate([p.top for p in parts]),
        relevant_count=np.concatenate([p.relevant_count for p in parts]),
    )


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def summarise(m: QueryMetrics, rows: np.ndarray | None = None) -> dict[str, float]:
    """Mean of each figure over the queries in ``rows`` (all by default) that have a relevant
    item, keyed as :func:`metric_names`, plus ``queries`` (how many were averaged)."""
    sel = slice(None) if rows is None else rows
    out = {"mAP": _mean(m.ap[sel])}
    out.update({f"P@{k}": _mean(m.precision[k][sel]) for k in KS})
    out.update({f"R@{k}": _mean(m.recall[k][sel]) for k in RECALL_KS})
    out[f"NDCG@{NDCG_K}"] = _mean(m.ndcg[sel])
    out["queries"] = int(np.sum(~np.isnan(m.ap[sel])))
    return out


def pr_curve(m: QueryMetrics) -> tuple[np.ndarray, np.ndarray]:
    """Mean interpolated precision at each recall level of ``PR_LEVELS``."""
    pr = m.pr[~np.isnan(m.ap)]
    return PR_LEVELS.copy(), (pr.mean(axis=0) if len(pr) else np.zeros(len(PR_LEVELS)))


@dataclass
class Evaluation:
    """The figures of one descriptor or setting over a labelled set."""

    name: str
    overall: dict[str, float]
    per_class: dict[str, dict[str, float]]
    metrics: QueryMetrics
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        recall, precision = pr_curve(self.metrics)
        return {
            "name": self.name,
            "overall": self.overall,
            "per_class": self.per_class,
            "pr_curve": {"recall": recall.tolist(), "precision": precision.tolist()},
            "seconds": self.seconds,
        }


def evaluate_scores(
    name: str,
    score_blocks: Sequence[tuple[slice, np.ndarray]] | np.ndarray,
    labels: Sequence[str],
    excluded: np.ndarray,
    top_k: int = 10,
) -> Evaluation:
    """Figures of one descriptor from its scores (a full ``[N, N]`` matrix, or blocks of rows
    ``(rows, scores)`` in order), the label of every item and the ``[N, N]`` exclusions."""
    label_ids = np.unique(np.asarray(labels), return_inverse=True)[1]
    if isinstance(score_blocks, np.ndarray):
        score_blocks = [(slice(0, len(score_blocks)), score_blocks)]
    parts = []
    for rows, block in score_blocks:
        same = label_ids[rows, None] == label_ids[None, :]
        parts.append(query_metrics(block, same, excluded[rows], top_k))
    m = concat(parts)
    per_class = {}
    names = np.asarray(labels)
    for label in sorted(set(labels)):
        per_class[label] = summarise(m, np.flatnonzero(names == label))
    return Evaluation(name, summarise(m), per_class, m)
