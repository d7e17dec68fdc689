"""The public face of lookalike: open a collection, add images, search, remove.

Example::

    import lookalike
    col = lookalike.open("~/my-index")      # create or open
    col.add(["~/Pictures"])                 # index a folder (incremental)
    for m in col.search("photo.jpg", k=5):  # best first
        print(m.score, m.path)
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.catalog import Catalog, CatalogError
from lookalike.images import ImageError, load_image, normalize_image
from lookalike.index import FlatIndex
from lookalike.lock import WriterLock
from lookalike.pipeline import IndexReport, run_index

CATALOG_NAME = "catalog.sqlite"
FEATURE = "deep"
DIM = 1280
INPUT_SIZE = 224
MODEL_NAME = "efficientnet-lite0 (ImageNet), R-MAC pooled 1280-d"

QueryImage = str | os.PathLike | bytes | Image.Image


@dataclass(frozen=True)
class Match:
    """One search result: a file and its cosine similarity to the query (higher is closer)."""

    path: str
    score: float
    id: int
    width: int
    height: int
    content_id: int

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
    """A folder holding the catalog and the vector index of a set of images."""

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
        self.threads = threads
        self._feature = None
        self._index: FlatIndex | None = None
        self._index_generation = -1
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
    def feature(self):  # -> DeepFeature, loaded on first use (building the model takes a while)
        if self._feature is None:
            from lookalike.features.deep import load_deep_feature

            self._feature = load_deep_feature(threads=self.threads)
        return self._feature

    # -- writing --------------------------------------------------------------------------------

    def add(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        prune: bool = False,
        workers: int | None = None,
        batch_size: int = 32,
        max_pixels: int | None = None,
        progress: bool = False,
    ) -> IndexReport:
        """Index image files and folders; only new or changed files are embedded.

        Args:
            paths: files and folders (searched recursively).
            prune: forget files under ``paths`` that no longer exist.
            workers: decode processes (default: one per core).
            batch_size: images per inference batch and per committed transaction.
            max_pixels: decompression-bomb limit (default ``lookalike.images.DEFAULT_MAX_PIXELS``).
            progress: show a progress bar on standard error.

        Returns:
            An :class:`IndexReport` with counts and the failed files.

        Example:
            >>> col.add(["~/Pictures"], prune=True).embedded
        """
        from lookalike.features.efficientnet import preprocess

        roots = [Path(p).expanduser().absolute() for p in paths]
        for root in roots:
            if not os.path.lexists(root):
                raise FileNotFoundError(f"no such file or folder: {root}")
        with WriterLock(self.folder):
            self._record_model()
            report = run_index(
                self.catalog,
                roots,
                load_encoder=lambda: self.feature,
                feature=FEATURE,
                preprocess=preprocess,
                min_side=2 * INPUT_SIZE,
                workers=workers,
                batch_size=batch_size,
                max_pixels=max_pixels,
                prune=prune,
                progress=progress,
            )
            self._save_index()
        return report

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
                self._save_index()
        return len(ids)

    def _record_model(self) -> None:
        if self.catalog.get_meta("model") is None:
            with self.catalog.transaction():
                self.catalog.set_meta("feature", FEATURE)
                self.catalog.set_meta("model", MODEL_NAME)
                self.catalog.set_meta("dim", str(DIM))

    # -- the vector index -------------------------------------------------------------------

    def _index_path(self, generation: int) -> Path:
        return self.folder / f"{FEATURE}.g{generation}.faiss"

    def _load_index(self) -> FlatIndex:
        """The faiss index for the catalog's current generation (brought up to date if stale)."""
        generation = self.catalog.generation
        if self._index is not None and self._index_generation == generation:
            return self._index
        index = self._read_index_file(self._index_path(generation))
        if index is None:
            index, generation = self._sync_index()
        self._index, self._index_generation = index, generation
        return index

    def _read_index_file(self, path: Path) -> FlatIndex | None:
        try:
            return FlatIndex.load(path, DIM)
        except Exception:  # missing or damaged: the catalog can rebuild it
            return None

    def _index_files(self) -> list[tuple[int, Path]]:
        """``(generation, path)`` of the index files present, newest first."""
        found = []
        for path in self.folder.glob(f"{FEATURE}.g*.faiss"):
            number = path.name[len(FEATURE) + 2 : -len(".faiss")]
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found, reverse=True)

    def _sync_index(self) -> tuple[FlatIndex, int]:
        """Bring the newest usable index up to the catalog: add and remove only what differs."""
        base = self._index
        if base is None:
            for _, path in self._index_files():
                base = self._read_index_file(path)
                if base is not None:
                    break
        index = base if base is not None else FlatIndex(DIM)
        conn = self.catalog.conn
        conn.execute("BEGIN")  # one read snapshot: generation and vectors agree
        try:
            generation = self.catalog.generation
            wanted = self.catalog.vector_ids(FEATURE)
            present = index.ids()
            stale = np.setdiff1d(present, wanted)
            missing = np.setdiff1d(wanted, present)
            vectors = self.catalog.vectors_for(FEATURE, DIM, missing.tolist())
        finally:
            conn.execute("COMMIT")
        index.remove(stale)
        index.add(missing, vectors)
        # a read-only index folder still searches, from memory
        with contextlib.suppress(OSError):
            index.save(self._index_path(generation))
        return index, generation

    def _save_index(self) -> None:
        """After a write: make sure the current generation is on disk, drop older ones."""
        current = self._index_path(self.catalog.generation)
        if not current.exists():
            self._load_index()
        for stale in self.folder.glob(f"{FEATURE}.g*.faiss*"):
            if stale != current:  # older generations, temporaries left by a crash
                stale.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------

    def embed(self, images: Sequence[QueryImage]) -> np.ndarray:
        """Unit-length feature vectors ``[N, 1280]`` for query images (paths, bytes or PIL)."""
        pixels = np.stack([self.feature.preprocess(_decode_query(img)) for img in images])
        return self.feature.encode(pixels)

    def search(self, query: QueryImage, k: int = 10) -> list[Match]:
        """The ``k`` indexed files most similar to ``query``, best first.

        Args:
            query: a path, the bytes of an image file, or a PIL image.
            k: how many results.

        Raises:
            ImageError: the query cannot be decoded.

        Example:
            >>> [m.path for m in col.search("photo.jpg", k=3)]
        """
        return self.search_vectors(self.embed([query]), k)[0]

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Match]]:
        """Search with ready-made feature vectors ``[Q, 1280]``; one result list per row."""
        if k < 1:
            raise ValueError("k must be at least 1")
        index = self._load_index()
        if len(index) == 0:
            return [[] for _ in range(len(vectors))]
        scores, ids = index.search(vectors, min(len(index), k + 8))
        hits = self.catalog.hits_for_contents(sorted({int(i) for i in ids.ravel() if i >= 0}))
        out = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            matches: list[Match] = []
            for score, content_id in zip(row_scores, row_ids, strict=True):
                similarity = float(min(1.0, max(-1.0, score)))
                matches.extend(
                    Match(h.path, similarity, h.file_id, h.width, h.height, h.content_id)
                    for h in hits.get(int(content_id), [])
                )
            out.append(matches[:k])
        return out

    def info(self) -> dict:
        """Counts and locations: images, unique contents, errors, model, sizes."""
        index_files = builtins.list(self.folder.glob(f"{FEATURE}.g*.faiss"))
        catalog_bytes = sum(
            p.stat().st_size
            for p in self.folder.glob(CATALOG_NAME + "*")
            if p.is_file()
        )
        return {
            "path": str(self.folder),
            "images": self.catalog.count_images(),
            "unique_images": self.catalog.count_contents(),
            "errors": self.catalog.count_errors(),
            "feature": FEATURE,
            "model": self.catalog.get_meta("model", MODEL_NAME),
            "dim": DIM,
            "index_bytes": sum(p.stat().st_size for p in index_files),
            "catalog_bytes": catalog_bytes,
            "schema_version": self.catalog.schema_version,
        }

    def errors(self) -> list[tuple[str, str]]:
        """``(path, reason)`` for every file that could not be indexed."""
        return self.catalog.errors()

    def verify(self) -> list[str]:
        """Consistency problems between catalog and vector index (empty list when all is well)."""
        problems = self.catalog.check_consistency()
        indexed = self._load_index().ids()
        wanted = self.catalog.vector_ids(FEATURE)
        if len(indexed) != len(np.unique(indexed)):
            problems.append("vector index holds duplicated ids")
        extra, missing = np.setdiff1d(indexed, wanted), np.setdiff1d(wanted, indexed)
        if len(extra) or len(missing):
            problems.append(
                f"vector index has {len(extra)} vectors the catalog lacks "
                f"and lacks {len(missing)} of the catalog's"
            )
        return problems


def _decode_query(query: QueryImage) -> Image.Image:
    if isinstance(query, Image.Image):
        return normalize_image(query, min_side=2 * INPUT_SIZE)
    if isinstance(query, bytes):
        return load_image(query, min_side=2 * INPUT_SIZE).image
    path = Path(os.fspath(query)).expanduser()
    if not path.exists():
        raise ImageError(f"no such file: {path}")
    return load_image(str(path), min_side=2 * INPUT_SIZE).image
