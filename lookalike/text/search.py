"""Text search over a collection: by the image model's classes or a user's CLIP, alone or fused
with an image query."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lookalike.catalog import Catalog
from lookalike.features.base import score_and_distance
from lookalike.features.models import CLIP, MIN_SIDE, Models
from lookalike.features.registry import CLASSES, DEEP, UnknownFeature
from lookalike.images import QueryImage, decode_query
from lookalike.index.store import IndexStore
from lookalike.search import Match, Searcher

if TYPE_CHECKING:
    from lookalike.filters import Node
    from lookalike.text.clip import ClipOnnx
    from lookalike.text.scoring import TextQuery


class TextResults(list):
    """The matches of a text search (a ``list`` of :class:`Match`, best first), and how the
    text was read: ``query`` (a :class:`lookalike.text.TextQuery`), ``matched`` (False when it
    names nothing the image model knows), ``matched_concepts`` and ``warning``."""

    def __init__(
        self,
        matches: Iterable[Match],
        query: TextQuery,
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


class TextSearcher:
    """Search by words in the collection whose catalog, index store and models these are;
    ``images`` searches by image (for a text and an image together)."""

    def __init__(
        self, catalog: Catalog, store: IndexStore, models: Models, images: Searcher
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.models = models
        self.images = images
        self._lacking: tuple[tuple[int, int], int] | None = None  # images without classes

    def search(
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
        """The ``k`` files that best show what ``text`` names (see
        :meth:`lookalike.Collection.search_text`)."""
        from lookalike.index.classes import top_k
        from lookalike.text.scoring import default_text_model

        if k < 1:
            raise ValueError("k must be at least 1")
        if not 0.0 <= weight <= 1.0:
            raise ValueError("weight must be between 0 and 1")
        if model not in (None, "concepts", "clip"):
            raise ValueError(f"unknown text model {model!r}; choose concepts or clip")
        clip = self.models.clip() if model != "concepts" else None
        if model == "clip" and clip is None:
            raise UnknownFeature(
                "this index has no CLIP embeddings; index with --model clip-onnx:FOLDER"
            )
        if clip is not None:
            return self._search_clip(clip, text, k, image, weight, where, folder)
        if DEEP.name not in self.models.features:
            raise UnknownFeature(
                "text search needs the deep model's class probabilities; add them with "
                "`lookalike index FOLDER --features +deep`"
            )
        query = default_text_model().interpret(text)
        warnings = list(query.warnings)
        index = self.store.class_index()
        ids = index.ids()
        files = None
        if where is not None or folder is not None:
            files, contents = self.images.allowed(where, folder)
            ids = ids[np.isin(ids, contents)]
        lacking = self.lacking_classes()
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
        matches = self.images.matches(score, 1.0 - score, found, k, files)[0]
        return TextResults(matches, query, warnings)

    def _search_clip(
        self,
        clip: ClipOnnx,
        text: str,
        k: int,
        image: QueryImage | None,
        weight: float,
        where: str | Mapping | Node | None,
        folder: str | os.PathLike | None,
    ) -> TextResults:
        """Text search in the space of the collection's own CLIP."""
        from lookalike.text.scoring import QueryPart, TextQuery

        if not text or not text.strip():
            raise ValueError("the text query is empty")
        vector = clip.encode_text([text])[0]
        if image is not None:
            decoded = decode_query(image, min_side=MIN_SIDE)
            seen = clip.encode_images(clip.preparer()(decoded)[None])[0]
            vector = (1.0 - weight) * seen + weight * vector
            vector /= max(float(np.linalg.norm(vector)), 1e-12)
        query = TextQuery(text, [QueryPart(text, True, [], np.zeros(1000, np.float32))])
        spec = self.models.clip_info()
        assert spec is not None  # the collection has a CLIP
        index = self.store.get(spec)
        files = contents = None
        if where is not None or folder is not None:
            files, contents = self.images.allowed(where, folder)
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
        matches = self.images.matches(score, distance, ids, k, files)[0]
        return TextResults(matches, query, model=used)

    def _fuse(
        self,
        image: QueryImage,
        text_scores: np.ndarray,
        ids: np.ndarray,
        k: int,
        weight: float,
        where: str | Mapping | Node | None,
        folder: str | os.PathLike | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(1 - weight) * cosine + weight * text`` over the union of both shortlists."""
        from lookalike.index.classes import top_k

        vector = self.images.describe([image], [DEEP.name])[DEEP.name]
        shortlist = max(200, 20 * k)
        by_image = self.images.search_vectors(vector, shortlist, where=where, folder=folder)[0]
        _, by_text = top_k(text_scores[None], ids, min(shortlist, max(len(ids), 1)))
        candidates = np.union1d([m.content_id for m in by_image], by_text[by_text >= 0])
        candidates = candidates[np.isin(candidates, ids)]
        if not len(candidates):
            return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64)
        deep = self.store.vectors_of(DEEP)(candidates)
        cosine = deep @ vector[0]
        order = np.argsort(ids)
        text = text_scores[order[np.searchsorted(ids, candidates, sorter=order)]]
        fused = ((1.0 - weight) * cosine + weight * text).astype(np.float32)
        return top_k(fused[None], candidates, min(len(candidates), k + 8))

    def lacking_classes(self) -> int:
        """Images with deep vectors but no class probabilities (cached per generation)."""
        key = (self.catalog.generation(DEEP.name), self.catalog.generation(CLASSES.name))
        if self._lacking is None or self._lacking[0] != key:
            count = len(self.catalog.vector_ids(DEEP.name))
            self._lacking = (key, max(0, count - len(self.catalog.vector_ids(CLASSES.name))))
        return self._lacking[1]

    def coverage(self) -> dict:
        """How many images text search covers (those with class probabilities, or with CLIP
        embeddings when the collection has a CLIP)."""
        count = len(self.catalog.vector_ids(CLASSES.name))
        clip = self.catalog.get_meta("clip:folder")
        return {
            "model": f"clip-onnx:{clip}" if clip else "concepts",
            "images": len(self.catalog.vector_ids(CLIP)) if clip else count,
            "missing": max(0, len(self.catalog.vector_ids(DEEP.name)) - count),
            "bytes_per_image": CLASSES.bytes_per_image,
            "index_bytes": self.store.bytes_on_disk(CLASSES.name),
        }
