"""The search index of every feature of a collection, kept in step with the catalog.

The catalog is the store of record; each feature's index is a cache saved as
``NAME.gGENERATION.EXT`` for the catalog's generation counter of that feature. An older,
missing or damaged file is brought up to date by adding and removing only the vectors that
differ, so a crash between a commit and the index save costs a little work, never correctness.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

from lookalike.catalog import Catalog
from lookalike.features.projection import load_projection, projection_file
from lookalike.features.registry import CLASSES, CLIP_NAME, DEEP, FeatureInfo, all_features
from lookalike.index import policy
from lookalike.index.exact import ExactIndex
from lookalike.index.expanded import ExpandedIndex
from lookalike.index.flat import FlatIndex


def index_kind(info: FeatureInfo) -> str:
    """``"binary"`` (Hamming, faiss), ``"flat"`` (inner product, faiss), ``"exact"`` (numpy) or
    ``"classes"`` (sparse class probabilities, :mod:`lookalike.index.classes`)."""
    if info.kind == "classes":
        return "classes"
    if info.binary:
        return "binary"
    return "flat" if info.metric == "cosine" else "exact"


_EXTENSIONS = {"binary": ".bfaiss", "flat": ".faiss", "exact": ".npz", "classes": ".npz"}


def new_index(info: FeatureInfo, metric: str | None = None):
    """An empty index for ``info`` (under ``metric`` if it differs from the feature's own)."""
    metric = metric or info.metric
    if info.kind == "classes":
        from lookalike.index.classes import ClassIndex

        return ClassIndex()
    if info.binary:
        from lookalike.index.binary import BinaryIndex

        return BinaryIndex(info.dim)
    if metric == "cosine":
        return FlatIndex(info.width)
    return ExactIndex(info.width, metric, info.dtype)


def _load(path: Path, info: FeatureInfo):
    kind = index_kind(info)
    if kind == "classes":
        from lookalike.index.classes import ClassIndex

        return ClassIndex.load(path)
    if kind == "binary":
        from lookalike.index.binary import BinaryIndex

        return BinaryIndex.load(path, info.dim)
    if kind == "flat":
        return FlatIndex.load(path, info.width)
    return ExactIndex.load(path, info.width, info.metric, info.dtype)


class IndexStore:
    """Per-feature search indexes of one collection folder."""

    def __init__(self, folder: Path, catalog: Catalog) -> None:
        self.folder = folder
        self.catalog = catalog
        self._cache: dict[str, tuple[int, object]] = {}
        self._expanded: tuple[tuple[int, str, int], ExpandedIndex] | None = None

    def path(self, info: FeatureInfo, generation: int) -> Path:
        kind = index_kind(info)
        extension = policy.extension(self.catalog, kind) or _EXTENSIONS[kind]
        return self.folder / f"{info.name}.g{generation}{extension}"

    def files(self, name: str) -> list[tuple[int, Path]]:
        """``(generation, path)`` of the index files of feature ``name``, newest first."""
        found = []
        for path in self.folder.glob(f"{name}.g*"):
            number = path.name[len(name) + 2 :].split(".")[0]
            if number.isdigit() and not path.name.endswith(".tmp"):
                found.append((int(number), path))
        return sorted(found, reverse=True)

    def get(self, info: FeatureInfo):
        """The index of ``info`` for the catalog's current generation of it."""
        generation = self.catalog.generation(info.name)
        cached = self._cache.get(info.name)
        if cached is not None and cached[0] == generation:
            return cached[1]
        index = self._read(self.path(info, generation), info)
        if index is None:
            index, generation = self._sync(info, cached[1] if cached else None)
        policy.attach(self.catalog, info, index)
        self._cache[info.name] = (generation, index)
        return index

    def _read(self, path: Path, info: FeatureInfo):
        try:
            index = policy.load(path, info, index_kind(info), self.catalog)
            return index if index is not None else _load(path, info)
        except Exception:  # missing or damaged: the catalog can rebuild it
            return None

    def _sync(self, info: FeatureInfo, base) -> tuple[object, int]:
        """Bring the newest usable index up to the catalog: add and remove what differs."""
        if base is None:
            for _, path in self.files(info.name):
                base = self._read(path, info)
                if base is not None:
                    break
        index = base if base is not None else new_index(info)
        with self.catalog.snapshot():  # generation and vectors agree
            generation = self.catalog.generation(info.name)
            wanted = self.catalog.vector_ids(info.name)
            # the collection's settings choose the kind (auto: by size); rebuild when it changed
            index = policy.fit(self.catalog, info, index_kind(info), index, wanted)
            present = index.ids()
            stale = np.setdiff1d(present, wanted)
            missing = np.setdiff1d(wanted, present)
            vectors = self.catalog.vectors_for(info.name, info.width, missing.tolist(), info.dtype)
        index.remove(stale)
        index.add(missing, vectors)
        # a read-only index folder still searches, from memory
        with contextlib.suppress(OSError):
            index.save(self.path(info, generation))
        return index, generation

    def refresh(self, infos: list[FeatureInfo]) -> None:
        """After a write: each feature's current index is on disk; older files are dropped."""
        keep = set()
        for info in infos:
            current = self.path(info, self.catalog.generation(info.name))
            if not current.exists():
                self.get(info)
            keep.add(current)
            if not current.exists():  # could not be written (disk full): keep the last good one
                keep.update(path for _, path in self.files(info.name))
        for name in [*all_features(), CLASSES.name, CLIP_NAME]:
            for stale in self.folder.glob(f"{name}.g*"):
                # older generations, dropped features, crash leftovers (never a folder: what
                # is not ours to delete is for `lookalike verify --repair` to move aside)
                if stale not in keep and not stale.is_dir():
                    stale.unlink(missing_ok=True)

    def discard(self, path: Path) -> Path | None:
        """Delete the index file ``path``; a folder in its place is moved aside (renamed
        ``aside-NAME-TIME``, never deleted) and its new path returned."""
        if not path.is_dir() or path.is_symlink():
            path.unlink(missing_ok=True)
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            aside = path.with_name(f"aside-{path.name}-{stamp}{f'-{n}' if n else ''}")
            if not os.path.lexists(aside):
                path.rename(aside)
                return aside
        raise OSError(f"no free name to move {path} aside")

    def bytes_on_disk(self, name: str) -> int:
        return sum(path.stat().st_size for _, path in self.files(name) if path.is_file())

    def expanded(self) -> ExpandedIndex:
        """The deep search with re-ranking (:mod:`lookalike.index.expanded`) over the stored deep
        vectors and the collection's tuning, kept while both stay the same."""
        tuning = projection_file(self.catalog, self.folder)
        stamp = tuning.stat().st_mtime_ns if tuning is not None and tuning.is_file() else 0
        key = (self.catalog.generation(DEEP.name), str(tuning), stamp)
        if self._expanded is None or self._expanded[0] != key:
            ids, vectors = self.catalog.vectors(DEEP.name, DEEP.width, DEEP.dtype)
            projection = load_projection(self.catalog, self.folder)
            self._expanded = (key, ExpandedIndex(ids, vectors, projection))
        return self._expanded[1]

    def read(self, path: Path, info: FeatureInfo) -> object | None:
        """The index of ``info`` saved in ``path``, or None when it is missing or damaged."""
        return self._read(path, info)

    def forget(self) -> None:
        """Drop the indexes held in memory: the next search reads them from disk again."""
        self._cache.clear()
        self._expanded = None
