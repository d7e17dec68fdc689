"""The "deep" descriptor: EfficientNet-Lite0 pooled features run with onnxruntime on the CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.features.efficientnet import FEATURE_DIM, INPUT_SIZE, model_path, preprocess
from lookalike.features.pooling import average_pool, rmac

if TYPE_CHECKING:
    from collections.abc import Callable

    import onnxruntime as ort
    from PIL import Image

OUTPUTS = ("features", "logits", "feature_map")

# How the search vector is pooled from the last feature map. R-MAC finds crops and heavily
# recompressed copies more often than plain averaging at the same category-retrieval quality
# (mfood7: copy recall@1 0.962 vs 0.934 over 9 transforms, category mAP 0.567 vs 0.565;
# see bench/README.md).
POOLINGS = {"rmac": rmac, "average": average_pool}
DEFAULT_POOLING = "rmac"


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # decode worker processes share the cores: idle ORT threads must sleep, not spin
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class DeepFeature:
    """EfficientNet-Lite0 ImageNet features, L2-normalised, compared by cosine similarity.

    Create it with :func:`load_deep_feature`; ``feature.preprocess(img)`` is the matching
    preprocessing (shorter side to 224 with BICUBIC, centre crop), so the two never drift apart.
    The search vector pools the last 7x7 feature map with ``pooling`` (default R-MAC).
    """

    name: str = "deep"
    kind: str = "deep"
    binary: bool = False
    dim: int = FEATURE_DIM
    dtype: np.dtype = np.dtype(np.float32)
    metric: str = "cosine"
    input_size: int = INPUT_SIZE

    def __init__(
        self,
        session: ort.InferenceSession,
        path: Path | None = None,
        pooling: str = DEFAULT_POOLING,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {sorted(POOLINGS)}")
        self.session = session
        self.model_path = path
        self.pooling = pooling

    @staticmethod
    def preparer() -> Callable[[Image.Image], np.ndarray]:
        """What the decode workers run: :func:`preprocess` (picklable)."""
        return preprocess

    @staticmethod
    def preprocess(img: Image.Image) -> np.ndarray:
        """Image -> uint8 [224, 224, 3] ready for :meth:`encode`."""
        return preprocess(img, INPUT_SIZE)

    def _check(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        s = self.input_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
            raise ValueError(
                f"expected uint8 pixels of shape [N, {s}, {s}, 3], got "
                f"{pixels.dtype} {tuple(pixels.shape)}"
            )
        return np.ascontiguousarray(pixels)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, 224, 224, 3] -> float32 [N, 1280] search vectors, L2-normalised."""
        pixels = self._check(pixels)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.pooling == "average":  # the graph pools and normalises it already
            (features,) = self.session.run(["features"], {"pixels": pixels})
            return features
        (feature_map,) = self.session.run(["feature_map"], {"pixels": pixels})
        return POOLINGS[self.pooling](feature_map)

    def encode_with_classes(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Search vectors (as :meth:`encode`) and ImageNet class probabilities ``float32
        [N, 1000]`` (softmax of the logits) from one forward pass."""
        from lookalike.index.classes import softmax

        pixels = self._check(pixels)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 1000), np.float32)
        if self.pooling == "average":
            features, logits = self.session.run(["features", "logits"], {"pixels": pixels})
            return features, softmax(logits)
        feature_map, logits = self.session.run(["feature_map", "logits"], {"pixels": pixels})
        return POOLINGS[self.pooling](feature_map), softmax(logits)

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs: ``features`` [N,1280], ``logits`` [N,1000], ``feature_map`` [N,1280,7,7]."""
        pixels = self._check(pixels)
        values = self.session.run(list(OUTPUTS), {"pixels": pixels})
        return dict(zip(OUTPUTS, values, strict=True))


def load_deep_feature(threads: int | None = None, pooling: str = DEFAULT_POOLING) -> DeepFeature:
    """Build (or load the cached) graph and open an onnxruntime CPU session on it.

    ``threads`` sets ``intra_op_num_threads`` (default: ``os.cpu_count()``); ``pooling`` is
    ``"rmac"`` (default) or ``"average"``.
    """
    path = model_path()
    return DeepFeature(_session(path, threads), path, pooling)
