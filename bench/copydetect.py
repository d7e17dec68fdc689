"""Copy detection, DISC 2021 style: recall@1, micro AP and recall at precision 0.99.

Index a seed-0 sample of ``mfood7`` originals plus every ``web_animals4`` image (distractors)
into a temporary collection with the features ``deep,phash,dhash``. Queries: one random copy
(``lookalike.eval.copies.make_copy``: 1-3 of crop, rescale, JPEG, rotation, flips, colour,
greyscale, blur, noise, text, logo overlay, border, aspect, screenshot) of each indexed original,
plus copies of other ``mfood7`` images that are NOT indexed (any prediction for them is a false
positive). Each method's top-1 candidate and score per query is one prediction; a prediction is
correct when it is the query's original or one of its natural duplicates (``duplicates.json``).

The data set also holds unlisted re-saves (the same photo cropped, resized or recompressed under
another name). Ground truth for those comes from an independent judge, not from the methods:
RANSAC-verified SIFT matches between the two *database* files (``same_photo_inliers`` >= 20,
as in ``bench/copies.py``; different photos of the same dish keep fewer than 10). An image that
is a verified re-save of an indexed original is not used as an "unindexed" query (its query would
have a true match in the index), and a prediction that is a verified re-save of the query's
original counts as correct, for every method alike.

Methods: ``deep`` (cosine of the collection's descriptor), ``phash`` / ``dhash`` (lookalike's
64-bit hashes, score = 1 - hamming / 64) and, when ``lookalike.copies.check.check_copy``
exists, the geometric copy check (on a subsample, it is slower). ``imagededup`` is used when it
imports.

Run: ``python -m bench.copydetect`` (writes ``bench/results/copydetect.json``).
"""

from __future__ import annotations

import functools
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
from bench.copies import DATASETS, SAME_PHOTO_INLIERS, _dataset_paths, _duplicates
from lookalike.copies.geometry import same_photo_inliers
from lookalike.eval.copies import TRANSFORMS, make_copy
from lookalike.eval.copy_metrics import micro_average_precision, recall_at_1, recall_at_precision
from lookalike.images import load_image

RESULTS = Path(__file__).resolve().parent / "results" / "copydetect.json"
HASH_METHODS = ("phash", "dhash")
ALL_METHODS = ("deep", "phash", "dhash", "lookalike check", "imagededup phash", "imagededup dhash")
BATCH = 32


def _check_function() -> Callable | None:
    """``lookalike.copies.check.check_copy`` if another part of lookalike provides it, else None."""
    try:
        module = importlib.import_module("lookalike.copies.check")
    except ImportError:
        return None
    return getattr(module, "check_copy", None)


def import_imagededup_hashing() -> tuple[type, type]:
    """imagededup's ``PHash`` and ``DHash`` classes, without importing torch.

    ``imagededup.methods`` and ``imagededup.utils`` import its CNN and model wrappers (torch,
    torchvision) from their ``__init__`` files; the hashing module itself needs only numpy,
    scipy, PyWavelets, Pillow, tqdm and scikit-learn. The two packages are entered here as
    plain namespaces (their ``__init__`` not run) so that ``imagededup.methods.hashing``
    imports as published.
    """
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("imagededup")
    if spec is None or spec.origin is None:
        raise ImportError("No module named 'imagededup'")
    root = Path(spec.origin).parent
    for name in ("imagededup.utils", "imagededup.methods"):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root / name.split(".")[1])]
            sys.modules[name] = package
    hashing = importlib.import_module("imagededup.methods.hashing")
    return hashing.PHash, hashing.DHash


