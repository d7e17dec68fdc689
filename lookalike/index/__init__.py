"""Vector stores behind one protocol: flat (inner product), binary (Hamming), exact (numpy).

``store.IndexStore`` keeps one per feature in step with the catalog.
"""

from lookalike.index.flat import FlatIndex, VectorIndex

__all__ = ["FlatIndex", "VectorIndex"]
