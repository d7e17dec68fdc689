"""Image descriptors, each behind the :class:`Feature` protocol; see ``registry`` for names."""

from lookalike.features.base import METRICS, ComputedFeature, Feature

__all__ = ["METRICS", "ComputedFeature", "Feature"]
