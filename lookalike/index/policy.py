"""The index each feature gets under the collection's settings, applied by the store.

:func:`fit` runs when the store brings an index up to the catalog: it rebuilds the index when
the chosen plan changed (the collection grew past a threshold, ``--index`` was changed), when
tombstones pile up (compaction), or when the backend changed; otherwise the store adds and
removes only what differs. Approximate indexes get the catalog as their source of exact vectors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lookalike.features.registry import FeatureInfo
from lookalike.index import choose
from lookalike.index.ann import AnnIndex, Plan, ivf_lists
from lookalike.index.flat import FlatIndex

#: Float features searched by faiss (cosine) are the ones the plans apply to.
_FLOAT = "flat"


def fetcher(catalog, info: FeatureInfo):
    """``ids -> vectors`` reading ``info``'s vectors from the catalog."""

    def fetch(ids: np.ndarray) -> np.ndarray:
        return catalog.vectors_for(info.name, info.width, [int(i) for i in ids], info.dtype)

    return fetch


def backend(catalog) -> dict | None:
    """The Milvus settings of the collection, or None for the local (faiss) backend."""
    from lookalike.index import milvus

    return milvus.read_backend(catalog)


def extension(catalog, kind: str) -> str | None:
    """The index file's extension when the backend decides it (Milvus), else None."""
    if kind in ("flat", "binary") and backend(catalog) is not None:
        return ".milvus"
    return None


def load(path: Path, info: FeatureInfo, kind: str, catalog):
    """Read an index file whose format the policy decides (None: the store's own)."""
    if path.suffix == ".milvus":
        from lookalike.index import milvus

        return milvus.MilvusIndex.load(path, info, catalog)
    if kind == _FLOAT:
        from lookalike.index import ann

        return ann.load(path, info.width, fetcher(catalog, info))
    if kind == "binary":
        from lookalike.index import mih

        return mih.load_binary(path, info.dim)
    return None


def attach(catalog, info: FeatureInfo, index) -> None:
    """Give an approximate index its source of exact vectors."""
    if isinstance(index, AnnIndex) and index.fetch is None:
        index.fetch = fetcher(catalog, info)


def _wanted_plan(catalog, info: FeatureInfo, n: int) -> Plan:
    return choose.choose(choose.read_settings(catalog), n, info.width)


def _stale(index, plan: Plan, n: int) -> bool:
    """Whether ``index`` must be rebuilt to follow ``plan`` at ``n`` vectors."""
    if isinstance(index, FlatIndex):
        return plan.kind != "flat"
    if not isinstance(index, AnnIndex):
        return False
    if index.plan != plan or index.needs_compaction():
        return True
    if plan.kind == "ivfpq":  # lists chosen for a much smaller collection
        return ivf_lists(n) >= 4 * index.lists()
    return False


def fit(catalog, info: FeatureInfo, kind: str, index, wanted: np.ndarray, progress: bool = False):
    """``index``, or a rebuilt one holding every vector of ``wanted`` (inside a read snapshot)."""
    settings = backend(catalog)
    if settings is not None and kind in ("flat", "binary"):
        from lookalike.index import milvus

        if not isinstance(index, milvus.MilvusIndex) or not index.same_place(settings):
            return milvus.MilvusIndex.create(settings, info, catalog)
        return index
    if kind == "binary":
        from lookalike.index import mih

        want = mih.kind_of(
            mih.new_binary(choose.binary_kind(choose.read_settings(catalog), len(wanted)), info.dim)
        )
        if mih.kind_of(index) != want or mih.needs_compaction(index) or _foreign(index):
            return mih.new_binary(want, info.dim)
        return index
    if kind != _FLOAT:
        return index
    plan = _wanted_plan(catalog, info, len(wanted))
    if not _stale(index, plan, len(wanted)) and not _foreign(index):
        return index
    if plan.kind == "flat":
        return FlatIndex(info.width)
    ids, vectors = catalog.vectors(info.name, info.width, info.dtype)
    report = None
    if progress or len(ids) >= 200_000:
        print(f"building a {plan.name} index of {len(ids):,} vectors ...", file=sys.stderr)
    return AnnIndex.build(plan, info.width, ids, vectors, fetcher(catalog, info), progress=report)


def _foreign(index) -> bool:
    """An index of another backend (Milvus) while the collection is local."""
    return type(index).__name__ == "MilvusIndex"


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
    from lookalike.index import milvus

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
        if hasattr(index, "update_metadata"):
            index.update_metadata(contents)


def describe(catalog) -> dict:
    """The index settings for ``info``: ``index``, ``memory_budget`` (bytes), ``backend``,
    ``uri`` (Milvus)."""
    settings = choose.read_settings(catalog)
    milvus = backend(catalog)
    return {
        "index": settings.index,
        "memory_budget": choose.budget(settings),
        "backend": "milvus" if milvus else "faiss",
        "uri": milvus["uri"] if milvus else None,
    }
