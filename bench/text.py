"""Text search: precision on a labelled data set, and query latency at 100,000 images.

    python -m bench.text            # or: python -m bench --only text

Precision@20 (``web_animals4``, when the shared data set exists): the data set is indexed into a
temporary collection, each query's 20 best images are compared with the labels. Synonyms
("kitty", "puppy") must find the same images as the class names, and a query that names nothing
the image model knows ("quantum entanglement") must be reported as unmatched.

Latency (always): 100,000 SYNTHETIC class-probability rows (each a dominant class and 31 small
ones, packed as stored), scored by :class:`lookalike.index.classes.ClassIndex` beside the plain
dense matrix-vector product on the same probabilities; the query side (tokenise, embed, compare
with every concept name); and end to end, ``Collection.search_text`` on a collection of 100,000
synthetic images (catalog rows written directly), first query and the following ones.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.copies import DATASETS

DATASET = "web_animals4"
PRECISION_QUERIES = {
    "cat": "cat",
    "dog": "dog",
    "monkey": "monkey",
    "squirrel": "squirrel",
    "kitty": "cat",
    "kitten": "cat",
    "puppy": "dog",
    "a photo of a monkey": "monkey",
    "chipmunk": "squirrel",
}
UNMATCHED = ("quantum entanglement", "democracy", "at night")
GOAL_PRECISION = 0.9
GOAL_MS = 50.0
N = 100_000
LATENCY_QUERIES = (
    "a cup of espresso",
    "tabby cat",
    "dog on a beach",
    "a red sports car",
    "kitty",
    "puppy",
    "golden retriever",
    "mountain bike",
    "pizza",
    "laptop on a desk",
    "sailboat",
    "coffee mug",
)


def synthetic_classes(n: int, rng: np.random.Generator, k: int = 32) -> np.ndarray:
    """``n`` packed class rows: a dominant class (probability 0.3-0.95) and ``k - 1`` others."""
    from lookalike.index.classes import NUM_CLASSES

    # distinct classes per row: a random start, then steps of 1-30 (k * 30 < 1000)
    steps = np.cumsum(rng.integers(1, 31, (n, k)), axis=1) - 1
    classes = ((rng.integers(0, NUM_CLASSES, n)[:, None] + steps) % NUM_CLASSES).astype("<u2")
    top = rng.uniform(0.3, 0.95, n).astype(np.float32)
    rest = rng.exponential(1.0, (n, k - 1)).astype(np.float32)
    rest *= ((1.0 - top) / rest.sum(axis=1))[:, None]
    values = np.concatenate([top[:, None], rest], axis=1).astype("<f2")
    return np.ascontiguousarray(np.concatenate([classes.view(np.uint8), values.view(np.uint8)], 1))


def _ms(samples: list[float]) -> dict:
    arr = np.asarray(samples) * 1000.0
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95))}


def measure_scoring(n: int = N, repeats: int = 30, seed: int = 0) -> dict:
    """ms to score ``n`` images against one query's class weights: sparse index vs dense."""
    from lookalike.index.classes import ClassIndex, dense, top_k

    rng = np.random.default_rng(seed)
    packed = synthetic_classes(n, rng)
    index = ClassIndex()
    index.add(np.arange(n, dtype=np.int64), packed)
    index.scores(np.zeros(1000, np.float32))  # builds the sparse matrix
    ids = index.ids()
    matrix = np.concatenate([dense(packed[i : i + 10_000]) for i in range(0, n, 10_000)])
    sparse_t, dense_t = [], []
    agree = []
    for _ in range(repeats):
        w = (rng.random(1000) < 0.02).astype(np.float32)  # a concept covering ~20 classes
        start = time.perf_counter()
        s = index.scores(w)
        _, best = top_k(s, ids, 10)
        sparse_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        d = matrix @ w
        top = np.argpartition(-d, 10)[:10]
        dense_t.append(time.perf_counter() - start)
        # the same ten best scores (float16 probabilities tie often, so ids may differ)
        agree.append(np.allclose(np.sort(s[0][best[0]]), np.sort(d[top]), atol=1e-5))
    return {
        "n": n,
        "bytes_per_image": packed.shape[1],
        "sparse": _ms(sparse_t),
        "dense_matvec": _ms(dense_t),
        "dense_bytes_per_image": 4000,
        "top10_same_scores": float(np.mean(agree)),
    }


def measure_query_side(repeats: int = 3) -> dict:
    """ms to read a text query: embed it, compare it with every concept name, build weights."""
    from lookalike.text.scoring import default_text_model

    model = default_text_model()
    start = time.perf_counter()
    model.prepare()
    prepare_s = time.perf_counter() - start
    encode_t, interpret_t = [], []
    for r in range(repeats):
        for q in LATENCY_QUERIES:
            text = f"{q} {r}" if r else q  # new text every time: nothing cached
            start = time.perf_counter()
            model.encoder.encode([text])
            encode_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.interpret(text)
            interpret_t.append(time.perf_counter() - start)
    return {
        "prepare_s": prepare_s,
        "concept_names": len(model.concepts.texts),
        "encode": _ms(encode_t),
        "interpret": _ms(interpret_t),
    }


def synthetic_collection(folder: Path, n: int = N, seed: int = 0):
    """A collection of ``n`` images that exist only in its catalog (classes only)."""
    import lookalike
    from lookalike.catalog import NewContent
    from lookalike.features.models import MODEL_NAME
    from lookalike.features.registry import CLASSES

    col = lookalike.open(folder)
    packed = synthetic_classes(n, np.random.default_rng(seed))
    with col.catalog.transaction():
        col.catalog.set_meta("model", MODEL_NAME)
        col.catalog.set_meta("features", "deep")
        for i in range(n):
            content = col.catalog.insert_content(NewContent(f"{i:064x}", 640, 480, "JPEG"))
            col.catalog.upsert_file(f"/synthetic/{i:06d}.jpg", 1, 1, content_id=content)
            col.catalog.put_vector(content, CLASSES.name, packed[i])
        col.catalog.bump_generation([CLASSES.name])
    return col


