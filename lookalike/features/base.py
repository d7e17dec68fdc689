"""The protocol every descriptor implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Feature(Protocol):
    """A descriptor: turns preprocessed pixels into one vector per image."""

    name: str
    dim: int
    dtype: np.dtype
    metric: str  # "cosine", "l2", "hamming", ...

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Encode a batch of preprocessed images into an ``(N, dim)`` array."""
        ...
