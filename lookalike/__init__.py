"""lookalike: search by image, offline on a CPU."""

from lookalike.collection import Collection, Match, open

__all__ = ["Collection", "Match", "open"]
__version__ = "0.1.0"
