"""Which descriptor should I use? One row per descriptor of ``all_features()``, from one run.

    python -m bench.features [--no-two-stage] [--json bench/results/features.json]
    python -m bench --only features

Per descriptor:

* **images/s** -- encoding speed on ~64 real photos of mfood7, decoded beforehand (decoding
  excluded), one process; ``deep`` runs the model on the collection's threads; learned codes
  (``itq*``) need the deep vector, so their speed is deep + the projection.
* **bytes/image** -- from ``FeatureInfo``.
* **copy recall@1** -- mfood7 indexed once with every descriptor; queries are the STANDARD
  transforms of 100 originals (seed 0), described once each with ``col.describe``; a hit is
  the original or one of its natural duplicates (``duplicates.json``). Reported over the
  acceptance transforms (cropped, rescaled, recompressed) and over all of them.
* **mAP** -- category retrieval on mfood7 and web_animals4: every image a query, relevant =
  same label, the query itself and its natural duplicates excluded; stored vectors compared with
  ``lookalike.features.metrics.scores``.
* **ms/query @100k** -- single-query p50 of the product's index class for the descriptor
  (``lookalike.index.store.new_index``) over 100k SYNTHETIC vectors of its width and dtype.

Below the table: the two-stage (128-bit ITQ shortlist + exact float re-rank) figures from
``bench.binary.measure_two_stage``.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import lookalike
from bench.copies import ACCEPTANCE, DATASETS, _dataset_paths, _duplicates
from lookalike.collection import MIN_SIDE, Collection
from lookalike.eval.transforms import STANDARD
from lookalike.features.metrics import scores
from lookalike.features.registry import OTHER_MODELS, FeatureInfo, all_features, pixel_features
from lookalike.images import load_image
from lookalike.index.store import new_index

RESULTS = Path(__file__).resolve().parent / "results" / "features.json"
MAP_DATASETS = ("mfood7", "web_animals4")
SPEED_IMAGES = 64
ORIGINALS = 100
LATENCY_N = 100_000
LATENCY_QUERIES = 30
QUERY_BATCH = 32
MAP_BLOCK = 128
COLUMNS = (
    "name", "kind", "bytes/image", "images/s", "copy R@1 accept.", "copy R@1 all",
    "mAP mfood7", "mAP web_animals4", "ms/query @100k",
)  # fmt: skip
LATENCY_NOTE = (
    "ms/query @100k: single-query p50 (k=10) over 100,000 SYNTHETIC vectors: random bits for "
    "binary codes, random L1-normalised histograms for chi2, random unit vectors for cosine, "
    "standard normal vectors for l2"
)


def all_names() -> list[str]:
    """Every descriptor name, in registry order."""
    return list(all_features())


# -- speed --------------------------------------------------------------------------------------


def _rate(run: Callable[[], object], count: int, repeats: int = 3) -> float:
    """Images per second of ``run`` (which encodes ``count`` images): best of ``repeats``
    after one warm-up, so that a burst of load on a shared machine does not halve it."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def measure_speed(col: Collection, root: Path, count: int = SPEED_IMAGES) -> dict[str, float]:
    """Encoding images/s per descriptor on ``count`` decoded photos of ``root`` (seed 0)."""
    rel = random.Random(0).sample(_dataset_paths(root), count)
    images = [load_image(str(root / p), min_side=MIN_SIDE).image for p in rel]
    out: dict[str, float] = {}
    for name, feature in pixel_features().items():
        out[name] = _rate(lambda f=feature: f.encode([f.compute(i) for i in images]), count)
    deep = col.feature
    out["deep"] = _rate(lambda: deep.encode(np.stack([deep.preprocess(i) for i in images])), count)
    for name in OTHER_MODELS:  # lite2: its own model and preprocessing
        m = col.models.model(name)
        out[name] = _rate(lambda m=m: m.encode(np.stack([m.preprocess(i) for i in images])), count)
    vectors = deep.encode(np.stack([deep.preprocess(i) for i in images]))
    for name, info in all_features().items():
        if info.source == "learned":
            model = col.models.learned(name)
            code_rate = _rate(lambda m=model: m.encode(vectors), count)
            out[name] = 1.0 / (1.0 / out["deep"] + 1.0 / code_rate)
    return out


