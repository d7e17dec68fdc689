"""Search latency of the exact vector index against a plain numpy matrix-vector product.

The vectors are SYNTHETIC: random unit vectors of dimension 1280 (the deep feature's size).
Exact search costs the same whatever the values, so real features would time the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from lookalike.index import FlatIndex

DIM = 1280
K = 10


def _unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms)
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95))}


def _time(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def _numpy_topk(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Baseline: scores = M @ q, then the k best with argpartition + sort."""
    scores = queries @ matrix.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def _time_both(
    search: Callable[[np.ndarray], object], single: np.ndarray, batch: np.ndarray, repeats: int
) -> dict:
    """Percentiles for one query at a time (a different one each call) and a batch of 100."""
    it = iter(range(repeats + 1))
    one = _time(lambda: search(single[next(it) % repeats][None]), repeats)
    many = _time(lambda: search(batch), max(5, repeats // 5))
    return {
        "single": _percentiles(one),
        "batch100_per_query": _percentiles([m / len(batch) for m in many]),
    }


def measure_search(sizes: tuple[int, ...] = (10_000, 100_000), repeats: int = 50) -> dict:
    """ms/query (p50, p95) for one query and for a batch of 100, FlatIndex vs numpy."""
    rng = np.random.default_rng(0)
    results: dict = {"dim": DIM, "k": K, "vectors": "synthetic random unit vectors", "sizes": {}}
    for n in sizes:
        vectors = _unit_vectors(n, rng)
        index = FlatIndex(DIM)
        index.add(np.arange(n, dtype=np.int64), vectors)
        single = _unit_vectors(repeats, rng)
        batch = _unit_vectors(100, rng)
        entry: dict = {
            "flat": _time_both(lambda q, ix=index: ix.search(q, K), single, batch, repeats),
            "numpy": _time_both(lambda q, m=vectors: _numpy_topk(m, q, K), single, batch, repeats),
        }
        # the two must agree on the best hit
        flat_ids = index.search(batch, K)[1][:, 0]
        np_ids = _numpy_topk(vectors, batch, K)[:, 0]
        entry["top1_agreement"] = float(np.mean(flat_ids == np_ids))
        results["sizes"][str(n)] = entry
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(measure_search(), indent=2))
