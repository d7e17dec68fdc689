"""lookalike: search by image, offline on a CPU.

>>> import lookalike
>>> col = lookalike.open("~/my-index")
>>> col.add(["~/Pictures"])
>>> col.search("photo.jpg", k=10)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Collection", "Match", "open"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from lookalike.collection import Collection, Match, open


def __getattr__(name: str) -> object:
    # Imported on first use, so that decode workers (which import lookalike.pipeline)
    # do not pay for faiss and the rest of the collection's imports.
    if name in __all__:
        from lookalike import collection

        return getattr(collection, name)
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
