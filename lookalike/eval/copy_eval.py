"""``lookalike eval --copies DIR``: copy detection measured on a user's own images.

Half of the images (at most ``originals``) are picked as originals with a fixed seed; the rest
of the folder is indexed with them as distractors, except a held-out share of the originals
that is NOT indexed, so that a confident wrong answer costs precision. Every original gets
random copies from :func:`lookalike.eval.copies.make_copy` (1-3 edits: crops, rescales, JPEG,
rotation, flips, colour, text, overlays, borders, screenshots...). Each copy's best match and
its cosine score are the predictions; figures as in the DISC 2021 challenge
(:mod:`lookalike.eval.copy_metrics`): micro average precision, recall at precision 0.99, recall@1.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.eval.copy_metrics import micro_average_precision, recall_at_1, recall_at_precision
from lookalike.eval.labels import image_files

if TYPE_CHECKING:
    from PIL import Image

ORIGINALS = 100
COPIES_PER_ORIGINAL = 2
HELD_OUT_SHARE = 0.5
BATCH = 32


def run_copy_eval(
    folder: Path,
    originals: int = ORIGINALS,
    copies: int = COPIES_PER_ORIGINAL,
    seed: int = 0,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> dict:
    """Index ``folder`` (minus the held-out originals) in a temporary index and measure."""
    from lookalike.collection import open as open_collection
    from lookalike.eval.copies import make_copy
    from lookalike.images import ImageError, load_image

    say = say or (lambda _: None)
    files = image_files(Path(folder).expanduser())
    if len(files) < 4:
        raise ValueError(f"copy detection needs at least 4 images in {folder}, found {len(files)}")
    rnd = random.Random(seed)
    picked = rnd.sample(files, min(originals, len(files) // 2))
    held = set(picked[: int(len(picked) * HELD_OUT_SHARE)])
    indexed = [f for f in files if f not in held]
    rng = np.random.default_rng(seed)
    queries: list[tuple[Path, bool, list[str], Image.Image]] = []
    for f in picked:
        try:
            image = load_image(str(f), min_side=0).image
        except ImageError:
            continue
        for _ in range(copies):
            copy, applied = make_copy(image, rng)
            queries.append((f, f not in held, applied, copy))
    with tempfile.TemporaryDirectory(prefix="lookalike-copies-") as tmp:
        col = open_collection(Path(tmp) / "index")
        try:
            say(f"indexing {len(indexed)} images ({len(held)} originals held out) ...")
            col.add(indexed, progress=progress)
            say(f"searching {len(queries)} copies ...")
            scores, matches = [], []
            for b in range(0, len(queries), BATCH):
                chunk = queries[b : b + BATCH]
                vectors = col.embed([q[3] for q in chunk])
                for q, found in zip(chunk, col.search_vectors(vectors, k=1), strict=True):
                    top = found[0] if found else None
                    scores.append(top.score if top else -1.0)
                    hit = top is not None and Path(top.path).resolve() == q[0].resolve()
                    matches.append(bool(hit and q[1]))
        finally:
            col.close()
    n_relevant = sum(1 for q in queries if q[1])
    if n_relevant == 0:
        raise ValueError("no copy has its original indexed; use a larger folder")
    recall99, threshold = recall_at_precision(scores, matches, n_relevant, 0.99)
    return {
        "folder": str(folder),
        "indexed": len(indexed),
        "held_out_originals": len(held),
        "queries": len(queries),
        "queries_with_original": n_relevant,
        "micro_ap": micro_average_precision(scores, matches, n_relevant),
        "recall_at_p99": recall99,
        "threshold_at_p99": threshold if np.isfinite(threshold) else None,
        "recall_at_1": recall_at_1(
            [m for m, q in zip(matches, queries, strict=True) if q[1]], n_relevant
        ),  # fmt: skip
    }


def copy_table(r: dict) -> str:
    """The human-readable summary."""
    thr = r["threshold_at_p99"]
    return "\n".join([
        f"copy detection on {r['folder']}: {r['indexed']} images indexed, "
        f"{r['held_out_originals']} originals held out",
        f"{r['queries']} generated copies ({r['queries_with_original']} with their original "
        "indexed)",
        f"recall@1            {r['recall_at_1']:.3f}",
        f"micro AP            {r['micro_ap']:.3f}",
        f"recall @ prec. 0.99 {r['recall_at_p99']:.3f}"
        + (f"  (cosine >= {thr:.3f})" if thr is not None else ""),
    ])  # fmt: skip
