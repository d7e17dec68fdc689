"""Approximate inner-product search with faiss (HNSW, HNSW over SQ8, IVF-PQ, optional PCA).

An :class:`AnnIndex` wraps a faiss ``IndexIDMap`` around the approximate structure. None of
these structures can drop vectors cheaply, so :meth:`AnnIndex.remove` leaves a tombstone: the
entry's id becomes -1 in the id map (so it is saved with the index) and every search skips it
with an id selector. :meth:`AnnIndex.needs_compaction` tells the store when to rebuild.

Lossy codes (SQ8, PQ, PCA) are re-scored exactly: the best ``refine`` x ``k`` candidates'
vectors come from ``fetch`` (the catalog, the store of record) and are ordered by their exact
inner product. Small filtered searches score the allowed vectors directly the same way.
Files are read memory-mapped (``IO_FLAG_MMAP_IFC``); the first write makes a private copy.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np

from lookalike.atomic import write_atomic
from lookalike.index import subset
from lookalike.index.base import Capabilities
from lookalike.index.flat import MISSING_SCORE, FlatIndex, _as_ids, _as_vectors, id_map

Fetch = Callable[[np.ndarray], np.ndarray]

#: Index kinds by name; ``pcaN-`` in front of one reduces vectors to N dimensions first.
KINDS = ("flat", "hnsw", "hnsw-sq8", "ivfpq")
#: Share of tombstones past which the store rebuilds an index.
COMPACT_FRACTION = 0.2
HNSW_M = 32
EF_CONSTRUCTION = 40
EF_SEARCH = 64
#: Candidates re-scored exactly per result wanted, for lossy codes.
REFINE = {"hnsw": 1, "hnsw-sq8": 2, "ivfpq": 10}
_LIVE = faiss.IDSelectorRange(0, 1 << 62)  # skips tombstones (id -1)
#: Query batches up to this size are projected by numpy, not faiss (see AnnIndex._search).
SMALL_BATCH = 8


@dataclass(frozen=True)
class Plan:
    """What to build: a kind of :data:`KINDS` and an optional PCA dimension (0: none)."""

    kind: str
    pca: int = 0

    @property
    def name(self) -> str:
        return (f"pca{self.pca}-" if self.pca else "") + self.kind

    @property
    def lossy(self) -> bool:
        return self.kind in ("hnsw-sq8", "ivfpq") or self.pca > 0


def parse_plan(text: str) -> Plan:
    """``"hnsw"``, ``"pca256-ivfpq"`` ... as a :class:`Plan`; ValueError names the choices."""
    match = re.fullmatch(r"(?:pca(\d+)-)?([a-z0-9-]+)", text.strip().lower())
    if not match or match.group(2) not in KINDS or (match.group(1) and match.group(2) == "flat"):
        raise ValueError(
            f"unknown index {text!r}; choose auto, {', '.join(KINDS)}, or pcaN-KIND "
            "(e.g. pca256-hnsw)"
        )
    return Plan(match.group(2), int(match.group(1) or 0))


def pq_size(dim: int) -> int:
    """PQ sub-quantisers (bytes per vector) for ``dim``: the largest divisor of it up to
    dim / 8 and 64."""
    want = max(1, min(64, dim // 8))
    return max(m for m in range(1, want + 1) if dim % m == 0)


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 4 sqrt(n), with at least 39 vectors per list."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39))


def _factory(plan: Plan, dim: int, n: int) -> tuple[str, int]:
    prefix = f"PCA{plan.pca}," if plan.pca else ""
    inner_dim = plan.pca or dim
    if plan.kind == "hnsw":
        body = f"HNSW{HNSW_M},Flat"
    elif plan.kind == "hnsw-sq8":
        body = f"HNSW{HNSW_M},SQ8"
    elif plan.kind == "ivfpq":
        bits = max(1, min(8, int(math.log2(max(n // 39, 2)))))  # 39 training points a centroid
        body = f"IVF{ivf_lists(n)},PQ{pq_size(inner_dim)}x{bits}"
    else:
        raise ValueError(f"{plan.kind} is not an approximate index")
    # PCA centres the vectors, which changes inner products but not Euclidean distances
    metric = faiss.METRIC_L2 if plan.pca else faiss.METRIC_INNER_PRODUCT
    return prefix + body, metric


def _leaf(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def plan_of(index: faiss.Index) -> Plan:
    """The :class:`Plan` a faiss index was built from."""
    outer = faiss.downcast_index(index)
    inner = faiss.downcast_index(outer.index) if isinstance(outer, faiss.IndexIDMap) else outer
    pca = 0
    if isinstance(inner, faiss.IndexPreTransform):
        pca = faiss.downcast_index(inner.index).d
    leaf = _leaf(index)
    if isinstance(leaf, faiss.IndexHNSW):
        storage = faiss.downcast_index(leaf.storage)
        return Plan("hnsw-sq8" if isinstance(storage, faiss.IndexScalarQuantizer) else "hnsw", pca)
    if isinstance(leaf, faiss.IndexIVFPQ):
        return Plan("ivfpq", pca)
    return Plan("flat", pca)


class AnnIndex:
    """Approximate inner-product (cosine on unit vectors) search with 64-bit ids.

    ``fetch(ids) -> float32 [n, dim]`` gives exact vectors (for re-scoring and small filtered
    searches); without it lossy indexes return their approximate scores.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(exact=False, keeps_vectors=True)
    kind: ClassVar[str] = "flat"

    def __init__(self, dim: int, index: faiss.Index, fetch: Fetch | None = None) -> None:
        self.dim = dim
        if not isinstance(index, faiss.IndexIDMap) or index.d != dim:
            raise ValueError(f"expected an IndexIDMap of dimension {dim}")
        self._index = index  # as faiss made it: a downcast copy would not own the index
        self.plan = plan_of(self._index)
        self.fetch = fetch
        self.ef_search = EF_SEARCH
        self.nprobe = 0  # 0: chosen from the number of lists
        self.mapped = False
        self._id_map: np.ndarray | None = None  # cached copy of faiss's id map
        self._projection: tuple[np.ndarray, np.ndarray] | None = None  # PCA, for _search
        self._sorted: np.ndarray | None = None

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        plan: Plan,
        dim: int,
        ids: np.ndarray,
        vectors: np.ndarray,
        fetch: Fetch | None = None,
        train_max: int = 100_000,
        progress: Callable[[int, int], None] | None = None,
    ) -> AnnIndex:
        """A new index of ``plan`` trained on (a sample of) ``vectors`` and holding them all."""
        ids, vectors = _as_ids(ids), _as_vectors(vectors, dim)
        if plan.pca and plan.pca >= dim:
            raise ValueError(f"PCA to {plan.pca} dimensions needs vectors of more than that")
        factory, metric = _factory(plan, dim, len(ids))
        inner = faiss.index_factory(dim, factory, metric)
        leaf = _leaf(inner)
        if isinstance(leaf, faiss.IndexHNSW):
            leaf.hnsw.efConstruction = EF_CONSTRUCTION
        if not inner.is_trained:
            if len(vectors) == 0:
                raise ValueError(f"{plan.name} needs vectors to train on")
            rng = np.random.default_rng(0)
            sample = vectors
            if len(vectors) > train_max:
                sample = vectors[np.sort(rng.choice(len(vectors), train_max, replace=False))]
            inner.train(np.ascontiguousarray(sample))
        index = cls(dim, faiss.IndexIDMap(inner), fetch)
        index.add(ids, vectors, progress=progress)
        return index

    # -- protocol -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int((self._ids_all() >= 0).sum())

    def _ids_all(self) -> np.ndarray:
        if self._id_map is None:
            self._id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return self._id_map

    def _changed(self) -> None:
        self._id_map = None
        self._sorted = None

    def tombstones(self) -> int:
        """Removed entries still in the structure."""
        return int((self._ids_all() < 0).sum())

    def needs_compaction(self) -> bool:
        total = int(self._index.ntotal)
        return total > 0 and self.tombstones() > COMPACT_FRACTION * total

    def ids(self) -> np.ndarray:
        """Every live id."""
        all_ids = self._ids_all()
        return all_ids[all_ids >= 0].copy()

    def sorted_ids(self) -> np.ndarray:
        if self._sorted is None:
            self._sorted = np.sort(self.ids())
        return self._sorted

    def _writable(self) -> None:
        """A private in-memory copy of a memory-mapped index (faiss cannot grow a mapping)."""
        if self.mapped:
            # (faiss returns the concrete class; never downcast a temporary: it owns the index)
            self._index = id_map(faiss.deserialize_index(faiss.serialize_index(self._index)))
            self.mapped = False

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Add vectors under ids (the caller keeps ids unique)."""
        ids, vectors = _as_ids(ids), _as_vectors(vectors, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if not len(ids):
            return
        self._writable()
        step = 50_000
        for start in range(0, len(ids), step):
            self._index.add_with_ids(vectors[start : start + step], ids[start : start + step])
            if progress is not None:
                progress(min(start + step, len(ids)), len(ids))
        self._changed()

    def remove(self, ids: np.ndarray) -> int:
        """Tombstone vectors by id; returns how many were live."""
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        all_ids = self._ids_all().copy()
        hit = np.isin(all_ids, ids) & (all_ids >= 0)
        if hit.any():
            self._writable()
            all_ids[hit] = -1
            faiss.copy_array_to_vector(all_ids, self._index.id_map)
            self._changed()
        return int(hit.sum())

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Exact vectors for ``ids`` (from ``fetch``), in that order."""
        ids = _as_ids(ids)
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.fetch is None:
            raise RuntimeError("this index has no source of exact vectors")
        return np.ascontiguousarray(self.fetch(ids), dtype=np.float32)

    def lists(self) -> int:
        """The number of inverted lists of an IVF index; 0 for the other kinds."""
        leaf = _leaf(self._index)
        return int(leaf.nlist) if isinstance(leaf, faiss.IndexIVF) else 0

    def _params(self, selector: faiss.IDSelector | None, want: int) -> faiss.SearchParameters:
        # faiss's Python layer takes the fields as keywords; its stubs know neither that nor
        # SearchParametersHNSW
        leaf = _leaf(self._index)
        if isinstance(leaf, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                sel=selector, efSearch=max(self.ef_search, want)
            )
        if isinstance(leaf, faiss.IndexIVF):
            nprobe = self.nprobe or max(1, min(leaf.nlist, max(16, leaf.nlist // 32)))
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)  # type: ignore[call-arg]
        return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [Q, k], ids [Q, k])``, best first (inner product); missing slots id -1.

        ``ids``: rank only these vectors (ids not in the index are ignored).
        """
        queries = _as_vectors(queries, self.dim)
        if k <= 0:
            raise ValueError("k must be positive")
        keep: faiss.IDSelectorBatch | None = None
        selector: faiss.IDSelector | None = _LIVE if self.tombstones() else None
        if ids is not None:
            allowed = subset.present(ids, self.sorted_ids())
            if self.fetch is not None and subset.score_directly(
                len(allowed), len(self), 4 * self.dim
            ):
                scores = queries @ self.vectors_of(allowed).T
                return subset.top_k(scores, allowed, k, largest=True, fill=MISSING_SCORE)
            keep = faiss.IDSelectorBatch(allowed)
            selector = keep
        refine = REFINE.get(self.plan.kind, 1) if self.plan.lossy else 1
        if self.plan.pca:
            refine = max(refine, 4)
        want = k * refine if self.fetch is not None else k
        want = min(want, max(k, len(self)))
        raw, found = self._search(queries, want, selector)
        del keep
        if self.plan.lossy and self.fetch is not None:
            return self._rescore(queries, found, k)
        scores = 1.0 - raw / 2.0 if self.plan.pca else raw  # L2 on unit vectors after PCA
        scores = np.where(found >= 0, scores, MISSING_SCORE).astype(np.float32)
        return scores[:, :k], found[:, :k]

    def _search(self, queries: np.ndarray, want: int, selector) -> tuple[np.ndarray, np.ndarray]:
        """faiss's search. A few queries run on one thread and, under PCA, are projected by
        numpy: faiss's thread hand-offs cost milliseconds a query on a busy machine."""
        outer = faiss.downcast_index(self._index.index)
        if len(queries) > SMALL_BATCH:
            return self._index.search(queries, want, params=self._params(selector, want))
        with _one_thread():  # a few queries: OpenMP hand-offs would cost more than they save
            if not self.plan.pca:
                return self._index.search(queries, want, params=self._params(selector, want))
            return self._search_projected(outer, queries, want, selector)

    def _search_projected(self, outer, queries: np.ndarray, want: int, selector):
        """Project with the PCA matrix here, then search the index under it."""
        if self._projection is None:
            pca = faiss.downcast_VectorTransform(outer.chain.at(0))
            assert isinstance(pca, faiss.LinearTransform)
            matrix = faiss.vector_to_array(pca.A).reshape(pca.d_out, pca.d_in)
            self._projection = (np.ascontiguousarray(matrix.T), faiss.vector_to_array(pca.b))
        matrix, shift = self._projection
        projected = np.ascontiguousarray(queries @ matrix + shift, dtype=np.float32)
        translated = None
        if selector is not None:
            # the stubs want an array where faiss takes the id map's vector itself
            translated = faiss.IDSelectorTranslated(
                self._index.id_map,  # type: ignore[arg-type]
                selector,
            )
        raw, rows = faiss.downcast_index(outer.index).search(
            projected, want, params=self._params(translated, want)
        )
        all_ids = self._ids_all()
        found = np.where(rows >= 0, all_ids[np.maximum(rows, 0)], -1)
        return raw, found

    def _rescore(
        self, queries: np.ndarray, found: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Order each row's candidates by exact inner product."""
        valid = found >= 0
        scores = np.full(found.shape, MISSING_SCORE, dtype=np.float32)
        if valid.any():
            vectors = self.vectors_of(found[valid])
            rows = np.nonzero(valid)[0]
            scores[valid] = np.einsum("cd,cd->c", vectors, queries[rows])
        return subset_rows_top_k(scores, found, k)

    # -- files ----------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, rename."""
        write_atomic(Path(path), faiss.serialize_index(self._index))  # an array: one copy


@contextlib.contextmanager
def _one_thread():
    """faiss on one OpenMP thread inside the block (the setting is per process)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def subset_rows_top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` per row of ``scores [Q, C]`` labelled by ``ids [Q, C]``, largest first."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids = np.take_along_axis(ids, order, axis=1)
    top_ids = np.where(top_scores == MISSING_SCORE, -1, top_ids)
    if top_scores.shape[1] < k:
        pad = k - top_scores.shape[1]
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=MISSING_SCORE)
        top_ids = np.pad(top_ids, ((0, 0), (0, pad)), constant_values=-1)
    return top_scores, top_ids


def load(path: Path, dim: int, fetch: Fetch | None = None) -> FlatIndex | AnnIndex:
    """Read a float index file: a :class:`FlatIndex` (read whole: it grows in place) or an
    :class:`AnnIndex` (memory-mapped)."""
    with open(path, "rb") as handle:
        fourcc = handle.read(4)
    if fourcc == b"IxM2":  # IndexIDMap2: the exact index
        return FlatIndex.load(path, dim)
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    ann = AnnIndex(dim, index, fetch)
    ann.mapped = True
    return ann
