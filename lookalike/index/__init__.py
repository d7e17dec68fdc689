"""Vector stores behind one protocol (``base.VectorIndex``), one table of their kinds (``kinds``).

``flat``: inner product (faiss); ``binary``: Hamming (faiss); ``exact``: other metrics (numpy);
``classes``: sparse class probabilities; ``ann``: HNSW, SQ8, IVF-PQ, PCA; ``mih``: multi-index
hashing of binary codes; ``milvus``: the Milvus backend. ``store.IndexStore`` keeps one per
feature in step with the catalog; ``policy`` decides which (``choose``: ``--index auto`` by size
and memory budget); ``two_stage``: a shortlist re-ranked exactly by another feature.
"""

from lookalike.index.base import Capabilities, VectorIndex
from lookalike.index.flat import FlatIndex

__all__ = ["Capabilities", "FlatIndex", "VectorIndex"]
