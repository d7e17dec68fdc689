"""Image search: describe the query, rank the indexed vectors, re-rank, return the files.

:class:`Searcher` receives the collection's catalog, index store and models;
:class:`lookalike.Collection` is its public face.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import replace as replace_fields
from typing import TYPE_CHECKING

import numpy as np

from lookalike.catalog import Catalog, normal_path
from lookalike.features.base import METRICS, score_and_distance
from lookalike.features.models import MIN_SIDE, Models
from lookalike.features.registry import (
    DEEP,
    OTHER_MODELS,
    FeatureInfo,
    UnknownFeature,
    info,
    pixel_features,
)
from lookalike.images import QueryImage, decode_query
from lookalike.index.base import VectorIndex, filters_itself
from lookalike.index.store import IndexStore, new_index
from lookalike.index.two_stage import rerank as rerank_exactly

if TYPE_CHECKING:
    from lookalike.filters import Node

__all__ = ["Match", "QueryImage", "Searcher"]


@dataclass(frozen=True)
class Match:
    """One search result: a file, its similarity to the query and the raw distance.

    ``score`` is larger for closer images (cosine similarity for the deep feature); what
    ``score`` and ``distance`` mean for each metric is listed in ``lookalike.features.METRICS``.
    """

    path: str
    score: float
    id: int
    width: int
    height: int
    content_id: int
    distance: float = 0.0
    metadata: dict = field(default_factory=dict, hash=False)  # the file's, see set_metadata

    def as_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Search by image in the collection whose catalog, index store and models these are."""

    def __init__(self, catalog: Catalog, store: IndexStore, models: Models) -> None:
        self.catalog = catalog
        self.store = store
        self.models = models
        self._other_metric: dict[tuple[str, str], tuple[int, VectorIndex]] = {}

    def searchable(self, name: str) -> FeatureInfo:
        """Feature ``name``, if the collection has vectors of it to search."""
        spec = info(name)
        features = self.models.features
        if name not in features:
            raise UnknownFeature(
                f"this index has no {name!r} vectors (it has {', '.join(features)}); "
                f"add them with `lookalike index FOLDER --features +{name}`"
            )
        if spec.source == "learned" and self.models.learned(name) is None:
            raise UnknownFeature(f"{name} is not fitted yet: the collection is too small")
        return spec

    def describe(self, images: Sequence[QueryImage], names: Sequence[str]) -> dict:
        """Each feature in ``names`` for each query image, decoding every image once."""
        decoded = [decode_query(img, min_side=MIN_SIDE) for img in images]
        out: dict[str, np.ndarray] = {}
        computed = pixel_features()
        need_deep = any(n == DEEP.name or info(n).source == "learned" for n in names)
        if need_deep:
            deep = self.models.deep
            pixels = np.stack([deep.preprocess(image) for image in decoded])
            out[DEEP.name] = deep.encode(pixels)
        for name in names:
            if name in OTHER_MODELS:
                model = self.models.model(name)
                out[name] = model.encode(np.stack([model.preprocess(i) for i in decoded]))
            elif name in computed:
                feature = computed[name]
                out[name] = feature.encode(np.asarray([feature.compute(i) for i in decoded]))
            elif info(name).source == "learned":
                learned = self.models.learned(name)
                if learned is None:
                    raise UnknownFeature(f"{name} is not fitted yet: the collection is too small")
                out[name] = learned.encode(out[DEEP.name])
        return {name: out[name] for name in names}

    def search(
        self,
        query: QueryImage,
        k: int,
        *,
        feature: str | None,
        metric: str | None,
        rerank: str | None,
        shortlist: int | None,
        where: str | Mapping | Node | None,
        folder: str | os.PathLike | None,
        expand: bool,
    ) -> list[Match]:
        """The ``k`` files most similar to ``query`` (see :meth:`lookalike.Collection.search`)."""
        name = feature or self.models.features[0]
        names = [name] + ([rerank] if rerank and rerank != name else [])
        for each in names:
            self.searchable(each)
        condition: str | Mapping | Node | None = where
        if where is not None:
            from lookalike.filters import as_filter

            condition = as_filter(where)  # a malformed filter fails before the query is decoded
        described = self.describe([query], names)
        return self.search_vectors(
            described[name], k, feature=name, metric=metric,
            rerank=rerank, rerank_vectors=described.get(rerank) if rerank else None,
            shortlist=shortlist, where=condition, folder=folder, expand=expand,
        )[0]  # fmt: skip

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        *,
        feature: str = DEEP.name,
        metric: str | None = None,
        rerank: str | None = None,
        rerank_vectors: np.ndarray | None = None,
        shortlist: int | None = None,
        where: str | Mapping | Node | None = None,
        folder: str | os.PathLike | None = None,
        expand: bool = False,
    ) -> list[list[Match]]:
        """Search with ready-made descriptors, one result list per row (see
        :meth:`lookalike.Collection.search_vectors`)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        spec = self.searchable(feature)
        metric = self._metric(spec, metric)
        index = self._index(spec, metric)
        files = contents = None
        if where is not None or folder is not None:
            files, contents = self.allowed(where, folder)
        size = len(index) if contents is None else min(len(index), len(contents))
        if size == 0:
            return [[] for _ in range(len(vectors))]
        want = min(size, k + 8)
        if rerank and rerank != feature:
            if rerank_vectors is None:
                raise ValueError("rerank needs the query's vectors of the rerank feature")
            want = min(size, shortlist or max(200, 20 * k))
        exact = index.capabilities.exact  # approximate or Milvus indexes: no expansion
        if expand and exact and feature == DEEP.name and metric == spec.metric and not rerank:
            score, ids = self.store.expanded().search(vectors, want, contents)
            return self.matches(score, 1.0 - score, ids, k, files)
        if contents is None:
            raw, ids = index.search(vectors, want)
        elif filters_itself(index):  # Milvus: the filter is pushed down to it
            raw, ids = index.search_filtered(vectors, want, where, folder, contents)
        else:  # inside the search: only the allowed vectors are ranked
            raw, ids = index.search(vectors, want, ids=contents)
        score, distance = score_and_distance(metric, raw, spec.dim)
        if rerank and rerank != feature and rerank_vectors is not None:
            score, distance, ids = self._rerank(rerank, rerank_vectors, ids)
        return self.matches(score, distance, ids, k, files)

    def allowed(
        self, where: str | Mapping | Node | None, folder: str | os.PathLike | None
    ) -> tuple[set[int], np.ndarray]:
        """File ids and content ids that pass the filter ``where`` and lie inside ``folder``."""
        from lookalike.filters import to_sql

        condition, params = to_sql(where)
        inside = None
        if folder is not None:
            inside = normal_path(os.path.expanduser(os.fspath(folder)))
        rows = self.catalog.matching_files(condition, params, inside)
        files = {file_id for file_id, _ in rows}
        contents = np.unique(np.fromiter((c for _, c in rows), dtype=np.int64, count=len(rows)))
        return files, contents

    def _metric(self, spec: FeatureInfo, metric: str | None) -> str:
        if metric is None or metric == spec.metric:
            return spec.metric
        if metric not in METRICS:
            raise UnknownFeature(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        if spec.binary or metric == "hamming":
            raise UnknownFeature(f"{spec.name} is compared by {spec.metric} only")
        if metric in ("chi2", "intersection") and spec.metric not in ("chi2", "intersection"):
            raise UnknownFeature(f"{metric} compares histograms; {spec.name} is not one")
        return metric

    def _index(self, spec: FeatureInfo, metric: str) -> VectorIndex:
        """The feature's own index, or an exact one under another metric."""
        if metric == spec.metric:
            return self.store.get(spec)
        generation = self.catalog.generation(spec.name)
        cached = self._other_metric.get((spec.name, metric))
        if cached is not None and cached[0] == generation:
            return cached[1]
        index = new_index(spec, metric)
        ids, vectors = self.catalog.vectors(spec.name, spec.width, spec.dtype)
        index.add(ids, vectors)
        self._other_metric[(spec.name, metric)] = (generation, index)
        return index

    def _rerank(
        self, name: str, queries: np.ndarray, candidates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Order each row of candidate ids exactly by feature ``name``."""
        spec = self.searchable(name)
        return rerank_exactly(queries, candidates, self.store.vectors_of(spec), spec.metric)

    def matches(
        self,
        score: np.ndarray,
        distance: np.ndarray,
        ids: np.ndarray,
        k: int,
        files: set[int] | None = None,
    ) -> list[list[Match]]:
        """Files of the matching contents, ``k`` per row (only ``files`` when given), with
        their metadata."""
        hits = self.catalog.hits_for_contents(sorted({int(i) for i in ids.ravel() if i >= 0}))
        out = []
        for row_score, row_distance, row_ids in zip(score, distance, ids, strict=True):
            matches: list[Match] = []
            for s, d, content_id in zip(row_score, row_distance, row_ids, strict=True):
                matches.extend(
                    Match(h.path, float(s), h.id, h.width, h.height, h.content_id, float(d))
                    for h in hits.get(int(content_id), [])
                    if files is None or h.id in files
                )
            out.append(matches[:k])
        if self.catalog.has_metadata():
            found = self.catalog.metadata_of_paths({m.path for row in out for m in row})
            out = [[replace_fields(m, metadata=found.get(m.path, {})) for m in row] for row in out]
        return out
