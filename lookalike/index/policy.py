"""The collection's index settings (``--index``, ``--memory-budget``, ``--backend``), applied.

:func:`fit` runs when the store brings an index up to the catalog: through the kind's entry in
:mod:`lookalike.index.kinds` it rebuilds the index when the chosen plan changed (the collection
grew past a threshold, ``--index`` was changed), when tombstones pile up (compaction), or when
the backend changed; otherwise the store adds and removes only what differs.
"""

from __future__ import annotations

import numpy as np

from lookalike.features.registry import FeatureInfo
from lookalike.index import choose, kinds, milvus
from lookalike.index.base import VectorIndex, filters_itself


def backend(catalog) -> dict | None:
    """The Milvus settings of the collection, or None for the local (faiss) backend."""
    return milvus.read_backend(catalog)


def fit(
    catalog, info: FeatureInfo, index: VectorIndex, wanted: np.ndarray, progress: bool = False
) -> VectorIndex:
    """``index``, or a new one to fill with every vector of ``wanted`` (inside a read
    snapshot) when the settings of its kind (:mod:`lookalike.index.kinds`) call for another."""
    return kinds.of(info, catalog).fit(catalog, info, index, len(wanted), progress)


def check_options(
    catalog,
    index: str | None = None,
    memory_budget: str | int | None = None,
    backend: str | None = None,
    uri: str | None = None,
) -> None:
    """ValueError when an option of :func:`apply_options` is malformed (before any work)."""
    current = choose.read_settings(catalog)
    choose.check_settings(
        choose.Settings(
            index=index or current.index,
            memory_budget=(
                choose.parse_size(memory_budget)
                if memory_budget is not None
                else current.memory_budget
            ),
            binary=current.binary,
        )
    )
    if backend not in (None, "faiss", "milvus"):
        raise ValueError(f"unknown backend {backend!r}; choose faiss or milvus")
    if backend == "milvus" and not uri and backend_of(catalog) is None:
        raise ValueError("--backend milvus needs --uri (http://HOST:19530 or a Milvus Lite file)")
    if uri and backend is None and backend_of(catalog) is None:
        raise ValueError("--uri is for --backend milvus")


def backend_of(catalog) -> dict | None:
    return backend(catalog)


def apply_options(
    catalog,
    index: str | None = None,
    memory_budget: str | int | None = None,
    backend: str | None = None,
    uri: str | None = None,
) -> bool:
    """Record the index options (inside a write transaction); whether anything changed.

    A change marks every feature as changed, so the store rebuilds its index under the new
    settings when the run ends.
    """
    current = choose.read_settings(catalog)
    settings = choose.Settings(
        index=(index or current.index).lower(),
        memory_budget=(
            choose.parse_size(memory_budget) if memory_budget is not None else current.memory_budget
        ),
        binary=current.binary,
    )
    changed = choose.write_settings(catalog, settings)
    if backend is not None or uri is not None:
        changed |= milvus.write_backend(catalog, backend or "milvus", uri)
    if changed:
        catalog.bump_generation()
    return changed


def metadata_changed(store, infos: list[FeatureInfo], paths) -> None:
    """Carry metadata changes of ``paths`` (None: every path) to a backend that filters on
    its own copy (Milvus); nothing for faiss, which filters through the catalog."""
    if backend(store.catalog) is None:
        return
    contents = store.catalog.content_ids_of_paths(paths)
    if not len(contents):
        return
    for info in infos:
        index = store.get(info)
        if filters_itself(index):
            index.update_metadata(contents)


def describe(catalog) -> dict:
    """The index settings for ``info``: ``index``, ``memory_budget`` (bytes), ``backend``,
    ``uri`` (Milvus)."""
    settings = choose.read_settings(catalog)
    remote = backend(catalog)
    return {
        "index": settings.index,
        "memory_budget": choose.budget(settings),
        "backend": "milvus" if remote else "faiss",
        "uri": remote["uri"] if remote else None,
    }
