"""The public face of lookalike: open a collection, add images, search, remove.

Example::

    import lookalike
    col = lookalike.open("~/my-index")      # create or open
    col.add(["~/Pictures"])                 # index a folder (incremental)
    for m in col.search("photo.jpg", k=5):  # best first
        print(m.score, m.path)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.catalog import Catalog, CatalogError
from lookalike.features.base import METRICS, score_and_distance
from lookalike.features.registry import (
    DEEP,
    LEARNED_BITS,
    FeatureInfo,
    UnknownFeature,
    info,
    parse_feature_list,
    pixel_features,
)
from lookalike.images import ImageError, load_image, normalize_image
from lookalike.index.store import IndexStore, new_index
from lookalike.lock import WriterLock
from lookalike.pipeline import FeatureJob, IndexReport, run_index

CATALOG_NAME = "catalog.sqlite"
INPUT_SIZE = 224
MIN_SIDE = 2 * INPUT_SIZE  # images are decoded to no less than twice the model input
MODEL_NAME = "efficientnet-lite0 (ImageNet), R-MAC pooled 1280-d"

QueryImage = str | os.PathLike | bytes | Image.Image


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

    def as_dict(self) -> dict:
        return asdict(self)


def default_location() -> Path:
    """The index folder used when none is given: ``$LOOKALIKE_DB`` or the XDG data folder."""
    env = os.environ.get("LOOKALIKE_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("lookalike"))


def open(  # noqa: A001 - the public verb, as in lookalike.open()
    path: str | os.PathLike | None = None, *, create: bool = True, threads: int | None = None
) -> Collection:
    """Open the collection stored in the folder ``path`` (created if missing and ``create``).

    Args:
        path: index folder; default :func:`default_location`.
        create: create an empty collection when none exists; otherwise raise CatalogError.
        threads: inference threads (default: one per core).

    Example:
        >>> col = lookalike.open("/tmp/my-index")
    """
    return Collection(Path(path).expanduser() if path else default_location(), create, threads)


class Collection:
    """A folder holding the catalog and the search indexes of a set of images."""

    def __init__(self, folder: Path, create: bool = True, threads: int | None = None) -> None:
        self.folder = Path(folder).absolute()
        catalog_path = self.folder / CATALOG_NAME
        if not catalog_path.exists():
            if not create:
                raise CatalogError(
                    f"no index at {self.folder}; create one with `lookalike index FOLDER`"
                )
            self.folder.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(catalog_path)
        self.store = IndexStore(self.folder, self.catalog)
        self.threads = threads
        self._deep = None
        self._learned: dict[str, object] = {}
        self._other_metric: dict[tuple[str, str], tuple[int, object]] = {}
        stored = self.catalog.get_meta("model")
        if stored is not None and stored != MODEL_NAME:
            raise CatalogError(
                f"index {self.folder} was built with {stored!r}, this lookalike uses "
                f"{MODEL_NAME!r}; index your images again into a new --db folder"
            )

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def feature(self):  # -> DeepFeature, loaded on first use
        """The deep model (with its preprocessing)."""
        if self._deep is None:
            from lookalike.features.deep import load_deep_feature

            self._deep = load_deep_feature(threads=self.threads)
        return self._deep

    @property
    def features(self) -> list[str]:
        """The descriptors this collection computes for every image, default first."""
        stored = self.catalog.get_meta("features")
        return stored.split(",") if stored else [DEEP.name]

    # -- writing --------------------------------------------------------------------------------

    def add(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        features: str | Sequence[str] | None = None,
        refit: bool = False,
        prune: bool = False,
        workers: int | None = None,
        batch_size: int = 32,
        max_pixels: int | None = None,
        progress: bool = False,
    ) -> IndexReport:
        """Index image files and folders; only new or changed files are decoded.

        Args:
            paths: files and folders (searched recursively).
            features: the descriptors to compute: ``"deep,phash"`` (or a list) sets them,
                ``"+pdq"`` adds to those the collection has; images already indexed get the
                added ones too, each decoded once. Default: keep the collection's.
            refit: fit learned codes (``itq128``...) again on the whole collection.
            prune: forget files under ``paths`` that no longer exist.
            workers: decode processes (default: one per core).
            batch_size: images per inference batch and per committed transaction.
            max_pixels: decompression-bomb limit (default ``lookalike.images.DEFAULT_MAX_PIXELS``).
            progress: show a progress bar on standard error.

        Returns:
            An :class:`IndexReport` with counts and the failed files.

        Example:
            >>> col.add(["~/Pictures"], features="+phash", prune=True).embedded
        """
        roots = [Path(p).expanduser().absolute() for p in paths]
        for root in roots:
            if not os.path.lexists(root):
                raise FileNotFoundError(f"no such file or folder: {root}")
        chosen = self._choose_features(features)
        with WriterLock(self.folder):
            dropped = [f for f in self.catalog.stored_features() if f not in chosen]
            with self.catalog.transaction():
                self.catalog.set_meta("model", MODEL_NAME)
                self.catalog.set_meta("features", ",".join(chosen))
                for name in dropped:
                    self.catalog.forget_feature(name)
            report = run_index(
                self.catalog,
                roots,
                jobs=self._jobs(chosen),
                min_side=MIN_SIDE,
                workers=workers,
                batch_size=batch_size,
                max_pixels=max_pixels,
                prune=prune,
                progress=progress,
            )
            for name in chosen:
                if info(name).source == "learned":
                    report.notes += self._update_learned(name, refit)
            self.store.refresh([info(name) for name in chosen])
        return report

    def _choose_features(self, features: str | Sequence[str] | None) -> list[str]:
        if features is None:
            return self.features
        text = features if isinstance(features, str) else ",".join(features)
        return parse_feature_list(text, self.features)

    def _jobs(self, names: list[str]) -> list[FeatureJob]:
        """How the pipeline computes each pixel-based feature in ``names``."""
        jobs = []
        computed = pixel_features()
        for name in names:
            if name == DEEP.name:
                from lookalike.features.deep import DeepFeature

                encode = lambda pixels: self.feature.encode(pixels)  # noqa: E731 - loads lazily
                jobs.append(FeatureJob(name, DeepFeature.preparer(), encode))
            elif name in computed:
                jobs.append(FeatureJob(name, computed[name].compute, computed[name].encode))
        return jobs

    def _update_learned(self, name: str, refit: bool) -> list[str]:
        """Fit (if needed) the learned code ``name`` and give every image its code."""
        from lookalike.features.itq import ITQ

        bits = LEARNED_BITS[name]
        ids = self.catalog.vector_ids(DEEP.name)
        model = None if refit else self._learned_model(name)
        refitted = model is None
        if refitted:
            if len(ids) < bits:
                return [f"{name}: needs at least {bits} images to fit, the collection has "
                        f"{len(ids)}; it will be fitted once there are enough"]  # fmt: skip
            ids, deep = self.catalog.vectors(DEEP.name, DEEP.width)
            model = ITQ.fit(deep, bits)
            self._learned.pop(name, None)
            todo = ids
        else:
            todo = np.setdiff1d(ids, self.catalog.vector_ids(name))
            if not len(todo):
                return []
            deep = self.catalog.vectors_for(DEEP.name, DEEP.width, todo.tolist())
        codes = model.encode(deep)
        model_file = self.folder / f"{name}.model{self.catalog.generation(name) + 1}.npz"
        if refitted:
            model.save(model_file)
        with self.catalog.transaction():
            if refitted:
                self.catalog.delete_vectors(name)
                self.catalog.set_meta(f"model:{name}", model_file.name)
            for content_id, code in zip(todo.tolist(), codes, strict=True):
                self.catalog.put_vector(content_id, name, code)
            self.catalog.bump_generation([name])
        current = self.catalog.get_meta(f"model:{name}")
        for old in self.folder.glob(f"{name}.model*.npz"):
            if old.name != current:
                old.unlink(missing_ok=True)
        return [f"{name}: fitted on {len(ids)} images"] if refitted else []

    def _learned_model(self, name: str):
        """The fitted model of learned feature ``name``, or None before it is fitted."""
        from lookalike.features.itq import ITQ

        file = self.catalog.get_meta(f"model:{name}")
        if file is None:
            return None
        if name not in self._learned:
            self._learned[name] = ITQ.load(self.folder / file)
        return self._learned[name]

    def remove(self, paths: Iterable[str | os.PathLike]) -> int:
        """Forget files, or every file inside folders; returns how many were forgotten.

        The files themselves are not touched. Paths need not exist any more.
        """
        with WriterLock(self.folder):
            ids: list[int] = []
            for path in paths:
                absolute = os.path.abspath(os.path.expanduser(os.fspath(path)))
                ids.extend(row.id for row in self.catalog.files_under(absolute))
            if ids:
                with self.catalog.transaction():
                    self.catalog.delete_files(ids)
                    self.catalog.bump_generation()
                self.store.refresh([info(name) for name in self.features])
        return len(ids)

    # -- reading ------------------------------------------------------------------------------

    def _searchable(self, name: str) -> FeatureInfo:
        spec = info(name)
        if name not in self.features:
            raise UnknownFeature(
                f"this index has no {name!r} vectors (it has {', '.join(self.features)}); "
                f"add them with `lookalike index FOLDER --features +{name}`"
            )
        if spec.source == "learned" and self._learned_model(name) is None:
            raise UnknownFeature(f"{name} is not fitted yet: the collection is too small")
        return spec

    def describe(self, images: Sequence[QueryImage], names: Sequence[str]) -> dict:
        """Each feature in ``names`` for each query image, decoding every image once."""
        decoded = [_decode_query(img) for img in images]
        out: dict[str, np.ndarray] = {}
        computed = pixel_features()
        need_deep = any(info(n).source in ("model", "learned") for n in names)
        if need_deep:
            pixels = np.stack([self.feature.preprocess(image) for image in decoded])
            out[DEEP.name] = self.feature.encode(pixels)
        for name in names:
            if name in computed:
                out[name] = computed[name].encode([computed[name].compute(i) for i in decoded])
            elif info(name).source == "learned":
                out[name] = self._learned_model(name).encode(out[DEEP.name])
        return {name: out[name] for name in names}

    def embed(self, images: Sequence[QueryImage], feature: str = DEEP.name) -> np.ndarray:
        """Descriptors ``[N, width]`` of query images (paths, bytes or PIL) for ``feature``."""
        return self.describe(images, [feature])[feature]

    def search(
        self,
        query: QueryImage,
        k: int = 10,
        *,
        feature: str | None = None,
        metric: str | None = None,
        rerank: str | None = None,
        shortlist: int | None = None,
    ) -> list[Match]:
        """The ``k`` indexed files most similar to ``query``, best first.

        Args:
            query: a path, the bytes of an image file, or a PIL image.
            k: how many results.
            feature: the descriptor to compare (default: the collection's first, ``deep``).
            metric: compare under another metric than the feature's own (e.g. ``"chi2"``,
                ``"intersection"``, ``"l2"`` for histograms; see ``lookalike.features.METRICS``).
            rerank: take a shortlist with ``feature``, then order it exactly by this feature
                (e.g. ``feature="itq128", rerank="deep"``).
            shortlist: shortlist size for ``rerank`` (default ``max(200, 20 * k)``).

        Raises:
            ImageError: the query cannot be decoded.

        Example:
            >>> [m.path for m in col.search("photo.jpg", k=3, feature="phash")]
        """
        name = feature or self.features[0]
        names = [name] + ([rerank] if rerank and rerank != name else [])
        for each in names:
            self._searchable(each)
        described = self.describe([query], names)
        return self.search_vectors(
            described[name], k, feature=name, metric=metric,
            rerank=rerank, rerank_vectors=described.get(rerank), shortlist=shortlist,
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
    ) -> list[list[Match]]:
        """Search with ready-made descriptors (one row per query); one result list per row."""
        if k < 1:
            raise ValueError("k must be at least 1")
        spec = self._searchable(feature)
        metric = self._metric(spec, metric)
        index = self._index(spec, metric)
        if len(index) == 0:
            return [[] for _ in range(len(vectors))]
        want = min(len(index), k + 8)
        if rerank and rerank != feature:
            if rerank_vectors is None:
                raise ValueError("rerank needs the query's vectors of the rerank feature")
            want = min(len(index), shortlist or max(200, 20 * k))
        raw, ids = index.search(vectors, want)
        score, distance = score_and_distance(metric, raw, spec.dim)
        if rerank and rerank != feature:
            score, distance, ids = self._rerank(rerank, rerank_vectors, ids)
        return self._matches(score, distance, ids, k)

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

    def _index(self, spec: FeatureInfo, metric: str):
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
        from lookalike.features.metrics import scores

        spec = self._searchable(name)
        index = self.store.get(spec)
        rows_score, rows_distance, rows_ids = [], [], []
        for query, row in zip(queries, candidates, strict=True):
            ids = row[row >= 0]
            if hasattr(index, "vectors_of"):  # in memory already
                vectors = index.vectors_of(ids)
            else:
                vectors = self.catalog.vectors_for(name, spec.width, ids.tolist(), spec.dtype)
            score, distance = scores(spec.metric, query[None], vectors)
            order = np.argsort(-score[0], kind="stable")
            pad = len(row) - len(ids)
            rows_score.append(np.pad(score[0][order], (0, pad), constant_values=-np.inf))
            rows_distance.append(np.pad(distance[0][order], (0, pad), constant_values=np.inf))
            rows_ids.append(np.pad(ids[order], (0, pad), constant_values=-1))
        return np.array(rows_score), np.array(rows_distance), np.array(rows_ids)

    def _matches(
        self, score: np.ndarray, distance: np.ndarray, ids: np.ndarray, k: int
    ) -> list[list[Match]]:
        hits = self.catalog.hits_for_contents(sorted({int(i) for i in ids.ravel() if i >= 0}))
        out = []
        for row_score, row_distance, row_ids in zip(score, distance, ids, strict=True):
            matches: list[Match] = []
            for s, d, content_id in zip(row_score, row_distance, row_ids, strict=True):
                matches.extend(
                    Match(h.path, float(s), h.file_id, h.width, h.height, h.content_id, float(d))
                    for h in hits.get(int(content_id), [])
                )
            out.append(matches[:k])
        return out

    # -- state ---------------------------------------------------------------------------------

    def info(self) -> dict:
        """Counts and locations: images, unique contents, errors, model, storage per feature."""
        catalog_bytes = sum(
            p.stat().st_size for p in self.folder.glob(CATALOG_NAME + "*") if p.is_file()
        )
        features = []
        for name in self.features:
            spec = info(name)
            count = len(self.catalog.vector_ids(name))
            features.append(
                {
                    "name": name,
                    "metric": spec.metric,
                    "images": count,
                    "bytes_per_image": spec.bytes_per_image,
                    "vector_bytes": count * spec.bytes_per_image,
                    "index_bytes": self.store.bytes_on_disk(name),
                }
            )
        return {
            "path": str(self.folder),
            "images": self.catalog.count_images(),
            "unique_images": self.catalog.count_contents(),
            "errors": self.catalog.count_errors(),
            "model": self.catalog.get_meta("model", MODEL_NAME),
            "features": features,
            "index_bytes": sum(f["index_bytes"] for f in features),
            "catalog_bytes": catalog_bytes,
            "schema_version": self.catalog.schema_version,
        }

    def errors(self) -> list[tuple[str, str]]:
        """``(path, reason)`` for every file that could not be indexed."""
        return self.catalog.errors()

    def verify(self) -> list[str]:
        """Consistency problems between catalog and search indexes (empty when all is well)."""
        problems = self.catalog.check_consistency()
        for name in self.features:
            spec = info(name)
            if spec.source == "learned" and self._learned_model(name) is None:
                continue
            indexed = self.store.get(spec).ids()
            wanted = self.catalog.vector_ids(name)
            if len(indexed) != len(np.unique(indexed)):
                problems.append(f"{name}: index holds duplicated ids")
            extra, missing = np.setdiff1d(indexed, wanted), np.setdiff1d(wanted, indexed)
            if len(extra) or len(missing):
                problems.append(
                    f"{name}: index has {len(extra)} vectors the catalog lacks "
                    f"and lacks {len(missing)} of the catalog's"
                )
            contents = self.catalog.count_contents()
            if len(wanted) != contents:
                problems.append(f"{name}: {contents - len(wanted)} images lack this feature")
        return problems


def _decode_query(query: QueryImage) -> Image.Image:
    if isinstance(query, Image.Image):
        return normalize_image(query, min_side=MIN_SIDE)
    if isinstance(query, bytes):
        return load_image(query, min_side=MIN_SIDE).image
    path = Path(os.fspath(query)).expanduser()
    if not path.exists():
        raise ImageError(f"no such file: {path}")
    return load_image(str(path), min_side=MIN_SIDE).image