def measure_end_to_end(n: int = N, repeats: int = 2) -> dict:
    """``Collection.search_text`` at ``n`` images: the first query, then p50/p95 of the rest."""
    with tempfile.TemporaryDirectory(prefix="lk-text-") as tmp:
        start = time.perf_counter()
        col = synthetic_collection(Path(tmp) / "index", n)
        build_s = time.perf_counter() - start
        try:
            start = time.perf_counter()
            col.search_text("a cup of espresso", k=10)
            first_s = time.perf_counter() - start
            times = []
            for r in range(repeats):
                for q in LATENCY_QUERIES:
                    start = time.perf_counter()
                    hits = col.search_text(f"{q} {r}" if r else q, k=10)
                    times.append(time.perf_counter() - start)
                    assert len(hits) == 10
        finally:
            col.close()
    return {"n": n, "build_s": build_s, "first_s": first_s, "after_first": _ms(times)}


def _labels(root: Path) -> dict[str, str]:
    with (root / "labels.csv").open(newline="") as fh:
        return {str((root / row["path"]).absolute()): row["label"] for row in csv.DictReader(fh)}


def measure_precision(root: Path | None = None, k: int = 20) -> dict:
    """precision@k per query on ``web_animals4`` (``{"skipped": why}`` without it)."""
    import lookalike

    root = root or DATASETS / DATASET
    if not (root / "labels.csv").exists():
        return {"skipped": f"{root} not found (data set absent on this machine)"}
    labels = _labels(root)
    out: dict = {"dataset": root.name, "k": k, "queries": {}, "unmatched": {}}
    with tempfile.TemporaryDirectory(prefix="lk-text-") as tmp:
        col = lookalike.open(Path(tmp) / "index")
        try:
            start = time.perf_counter()
            col.add([root / "images"], workers=2)
            out["index_s"] = time.perf_counter() - start
            out["images"] = col.info()["images"]
            for text, label in PRECISION_QUERIES.items():
                hits = col.search_text(text, k=k)
                right = [labels.get(m.path) == label for m in hits]
                out["queries"][text] = {
                    "label": label,
                    "precision": float(np.mean(right)) if right else 0.0,
                    "concepts": [c.name for c in hits.matched_concepts],
                    "warning": hits.warning,
                }
            for text in UNMATCHED:
                hits = col.search_text(text, k=k)
                out["unmatched"][text] = {
                    "matched": hits.matched,
                    "best_score": hits[0].score if hits else 0.0,
                    "warning": hits.warning,
                }
        finally:
            col.close()
    return out


def measure_text(quick: bool = False) -> dict:
    return {
        "precision": measure_precision(),
        "scoring": measure_scoring(repeats=10 if quick else 30),
        "query": measure_query_side(repeats=1 if quick else 3),
        "end_to_end": measure_end_to_end(repeats=1 if quick else 2),
    }


def _verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW GOAL"


def text_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the benchmark table (figure, value, baseline / limit, verdict)."""
    rows = []
    p = r["precision"]
    if "skipped" in p:
        rows.append(("(i) text precision@20", "skipped", p["skipped"], ""))
    else:
        for text, q in p["queries"].items():
            rows.append(
                (
                    f"(i) text precision@{p['k']} {p['dataset']}: {text!r}",
                    f"{q['precision']:.2f}",
                    f"goal {GOAL_PRECISION} ({q['label']}; {', '.join(q['concepts'])})",
                    _verdict(q["precision"] >= GOAL_PRECISION),
                )
            )
        for text, u in p["unmatched"].items():
            rows.append(
                (
                    f"(i) unmatched query {text!r}",
                    "reported" if not u["matched"] else "MATCHED",
                    f"best score {u['best_score']:.3f}",
                    _verdict(not u["matched"]),
                )
            )
    s, q, e = r["scoring"], r["query"], r["end_to_end"]
    rows += [
        (
            f"(i) score {s['n']:,} images, sparse top-32 ({s['bytes_per_image']} B/image)",
            f"p50 {s['sparse']['p50_ms']:.2f} / p95 {s['sparse']['p95_ms']:.2f} ms",
            f"dense float32 matvec ({s['dense_bytes_per_image']} B/image): "
            f"p50 {s['dense_matvec']['p50_ms']:.2f} ms",
            f"same top-10 scores {s['top10_same_scores']:.2f}",
        ),
        (
            "(i) read a text query (MiniLM + concepts)",
            f"p50 {q['interpret']['p50_ms']:.2f} / p95 {q['interpret']['p95_ms']:.2f} ms",
            f"embedding alone p50 {q['encode']['p50_ms']:.2f} ms; first use "
            f"{q['prepare_s']:.1f} s ({q['concept_names']:,} names)",
            "",
        ),
        (
            f"(i) search_text end to end, {e['n']:,} images, after the first",
            f"p50 {e['after_first']['p50_ms']:.1f} / p95 {e['after_first']['p95_ms']:.1f} ms",
            f"goal < {GOAL_MS:.0f} ms; first query {e['first_s']:.2f} s",
            _verdict(e["after_first"]["p95_ms"] < GOAL_MS),
        ),
    ]
    return rows


if __name__ == "__main__":
    import json

    result = measure_text()
    print(json.dumps(result, indent=2))
    for row in text_rows(result):
        print("  ".join(row))