# -- copy detection -----------------------------------------------------------------------------


def measure_copy_recall(
    col: Collection, root: Path, names: Sequence[str], originals: int = ORIGINALS, seed: int = 0
) -> dict:
    """recall@1 per descriptor over the acceptance transforms and over all STANDARD ones."""
    rel_paths = _dataset_paths(root)
    dups = _duplicates(root)
    picked = random.Random(seed).sample(rel_paths, min(originals, len(rel_paths)))
    prefix = str(root.absolute()) + "/"
    hits: dict[str, dict[str, list[bool]]] = {n: {t: [] for t in STANDARD} for n in names}
    start = time.perf_counter()
    queries = []  # (original, transform name, image)
    for rel in picked:
        image = load_image(str(root / rel), min_side=0).image
        for tname, transform in STANDARD.items():
            queries.append((rel, tname, transform(image).convert("RGB")))
    describe_s = search_s = 0.0
    for b in range(0, len(queries), QUERY_BATCH):
        chunk = queries[b : b + QUERY_BATCH]
        t0 = time.perf_counter()
        described = col.describe([q[2] for q in chunk], names)
        t1 = time.perf_counter()
        for name in names:
            results = col.search_vectors(described[name], k=1, feature=name)
            for (rel, tname, _), matches in zip(chunk, results, strict=True):
                top = matches[0].path.removeprefix(prefix) if matches else ""
                hits[name][tname].append(top in dups.get(rel, {rel}))
        describe_s += t1 - t0
        search_s += time.perf_counter() - t1
    out: dict = {
        "originals": len(picked),
        "queries": len(queries),
        "seconds": time.perf_counter() - start,
        "describe_seconds": describe_s,
        "search_seconds": search_s,
        "features": {},
    }
    for name in names:
        h = hits[name]
        out["features"][name] = {
            "acceptance": float(np.mean([x for t in ACCEPTANCE for x in h[t]])),
            "all": float(np.mean([x for v in h.values() for x in v])),
            "per_transform": {t: float(np.mean(v)) for t, v in h.items()},
        }
    return out


# -- category retrieval -------------------------------------------------------------------------


def _labels(root: Path) -> dict[str, str]:
    with (root / "labels.csv").open(newline="") as fh:
        return {row["path"]: row["label"] for row in csv.DictReader(fh)}


def average_precisions(score: np.ndarray, relevant: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """AP of each row: ``score`` [N, M] (larger is closer), boolean ``relevant``/``excluded``."""
    score = np.where(excluded, -np.inf, score)
    order = np.argsort(-score, axis=1, kind="stable")
    rel = np.take_along_axis(relevant & ~excluded, order, axis=1)
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, score.shape[1] + 1)
    total = np.maximum(rel.sum(axis=1), 1)
    return (np.where(rel, hits / ranks, 0.0).sum(axis=1) / total).astype(np.float64)


def measure_map(col: Collection, root: Path, names: Sequence[str]) -> dict:
    """Category mAP per descriptor: every indexed image of ``root`` a query."""
    labels = _labels(root)
    dups = _duplicates(root)
    prefix = str(root.absolute()) + "/"
    files = {
        path.removeprefix(prefix): row.content_id
        for path, row in col.catalog.files_by_path().items()
        if row.content_id is not None
    }
    rel = sorted(p for p in labels if p in files)
    position = {p: i for i, p in enumerate(rel)}
    label_ids = np.unique([labels[p] for p in rel], return_inverse=True)[1]
    same_label = label_ids[:, None] == label_ids[None, :]
    excluded = np.eye(len(rel), dtype=bool)
    for p in rel:
        for q in dups.get(p, ()):
            if q in position:
                excluded[position[p], position[q]] = True
    content = np.array([files[p] for p in rel], dtype=np.int64)
    out: dict = {"images": len(rel), "features": {}}
    for name in names:
        info = all_features()[name]
        ids, vectors = col.catalog.vectors(name, info.width, info.dtype)
        rows = vectors[np.searchsorted(ids, content)]
        ap = []
        for b in range(0, len(rows), MAP_BLOCK):
            score, _ = scores(info.metric, rows[b : b + MAP_BLOCK], rows, bits=info.dim)
            sl = slice(b, b + MAP_BLOCK)
            ap.append(average_precisions(score, same_label[sl], excluded[sl]))
        out["features"][name] = float(np.mean(np.concatenate(ap)))
    return out


