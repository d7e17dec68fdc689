"""From a text query to weights over the image model's 1000 classes, and to image scores.

How a query is read:

1. Fillers go ("a photo of a cat" -> "cat"), and the query is split into parts at "and",
   "on", "in", "at", "with", commas ... ("dog on a beach" -> "dog", "beach").
2. Each part (and the whole query) is embedded and compared with every concept's names
   (:class:`lookalike.text.concepts.Concepts`). A concept matches when its best name is similar
   enough (cosine >= ``MATCH``) *and* the text is also close to the concept's WordNet neighbours
   (``context >= CONTEXT``): "quantum entanglement" shares a word with "web, entanglement" but
   is nothing like a trap or a spider web, so it matches nothing.
3. The concepts within ``MARGIN`` of the best match are taken together (a query may name
   several senses: "car" is a motor car or a railway car); class ``k`` gets the weight
   ``strength`` of the strongest of them that covers it, 1 for a clear match (similarity >=
   ``STRONG``), less for a weak one.
4. An image's score for a part is ``sum_k p_k w_k``: the probability the model gives to the
   classes the part names, in [0, 1]. Several matched parts are combined by their geometric
   mean, so an image must show all of them ("dog" and "beach") to score well.

A query none of whose parts matches keeps a ranking by its closest concepts, but with weights of
``NO_MATCH_STRENGTH`` (scores of at most 0.05) and a warning that says so.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np

from lookalike.text.concepts import NUM_CLASSES, Concept, Concepts

MATCH = 0.6  # below this cosine similarity a name does not name the query
STRONG = 0.75  # from here on a match counts fully
CONTEXT = 0.4  # the query must be this close to something the concept is a kind of, or its kinds
MARGIN = 0.05  # concepts this close to the best match are taken with it
ALIAS_FACTOR = 0.95  # an alias ("kitty" under "domestic cat") counts a little less than a name
NO_MATCH_STRENGTH = 0.05
FLOOR = 1e-4  # a part's score is at least this in the geometric mean

_FILLER = re.compile(
    r"^(?:(?:a|an|the|some|my)\s+)?(?:photos?|pictures?|images?|pics?|shots?|snapshots?|"
    r"photographs?)\s+(?:of|with|showing)\s+",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"^(?:a|an|the|some|two|three|several|many)\s+", re.IGNORECASE)
_SPLIT = re.compile(
    r"\s*(?:[,;+&]|\b(?:and|with|on|in|at|near|by|under|over|beside|next to|behind|inside|"
    r"in front of|on top of)\b)\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ConceptMatch:
    """A concept a part of the query names: how similar, in context, and its weight."""

    concept: Concept
    similarity: float  # cosine similarity of the text to the concept's closest name
    context: float  # best similarity of the text to the concept's WordNet neighbours
    strength: float  # weight of the concept's classes, in [0, 1]

    @property
    def name(self) -> str:
        return self.concept.name

    def as_dict(self) -> dict:
        c = self.concept
        return {
            "concept": c.name,
            "wnid": c.wnid,
            "names": list(c.names),
            "classes": len(c.classes),
            "similarity": round(self.similarity, 4),
            "strength": round(self.strength, 4),
        }


@dataclass
class QueryPart:
    """One part of a query ("dog" in "dog on a beach") and the concepts it names."""

    text: str
    matched: bool
    matches: list[ConceptMatch]  # taken concepts; when not matched, the closest ones
    weights: np.ndarray  # float32 [1000]: weight of each class for this part

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "matched": self.matched,
            "concepts": [m.as_dict() for m in self.matches],
        }


@dataclass
class TextQuery:
    """What a text query was understood as: its parts, their concepts, and any warning.

    ``matched`` is False when no part names anything the image model knows; ``warning`` then
    says so (and also names parts that were ignored or matched only weakly).
    """

    text: str
    parts: list[QueryPart]
    warnings: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return any(p.matched for p in self.parts)

    @property
    def matched_concepts(self) -> list[ConceptMatch]:
        """The concepts the query was understood to name, over all its matched parts."""
        return [m for p in self.parts if p.matched for m in p.matches]

    @property
    def warning(self) -> str | None:
        return "; ".join(self.warnings) if self.warnings else None

    @property
    def class_weights(self) -> np.ndarray:
        """``float32 [parts, 1000]``: one row of class weights per part."""
        return np.stack([p.weights for p in self.parts])

    def combine(self, part_scores: np.ndarray) -> np.ndarray:
        """Images' scores from ``[parts, N]`` per-part scores: their geometric mean."""
        part_scores = np.asarray(part_scores, dtype=np.float32)
        if len(part_scores) == 1:
            return part_scores[0]
        logs = np.log(np.maximum(part_scores, FLOOR))
        return np.exp(logs.mean(axis=0)).astype(np.float32)

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        """Scores of images given their dense class probabilities ``[N, 1000]``."""
        return self.combine(self.class_weights @ np.asarray(probabilities, np.float32).T)

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "matched": self.matched,
            "concepts": [m.as_dict() for m in self.matched_concepts],
            "parts": [p.as_dict() for p in self.parts],
            "warning": self.warning,
        }


