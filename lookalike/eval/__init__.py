"""Evaluation helpers: sample photos, copy-detection transforms, metrics."""
