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
from typing import cast

import numpy as np

from lookalike.catalog import Catalog
from lookalike.features.projection import load_projection, projection_file
from lookalike.features.registry import CLASSES, CLIP_NAME, DEEP, FeatureInfo, all_features
from lookalike.index import kinds, policy
from lookalike.index.base import VectorIndex, VectorsOf, keeps_vectors
from lookalike.index.centred_search import ExpandedIndex
from lookalike.index.classes import ClassIndex


def new_index(info: FeatureInfo, metric: str | None = None) -> VectorIndex:
    """An empty index for ``info`` on this machine (under ``metric`` if it differs from the
    feature's own)."""
    return kinds.local(info, metric).create(info, metric or info.metric, None)


class IndexStore:
    """Per-feature search indexes of one collection folder."""

    def __init__(self, folder: Path, catalog: Catalog) -> None:
        self.folder = folder
        self.catalog = catalog
        self._cache: dict[str, tuple[int, VectorIndex]] = {}
        self._expanded: tuple[tuple[int, str, int], ExpandedIndex] | None = None

    def path(self, info: FeatureInfo, generation: int) -> Path:
        extension = kinds.of(info, self.catalog).extension
        return self.folder / f"{info.name}.g{generation}{extension}"

    def files(self, name: str) -> list[tuple[int, Path]]:
        """``(generation, path)`` of the index files of feature ``name``, newest first."""
        found = []
        for path in self.folder.glob(f"{name}.g*"):
            number = path.name[len(name) + 2 :].split(".")[0]
            if number.isdigit() and not path.name.endswith(".tmp"):
                found.append((int(number), path))
        return sorted(found, reverse=True)

    def get(self, info: FeatureInfo) -> VectorIndex:
        """The index of ``info`` for the catalog's current generation of it."""
        generation = self.catalog.generation(info.name)
        cached = self._cache.get(info.name)
        if cached is not None and cached[0] == generation:
            return cached[1]
        index = self._read(self.path(info, generation), info)
        if index is None:
            index, generation = self._sync(info, cached[1] if cached else None)
        self._cache[info.name] = (generation, index)
        return index

    def vectors_of(self, info: FeatureInfo) -> VectorsOf:
        """``ids -> vectors`` of ``info``: from its index when that keeps them, else from the
        catalog."""
        index = self.get(info)
        if keeps_vectors(index):
            return index.vectors_of

        def from_catalog(ids: np.ndarray) -> np.ndarray:
            return self.catalog.vectors_for(info.name, info.width, ids.tolist(), info.dtype)

        return from_catalog

    def class_index(self) -> ClassIndex:
        """The index of the images' class probabilities (the ``classes`` feature)."""
        index = self.get(CLASSES)
        if index.kind != "classes":
            raise TypeError(f"the {CLASSES.name} feature has a {index.kind} index")
        return cast(ClassIndex, index)

    def _read(self, path: Path, info: FeatureInfo) -> VectorIndex | None:
        try:
            return kinds.of_file(path, info).load(path, info, self.catalog)
        except Exception:  # missing or damaged: the catalog can rebuild it
            return None

    def _sync(self, info: FeatureInfo, base: VectorIndex | None) -> tuple[VectorIndex, int]:
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
            index = policy.fit(self.catalog, info, index, wanted)
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
        """The deep search with re-ranking (:mod:`lookalike.index.centred_search`) over the
        stored deep vectors and the collection's tuning, kept while both stay the same."""
        tuning = projection_file(self.catalog, self.folder)
        stamp = tuning.stat().st_mtime_ns if tuning is not None and tuning.is_file() else 0
        key = (self.catalog.generation(DEEP.name), str(tuning), stamp)
        if self._expanded is None or self._expanded[0] != key:
            ids, vectors = self.catalog.vectors(DEEP.name, DEEP.width, DEEP.dtype)
            projection = load_projection(self.catalog, self.folder)
            self._expanded = (key, ExpandedIndex(ids, vectors, projection))
        return self._expanded[1]

    def read(self, path: Path, info: FeatureInfo) -> VectorIndex | None:
        """The index of ``info`` saved in ``path``, or None when it is missing or damaged."""
        return self._read(path, info)

    def forget(self) -> None:
        """Drop the indexes held in memory: the next search reads them from disk again."""
        self._cache.clear()
        self._expanded = None
