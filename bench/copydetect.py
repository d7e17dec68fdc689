"""Copy detection, DISC 2021 style: recall@1, micro AP and recall at precision 0.99.

Index a seed-0 sample of ``mfood7`` originals plus every ``web_animals4`` image (distractors)
into a temporary collection with the features ``deep,phash,dhash``. Queries: one random copy
(``lookalike.eval.copies.make_copy``: 1-3 of crop, rescale, JPEG, rotation, flips, colour,
greyscale, blur, noise, text, logo overlay, border, aspect, screenshot) of each indexed original,
plus copies of other ``mfood7`` images that are NOT indexed (any prediction for them is a false
positive). Each method's top-1 candidate and score per query is one prediction; a prediction is
correct when it is the query's original or one of its natural duplicates (``duplicates.json``).

Methods: ``deep`` (cosine of the collection's descriptor), ``phash`` / ``dhash`` (lookalike's
64-bit hashes, score = 1 - hamming / 64) and, when ``lookalike.check.check_copy`` exists, the
geometric copy check (on a subsample, it is slower). ``imagededup`` is used when it imports.

Run: ``python -m bench.copydetect`` (writes ``bench/results/copydetect.json``).
"""

from __future__ import annotations

import importlib
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

import lookalike
from bench.copies import DATASETS, _dataset_paths, _duplicates
from lookalike.eval.copies import TRANSFORMS, make_copy
from lookalike.eval.metrics import micro_average_precision, recall_at_1, recall_at_precision
from lookalike.images import load_image

RESULTS = Path(__file__).resolve().parent / "results" / "copydetect.json"
HASH_METHODS = ("phash", "dhash")
ALL_METHODS = ("deep", "phash", "dhash", "lookalike check", "imagededup phash", "imagededup dhash")
BATCH = 32


def _check_function() -> Callable | None:
    """``lookalike.check.check_copy`` if another part of lookalike provides it, else None."""
    try:
        module = importlib.import_module("lookalike.check")
    except ImportError:
        return None
    return getattr(module, "check_copy", None)


def _imagededup() -> tuple[dict[str, object], str | None]:
    """imagededup's PHash/DHash objects, or a note saying why they cannot be used."""
    try:
        from imagededup.methods.hashing import DHash, PHash
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return {}, (
            f"imagededup baselines skipped: cannot import it ({type(exc).__name__}: {exc}); "
            "`pip install --no-deps imagededup` installs, but its hashing module needs "
            "scikit-learn, PyWavelets and matplotlib, and imagededup.methods imports its torch CNN"
        )
    return {
        "imagededup phash": PHash(verbose=False),
        "imagededup dhash": DHash(verbose=False),
    }, None


def _summary(scores: Sequence[float], correct: Sequence[bool], n_relevant: int) -> dict:
    recall, threshold = recall_at_precision(scores, correct, n_relevant, 0.99)
    return {
        "queries": len(scores),
        "with_original": n_relevant,
        "recall_at_1": recall_at_1(correct, n_relevant),
        "micro_ap": micro_average_precision(scores, correct, n_relevant),
        "recall_at_p99": recall,
        "threshold_at_p99": threshold if np.isfinite(threshold) else None,
    }