def _imagededup() -> tuple[dict[str, object], str | None]:
    """imagededup's PHash/DHash objects, or a note saying why they cannot be used."""
    try:
        phash, dhash = import_imagededup_hashing()
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return {}, (
            f"imagededup baselines skipped: cannot import its hashing ({type(exc).__name__}: "
            f"{exc}); ./run.sh installs imagededup with --no-deps (its metadata pulls torch)"
        )
    return {"imagededup phash": phash(verbose=False), "imagededup dhash": dhash(verbose=False)}, (
        "imagededup's hashing imported without its package __init__ files (they import its "
        "torch CNN); its CNN method needs downloaded weights and is not run"
    )


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
    check_queries: int | None = None,
    workers: int = 2,
) -> dict:
    """Per-method copy-detection figures; ``{"skipped": reason}`` when a data set is absent.

    ``check_queries``: how many queries (half with an indexed original, half without) the
    slower ``lookalike check`` method sees (default: all of them, like every other method).
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
    n_relevant = len(originals)
    indexed = set().union(*(dups.get(p, {p}) for p in originals))
    rest = [p for p in rel_paths if p not in indexed]
    picker.shuffle(rest)
    prefix = str(food.absolute()) + "/"

    @functools.cache
    def same_photo(a: str, b: str) -> bool:
        """Independent judge: two data-set files are the same photo (verified SIFT matches)."""
        return same_photo_inliers(food / a, food / b) >= SAME_PHOTO_INLIERS

    sources: list[str] = []  # the data-set file each query was made from
    late_relevant: set[int] = set()  # "unindexed" queries whose photo the judge found indexed

    def correct(i: int, path: str | None) -> bool:
        if path is None or not path.startswith(prefix):
            return False
        source, found = sources[i], path.removeprefix(prefix)
        if i < n_relevant and found in dups.get(source, {source}):
            return True
        if not same_photo(*sorted((source, found))):
            return False
        if i >= n_relevant:
            late_relevant.add(i)
        return True

    out: dict = {
        "dataset": "mfood7 originals + web_animals4 distractors",
        "seed": seed,
        "originals": len(originals),
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

        # originals NOT indexed: skip unlisted re-saves of an indexed original (checked against
        # each candidate's 5 nearest indexed images, verified by SIFT)
        start = time.perf_counter()
        unindexed, resaves = [], 0
        for b in range(0, len(rest), BATCH):
            if len(unindexed) >= n_unindexed:
                break
            chunk = rest[b : b + BATCH]
            vectors = col.embed([str(food / p) for p in chunk])
            for rel, matches in zip(chunk, col.search_vectors(vectors, 5), strict=True):
                near = [m.path.removeprefix(prefix) for m in matches if m.path.startswith(prefix)]
                if any(same_photo(*sorted((rel, other))) for other in near):
                    resaves += 1
                elif len(unindexed) < n_unindexed:
                    unindexed.append(rel)
        out["unindexed_queries"] = len(unindexed)
        out["unlisted_resaves_skipped"] = resaves
        out["label_seconds"] = time.perf_counter() - start

        # queries: (original or None, transforms applied, copy)
        rng = np.random.default_rng(seed)
        queries: list[tuple[str | None, list[str], Image.Image]] = []
        start = time.perf_counter()
        for rel, has_original in [(p, True) for p in originals] + [(p, False) for p in unindexed]:
            image = load_image(str(food / rel), min_side=0).image
            copy, applied = make_copy(image, rng)
            queries.append((rel if has_original else None, applied, copy))
            sources.append(rel)
        out["copy_seconds"] = time.perf_counter() - start

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
            oks = [correct(i, path) for i, (path, _) in enumerate(top[name])]
            predictions[name] = ([score for _, score in top[name]], oks)

        check = _check_function() if "lookalike check" in methods else None
        check_relevant = n_relevant
        if check is not None:
            subset = list(range(len(queries)))
            if check_queries is not None:
                half = max(1, check_queries // 2)
                subset = list(range(min(half, n_relevant))) + list(
                    range(n_relevant, min(n_relevant + half, len(queries)))
                )
                check_relevant = min(half, n_relevant)
                notes.append(
                    "lookalike check runs on a subsample (first half of originals' queries and "
                    f"of the unindexed queries, {len(subset)} in all)"
                )
            scores, oks, verdict_copy = [], [], []
            start = time.perf_counter()
            for i in subset:
                result = check(col, queries[i][2])
                path = result.match.path if result.match is not None else None
                scores.append(float(result.score))
                oks.append(correct(i, path))
                verdict_copy.append(result.verdict == "copy")
            out["check_seconds"] = time.perf_counter() - start
            out["check_queries"] = len(subset)
            predictions["lookalike check"] = (scores, oks)
            out["check_verdicts"] = (oks, verdict_copy, check_relevant)
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

    # every method is judged against the same relevant set: the originals, plus "unindexed"
    # queries for which the SIFT judge confirmed some method's answer as the same photo
    out["unindexed_found_indexed"] = len(late_relevant)

    out["methods"] = {}
    for name, (scores, oks) in predictions.items():
        relevant = n_relevant if name != "lookalike check" else check_relevant
        relevant += len(late_relevant) if check_queries is None or name != "lookalike check" else 0
        out["methods"][name] = _summary(scores, oks, max(1, relevant))
    if "check_verdicts" in out:
        oks, verdict_copy, relevant = out.pop("check_verdicts")
        relevant += len(late_relevant) if check_queries is None else 0
        out["check_default_threshold"] = _operating_point(oks, verdict_copy, relevant)
    relevant_ids = set(range(n_relevant)) | late_relevant
    out["by_transform"] = {
        name: _by_transform(queries, scores, oks, relevant_ids)
        for name, (scores, oks) in predictions.items()
        if len(scores) == len(queries)
    }
    out["notes"] = notes
    return out


def _operating_point(oks: list[bool], verdict_copy: list[bool], n_relevant: int) -> dict:
    """Precision and recall of the verdicts at lookalike check's default threshold."""
    said = sum(verdict_copy)
    right = sum(ok and v for ok, v in zip(oks, verdict_copy, strict=True))
    return {
        "copies_claimed": said,
        "correct": right,
        "precision": right / said if said else 1.0,
        "recall": right / max(1, n_relevant),
    }