# -- latency at 100k ----------------------------------------------------------------------------


def synthetic_vectors(info: FeatureInfo, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random rows shaped like ``info``'s vectors (see LATENCY_NOTE)."""
    if info.binary:
        return rng.integers(0, 256, (n, info.width), dtype=np.uint8)
    x = rng.standard_normal((n, info.width), dtype=np.float32)
    if info.metric in ("chi2", "intersection"):
        x = np.abs(x, out=x)
        x /= x.sum(axis=1, keepdims=True)
    elif info.metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(info.dtype, copy=False)


def measure_latency(
    info: FeatureInfo, n: int = LATENCY_N, queries: int = LATENCY_QUERIES, seed: int = 0
) -> float:
    """p50 ms of one k=10 query against ``n`` synthetic vectors in the product's index."""
    rng = np.random.default_rng(seed)
    index = new_index(info)
    index.add(np.arange(n, dtype=np.int64), synthetic_vectors(info, n, rng))
    q = synthetic_vectors(info, queries, rng)
    index.search(q[:1], 10)  # warm-up
    times = []
    for i in range(queries):
        start = time.perf_counter()
        index.search(q[i : i + 1], 10)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


# -- two-stage ----------------------------------------------------------------------------------


def measure_two_stage_itq128() -> dict:
    """``bench.binary``'s two-stage figures for 128-bit ITQ at 100k vectors, condensed."""
    from bench.binary import measure_two_stage

    r = measure_two_stage(n=LATENCY_N, bits=(128,))
    entry = next(e for e in r["codes"] if e["method"] == "ITQ" and e["bits"] == 128)
    return {
        "n": r["n"],
        "dim": r["dim"],
        "k": r["k"],
        "data": r["data"],
        "exact": r["exact"],
        "code_bytes": entry["bytes_per_vector"],
        "hamming_only_recall": entry["hamming_only_recall"],
        "shortlists": {str(s): v for s, v in entry["shortlists"].items()},
        "acceptance": r["acceptance"],
    }


def two_stage_lines(t: dict) -> list[str]:
    """Printable lines for :func:`measure_two_stage_itq128`."""
    ex = t["exact"]
    ratio = ex["bytes_per_vector"] // t["code_bytes"]
    lines = [
        f"two-stage search, 128-bit ITQ shortlist + exact float re-rank, {t['n']:,} x {t['dim']} "
        f"(bench.binary; {t['data']})",
        f"  exact FlatIndex: {ex['single_ms']:.2f} ms/query single, "
        f"{ex['batch_ms_per_query']:.3f} ms/query batched; {ex['bytes_per_vector']} B/vector",
        f"  memory: {t['code_bytes']} B/vector of codes searched (1/{ratio} "
        "of the float vectors, which stay for the re-rank); Hamming-only "
        f"recall@{t['k']} {t['hamming_only_recall']:.3f}",
    ]
    for short, s in t["shortlists"].items():
        lines.append(
            f"  shortlist {int(short):5d}: recall@{t['k']} {s['recall']:.3f}; "
            f"single {s['single_ms']:.2f} ms ({s['speedup_single']:.1f}x exact), "
            f"batched {s['batch_ms_per_query']:.3f} ms ({s['speedup_batch']:.1f}x exact)"
        )
    return lines


# -- all together -------------------------------------------------------------------------------


def _index(root: Path, folder: Path, names: Sequence[str]) -> tuple[Collection, float]:
    col = lookalike.open(folder)
    start = time.perf_counter()
    col.add([root / "images"], features=",".join(names), workers=2)
    return col, time.perf_counter() - start


def measure_features(two_stage: bool = True) -> dict:
    """Every figure of the descriptor table; ``{"skipped": reason}`` without the data sets."""
    roots = {name: DATASETS / name for name in MAP_DATASETS}
    missing = [str(r) for r in roots.values() if not (r / "labels.csv").exists()]
    if missing:
        return {"skipped": f"{', '.join(missing)} not found (data sets absent on this machine)"}
    names = all_names()
    features = all_features()
    started = time.perf_counter()
    out: dict = {"notes": [LATENCY_NOTE], "seconds": {}}
    maps: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lk-features-") as tmp:
        for dataset, root in roots.items():
            col, seconds = _index(root, Path(tmp) / dataset, names)
            out["seconds"][f"index_{dataset}"] = seconds
            try:
                if dataset == "mfood7":
                    start = time.perf_counter()
                    speed = measure_speed(col, root)
                    out["seconds"]["speed"] = time.perf_counter() - start
                    copies = measure_copy_recall(col, root, names)
                    out["seconds"]["copies"] = copies["seconds"]
                    out["copies"] = {k: v for k, v in copies.items() if k != "features"}
                start = time.perf_counter()
                maps[dataset] = measure_map(col, root, names)
                out["seconds"][f"map_{dataset}"] = time.perf_counter() - start
            finally:
                col.close()
    start = time.perf_counter()
    latency = {name: measure_latency(info) for name, info in features.items()}
    out["seconds"]["latency"] = time.perf_counter() - start
    rows = []
    for name, info in features.items():
        rows.append(
            {
                "name": name,
                "kind": info.kind,
                "metric": info.metric,
                "bytes_per_image": info.bytes_per_image,
                "images_per_s": speed[name],
                "copy_recall_at_1_acceptance": copies["features"][name]["acceptance"],
                "copy_recall_at_1_all": copies["features"][name]["all"],
                "copy_recall_at_1_per_transform": copies["features"][name]["per_transform"],
                **{f"map_{d}": maps[d]["features"][name] for d in MAP_DATASETS},
                "ms_per_query_100k": latency[name],
            }
        )
    out["rows"] = rows
    out["map_images"] = {d: maps[d]["images"] for d in MAP_DATASETS}
    out["notes"].append(
        "images/s: encoding only (decode excluded), one process, on 64 mfood7 photos; "
        "itq* = deep model + projection"
    )
    if two_stage:
        start = time.perf_counter()
        out["two_stage_itq128"] = measure_two_stage_itq128()
        out["seconds"]["two_stage"] = time.perf_counter() - start
    out["seconds"]["total"] = time.perf_counter() - started
    return out


def table_lines(r: dict) -> list[str]:
    """The descriptor table (and notes) as printable lines."""
    if "skipped" in r:
        return [f"descriptors: skipped: {r['skipped']}"]
    cells = [list(COLUMNS)]
    for row in r["rows"]:
        cells.append(
            [
                row["name"],
                row["kind"],
                str(row["bytes_per_image"]),
                f"{row['images_per_s']:.0f}",
                f"{row['copy_recall_at_1_acceptance']:.3f}",
                f"{row['copy_recall_at_1_all']:.3f}",
                f"{row['map_mfood7']:.3f}",
                f"{row['map_web_animals4']:.3f}",
                f"{row['ms_per_query_100k']:.2f}",
            ]
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = []
    for i, c in enumerate(cells):
        lines.append(
            "  ".join(
                v.ljust(w) if j < 2 else v.rjust(w)
                for j, (v, w) in enumerate(zip(c, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"note: {n}" for n in r["notes"]]
    if "two_stage_itq128" in r:
        lines += two_stage_lines(r["two_stage_itq128"])
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the rows to ``bench/results/features.json``."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.features", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--no-two-stage", action="store_true", help="skip the 128-bit ITQ figures")
    ap.add_argument("--json", type=Path, default=RESULTS, help="write the results here")
    args = ap.parse_args(argv)
    r = measure_features(two_stage=not args.no_two_stage)
    print("\n".join(table_lines(r)))
    if "skipped" not in r:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
