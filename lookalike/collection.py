"""The public face of lookalike: open a collection, add images, search, remove.

Example::

    import lookalike
    col = lookalike.open("~/my-index")      # create or open
    col.add(["~/Pictures"])                 # index a folder (incremental)
    for m in col.search("photo.jpg", k=5):  # best first
        print(m.score, m.path)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import replace as replace_fields
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.catalog import (
    READ_ONLY_ERRNOS,
    Catalog,
    CatalogDamaged,
    CatalogError,
    normal_path,
    read_only_error,
)
from lookalike.features.base import METRICS, score_and_distance
from lookalike.features.registry import (
    CLASSES,
    CLIP_NAME,
    DEEP,
    LEARNED_BITS,
    OTHER_MODELS,
    FeatureInfo,
    UnknownFeature,
    info,
    parse_feature_list,
    pixel_features,
)
from lookalike.images import ImageError, load_image, normalize_image
from lookalike.index import policy
from lookalike.index.flat import FlatIndex
from lookalike.index.store import IndexStore, new_index
from lookalike.lock import WriterLock
from lookalike.pipeline import FeatureJob, IndexReport, run_index

CATALOG_NAME = "catalog.sqlite"
INPUT_SIZE = 224
MIN_SIDE = 2 * INPUT_SIZE  # images are decoded to no less than twice the model input
MODEL_NAME = "efficientnet-lite0 (ImageNet), R-MAC pooled 1280-d"
CLIP = CLIP_NAME  # the feature holding a user's CLIP image embeddings (lookalike.text.clip)

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
    metadata: dict = field(default_factory=dict, hash=False)  # the file's, see set_metadata

    def as_dict(self) -> dict:
        return asdict(self)


class TextResults(list):
    """The matches of a text search (a ``list`` of :class:`Match`, best first), and how the
    text was read: ``query`` (a :class:`lookalike.text.TextQuery`), ``matched`` (False when it
    names nothing the image model knows), ``matched_concepts`` and ``warning``."""

    def __init__(
        self,
        matches: Iterable[Match],
        query,
        warnings: Sequence[str] = (),
        model: str = "concepts",
    ) -> None:
        super().__init__(matches)
        self.query = query
        self.warnings = list(warnings)
        self.model = model  # "concepts", or "clip-onnx:FOLDER" for a user's CLIP

    @property
    def matched(self) -> bool:
        return self.query.matched

    @property
    def matched_concepts(self) -> list:
        return self.query.matched_concepts

    @property
    def warning(self) -> str | None:
        return "; ".join(self.warnings) if self.warnings else None

    def as_dict(self) -> dict:
        """How the text was read (``text``, ``matched``, ``concepts``, ``parts``, ``warning``)
        and the ``results``."""
        return self.query.as_dict() | {
            "model": self.model,
            "warning": self.warning,
            "results": [m.as_dict() for m in self],
        }


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


def given_path(path: str | os.PathLike) -> str:
    """A path a user named (``~`` expanded), absolute and in normal form (``..`` and ``.``
    removed); where ``..`` follows a symbolic link, so that removing it lexically would name
    another file, the real path instead."""
    given = os.path.expanduser(os.fspath(path))
    lexical = normal_path(given)
    if ".." in Path(given).parts:
        try:
            if not os.path.samefile(given, lexical):
                return normal_path(os.path.realpath(given))
        except OSError:
            if os.path.lexists(given):
                return normal_path(os.path.realpath(given))
    return lexical


class Collection:
    """A folder holding the catalog and the search indexes of a set of images."""

    def __init__(self, folder: Path, create: bool = True, threads: int | None = None) -> None:
        self.folder = Path(given_path(folder))
        catalog_path = self.folder / CATALOG_NAME
        if not os.path.lexists(catalog_path):
            if not create:
                raise CatalogError(
                    f"no index at {self.folder}; create one with `lookalike index FOLDER`"
                )
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise CatalogError(
                    f"cannot use {self.folder} as an index folder: a file of that name exists"
                ) from None
            except OSError as exc:
                if exc.errno in READ_ONLY_ERRNOS:
                    raise read_only_error(self.folder, exc.strerror) from None
                raise CatalogError(f"cannot create the index folder {self.folder}: {exc}") from None
        # a damaged catalog still opens: every use of it then says how to salvage it
        self.catalog = Catalog(catalog_path, damaged_ok=True)
        self.store = IndexStore(self.folder, self.catalog)
        self.threads = threads
        self._deep = None
        self._models: dict[str, object] = {}  # model descriptors other than deep (lite2)
        self._learned: dict[str, object] = {}
        self._other_metric: dict[tuple[str, str], tuple[int, object]] = {}
        self._lacking: tuple[tuple[int, int], int] | None = None  # images without classes
        try:
            stored = None if self.catalog.damaged else self.catalog.get_meta("model")
        except CatalogDamaged as exc:
            self.catalog.damaged, stored = exc, None
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

    def _model(self, name: str):  # -> DeepFeature
        """Model descriptor ``name`` other than deep (``lite2``), loaded on first use."""
        if name not in self._models:
            from lookalike.features.registry import load_model_feature

            self._models[name] = load_model_feature(name, threads=self.threads)
        return self._models[name]

    def _encode_model(self, name: str, pixels: np.ndarray) -> np.ndarray:
        return self._model(name).encode(pixels)

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
        metadata: str | os.PathLike | None = None,
        model: str | None = None,
        index: str | None = None,
        memory_budget: str | int | None = None,
        backend: str | None = None,
        uri: str | None = None,
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
            metadata: a CSV or JSON-lines file of metadata to attach once the files are
                indexed (see :meth:`set_metadata`); read first, so a bad file stops the run
                before any work. The report's ``metadata`` holds the counts.
            model: ``"clip-onnx:FOLDER"``: also store every image's embedding by the user's
                CLIP (see :mod:`lookalike.text.clip`), which text search then uses; kept for
                later runs. A different CLIP replaces the embeddings of the previous one.
            index, memory_budget, backend, uri: how vectors are searched, kept for later
                runs (see :func:`lookalike.index.policy.apply_options`): ``index`` is
                ``auto`` (by size and ``memory_budget``, e.g. ``"8G"``), ``flat``, ``hnsw``,
                ``hnsw-sq8``, ``ivfpq`` or ``pca256-hnsw``...; ``backend`` ``"faiss"`` or
                ``"milvus"`` with ``uri`` (``http://HOST:19530``).

        Returns:
            An :class:`IndexReport` with counts and the failed files.

        Raises:
            MetadataError: the metadata file cannot be read or is malformed.

        Example:
            >>> col.add(["~/Pictures"], features="+phash", prune=True).embedded
        """
        roots = [Path(given_path(p)) for p in paths]
        for root in roots:
            if not os.path.lexists(root):
                raise FileNotFoundError(f"no such file or folder: {root}")
        records = None
        if metadata is not None:
            from lookalike.metadata import normalize_records, read_metadata

            records = normalize_records(read_metadata(metadata))
        chosen = self._choose_features(features)
        clip = self._load_clip(model) if model is not None else None  # fails before any work
        options = {"index": index, "memory_budget": memory_budget, "backend": backend, "uri": uri}
        policy.check_options(self.catalog, **options)  # fails before any work too
        with WriterLock(self.folder):
            kept = {spec.name for spec in self._stored(chosen)}
            dropped = [f for f in self.catalog.stored_features() if f not in kept]
            with self.catalog.transaction():
                self.catalog.set_meta("model", MODEL_NAME)
                self.catalog.set_meta("features", ",".join(chosen))
                for name in dropped:
                    self.catalog.forget_feature(name)
                if clip is not None:
                    self._use_clip(clip)
                policy.apply_options(self.catalog, **options)
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
            self.store.refresh(self._stored(chosen))
            if records is not None:
                report.metadata = self._put_metadata(records, replace=False)
        return report

    def _choose_features(self, features: str | Sequence[str] | None) -> list[str]:
        if features is None:
            return self.features
        text = features if isinstance(features, str) else ",".join(features)
        return parse_feature_list(text, self.features)

    def _stored(self, names: Sequence[str]) -> list[FeatureInfo]:
        """What the collection stores for ``names``: each of them, beside ``deep`` the class
        probabilities of the same forward pass (for text search), and a user's CLIP
        embeddings when the collection has one."""
        specs = [info(name) for name in names]
        clip = self._clip_info()
        return specs + ([CLASSES] if DEEP.name in names else []) + ([clip] if clip else [])

    # -- bring your own CLIP ----------------------------------------------------------------------

    @staticmethod
    def _load_clip(model: str):
        from lookalike.text.clip import load_clip, parse_model

        return load_clip(parse_model(model))

    def _use_clip(self, clip) -> None:
        """Record ``clip`` as the collection's CLIP (inside a write transaction)."""
        if self.catalog.get_meta("clip:key") != clip.key:
            self.catalog.forget_feature(CLIP)  # another model's embeddings mean nothing here
        self.catalog.set_meta("clip:folder", str(clip.folder))
        self.catalog.set_meta("clip:key", clip.key)
        self.catalog.set_meta("clip:dim", str(clip.dim))

    def _clip_info(self) -> FeatureInfo | None:
        """The ``clip`` feature of a collection indexed with ``model="clip-onnx:..."``."""
        dim = self.catalog.get_meta("clip:dim")
        if dim is None:
            return None
        return FeatureInfo(
            CLIP, "clip", int(dim), np.dtype(np.float32), "cosine",
            f"CLIP image embeddings, {self.catalog.get_meta('clip:folder')}", "model",
        )  # fmt: skip

    def _clip(self):
        """The collection's CLIP model, loaded (None without one)."""
        folder = self.catalog.get_meta("clip:folder")
        if folder is None:
            return None
        clip = self._load_clip("clip-onnx:" + folder)
        if clip.key != self.catalog.get_meta("clip:key"):
            raise CatalogError(
                f"the CLIP model in {folder} changed since this index was built; index again "
                f"with --model clip-onnx:{folder} to embed the images with it"
            )
        return clip

    def _encode_deep(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Deep vectors and packed class probabilities of a batch, one model run."""
        from lookalike.index.classes import pack

        vectors, probabilities = self.feature.encode_with_classes(pixels)
        return {DEEP.name: vectors, CLASSES.name: pack(probabilities)}

    def _jobs(self, names: list[str]) -> list[FeatureJob]:
        """How the pipeline computes each pixel-based feature in ``names``."""
        jobs = []
        computed = pixel_features()
        for name in names:
            if name == DEEP.name:
                from lookalike.features.deep import DeepFeature

                jobs.append(
                    FeatureJob(name, DeepFeature.preparer(), self._encode_deep, (CLASSES.name,))
                )
            elif name in OTHER_MODELS:
                from lookalike.features.registry import model_preparer

                encode = functools.partial(self._encode_model, name)  # loads on first batch
                jobs.append(FeatureJob(name, model_preparer(name), encode))
            elif name in computed:
                jobs.append(FeatureJob(name, computed[name].compute, computed[name].encode))
        clip = self._clip()
        if clip is not None:
            jobs.append(FeatureJob(CLIP, clip.preparer(), clip.encode_images))
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
                absolute = normal_path(os.path.expanduser(os.fspath(path)))
                ids.extend(row.id for row in self.catalog.files_under(absolute))
            if ids:
                with self.catalog.transaction():
                    self.catalog.delete_files(ids)
                    self.catalog.bump_generation()
                self.store.refresh(self._stored(self.features))
        return len(ids)

    # -- metadata -------------------------------------------------------------------------------

    def set_metadata(self, records: Iterable[Mapping], *, replace: bool = False) -> dict:
        """Attach metadata (SKU, title, category, price...) to images by path.

        Metadata is keyed by path: it may be attached before or after the file is indexed and
        survives re-indexing; ``remove`` leaves it in place.

        Args:
            records: dicts with a ``path`` (made absolute against the working folder) and any
                other keys with numbers or strings (booleans become 1/0, lists and dicts JSON
                text); None removes the key. :func:`lookalike.metadata.read_metadata` reads
                them from a CSV or JSON-lines file.
            replace: also drop the keys a path had that its record does not name (default:
                merge key by key).

        Returns:
            ``{"rows", "attached", "unmatched", "unmatched_paths"}``: how many records, how
            many name an indexed file, how many do not (kept, they apply once the file is
            indexed) and up to 20 of the latter's paths.

        Raises:
            MetadataError: a record without a path, or with a value that cannot be stored.

        Example:
            >>> col.set_metadata([{"path": "/shop/1.jpg", "category": "shoes", "price": 49}])
            {'rows': 1, 'attached': 1, 'unmatched': 0, 'unmatched_paths': []}
        """
        from lookalike.metadata import normalize_records

        return self._put_metadata(normalize_records(records), replace=replace)

    def _put_metadata(self, records: list[tuple[str, dict]], replace: bool) -> dict:
        with self.catalog.transaction():
            self.catalog.put_metadata(records, replace=replace)
            indexed = self.catalog.indexed_paths(path for path, _ in records)
        policy.metadata_changed(self.store, self._stored(self.features), indexed)
        unmatched = [path for path, _ in records if path not in indexed]
        return {
            "rows": len(records),
            "attached": len(records) - len(unmatched),
            "unmatched": len(unmatched),
            "unmatched_paths": unmatched[:20],
        }

    def clear_metadata(self, paths: Iterable[str | os.PathLike] | None = None) -> int:
        """Remove the metadata of ``paths`` (default: of every path); returns how many values."""
        absolute = None
        if paths is not None:
            absolute = [normal_path(os.path.expanduser(os.fspath(p))) for p in paths]
        with self.catalog.transaction():
            removed = self.catalog.delete_metadata(absolute)
        policy.metadata_changed(self.store, self._stored(self.features), absolute)
        return removed

    def metadata(self, file_ids: Sequence[int]) -> dict[int, dict]:
        """``{file id: {key: value}}`` for the given file ids (``Match.id``); files without
        metadata map to ``{}``, unknown ids are left out."""
        return self.catalog.metadata_of_files(file_ids)

    def metadata_keys(self) -> dict[str, dict]:
        """The metadata keys of indexed files, to build filter controls from.

        Per key: ``type`` (``"number"``, ``"string"`` or ``"mixed"``), ``count`` (files that
        have it), ``min``/``max`` for numbers, and for strings ``distinct`` (how many different
        values), ``values`` (the 50 most frequent, sorted) and ``values_complete``.
        """
        return self.catalog.metadata_keys()

    def _allowed(
        self, where: str | Mapping | None, folder: str | os.PathLike | None
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
        need_deep = any(n == DEEP.name or info(n).source == "learned" for n in names)
        if need_deep:
            pixels = np.stack([self.feature.preprocess(image) for image in decoded])
            out[DEEP.name] = self.feature.encode(pixels)
        for name in names:
            if name in OTHER_MODELS:
                model = self._model(name)
                out[name] = model.encode(np.stack([model.preprocess(i) for i in decoded]))
            elif name in computed:
                out[name] = computed[name].encode([computed[name].compute(i) for i in decoded])
            elif info(name).source == "learned":
                out[name] = self._learned_model(name).encode(out[DEEP.name])
        return {name: out[name] for name in names}

    def embed(self, images: Sequence[QueryImage], feature: str = DEEP.name) -> np.ndarray:
        """Descriptors ``[N, width]`` of query images (paths, bytes or PIL) for ``feature``."""
        return self.describe(images, [feature])[feature]

    def search(
        self,
        query: QueryImage | None = None,
        k: int = 10,
        *,
        feature: str | None = None,
        metric: str | None = None,
        rerank: str | None = None,
        shortlist: int | None = None,
        where: str | Mapping | None = None,
        folder: str | os.PathLike | None = None,
        text: str | None = None,
        weight: float = 0.5,
        expand: bool = True,
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
            where: only files whose metadata passes this filter: an expression
                (``"category = 'shoes' and price < 50"``) or a dict (``{"category": "shoes",
                "price": {"lt": 50}}``); see :mod:`lookalike.filters`. Applied inside the
                search: ``k`` results come back whenever ``k`` files pass.
            folder: only files inside this folder.
            text: search by words instead ("a cup of espresso"), or together with ``query``;
                see :meth:`search_text`, which this calls (it returns :class:`TextResults`).
            weight: with both ``text`` and ``query``, the text's share of the score.
            expand: for ``deep`` (without ``metric`` or ``rerank``), re-rank with the
                collection: the projection of ``lookalike tune`` if any, database-side
                augmentation and alpha query expansion (:mod:`lookalike.index.expanded`);
                False gives plain cosine similarity of the stored vectors.

        Raises:
            ImageError: the query cannot be decoded.
            FilterError: ``where`` is malformed.

        Example:
            >>> [m.path for m in col.search("photo.jpg", k=3, feature="phash")]
            >>> col.search("photo.jpg", where="category = 'shoes' and price < 50")
            >>> col.search(text="tabby cat", k=5).warning
        """
        if text is not None:
            return self.search_text(text, k, image=query, weight=weight, where=where, folder=folder)
        if query is None:
            raise ValueError("search needs a query image or text=")
        name = feature or self.features[0]
        names = [name] + ([rerank] if rerank and rerank != name else [])
        for each in names:
            self._searchable(each)
        if where is not None:
            from lookalike.filters import as_filter

            where = as_filter(where)  # a malformed filter fails before the query is decoded
        described = self.describe([query], names)
        return self.search_vectors(
            described[name], k, feature=name, metric=metric,
            rerank=rerank, rerank_vectors=described.get(rerank), shortlist=shortlist,
            where=where, folder=folder, expand=expand,
        )[0]  # fmt: skip

    def search_text(
        self,
        text: str,
        k: int = 10,
        *,
        image: QueryImage | None = None,
        weight: float = 0.5,
        where: str | Mapping | None = None,
        folder: str | os.PathLike | None = None,
        model: str | None = None,
    ) -> TextResults:
        """The ``k`` indexed files that best show what ``text`` names, best first.

        The text is read as ImageNet classes and their WordNet ancestors
        (:mod:`lookalike.text`); an image's score is the probability the image model gives
        to them, in [0, 1] (several parts, as in "dog on a beach", combine by geometric
        mean). With ``image`` the score is ``(1 - weight) * cosine similarity to the image +
        weight * text score``, over the union of both shortlists. The result is a list of
        :class:`Match` that also says how the text was read: ``.query`` (a
        :class:`lookalike.text.TextQuery`), ``.matched``, ``.matched_concepts`` and
        ``.warning`` (set when the text, or part of it, names nothing the model knows --
        the scores are then low -- or when some images lack class probabilities).

        A collection indexed with a user's CLIP (``add(..., model="clip-onnx:FOLDER")``)
        compares text and images in CLIP's space instead: cosine similarity, with ``image``
        mixed in as ``(1 - weight) * image + weight * text`` (unit embeddings, as rclip does).
        ``model="concepts"`` or ``"clip"`` picks one explicitly.

        Raises:
            UnknownFeature: the collection has no deep vectors (so no class probabilities).
            ValueError: empty text, ``k`` < 1 or ``weight`` outside [0, 1].

        Example:
            >>> hits = col.search_text("a cup of espresso", k=5)
            >>> hits.matched_concepts[0].name, hits.warning
            ('espresso', None)
        """
        from lookalike.index.classes import top_k
        from lookalike.text.scoring import default_text_model

        if k < 1:
            raise ValueError("k must be at least 1")
        if not 0.0 <= weight <= 1.0:
            raise ValueError("weight must be between 0 and 1")
        if model not in (None, "concepts", "clip"):
            raise ValueError(f"unknown text model {model!r}; choose concepts or clip")
        clip = self._clip() if model != "concepts" else None
        if model == "clip" and clip is None:
            raise UnknownFeature(
                "this index has no CLIP embeddings; index with --model clip-onnx:FOLDER"
            )
        if clip is not None:
            return self._search_clip(clip, text, k, image, weight, where, folder)
        if DEEP.name not in self.features:
            raise UnknownFeature(
                "text search needs the deep model's class probabilities; add them with "
                "`lookalike index FOLDER --features +deep`"
            )
        query = default_text_model().interpret(text)
        warnings = list(query.warnings)
        index = self.store.get(CLASSES)
        ids = index.ids()
        files = None
        if where is not None or folder is not None:
            files, contents = self._allowed(where, folder)
            ids = ids[np.isin(ids, contents)]
        lacking = self._lacking_classes()
        if lacking:
            warnings.append(
                f"{lacking} images have no class probabilities yet (indexed by an older "
                "lookalike) and are left out; run `lookalike index` on their folders to add them"
            )
        subset = ids if files is not None else None  # None: every row, in ids() order
        text_scores = query.combine(index.scores(query.class_weights, subset)) if len(ids) else (
            np.zeros(0, np.float32))  # fmt: skip
        want = min(len(ids), k + 8)
        if image is not None and not query.matched:
            warnings.append("the text is ignored: results are by the image alone")
            weight = 0.0
        if image is None:
            score, found = top_k(text_scores[None], ids, max(want, 1))
        else:
            score, found = self._fuse(image, text_scores, ids, k, weight, where, folder)
        keep = found >= 0
        score, found = score[keep][None], found[keep][None]
        matches = self._matches(score, 1.0 - score, found, k, files)[0]
        return TextResults(matches, query, warnings)

    def _search_clip(
        self,
        clip,
        text: str,
        k: int,
        image: QueryImage | None,
        weight: float,
        where: str | Mapping | None,
        folder: str | os.PathLike | None,
    ) -> TextResults:
        """Text search in the space of the collection's own CLIP."""
        from lookalike.text.scoring import QueryPart, TextQuery

        if not text or not text.strip():
            raise ValueError("the text query is empty")
        vector = clip.encode_text([text])[0]
        if image is not None:
            seen = clip.encode_images(clip.preparer()(_decode_query(image))[None])[0]
            vector = (1.0 - weight) * seen + weight * vector
            vector /= max(float(np.linalg.norm(vector)), 1e-12)
        query = TextQuery(text, [QueryPart(text, True, [], np.zeros(1000, np.float32))])
        index = self.store.get(self._clip_info())
        files = contents = None
        if where is not None or folder is not None:
            files, contents = self._allowed(where, folder)
        size = len(index) if contents is None else min(len(index), len(contents))
        used = f"clip-onnx:{clip.folder}"
        if size == 0:
            return TextResults([], query, model=used)
        want = min(size, k + 8)
        queries = vector[None].astype(np.float32)
        if contents is None:
            raw, ids = index.search(queries, want)
        else:
            raw, ids = index.search(queries, want, ids=contents)
        score, distance = score_and_distance("cosine", raw)
        return TextResults(self._matches(score, distance, ids, k, files)[0], query, model=used)

    def _fuse(
        self,
        image: QueryImage,
        text_scores: np.ndarray,
        ids: np.ndarray,
        k: int,
        weight: float,
        where: str | Mapping | None,
        folder: str | os.PathLike | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(1 - weight) * cosine + weight * text`` over the union of both shortlists."""
        from lookalike.index.classes import top_k

        vector = self.describe([image], [DEEP.name])[DEEP.name]
        shortlist = max(200, 20 * k)
        by_image = self.search_vectors(vector, shortlist, where=where, folder=folder)[0]
        _, by_text = top_k(text_scores[None], ids, min(shortlist, max(len(ids), 1)))
        candidates = np.union1d([m.content_id for m in by_image], by_text[by_text >= 0])
        candidates = candidates[np.isin(candidates, ids)]
        if not len(candidates):
            return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64)
        deep = self.store.get(DEEP).vectors_of(candidates)
        cosine = deep @ vector[0]
        order = np.argsort(ids)
        text = text_scores[order[np.searchsorted(ids, candidates, sorter=order)]]
        fused = ((1.0 - weight) * cosine + weight * text).astype(np.float32)
        return top_k(fused[None], candidates, min(len(candidates), k + 8))

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
        where: str | Mapping | None = None,
        folder: str | os.PathLike | None = None,
        expand: bool = False,
    ) -> list[list[Match]]:
        """Search with ready-made descriptors (one row per query); one result list per row.

        ``where`` and ``folder`` restrict the search as in :meth:`search`; ``expand`` re-ranks
        ``deep`` as :meth:`search` does by default (off here: copy checks and duplicates
        compare the stored vectors).
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        spec = self._searchable(feature)
        metric = self._metric(spec, metric)
        index = self._index(spec, metric)
        files = contents = None
        if where is not None or folder is not None:
            files, contents = self._allowed(where, folder)
        size = len(index) if contents is None else min(len(index), len(contents))
        if size == 0:
            return [[] for _ in range(len(vectors))]
        want = min(size, k + 8)
        if rerank and rerank != feature:
            if rerank_vectors is None:
                raise ValueError("rerank needs the query's vectors of the rerank feature")
            want = min(size, shortlist or max(200, 20 * k))
        exact = isinstance(index, FlatIndex)  # approximate or Milvus indexes: no expansion
        if expand and exact and feature == DEEP.name and metric == spec.metric and not rerank:
            from lookalike.tune import expanded_index

            score, ids = expanded_index(self).search(vectors, want, contents)
            return self._matches(score, 1.0 - score, ids, k, files)
        if contents is None:
            raw, ids = index.search(vectors, want)
        elif hasattr(index, "search_filtered"):  # Milvus: the filter is pushed down to it
            raw, ids = index.search_filtered(vectors, want, where, folder, contents)
        else:  # inside the search: only the allowed vectors are ranked
            raw, ids = index.search(vectors, want, ids=contents)
        score, distance = score_and_distance(metric, raw, spec.dim)
        if rerank and rerank != feature:
            score, distance, ids = self._rerank(rerank, rerank_vectors, ids)
        return self._matches(score, distance, ids, k, files)

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
                    Match(h.path, float(s), h.file_id, h.width, h.height, h.content_id, float(d))
                    for h in hits.get(int(content_id), [])
                    if files is None or h.file_id in files
                )
            out.append(matches[:k])
        if self.catalog.has_metadata():
            found = self.catalog.metadata_of_paths({m.path for row in out for m in row})
            out = [[replace_fields(m, metadata=found.get(m.path, {})) for m in row] for row in out]
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
            "vector_index": policy.describe(self.catalog),
            "catalog_bytes": catalog_bytes,
            "schema_version": self.catalog.schema_version,
            "text_search": self._text_search_info(),
        }

    def _lacking_classes(self) -> int:
        """Images with deep vectors but no class probabilities (cached per generation)."""
        key = (self.catalog.generation(DEEP.name), self.catalog.generation(CLASSES.name))
        if self._lacking is None or self._lacking[0] != key:
            count = len(self.catalog.vector_ids(DEEP.name))
            self._lacking = (key, max(0, count - len(self.catalog.vector_ids(CLASSES.name))))
        return self._lacking[1]

    def _text_search_info(self) -> dict:
        """How many images text search covers (those with class probabilities)."""
        count = len(self.catalog.vector_ids(CLASSES.name))
        clip = self.catalog.get_meta("clip:folder")
        return {
            "model": f"clip-onnx:{clip}" if clip else "concepts",
            "images": len(self.catalog.vector_ids(CLIP)) if clip else count,
            "missing": max(0, len(self.catalog.vector_ids(DEEP.name)) - count),
            "bytes_per_image": CLASSES.bytes_per_image,
            "index_bytes": self.store.bytes_on_disk(CLASSES.name),
        }

    def errors(self) -> list[tuple[str, str]]:
        """``(path, reason)`` for every file that could not be indexed."""
        return self.catalog.errors()

    def verify(self) -> list[str]:
        """Consistency problems between catalog and search indexes (empty when all is well).

        The full report, notes included, is :func:`lookalike.integrity.verify`.
        """
        from lookalike.integrity import verify

        return [p.message for p in verify(self).errors]

    def repair(self):  # -> lookalike.integrity.IntegrityReport
        """Mend what :meth:`verify` finds (holding the writer lock); the report afterwards."""
        from lookalike.integrity import repair

        return repair(self)


def _decode_query(query: QueryImage) -> Image.Image:
    if isinstance(query, Image.Image):
        return normalize_image(query, min_side=MIN_SIDE)
    if isinstance(query, bytes):
        return load_image(query, min_side=MIN_SIDE).image
    path = Path(os.fspath(query)).expanduser()
    if not path.exists():
        raise ImageError(f"no such file: {path}")
    return load_image(str(path), min_side=MIN_SIDE).image
