"""The table of index kinds: each kind's file extension and how to create, load and refit one.

:func:`of` names the kind a feature's index has under the collection's settings; the store and
the policy read everything else about kinds from :data:`KINDS`. Adding a kind is adding an entry
here and an index class declaring that ``kind`` and its ``capabilities``
(:mod:`lookalike.index.base`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from lookalike.catalog import Catalog
from lookalike.features.registry import FeatureInfo
from lookalike.index import choose, mih, milvus
from lookalike.index.ann import AnnIndex, Plan, ivf_lists
from lookalike.index.ann import load as load_float
from lookalike.index.base import VectorIndex
from lookalike.index.binary import BinaryIndex
from lookalike.index.classes import ClassIndex
from lookalike.index.exact import ExactIndex
from lookalike.index.flat import FlatIndex

#: Collections this many vectors or larger say so on stderr while their index is built.
ANNOUNCE_BUILD = 200_000


@dataclass(frozen=True)
class Kind:
    """One kind of index file.

    ``create(info, metric, catalog)``: an empty index (``catalog``: None outside a collection,
    for the kinds that do not need one); ``load(path, info, catalog)``: the index saved in
    ``path`` (raises when it is missing or damaged); ``fit(catalog, info, index, n, announce)``:
    ``index`` while it still suits the collection's settings at ``n`` vectors, else a new one to
    fill (the stale check).
    """

    name: str
    extension: str
    create: Callable[[FeatureInfo, str, Catalog | None], VectorIndex]
    load: Callable[[Path, FeatureInfo, Catalog], VectorIndex]
    fit: Callable[[Catalog, FeatureInfo, VectorIndex, int, bool], VectorIndex]


def fetcher(catalog: Catalog, info: FeatureInfo) -> Callable[[np.ndarray], np.ndarray]:
    """``ids -> vectors`` reading ``info``'s vectors from the catalog."""

    def fetch(ids: np.ndarray) -> np.ndarray:
        return catalog.vectors_for(info.name, info.width, [int(i) for i in ids], info.dtype)

    return fetch


def _kept(
    catalog: Catalog, info: FeatureInfo, index: VectorIndex, n: int, announce: bool
) -> VectorIndex:
    """Kinds without settings: an index is never stale."""
    return index


# -- flat: inner product with faiss, exact or approximate by the chosen plan ---------------------


def _stale_float(index: VectorIndex, plan: Plan, n: int) -> bool:
    """Whether the float ``index`` must be rebuilt to follow ``plan`` at ``n`` vectors."""
    if index.kind != "flat":  # another kind's: replaced by the caller
        return False
    if index.capabilities.exact:  # the exact FlatIndex
        return plan.kind != "flat"
    ann = cast(AnnIndex, index)
    if ann.plan != plan or ann.needs_compaction():
        return True
    if plan.kind == "ivfpq":  # lists chosen for a much smaller collection
        return ivf_lists(n) >= 4 * ann.lists()
    return False


def _fit_float(
    catalog: Catalog, info: FeatureInfo, index: VectorIndex, n: int, announce: bool
) -> VectorIndex:
    plan = choose.choose(choose.read_settings(catalog), n, info.width)
    if not _stale_float(index, plan, n) and index.kind == "flat":
        return index
    if plan.kind == "flat":
        return FlatIndex(info.width)
    ids, vectors = catalog.vectors(info.name, info.width, info.dtype)
    if announce or len(ids) >= ANNOUNCE_BUILD:
        print(f"building a {plan.name} index of {len(ids):,} vectors ...", file=sys.stderr)
    return AnnIndex.build(plan, info.width, ids, vectors, fetcher(catalog, info), progress=None)


# -- binary: Hamming with faiss, exact or multi-index hashing by size -----------------------------


def _fit_binary(
    catalog: Catalog, info: FeatureInfo, index: VectorIndex, n: int, announce: bool
) -> VectorIndex:
    chosen = choose.binary_kind(choose.read_settings(catalog), n)
    want = mih.kind_of(mih.new_binary(chosen, info.dim))
    if mih.kind_of(index) != want or mih.needs_compaction(index) or index.kind != "binary":
        return mih.new_binary(want, info.dim)
    return index


# -- milvus: the vectors in a Milvus collection ---------------------------------------------------


def _milvus_settings(catalog: Catalog | None) -> dict:
    settings = milvus.read_backend(catalog) if catalog is not None else None
    if settings is None:
        raise ValueError("the collection does not keep its vectors in Milvus")
    return settings


def _create_milvus(info: FeatureInfo, metric: str, catalog: Catalog | None) -> VectorIndex:
    return milvus.MilvusIndex.create(_milvus_settings(catalog), info, catalog)


def _fit_milvus(
    catalog: Catalog, info: FeatureInfo, index: VectorIndex, n: int, announce: bool
) -> VectorIndex:
    settings = _milvus_settings(catalog)
    if index.kind != "milvus" or not cast(milvus.MilvusIndex, index).same_place(settings):
        return milvus.MilvusIndex.create(settings, info, catalog)
    return index


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "flat",
            ".faiss",
            create=lambda info, metric, catalog: FlatIndex(info.width),
            # a FlatIndex, or an approximate AnnIndex re-scoring from the catalog
            load=lambda path, info, catalog: load_float(path, info.width, fetcher(catalog, info)),
            fit=_fit_float,
        ),
        Kind(
            "binary",
            ".bfaiss",
            create=lambda info, metric, catalog: BinaryIndex(info.dim),
            load=lambda path, info, catalog: mih.load_binary(path, info.dim),
            fit=_fit_binary,
        ),
        Kind(
            "exact",
            ".npz",
            create=lambda info, metric, catalog: ExactIndex(info.width, metric, info.dtype),
            load=lambda path, info, catalog: ExactIndex.load(
                path, info.width, info.metric, info.dtype
            ),
            fit=_kept,
        ),
        Kind(
            "classes",
            ".npz",
            create=lambda info, metric, catalog: ClassIndex(),
            load=lambda path, info, catalog: ClassIndex.load(path),
            fit=_kept,
        ),
        Kind(
            "milvus",
            ".milvus",
            create=_create_milvus,
            load=lambda path, info, catalog: milvus.MilvusIndex.load(path, info, catalog),
            fit=_fit_milvus,
        ),
    )
}

#: The local kinds whose vectors the Milvus backend keeps instead.
IN_MILVUS = ("flat", "binary")


def local(info: FeatureInfo, metric: str | None = None) -> Kind:
    """The kind searching ``info`` (under ``metric`` if it differs from the feature's own) on
    this machine: ``classes``, ``binary``, ``flat`` (cosine) or ``exact`` (the other metrics)."""
    if info.kind == "classes":
        return KINDS["classes"]
    if info.binary:
        return KINDS["binary"]
    return KINDS["flat" if (metric or info.metric) == "cosine" else "exact"]


def of(info: FeatureInfo, catalog: Catalog) -> Kind:
    """The kind of ``info``'s index under the collection's settings (Milvus or local)."""
    kind = local(info)
    if kind.name in IN_MILVUS and milvus.read_backend(catalog) is not None:
        return KINDS["milvus"]
    return kind


def of_file(path: Path, info: FeatureInfo) -> Kind:
    """The kind that reads the index file ``path`` of ``info`` (Milvus by its extension)."""
    if path.suffix == KINDS["milvus"].extension:
        return KINDS["milvus"]
    return local(info)