def measure_copy_detection(
    n_originals: int = 300,
    n_unindexed: int = 300,
    seed: int = 0,
    methods: Sequence[str] = ALL_METHODS,
    check_queries: int = 200,
    workers: int = 2,
) -> dict:
    """Per-method copy-detection figures; ``{"skipped": reason}`` when a data set is absent.

    ``check_queries``: how many queries (half with an indexed original, half without) the
    slower ``lookalike check`` method sees; every other method sees all of them.
    """
    food, animals = DATASETS / "mfood7", DATASETS / "web_animals4"
    for root in (food, animals):
        if not (root / "labels.csv").exists():
            return {"skipped": f"{root} not found (data set absent on this machine)"}
    notes: list[str] = []
    rel_paths = _dataset_paths(food)
    dups = _duplicates(food)
    picker = random.Random(seed)
    originals = picker.sample(rel_paths, min(n_originals, len(rel_paths)))
    # unindexed queries: neither an original nor a listed duplicate of one
    indexed = set().union(*(dups.get(p, {p}) for p in originals))
    rest = [p for p in rel_paths if p not in indexed]
    unindexed = picker.sample(rest, min(n_unindexed, len(rest)))

    # queries: (original or None, transforms applied, copy)
    rng = np.random.default_rng(seed)
    queries: list[tuple[str | None, list[str], Image.Image]] = []
    start = time.perf_counter()
    for rel, has_original in [(p, True) for p in originals] + [(p, False) for p in unindexed]:
        image = load_image(str(food / rel), min_side=0).image
        copy, applied = make_copy(image, rng)
        queries.append((rel if has_original else None, applied, copy))
    copy_seconds = time.perf_counter() - start
    n_relevant = len(originals)
    prefix = str(food.absolute()) + "/"

    def correct(original: str | None, path: str | None) -> bool:
        if original is None or path is None or not path.startswith(prefix):
            return False
        return path.removeprefix(prefix) in dups.get(original, {original})

    out: dict = {
        "dataset": "mfood7 originals + web_animals4 distractors",
        "seed": seed,
        "originals": len(originals),
        "unindexed_queries": len(unindexed),
        "copy_seconds": copy_seconds,
    }
    predictions: dict[str, tuple[list[float], list[bool]]] = {}
    with tempfile.TemporaryDirectory(prefix="lk-copydetect-") as tmp:
        col = lookalike.open(Path(tmp) / "index")
        start = time.perf_counter()
        report = col.add(
            [food / p for p in originals] + [animals / "images"],
            features="deep,phash,dhash",
            workers=workers,
        )
        out["index_seconds"] = time.perf_counter() - start
        out["indexed_images"] = col.info()["images"]
        out["index_failed"] = report.failed

        wanted = [m for m in ("deep", *HASH_METHODS) if m in methods]
        top: dict[str, list[tuple[str | None, float]]] = {m: [] for m in wanted}
        start = time.perf_counter()
        for b in range(0, len(queries), BATCH):
            described = col.describe([q[2] for q in queries[b : b + BATCH]], wanted)
            for name in wanted:
                for matches in col.search_vectors(described[name], 1, feature=name):
                    top[name].append((matches[0].path, matches[0].score) if matches else (None, 0))
        out["search_seconds"] = time.perf_counter() - start
        for name in wanted:
            oks = [correct(q[0], path) for q, (path, _) in zip(queries, top[name], strict=True)]
            predictions[name] = ([score for _, score in top[name]], oks)

        check = _check_function() if "lookalike check" in methods else None
        if check is not None:
            half = max(1, check_queries // 2)
            subset = list(range(min(half, n_relevant))) + list(
                range(n_relevant, min(n_relevant + half, len(queries)))
            )
            scores, oks = [], []
            start = time.perf_counter()
            for i in subset:
                result = check(col, queries[i][2])
                path = result.match.path if result.match is not None else None
                scores.append(float(result.score))
                oks.append(correct(queries[i][0], path))
            out["check_seconds"] = time.perf_counter() - start
            out["check_queries"] = len(subset)
            predictions["lookalike check"] = (scores, oks)
        col.close()

    dedup_wanted = [m for m in methods if m.startswith("imagededup")]
    if dedup_wanted:
        hashers, note = _imagededup()
        if note:
            notes.append(note)
        for name in dedup_wanted:
            if name in hashers:
                predictions[name] = _imagededup_top1(
                    hashers[name], [food / p for p in originals], animals, queries, correct
                )

    out["methods"] = {}
    for name, (scores, oks) in predictions.items():
        relevant = n_relevant if name != "lookalike check" else min(check_queries // 2, n_relevant)
        out["methods"][name] = _summary(scores, oks, max(1, relevant))
    if "deep" in predictions:
        out["deep_recall_at_1_by_transform"] = _by_transform(queries, predictions["deep"][1])
    out["notes"] = notes + [
        "lookalike check runs on a subsample (first half of originals' queries and of the "
        "unindexed queries, check_queries in all)"
    ] * ("lookalike check" in predictions)
    return out


def _by_transform(
    queries: list[tuple[str | None, list[str], Image.Image]], oks: list[bool]
) -> dict[str, dict]:
    """recall@1 of the queries (with an original) that had each transform among their edits."""
    table: dict[str, dict] = {}
    for name in TRANSFORMS:
        hits = [
            ok
            for (orig, applied, _), ok in zip(queries, oks, strict=True)
            if orig and name in applied
        ]
        if hits:
            table[name] = {"queries": len(hits), "recall_at_1": float(np.mean(hits))}
    return table


def _imagededup_top1(
    hasher: object,
    originals: list[Path],
    animals: Path,
    queries: list[tuple[str | None, list[str], Image.Image]],
    correct: Callable[[str | None, str | None], bool],
) -> tuple[list[float], list[bool]]:
    """Top-1 by hamming distance of imagededup's 64-bit hashes (score = 1 - d / 64)."""
    files = [str(p.absolute()) for p in originals]
    files += [str(p.absolute()) for p in sorted(animals.rglob("*")) if p.is_file() and p.suffix]
    index_hashes, kept = [], []
    for f in files:
        h = hasher.encode_image(image_file=f)  # type: ignore[attr-defined]
        if h:
            index_hashes.append(int(h, 16))
            kept.append(f)
    bits = np.array([[(h >> i) & 1 for i in range(64)] for h in index_hashes], dtype=bool)
    scores, oks = [], []
    for orig, _, image in queries:
        h = int(hasher.encode_image(image_array=np.asarray(image)), 16)  # type: ignore[attr-defined]
        q = np.array([(h >> i) & 1 for i in range(64)], dtype=bool)
        distance = (bits != q).sum(axis=1)
        best = int(np.argmin(distance))
        scores.append(1.0 - distance[best] / 64)
        oks.append(correct(orig, kept[best]))
    return scores, oks


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(result: dict) -> str:
    """The per-method and per-transform figures as plain-text tables."""
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    distractors = result["indexed_images"] - result["originals"]
    lines = [
        f"{result['originals']} indexed originals (+{distractors} distractors)"
        f", {result['unindexed_queries']} queries without an original",
        f"{'method':<18} {'queries':>7} {'R@1':>6} {'microAP':>8} {'R@P99':>6} {'thr@P99':>8}",
    ]
    for name, m in result["methods"].items():
        lines.append(
            f"{name:<18} {m['queries']:>7} {m['recall_at_1']:>6.3f} {m['micro_ap']:>8.3f} "
            f"{m['recall_at_p99']:>6.3f} {_fmt(m['threshold_at_p99']):>8}"
        )
    if result.get("deep_recall_at_1_by_transform"):
        lines.append("")
        lines.append(f"{'deep R@1 by transform':<22} {'queries':>7} {'R@1':>6}")
        for name, t in result["deep_recall_at_1_by_transform"].items():
            lines.append(f"{name:<22} {t['queries']:>7} {t['recall_at_1']:>6.3f}")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    seconds = {k: round(v, 1) for k, v in result.items() if k.endswith("_seconds")}
    lines.append(f"seconds: {seconds}")
    return "\n".join(lines)


def main() -> None:
    result = measure_copy_detection()
    print(format_table(result))
    if "skipped" not in result:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2, default=float))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
