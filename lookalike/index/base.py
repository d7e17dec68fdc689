"""What every vector index offers (:class:`VectorIndex`) and what each declares it can do.

An index class states its :class:`Capabilities` and the name of its entry in the table of
kinds (:mod:`lookalike.index.kinds`) as class attributes; callers read those instead of
probing for methods or classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeGuard

import numpy as np

__all__ = [
    "Capabilities",
    "FiltersItself",
    "KeepsVectors",
    "VectorIndex",
    "VectorsOf",
    "filters_itself",
    "keeps_vectors",
]

#: ``ids -> [n, D]``: the stored vectors of ``ids`` (all present), in that order.
VectorsOf = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Capabilities:
    """What an index kind can do beyond :class:`VectorIndex`.

    ``exact``: ``search`` ranks every vector by the true metric (no approximate structure);
    ``filters_itself``: it holds the files' metadata and applies filters itself
    (:class:`FiltersItself`); ``keeps_vectors``: it answers ``vectors_of`` (from memory, or from
    the catalog it reads, :class:`KeepsVectors`).
    """

    exact: bool
    filters_itself: bool = False
    keeps_vectors: bool = False


class VectorIndex(Protocol):
    """A store of vectors (or codes) under 64-bit ids, searched by the k nearest."""

    capabilities: ClassVar[Capabilities]
    #: The entry of :data:`lookalike.index.kinds.KINDS` that creates, saves and loads it.
    kind: ClassVar[str]

    def __len__(self) -> int: ...

    def ids(self) -> np.ndarray: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: Path) -> None: ...


class KeepsVectors(VectorIndex, Protocol):
    """An index that gives back the stored vectors of ids."""

    def vectors_of(self, ids: np.ndarray) -> np.ndarray: ...


class FiltersItself(VectorIndex, Protocol):
    """An index that keeps the files' metadata beside its vectors and filters on it (Milvus)."""

    def search_filtered(
        self, queries: np.ndarray, k: int, where, folder, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def update_metadata(self, ids: np.ndarray) -> None: ...


def keeps_vectors(index: VectorIndex) -> TypeGuard[KeepsVectors]:
    """Whether ``index`` declares ``keeps_vectors``."""
    return index.capabilities.keeps_vectors


def filters_itself(index: VectorIndex) -> TypeGuard[FiltersItself]:
    """Whether ``index`` declares ``filters_itself``."""
    return index.capabilities.filters_itself
