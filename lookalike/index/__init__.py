"""Vector stores behind one protocol (exact inner product for now)."""

from lookalike.index.flat import FlatIndex, VectorIndex

__all__ = ["FlatIndex", "VectorIndex"]
