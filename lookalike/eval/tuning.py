"""Fitting the projection of ``lookalike tune`` to labelled images, and measuring it honestly.

:func:`evaluate_splits` fits it on some images and measures it on others it never saw, once split
by image (seen labels, new images) and once by label (new labels); :func:`tune_collection` then
fits it on every labelled image and stores it with the collection, whose search uses it. The
projection itself is :mod:`lookalike.features.projection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.eval.labels import LabelsError, load_labelled_set
from lookalike.eval.retrieval import evaluate_scores
from lookalike.features.pooling import l2_normalize
from lookalike.features.projection import (
    DEFAULT_SHRINKAGE,
    Projection,
    TuneError,
    fit_many,
    load_projection,
    save_projection,
)
from lookalike.features.registry import DEEP

if TYPE_CHECKING:
    from lookalike.collection import Collection
    from lookalike.index.centred_search import ExpandedIndex

TEST_SHARE = 0.5
SHRINKAGES = (0.8, 0.9, 0.95)
DIMS = (None, 256, 64)


# -- honest evaluation --------------------------------------------------------------------------


def split_by_image(labels: np.ndarray, test_share: float = TEST_SHARE, seed: int = 0) -> np.ndarray:
    """Boolean test mask: ``test_share`` of each label's images (labels keep both sides)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        test[rows[: int(round(len(rows) * test_share))]] = True
    return test


def split_by_class(labels: np.ndarray, test_share: float = TEST_SHARE, seed: int = 0) -> np.ndarray:
    """Boolean test mask: every image of ``test_share`` of the labels (at least one label on
    each side)."""
    names = np.random.default_rng(seed).permutation(np.unique(labels))
    n_test = min(max(1, int(round(len(names) * test_share))), len(names) - 1)
    return np.isin(labels, names[:n_test])


def _map(vectors: np.ndarray, labels: np.ndarray, excluded: np.ndarray) -> float:
    blocks = [
        (slice(b, b + 512), vectors[b : b + 512] @ vectors.T) for b in range(0, len(vectors), 512)
    ]
    return evaluate_scores("", blocks, list(labels), excluded).overall["mAP"]


def choose_setting(
    vectors: np.ndarray, labels: np.ndarray, seed: int = 0
) -> tuple[float, int | None]:
    """The ``(shrinkage, dim)`` of ``SHRINKAGES`` x ``DIMS`` with the best mean mAP over two
    inner splits of the given images (by image, and by label when there are 4 labels or more):
    what generalises to new images and new labels, not what memorises."""
    splits = [split_by_image(labels, seed=seed + 1)]
    names, counts = np.unique(labels, return_counts=True)
    if np.sum(counts >= 2) >= 4:
        splits.append(split_by_class(labels, seed=seed + 1))
    dims = [dim for dim in DIMS if dim is None or dim < vectors.shape[1]]
    totals: dict[tuple[float, int | None], list[float]] = {}
    for test in splits:
        try:
            fitted = fit_many(vectors[~test], labels[~test], SHRINKAGES, dims)
        except TuneError:
            continue
        rows = np.flatnonzero(test)
        for key, p in fitted.items():
            value = _map(p.project(vectors[rows]), labels[rows], np.eye(len(rows), dtype=bool))
            totals.setdefault(key, []).append(value)
    if not totals:
        return DEFAULT_SHRINKAGE, None
    return max(totals, key=lambda key: float(np.mean(totals[key])))


@dataclass
class SplitResult:
    """mAP of the test images among themselves, before and after a projection fitted on the
    training images only."""

    split: str
    train_images: int
    test_images: int
    test_labels: int
    before: float
    after: float
    shrinkage: float
    dim: int

    def as_dict(self) -> dict:
        return {
            "split": self.split,
            "train_images": self.train_images,
            "test_images": self.test_images,
            "test_labels": self.test_labels,
            "map_before": self.before,
            "map_after": self.after,
            "gain": self.after - self.before,
            "shrinkage": self.shrinkage,
            "dim": self.dim,
        }


