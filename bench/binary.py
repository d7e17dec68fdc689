"""Two-stage search (ITQ / sign-PCA binary shortlist + exact float re-rank) vs exact search.

    python -m bench.binary [--n 100000] [--bits 64,128,256] [--json out.json]

Data: STRUCTURED SYNTHETIC 1280-d unit vectors: ~2,000 cluster centres, each database point a
centre plus Gaussian noise (per-point), L2-normalised. If ``.bench-data/real_vectors.npy``
exists, its rows (real deep features) are used as the centres instead. Codes are fitted on 20k
database vectors; queries are 200 held-out noisy copies of database points. Recall@10 is
measured against the exact float top-10 of a FlatIndex over the same vectors.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.features.itq import ITQ, SignPCA
from lookalike.index.binary import BinaryIndex
from lookalike.index.flat import FlatIndex
from lookalike.index.two_stage import VectorTable, flat_vectors_of, two_stage_search

REPO = Path(__file__).resolve().parent.parent
REAL_VECTORS = REPO / ".bench-data" / "real_vectors.npy"
SHORTLISTS = (100, 200, 500, 1000)
CENTRES = 2000
POINT_NOISE = 1.0  # noise norm relative to the (unit) centre: cos(point, centre) ~ 0.7
QUERY_NOISE = 0.5  # noise norm relative to the (unit) database point a query copies
FIT_SAMPLES = 20_000
QUERIES = 200
SINGLE_QUERIES = 50  # queries timed one at a time


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """``(database [n, dim], queries [QUERIES, dim], description)``, all unit float32."""
    source = "synthetic: random unit-vector centres"
    centres = None
    if REAL_VECTORS.exists():
        real = np.load(REAL_VECTORS).astype(np.float32)
        if real.ndim == 2 and real.shape[1] == dim and len(real) > 0:
            pick = rng.choice(len(real), min(CENTRES, len(real)), replace=False)
            centres = _unit(real[pick].copy())
            source = f"centres = {len(centres)} real vectors from {REAL_VECTORS.name}"
        else:
            source += f" ({REAL_VECTORS.name} has shape {real.shape}, not [N, {dim}])"
    else:
        source += f" ({REAL_VECTORS.name} not found)"
    if centres is None:
        centres = _unit(rng.standard_normal((CENTRES, dim), dtype=np.float32))
    labels = rng.integers(0, len(centres), n)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    base *= np.float32(POINT_NOISE / np.sqrt(dim))
    base += centres[labels]
    _unit(base)
    src = rng.choice(n, QUERIES, replace=False)
    noise = rng.standard_normal((QUERIES, dim), dtype=np.float32)
    queries = _unit(base[src] + np.float32(QUERY_NOISE / np.sqrt(dim)) * noise)
    desc = (
        f"{source}; {n} points = centre + N(0, {POINT_NOISE}^2/D) noise, normalised; "
        f"{QUERIES} queries = database point + N(0, {QUERY_NOISE}^2/D) noise, normalised"
    )
    return base, queries.astype(np.float32), desc


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _single_ms(search_one: Callable[[int], object], count: int) -> float:
    """Median ms for one query at a time over ``count`` different queries."""
    search_one(0)
    times = []
    for i in range(count):
        start = time.perf_counter()
        search_one(i)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def measure_two_stage(
    n: int = 100_000,
    dim: int = 1280,
    bits: tuple[int, ...] = (64, 128, 256),
    k: int = 10,
    shortlists: tuple[int, ...] = SHORTLISTS,
    seed: int = 0,
) -> dict:
    """Recall@k and latency of two-stage search per code type, bits and shortlist."""
    rng = np.random.default_rng(seed)
    base, queries, desc = make_data(n, dim, rng)
    ids = np.arange(n, dtype=np.int64)

    flat = FlatIndex(dim)
    flat.add(ids, base)
    _, truth = flat.search(queries, k)
    exact_batch = _median_ms(lambda: flat.search(queries, k), 3) / len(queries)
    exact_single = _single_ms(lambda i: flat.search(queries[i : i + 1], k), SINGLE_QUERIES)

    table = VectorTable(ids, base)
    fit_rows = rng.choice(n, min(FIT_SAMPLES, n), replace=False)
    results: dict = {
        "n": n,
        "dim": dim,
        "k": k,
        "data": desc,
        "fit_samples": len(fit_rows),
        "exact": {
            "batch_ms_per_query": exact_batch,
            "single_ms": exact_single,
            "bytes_per_vector": dim * 4,
        },
        "codes": [],
    }
    for nbits in bits:
        for cls in (ITQ, SignPCA):
            start = time.perf_counter()
            model = cls.fit(base[fit_rows], nbits)
            fit_s = time.perf_counter() - start
            binary = BinaryIndex(nbits)
            binary.add(ids, model.encode(base))
            qcodes = model.encode(queries)
            hamming_batch = _median_ms(lambda b=binary, c=qcodes: b.search(c, k), 3) / QUERIES
            entry: dict = {
                "method": cls.__name__,
                "bits": nbits,
                "fit_s": fit_s,
                "bytes_per_vector": nbits // 8,
                "hamming_only_recall": _recall(binary.search(qcodes, k)[1], truth),
                "hamming_only_batch_ms_per_query": hamming_batch,
                "shortlists": {},
            }
            for short in shortlists:

                def run(sl: slice, b=binary, c=qcodes, s=short) -> tuple[np.ndarray, np.ndarray]:
                    return two_stage_search(queries[sl], c[sl], b, table, k, s)

                _, found = run(slice(None))
                batch = _median_ms(lambda r=run: r(slice(None)), 3) / QUERIES
                single = _single_ms(lambda i, r=run: r(slice(i, i + 1)), SINGLE_QUERIES)
                entry["shortlists"][short] = {
                    "recall": _recall(found, truth),
                    "batch_ms_per_query": batch,
                    "single_ms": single,
                    "speedup_batch": exact_batch / batch,
                    "speedup_single": exact_single / single,
                }
            results["codes"].append(entry)
            print(_rows(results, entry), flush=True)

    # the same 128-bit ITQ search, re-ranking with vectors read via faiss reconstruct_batch
    if 128 in bits:
        model = ITQ.fit(base[fit_rows], 128)
        binary = BinaryIndex(128)
        binary.add(ids, model.encode(base))
        qcodes = model.encode(queries)
        via_faiss = flat_vectors_of(flat)
        results["itq128_reconstruct_batch"] = {
            short: {
                "batch_ms_per_query": _median_ms(
                    lambda s=short: two_stage_search(queries, qcodes, binary, via_faiss, k, s), 3
                )
                / QUERIES,
                "single_ms": _single_ms(
                    lambda i, s=short: two_stage_search(
                        queries[i : i + 1], qcodes[i : i + 1], binary, via_faiss, k, s
                    ),
                    SINGLE_QUERIES,
                ),
            }
            for short in shortlists
        }
    results["acceptance"] = _acceptance(results)
    return results


def _acceptance(results: dict, target_recall: float = 0.95, target_speedup: float = 5.0) -> dict:
    """Smallest shortlist where 128-bit ITQ reaches the recall at the speed-up, both modes."""
    out: dict = {"target": f"128-bit ITQ recall@10 >= {target_recall} at >= {target_speedup}x"}
    for entry in results["codes"]:
        if entry["method"] != "ITQ":
            continue
        ok = [
            s
            for s, r in sorted(entry["shortlists"].items())
            if r["recall"] >= target_recall
            and r["speedup_batch"] >= target_speedup
            and r["speedup_single"] >= target_speedup
        ]
        out[f"itq{entry['bits']}"] = {"met": bool(ok), "shortlist": ok[0] if ok else None}
    return out


def _rows(results: dict, entry: dict) -> str:
    lines = []
    for short, r in entry["shortlists"].items():
        lines.append(
            f"{entry['method']:8s} {entry['bits']:4d} {entry['bytes_per_vector']:6d} "
            f"{entry['fit_s']:6.1f} {short:6d} {r['recall']:7.3f} "
            f"{r['batch_ms_per_query']:9.3f} {r['speedup_batch']:7.1f}x "
            f"{r['single_ms']:9.3f} {r['speedup_single']:7.1f}x"
        )
    return "\n".join(lines)


HEADER = "method   bits  B/vec  fit_s  short  rec@10  batch_ms  speedup  single_ms  speedup"


def print_table(results: dict) -> None:
    ex = results["exact"]
    print(f"\n{results['n']} vectors, dim {results['dim']}, k={results['k']}")
    print(f"data: {results['data']}")
    print(
        f"exact FlatIndex: {ex['batch_ms_per_query']:.3f} ms/query in a batch of {QUERIES}, "
        f"{ex['single_ms']:.3f} ms one at a time, {ex['bytes_per_vector']} B/vector"
    )
    print(HEADER)
    for entry in results["codes"]:
        print(_rows(results, entry))
    for entry in results["codes"]:
        print(
            f"{entry['method']}{entry['bits']} Hamming-only top-10 recall "
            f"{entry['hamming_only_recall']:.3f} "
            f"({entry['hamming_only_batch_ms_per_query']:.3f} ms/query batched)"
        )
    if "itq128_reconstruct_batch" in results:
        print("ITQ128 re-ranking through faiss reconstruct_batch instead of a numpy table:")
        for short, r in results["itq128_reconstruct_batch"].items():
            print(
                f"  shortlist {short:5d}: batch {r['batch_ms_per_query']:.3f} ms/query, "
                f"single {r['single_ms']:.3f} ms"
            )
    print(f"acceptance: {results['acceptance']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--bits", default="64,128,256")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    bits = tuple(int(b) for b in args.bits.split(","))
    print(HEADER)
    results = measure_two_stage(n=args.n, bits=bits)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