def _by_transform(
    queries: list[tuple[str | None, list[str], Image.Image]],
    scores: list[float],
    oks: list[bool],
    relevant_ids: set[int],
) -> dict[str, dict]:
    """recall@1, micro AP and recall at P0.99 over the queries (with and without an indexed
    original) that had each transform among their edits."""
    table: dict[str, dict] = {}
    for name in TRANSFORMS:
        ids = [i for i, (_, applied, _) in enumerate(queries) if name in applied]
        if not ids:
            continue
        relevant = sum(i in relevant_ids for i in ids)
        summary = _summary([scores[i] for i in ids], [oks[i] for i in ids], max(1, relevant))
        table[name] = summary
    return table


def _imagededup_top1(
    hasher: object,
    originals: list[Path],
    animals: Path,
    queries: list[tuple[str | None, list[str], Image.Image]],
    correct: Callable[[int, str | None], bool],
) -> tuple[list[float], list[bool]]:
    """Top-1 by hamming distance of imagededup's 64-bit hashes (score = 1 - d / 64)."""
    files = [str(p.absolute()) for p in originals]
    files += [
        str(p.absolute())
        for p in sorted((animals / "images").rglob("*"))
        if p.is_file() and p.suffix
    ]
    index_hashes, kept = [], []
    for f in files:
        h = hasher.encode_image(image_file=f)  # type: ignore[attr-defined]
        if h:
            index_hashes.append(int(h, 16))
            kept.append(f)
    bits = np.array([[(h >> i) & 1 for i in range(64)] for h in index_hashes], dtype=bool)
    scores, oks = [], []
    for i, (_, _, image) in enumerate(queries):
        h = int(hasher.encode_image(image_array=np.asarray(image)), 16)  # type: ignore[attr-defined]
        q = np.array([(h >> i) & 1 for i in range(64)], dtype=bool)
        distance = (bits != q).sum(axis=1)
        best = int(np.argmin(distance))
        scores.append(1.0 - distance[best] / 64)
        oks.append(correct(i, kept[best]))
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
    point = result.get("check_default_threshold")
    if point:
        lines.append(
            f"lookalike check verdicts at its default threshold: precision "
            f"{point['precision']:.3f}, recall {point['recall']:.3f} "
            f"({point['correct']} right of {point['copies_claimed']} copies claimed)"
        )
    lines.append(
        f"ground truth: {result['unlisted_resaves_skipped']} unlisted re-saves of indexed "
        f"originals left out of the unindexed queries; {result['unindexed_found_indexed']} "
        "unindexed queries found to have their photo indexed (SIFT judge)"
    )
    per = result.get("by_transform") or {}
    shown = [m for m in ("deep", "phash", "lookalike check") if m in per]
    if shown:
        lines.append("")
        lines.append(
            f"{'by transform':<13} {'queries':>7} {'w/ orig':>7}  "
            + "  ".join(f"{m + ' R@1/AP/R@P99':>26}" for m in shown)
        )
        for name, t in per[shown[0]].items():
            cells = []
            for m in shown:
                v = per[m].get(name)
                cells.append(
                    f"{v['recall_at_1']:.3f} / {v['micro_ap']:.3f} / {v['recall_at_p99']:.3f}"
                    if v
                    else "-"
                )
            lines.append(
                f"{name:<13} {t['queries']:>7} {t['with_original']:>7}  "
                + "  ".join(f"{c:>26}" for c in cells)
            )
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    seconds = {k: round(v, 1) for k, v in result.items() if k.endswith("_seconds")}
    lines.append(f"seconds: {seconds}")
    return "\n".join(lines)