def evaluate_split(
    vectors: np.ndarray,
    labels: np.ndarray,
    test: np.ndarray,
    split: str,
    excluded: np.ndarray | None = None,
) -> SplitResult:
    """Fit on ``~test`` (shrinkage chosen there too), measure on ``test`` alone."""
    labels = np.asarray(labels)
    train = ~test
    shrinkage, dim = choose_setting(vectors[train], labels[train])
    p = Projection.fit(vectors[train], labels[train], shrinkage, dim)
    rows = np.flatnonzero(test)
    exc = np.eye(len(rows), dtype=bool) if excluded is None else excluded[np.ix_(rows, rows)]
    before = _map(l2_normalize(vectors[rows]), labels[rows], exc)
    after = _map(p.project(vectors[rows]), labels[rows], exc)
    return SplitResult(
        split,
        int(train.sum()),
        len(rows),
        len(np.unique(labels[rows])),
        before,
        after,
        shrinkage,
        p.dim,
    )


def evaluate_splits(
    vectors: np.ndarray, labels: np.ndarray, excluded: np.ndarray | None = None, seed: int = 0
) -> list[SplitResult]:
    """The by-image and by-label splits (the latter only with at least 2 labels with 2 or more
    images on each side)."""
    labels = np.asarray(labels)
    out = [evaluate_split(vectors, labels, split_by_image(labels, seed=seed), "image", excluded)]
    names, counts = np.unique(labels, return_counts=True)
    if np.sum(counts >= 2) >= 4:
        keep = np.isin(labels, names[counts >= 2])
        test = split_by_class(labels, seed=seed) & keep
        train_ok = np.sum(counts[np.isin(names, labels[~test & keep])] >= 2) >= 2
        if train_ok:
            out.append(evaluate_split(vectors, labels, test, "label", excluded))
    return out


# -- stored with a collection and used by its search --------------------------------------------


def load_tuning(col: Collection) -> Projection | None:
    """The collection's stored projection, or None when it has not been tuned."""
    return load_projection(col.catalog, col.folder)


def save_tuning(col: Collection, projection: Projection | None) -> None:
    """Store ``projection`` with the collection (None forgets the tuning); search uses it."""
    save_projection(col.catalog, col.folder, projection)


def expanded_index(col: Collection) -> ExpandedIndex:
    """The collection's re-ranking search over its deep vectors (kept while they and the
    tuning stay the same)."""
    return col.store.expanded()


@dataclass
class TuneReport:
    """What ``lookalike tune`` did: the splits' figures and the stored projection."""

    images: int
    labels: int
    splits: list[SplitResult]
    shrinkage: float
    dim: int
    stored: bool

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "labels": self.labels,
            "splits": [s.as_dict() for s in self.splits],
            "shrinkage": self.shrinkage,
            "dim": self.dim,
            "stored": self.stored,
        }


def tune_collection(
    col: Collection, vectors: np.ndarray, labels: list[str], excluded: np.ndarray | None = None,
    store: bool = True,
) -> TuneReport:  # fmt: skip
    """Measure the projection on held-out splits, then fit it on every labelled image and
    store it with ``col`` (unless ``store`` is False)."""
    labels_arr = np.asarray(labels)
    splits = evaluate_splits(vectors, labels_arr, excluded)
    shrinkage, dim = choose_setting(vectors, labels_arr)
    projection = Projection.fit(vectors, labels_arr, shrinkage, dim)
    if store:
        save_tuning(col, projection)
    return TuneReport(len(labels), len(set(labels)), splits, shrinkage, projection.dim, store)


def labelled_vectors(
    col: Collection, folder: Path, labels: Path | None, walk: bool = True
) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """The deep vectors of the labelled images of ``folder`` that ``col`` has indexed, their
    labels, the ``[N, N]`` duplicate exclusions and notes (labels matching no file, labelled
    images not indexed, single-image labels). ``walk=False``: only the files the labels name
    (see :func:`lookalike.eval.labels.load_labelled_set`)."""
    data = load_labelled_set(folder, labels, walk=walk)
    rows = col.catalog.files_by_path()
    content = [getattr(rows.get(str(p.absolute())), "content_id", None) for p in data.paths]
    keep = [i for i, c in enumerate(content) if c is not None]
    notes = []
    if len(keep) < len(data):
        missing = [str(data.paths[i]) for i, c in enumerate(content) if c is None]
        notes.append(
            f"{len(missing)} labelled image(s) are not in the index (e.g. {missing[0]}); "
            "index them first to use them"
        )
    if len(keep) < 2:
        raise LabelsError("fewer than 2 labelled images are in the index; run `lookalike index`")
    data = data.subset(keep)
    ids, vectors = col.catalog.vectors(DEEP.name, DEEP.width, DEEP.dtype)
    content_ids = np.asarray([content[i] for i in keep], dtype=np.int64)
    found = np.searchsorted(ids, content_ids)
    return vectors[found], data.labels, data.excluded(), notes + data.notes()
