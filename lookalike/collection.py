"""The public face of lookalike: open a collection, add images, search, remove.

Example::

    import lookalike
    col = lookalike.open("~/my-index")      # create or open
    col.add(["~/Pictures"])                 # index a folder (incremental)
    for m in col.search("photo.jpg", k=5):  # best first
        print(m.score, m.path)

The work is done by collaborators that receive the catalog, the index store and the models:
:class:`lookalike.features.models.Models` (loading, fitting), :class:`lookalike.search.Searcher`
(search by image) and :class:`lookalike.text.search.TextSearcher` (search by words).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.catalog import (
    READ_ONLY_ERRNOS,
    Catalog,
    CatalogDamaged,
    CatalogError,
    normal_path,
    read_only_error,
)
from lookalike.features.models import CLIP, INPUT_SIZE, MIN_SIDE, MODEL_NAME, Models, load_clip
from lookalike.features.registry import DEEP, FeatureInfo, info, parse_feature_list
from lookalike.images import QueryImage
from lookalike.index import policy
from lookalike.index.store import IndexStore
from lookalike.lock import WriterLock
from lookalike.pipeline import IndexReport, run_index
from lookalike.search import Match, Searcher
from lookalike.text.search import TextResults, TextSearcher

if TYPE_CHECKING:
    from lookalike.features.deep import DeepFeature
    from lookalike.filters import Node
    from lookalike.integrity import IntegrityReport

__all__ = [
    "CATALOG_NAME",
    "CLIP",
    "INPUT_SIZE",
    "MIN_SIDE",
    "MODEL_NAME",
    "Collection",
    "Match",
    "QueryImage",
    "TextResults",
    "default_location",
    "given_path",
    "open",
]

CATALOG_NAME = "catalog.sqlite"


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
        self.threads = threads
        # a damaged catalog still opens: every use of it then says how to salvage it
        catalog = Catalog(catalog_path, damaged_ok=True)
        self.models = Models(self.folder, catalog, threads)
        self.replace_catalog(catalog)
        try:
            stored = None if self.catalog.damaged else self.catalog.get_meta("model")
        except CatalogDamaged as exc:
            self.catalog.damaged, stored = exc, None
        if stored is not None and stored != MODEL_NAME:
            raise CatalogError(
                f"index {self.folder} was built with {stored!r}, this lookalike uses "
                f"{MODEL_NAME!r}; index your images again into a new --db folder"
            )

    def replace_catalog(self, catalog: Catalog) -> None:
        """Use ``catalog`` from now on (a salvaged copy, see :func:`lookalike.salvage.salvage`),
        forgetting every index and fitted code read from the one before."""
        self.catalog = catalog
        self.store = IndexStore(self.folder, catalog)
        self.models.use_catalog(catalog)
        self.searcher = Searcher(catalog, self.store, self.models)
        self.text_searcher = TextSearcher(catalog, self.store, self.models, self.searcher)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def feature(self) -> DeepFeature:
        """The deep model (with its preprocessing), loaded on first use."""
        return self.models.deep

    @property
    def features(self) -> list[str]:
        """The descriptors this collection computes for every image, default first."""
        return self.models.features

    def vector_features(self) -> list[FeatureInfo]:
        """The features whose vectors and index files the collection keeps: its descriptors
        (learned codes once fitted), class probabilities beside ``deep``, and a user's CLIP
        embeddings."""
        return self.models.vector_features(self.features)

    def clip_info(self) -> FeatureInfo | None:
        """The ``clip`` feature of a collection indexed with ``model="clip-onnx:..."``, or None."""
        return self.models.clip_info()

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
        clip = load_clip(model) if model is not None else None  # fails before any work
        policy.check_options(  # fails before any work too
            self.catalog, index=index, memory_budget=memory_budget, backend=backend, uri=uri
        )
        with WriterLock(self.folder):
            kept = {spec.name for spec in self.models.stored(chosen)}
            dropped = [f for f in self.catalog.stored_features() if f not in kept]
            with self.catalog.transaction():
                self.catalog.set_meta("model", MODEL_NAME)
                self.catalog.set_meta("features", ",".join(chosen))
                for name in dropped:
                    self.catalog.forget_feature(name)
                if clip is not None:
                    self.models.use_clip(clip)
                policy.apply_options(
                    self.catalog, index=index, memory_budget=memory_budget, backend=backend, uri=uri
                )
            report = run_index(
                self.catalog,
                roots,
                jobs=self.models.jobs(chosen),
                min_side=MIN_SIDE,
                workers=workers,
                batch_size=batch_size,
                max_pixels=max_pixels,
                prune=prune,
                progress=progress,
            )
            for name in chosen:
                if info(name).source == "learned":
                    report.notes += self.models.fit_learned(name, refit)
            self.store.refresh(self.models.stored(chosen))
            if records is not None:
                report.metadata = self._put_metadata(records, replace=False)
        return report

    def _choose_features(self, features: str | Sequence[str] | None) -> list[str]:
        if features is None:
            return self.features
        text = features if isinstance(features, str) else ",".join(features)
        return parse_feature_list(text, self.features)

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
                self.store.refresh(self.models.stored(self.features))
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
        policy.metadata_changed(self.store, self.models.stored(self.features), indexed)
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
        policy.metadata_changed(self.store, self.models.stored(self.features), absolute)
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

    # -- reading ------------------------------------------------------------------------------

    def _searchable(self, name: str) -> FeatureInfo:
        return self.searcher.searchable(name)

    def describe(self, images: Sequence[QueryImage], names: Sequence[str]) -> dict:
        """Each feature in ``names`` for each query image, decoding every image once."""
        return self.searcher.describe(images, names)

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
        where: str | Mapping | Node | None = None,
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
                augmentation and alpha query expansion (:mod:`lookalike.index.centred_search`);
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
        return self.searcher.search(
            query, k, feature=feature, metric=metric, rerank=rerank, shortlist=shortlist,
            where=where, folder=folder, expand=expand,
        )  # fmt: skip

    def search_text(
        self,
        text: str,
        k: int = 10,
        *,
        image: QueryImage | None = None,
        weight: float = 0.5,
        where: str | Mapping | Node | None = None,
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
        return self.text_searcher.search(
            text, k, image=image, weight=weight, where=where, folder=folder, model=model
        )

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
        """Search with ready-made descriptors (one row per query); one result list per row.

        ``where`` and ``folder`` restrict the search as in :meth:`search`; ``expand`` re-ranks
        ``deep`` as :meth:`search` does by default (off here: copy checks and duplicates
        compare the stored vectors).
        """
        return self.searcher.search_vectors(
            vectors, k, feature=feature, metric=metric, rerank=rerank,
            rerank_vectors=rerank_vectors, shortlist=shortlist, where=where, folder=folder,
            expand=expand,
        )  # fmt: skip

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
            "text_search": self.text_searcher.coverage(),
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

    def repair(self) -> IntegrityReport:
        """Mend what :meth:`verify` finds (holding the writer lock); the report afterwards."""
        from lookalike.integrity import repair

        return repair(self)
