"""Text-to-image search without CLIP weights: a sentence encoder and the image model's classes.

A text query is embedded with all-MiniLM-L6-v2 (:mod:`lookalike.text.encoder`), compared with
the names of ImageNet's 1000 classes and their WordNet ancestors (:mod:`lookalike.text.concepts`),
and turned into weights over the classes; each image's stored class probabilities then give its
score (:mod:`lookalike.text.scoring`). Queries that match no concept are reported as such.
"""

from lookalike.text.scoring import ConceptMatch, QueryPart, TextModel, TextQuery, interpret

__all__ = ["ConceptMatch", "QueryPart", "TextModel", "TextQuery", "interpret"]
