"""The concepts a text query can name: ImageNet's classes and their WordNet ancestors.

``data/concepts.json.gz`` (made by ``scripts/make_concepts.py`` from WordNet 3.0 and the
ImageNet-1k class list; its ``source`` and ``licence`` fields say where each part comes from)
lists, for every concept, its names, a few aliases and the image-model classes it covers. An
ancestor covers all its descendant classes (every dog breed is a ``dog``), so its probability
for an image is the sum of theirs.

The names are embedded with the sentence encoder once and cached in the user cache folder
(``$LOOKALIKE_CACHE``), keyed by the data file and the encoder's weights.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.atomic import write_atomic

DATA = Path(__file__).resolve().parent / "data" / "concepts.json.gz"
NUM_CLASSES = 1000
EMBEDDING_VERSION = 1


@dataclass(frozen=True)
class Concept:
    """One nameable thing: a WordNet synset and the classes it covers."""

    index: int
    wnid: str
    names: tuple[str, ...]
    aliases: tuple[str, ...]
    classes: np.ndarray  # int indices into the 1000 ImageNet classes
    parents: tuple[int, ...]  # indices of the concepts it is a kind of

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def is_class(self) -> bool:
        """An ImageNet class itself (otherwise an ancestor covering several classes)."""
        return self.index < NUM_CLASSES


class Concepts:
    """Every concept, their names' embeddings, and similarity of a text embedding to each."""

    def __init__(self, data: dict, path: Path = DATA) -> None:
        self.path = path
        self.source = data["source"]
        self.licence = data["licence"]
        self.classes: list[str] = data["classes"]
        if len(self.classes) != NUM_CLASSES:
            raise ValueError(f"{path}: expected {NUM_CLASSES} classes")
        self.concepts = [
            Concept(
                i,
                c["wnid"],
                tuple(c["names"]),
                tuple(c["aliases"]),
                np.asarray(c["classes"], dtype=np.int64),
                tuple(c["parents"]),
            )
            for i, c in enumerate(data["concepts"])
        ]
        # a concept's neighbourhood in WordNet: what it is a kind of, and its kinds
        neighbours: list[list[int]] = [list(c.parents) for c in self.concepts]
        for c in self.concepts:
            for parent in c.parents:
                neighbours[parent].append(c.index)
        self.neighbours = [np.asarray(n, dtype=np.int64) for n in neighbours]
        # the same as flat (concept, neighbour) pairs grouped by concept, for one reduceat
        self._pair_concept = np.repeat(np.arange(len(neighbours)), [len(n) for n in neighbours])
        self._pair_neighbour = np.concatenate(self.neighbours) if neighbours else np.zeros(0, int)
        self._pair_starts = np.flatnonzero(
            np.r_[True, self._pair_concept[1:] != self._pair_concept[:-1]]
        )
        # every (concept, text) pair; each distinct text is embedded once
        texts: dict[str, int] = {}
        concept_of, text_of, alias = [], [], []
        for c in self.concepts:
            for is_alias, names in ((False, c.names), (True, c.aliases)):
                for name in names:
                    concept_of.append(c.index)
                    text_of.append(texts.setdefault(name, len(texts)))
                    alias.append(is_alias)
        self.texts = list(texts)
        self.entry_concept = np.asarray(concept_of, dtype=np.int64)
        self.entry_text = np.asarray(text_of, dtype=np.int64)
        self.entry_alias = np.asarray(alias, dtype=bool)
        # entries come concept by concept and every concept has a name: one reduceat per query
        self._entry_starts = np.searchsorted(self.entry_concept, np.arange(len(self.concepts)))
        if not np.all(np.diff(self.entry_concept) >= 0) or len(
            np.unique(self.entry_concept)
        ) != len(self.concepts):
            raise ValueError(f"{path}: every concept needs a name")
        self._embeddings: np.ndarray | None = None

    @classmethod
    def load(cls, path: Path = DATA) -> Concepts:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return cls(json.load(fh), path)

    def __len__(self) -> int:
        return len(self.concepts)

    def by_wnid(self, wnid: str) -> Concept:
        for c in self.concepts:
            if c.wnid == wnid:
                return c
        raise KeyError(wnid)

    def find(self, name: str) -> list[Concept]:
        """Concepts with this exact name (case-insensitive)."""
        name = name.lower()
        return [c for c in self.concepts if name in (n.lower() for n in c.names)]

    # -- embeddings -------------------------------------------------------------------------

    def cache_path(self, encoder_key: str) -> Path:
        from lookalike.features.efficientnet import cache_dir

        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        return cache_dir() / f"concepts-{digest}-{encoder_key}-e{EMBEDDING_VERSION}.npy"

    def embed(self, encoder, progress: bool = False) -> np.ndarray:
        """``float32 [texts, 384]`` embeddings of every name, computed once and cached."""
        if self._embeddings is not None:
            return self._embeddings
        path = self.cache_path(encoder.key)
        embeddings = None
        if path.is_file():
            try:
                embeddings = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                embeddings = None  # damaged: compute again
            if embeddings is not None and embeddings.shape != (len(self.texts), 384):
                embeddings = None
        if embeddings is None:
            if progress:
                print(
                    f"lookalike: embedding {len(self.texts):,} concept names for text search "
                    "(once; cached)",
                    file=sys.stderr,
                )
            embeddings = encoder.encode(self.texts).astype(np.float16)
            import io

            buffer = io.BytesIO()
            np.save(buffer, embeddings, allow_pickle=False)
            write_atomic(path, buffer.getvalue())
        self._embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        return self._embeddings

    def similarities(self, query: np.ndarray, alias_factor: float) -> np.ndarray:
        """``float32 [concepts]``: the best cosine similarity of ``query`` to each concept's
        names (aliases count ``alias_factor`` times theirs). Needs :meth:`embed` first."""
        if self._embeddings is None:
            raise RuntimeError("call embed(encoder) first")
        per_text = self._embeddings @ np.asarray(query, dtype=np.float32)
        per_entry = per_text[self.entry_text]
        per_entry = np.where(self.entry_alias, per_entry * alias_factor, per_entry)
        return np.maximum.reduceat(per_entry, self._entry_starts).astype(np.float32)

    def context(self, similarities: np.ndarray) -> np.ndarray:
        """``float32 [concepts]``: for each concept, the best similarity among its WordNet
        neighbours (parents and children). A query that really names a concept is also close
        to what that concept is a kind of, or to its kinds ("puppy": "dog" and "canine"); one
        that only shares a word with it is not ("quantum entanglement": "web, entanglement",
        a kind of "trap")."""
        out = np.full(len(self.concepts), -1.0, dtype=np.float32)
        if len(self._pair_neighbour):
            best = np.maximum.reduceat(similarities[self._pair_neighbour], self._pair_starts)
            out[self._pair_concept[self._pair_starts]] = best
        return out


_default: Concepts | None = None


def default_concepts() -> Concepts:
    """The packaged concepts, loaded once per process."""
    global _default
    if _default is None:
        _default = Concepts.load()
    return _default
