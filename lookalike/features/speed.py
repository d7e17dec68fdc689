"""`lookalike features`: every descriptor with its size, metric and a quick speed reading."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from lookalike.features.registry import (
    OTHER_MODELS,
    FeatureUnavailable,
    all_features,
    load_model_feature,
    pixel_features,
)


def _sample_images(count: int = 8, size: tuple[int, int] = (640, 480)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    return [
        Image.fromarray(np.roll(base, i, axis=1)).resize(size, Image.Resampling.BICUBIC)
        for i in range(count)
    ]


def _images_per_s(run, count: int) -> float:
    run()  # warm up
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def feature_table(measure: bool = True) -> list[dict]:
    """One row per descriptor; ``images_per_s`` encodes 640x480 images (decoding excluded)."""
    images = _sample_images() if measure else []
    computed = pixel_features()
    rows = []
    for name, spec in all_features().items():
        row = {
            "name": name,
            "kind": spec.kind,
            "dim": spec.dim,
            "dtype": str(spec.dtype),
            "metric": spec.metric,
            "bytes_per_image": spec.bytes_per_image,
            "description": spec.description,
            "images_per_s": None,
        }
        if measure and name in computed:
            feature = computed[name]
            row["images_per_s"] = _images_per_s(
                lambda f=feature: f.encode([f.compute(i) for i in images]), len(images)
            )
        elif measure and name == "deep":
            from lookalike.features.deep import load_deep_feature

            deep = load_deep_feature()
            row["images_per_s"] = _images_per_s(
                lambda d=deep: d.encode(np.stack([d.preprocess(i) for i in images])), len(images)
            )
        elif measure and name in OTHER_MODELS:
            try:
                model = load_model_feature(name)
            except FeatureUnavailable as exc:  # optional package absent: no speed, say why
                row["unavailable"] = str(exc)
            else:
                row["images_per_s"] = _images_per_s(
                    lambda m=model: m.encode(np.stack([m.preprocess(i) for i in images])),
                    len(images),
                )
        rows.append(row)
    return rows
