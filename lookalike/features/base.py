"""The protocol every descriptor implements, and how scores are defined for each metric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

#: Metrics and what they mean. ``score`` is always a similarity (larger is closer) in [0, 1]
#: (cosine: [-1, 1]); ``distance`` is the raw distance the metric defines.
METRICS = {
    "cosine": "score = cosine similarity of unit vectors; distance = 1 - score",
    "l2": "distance = Euclidean distance; score = 1 / (1 + distance)",
    "hamming": "distance = number of differing bits; score = 1 - distance / bits",
    "chi2": "histograms summing to 1; distance = 0.5 * sum((a-b)^2 / (a+b)) in [0, 1]; "
    "score = 1 - distance",
    "intersection": "histograms summing to 1; score = sum(min(a, b)) in [0, 1]; "
    "distance = 1 - score",
}

#: Preparation run in decode workers: an RGB image in, one array out. Must be picklable
#: (a module-level function or a functools.partial of one).
Preparer = Callable[[Image.Image], np.ndarray]


@runtime_checkable
class Feature(Protocol):
    """A descriptor: turns images into one fixed-size vector (or bit code) each.

    ``prepare`` runs once per image in the decode workers; ``encode`` turns a batch of prepared
    arrays into the stored vectors (for cheap descriptors it only stacks them; the deep model
    runs its network here).
    """

    name: str
    kind: str  # "deep", "hash", "color", "texture", "shape", "learned"
    dim: int  # values per image; for binary codes, bits
    dtype: np.dtype  # float32 vectors, or uint8 for binary codes packed 8 bits a byte
    metric: str  # a key of METRICS

    @property
    def binary(self) -> bool: ...

    def preparer(self) -> Preparer: ...

    def encode(self, prepared: np.ndarray) -> np.ndarray: ...


class VectorLayout:
    """How a descriptor's vectors are laid out, from its ``dim`` and ``metric``."""

    dim: int
    metric: str

    @property
    def binary(self) -> bool:
        return self.metric == "hamming"

    @property
    def width(self) -> int:
        """Array length per image: bytes for binary codes, values otherwise."""
        return self.dim // 8 if self.binary else self.dim


class ComputedFeature(VectorLayout):
    """A descriptor computed entirely in the decode workers by one picklable function.

    ``encode`` only stacks what the workers computed and checks its shape and dtype.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        dim: int,
        dtype: np.dtype | type,
        metric: str,
        compute: Preparer,
        description: str = "",
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}")
        self.name, self.kind, self.dim, self.metric = name, kind, dim, metric
        self.dtype = np.dtype(dtype)
        self.compute = compute
        self.description = description

    def preparer(self) -> Preparer:
        return self.compute

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(prepared, dtype=self.dtype)
        if array.ndim != 2 or array.shape[1] != self.width:
            raise ValueError(f"{self.name}: expected [N, {self.width}], got {array.shape}")
        return array

    def __repr__(self) -> str:
        return f"<feature {self.name}: {self.kind}, {self.dim} {self.dtype}, {self.metric}>"


def score_and_distance(
    metric: str, raw: np.ndarray, bits: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(score, distance)`` from what an index returns: a similarity for ``cosine``, a
    distance for every other metric (see METRICS)."""
    raw = np.asarray(raw, dtype=np.float32)
    if metric == "cosine":
        score = np.clip(raw, -1.0, 1.0)
        return score, 1.0 - score
    if metric == "hamming":
        if not bits:
            raise ValueError("hamming scores need the number of bits")
        return 1.0 - raw / bits, raw
    if metric == "l2":
        return 1.0 / (1.0 + raw), raw
    if metric in ("chi2", "intersection"):
        return 1.0 - raw, raw
    raise ValueError(f"unknown metric {metric!r}")