def split_query(text: str) -> tuple[str, list[str]]:
    """``(whole, parts)``: the query without fillers, and its parts (one part if unsplit)."""
    whole = " ".join(text.split())
    whole = _FILLER.sub("", whole)
    whole = _ARTICLE.sub("", whole).strip(" .!?")
    parts = []
    for piece in _SPLIT.split(whole):
        piece = _ARTICLE.sub("", piece.strip(" .!?"))
        if piece:
            parts.append(piece)
    return whole, parts or [whole]


class TextModel:
    """The sentence encoder and the concepts, loaded once; :meth:`interpret` reads queries."""

    def __init__(self, encoder=None, concepts: Concepts | None = None) -> None:
        if encoder is None:
            from lookalike.text.encoder import MiniLM

            encoder = MiniLM.load()
        if concepts is None:
            from lookalike.text.concepts import default_concepts

            concepts = default_concepts()
        self.encoder = encoder
        self.concepts = concepts
        self._ready = False

    def prepare(self, progress: bool = False) -> None:
        """Embed the concept names (cached on disk after the first time)."""
        if self._ready:
            return
        with _PREPARING:  # a server may warm up in the background while a query arrives
            if not self._ready:
                self.concepts.embed(self.encoder, progress=progress)
                self._ready = True

    def interpret(self, text: str) -> TextQuery:
        """Read ``text`` as weights over the image model's classes (see the module notes)."""
        if not text or not text.strip():
            raise ValueError("the text query is empty")
        self.prepare()
        whole, parts = split_query(text)
        texts = [whole] + (parts if len(parts) > 1 else [])
        embeddings = self.encoder.encode(texts)
        read = [self._read_part(t, e) for t, e in zip(texts, embeddings, strict=True)]
        query = TextQuery(text, [read[0]])
        if len(read) > 1:
            matched = [p for p in read[1:] if p.matched]
            ignored = [p for p in read[1:] if not p.matched]
            best_whole = max((m.similarity for m in read[0].matches), default=0.0)
            if len(matched) >= 2 or (matched and (not read[0].matched or best_whole < STRONG)):
                query.parts = matched
                for p in ignored:
                    query.warnings.append(
                        f'"{p.text}" matches nothing the image model knows; ignored'
                    )
        for p in query.parts:
            if p.matched and max(m.similarity for m in p.matches) < STRONG:
                names = ", ".join(f'"{m.name}"' for m in p.matches)
                query.warnings.append(f'"{p.text}" matches {names} only weakly')
        if not query.matched:
            closest = query.parts[0].matches[0] if query.parts[0].matches else None
            hint = ""
            if closest is not None and closest.similarity >= MATCH:  # words, not meaning
                hint = f' ("{closest.name}" shares words with it, not its meaning)'
            elif closest is not None:
                hint = f' (closest: "{closest.name}", similarity {closest.similarity:.2f})'
            query.warnings.insert(
                0,
                f'no concept the image model knows matches "{text}"{hint}; '
                "scores are low and the results are unreliable",
            )
        return query

    def _read_part(self, text: str, embedding: np.ndarray) -> QueryPart:
        concepts = self.concepts
        similarity = concepts.similarities(embedding, ALIAS_FACTOR)
        context = concepts.context(similarity)
        # a concept without neighbours (none in practice) is judged on its names alone
        usable = (context >= CONTEXT) | (context < -0.5)
        effective = np.where(usable, similarity, -1.0)
        best = float(effective.max())
        weights = np.zeros(NUM_CLASSES, dtype=np.float32)
        if best >= MATCH:
            chosen = np.flatnonzero(effective >= max(MATCH, best - MARGIN))
            strengths = {int(i): _strength(float(effective[i])) for i in chosen}
            matched = True
        else:  # nothing names it: keep the closest concepts, at a token weight
            raw_best = float(similarity.max())
            chosen = np.flatnonzero(similarity >= raw_best - MARGIN)
            strengths = {int(i): NO_MATCH_STRENGTH for i in chosen}
            matched = False
        order = sorted(chosen.tolist(), key=lambda i: -similarity[i])[:8]
        matches = []
        for i in order:
            c = concepts.concepts[i]
            weights[c.classes] = np.maximum(weights[c.classes], strengths[i])
            matches.append(ConceptMatch(c, float(similarity[i]), float(context[i]), strengths[i]))
        return QueryPart(text, matched, matches, weights)


def _strength(similarity: float) -> float:
    """1 for a clear match, down to 0.5 at the threshold."""
    if similarity >= STRONG:
        return 1.0
    return 0.5 + 0.5 * (similarity - MATCH) / (STRONG - MATCH)


_default: TextModel | None = None
_PREPARING = threading.RLock()


def default_text_model() -> TextModel:
    """The packaged encoder and concepts, loaded once per process."""
    global _default
    with _PREPARING:
        if _default is None:
            _default = TextModel()
    return _default


def interpret(text: str) -> TextQuery:
    """:meth:`TextModel.interpret` with the packaged model."""
    return default_text_model().interpret(text)