MICRO_AP_GOAL = 0.9
RECALL_AT_P99_GOAL = 0.85


def copydetect_rows(result: dict) -> list[tuple[str, str, str, str]]:
    """Rows for ``python -m bench``'s table: each method beside the goals and the hashes."""
    if "skipped" in result:
        return [("(h) copy detection, DISC-style", "skipped", result["skipped"], "")]
    methods = result["methods"]
    best_hash = max((methods[m]["micro_ap"] for m in methods if "hash" in m), default=float("nan"))
    rows = [
        (
            f"(h) copy detection: {result['originals']} originals + "
            f"{result['indexed_images'] - result['originals']} distractors indexed",
            f"{result['originals'] + result['unindexed_queries']} queries",
            f"{result['unindexed_queries']} without an original",
            "",
        )
    ]
    for name, m in methods.items():
        ours = name == "lookalike check"
        rows.append(
            (
                f"    {name}: micro AP / recall@P0.99 / R@1",
                f"{m['micro_ap']:.3f} / {m['recall_at_p99']:.3f} / {m['recall_at_1']:.3f}",
                f"goal {MICRO_AP_GOAL} / {RECALL_AT_P99_GOAL}; best hash AP {best_hash:.3f}"
                if ours
                else "",
                (
                    "ok"
                    if m["micro_ap"] >= MICRO_AP_GOAL and m["recall_at_p99"] >= RECALL_AT_P99_GOAL
                    else "BELOW GOAL"
                )
                if ours
                else "",
            )
        )
    point = result.get("check_default_threshold")
    if point:
        rows.append(
            (
                "    lookalike check verdicts, default threshold",
                f"precision {point['precision']:.3f}, recall {point['recall']:.3f}",
                "goal: precision >= 0.99",
                "ok" if point["precision"] >= 0.99 else "BELOW GOAL",
            )
        )
    return rows


def main() -> None:
    result = measure_copy_detection()
    print(format_table(result))
    if "skipped" not in result:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2, default=float))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
