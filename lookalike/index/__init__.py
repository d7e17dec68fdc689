"""Vector stores behind one protocol: flat (inner product), binary (Hamming), exact (numpy).

``store.IndexStore`` keeps one per feature in step with the catalog; ``policy`` decides which
(``choose``: ``--index auto`` by size and memory budget; ``ann``: HNSW, SQ8, IVF-PQ, PCA;
``mih``: multi-index hashing of binary codes; ``milvus``: the Milvus backend).
"""

from lookalike.index.flat import FlatIndex, VectorIndex

__all__ = ["FlatIndex", "VectorIndex"]
