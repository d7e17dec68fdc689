"""Image descriptors, each behind the :class:`Feature` protocol."""

from lookalike.features.base import Feature

__all__ = ["Feature"]
