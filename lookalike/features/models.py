"""The models of one collection: loaded on first use, learned codes fitted, a user's CLIP kept."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.catalog import Catalog, CatalogError
from lookalike.features.registry import (
    CLASSES,
    CLIP_NAME,
    DEEP,
    LEARNED_BITS,
    OTHER_MODELS,
    FeatureInfo,
    info,
    pixel_features,
)
from lookalike.pipeline import FeatureJob

if TYPE_CHECKING:
    from lookalike.features.deep import DeepFeature
    from lookalike.features.itq import ITQ
    from lookalike.text.clip import ClipOnnx

INPUT_SIZE = 224
MIN_SIDE = 2 * INPUT_SIZE  # images are decoded to no less than twice the model input
MODEL_NAME = "efficientnet-lite0 (ImageNet), R-MAC pooled 1280-d"
CLIP = CLIP_NAME  # the feature holding a user's CLIP image embeddings (lookalike.text.clip)


def load_clip(model: str) -> ClipOnnx:
    """The CLIP model named ``"clip-onnx:FOLDER"``, loaded."""
    from lookalike.text.clip import load_clip as load
    from lookalike.text.clip import parse_model

    return load(parse_model(model))


class Models:
    """The deep model, the other model descriptors, the fitted learned codes and the CLIP of
    the collection in ``folder`` whose catalog is ``catalog``."""

    def __init__(self, folder: Path, catalog: Catalog, threads: int | None = None) -> None:
        self.folder = folder
        self.catalog = catalog
        self.threads = threads
        self._deep: DeepFeature | None = None
        self._models: dict[str, DeepFeature] = {}  # model descriptors other than deep (lite2)
        self._learned: dict[str, ITQ] = {}

    def use_catalog(self, catalog: Catalog) -> None:
        """Read settings and fitted codes from ``catalog`` from now on."""
        self.catalog = catalog
        self._learned.clear()

    @property
    def features(self) -> list[str]:
        """The descriptors the collection computes for every image, default first."""
        stored = self.catalog.get_meta("features")
        return stored.split(",") if stored else [DEEP.name]

    # -- models ---------------------------------------------------------------------------------

    @property
    def deep(self) -> DeepFeature:
        """The deep model (with its preprocessing), loaded on first use."""
        if self._deep is None:
            from lookalike.features.deep import load_deep_feature

            self._deep = load_deep_feature(threads=self.threads)
        return self._deep

    def model(self, name: str) -> DeepFeature:
        """Model descriptor ``name`` other than deep (``lite2``), loaded on first use."""
        if name not in self._models:
            from lookalike.features.registry import load_model_feature

            self._models[name] = load_model_feature(name, threads=self.threads)
        return self._models[name]

    def _encode_model(self, name: str, pixels: np.ndarray) -> np.ndarray:
        return self.model(name).encode(pixels)

    def _encode_deep(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Deep vectors and packed class probabilities of a batch, one model run."""
        from lookalike.index.classes import pack

        vectors, probabilities = self.deep.encode_with_classes(pixels)
        return {DEEP.name: vectors, CLASSES.name: pack(probabilities)}

    def jobs(self, names: Sequence[str]) -> list[FeatureJob]:
        """How the pipeline computes each pixel-based feature in ``names`` (and the CLIP
        embeddings when the collection has a CLIP)."""
        jobs = []
        computed = pixel_features()
        for name in names:
            if name == DEEP.name:
                from lookalike.features.deep import DeepFeature

                jobs.append(
                    FeatureJob(name, DeepFeature.preparer(), self._encode_deep, (CLASSES.name,))
                )
            elif name in OTHER_MODELS:
                from lookalike.features.registry import model_preparer

                encode = functools.partial(self._encode_model, name)  # loads on first batch
                jobs.append(FeatureJob(name, model_preparer(name), encode))
            elif name in computed:
                jobs.append(FeatureJob(name, computed[name].compute, computed[name].encode))
        clip = self.clip()
        if clip is not None:
            jobs.append(FeatureJob(CLIP, clip.preparer(), clip.encode_images))
        return jobs

    # -- what is stored -------------------------------------------------------------------------

    def stored(self, names: Sequence[str]) -> list[FeatureInfo]:
        """What the collection stores for ``names``: each of them, beside ``deep`` the class
        probabilities of the same forward pass (for text search), and a user's CLIP
        embeddings when the collection has one."""
        specs = [info(name) for name in names]
        clip = self.clip_info()
        return specs + ([CLASSES] if DEEP.name in names else []) + ([clip] if clip else [])

    def vector_features(self, names: Sequence[str]) -> list[FeatureInfo]:
        """:meth:`stored` less the learned codes not fitted yet (they have no vectors)."""
        return [
            spec
            for spec in self.stored(names)
            if spec.source != "learned" or self.learned(spec.name) is not None
        ]

    # -- learned codes --------------------------------------------------------------------------

    def learned(self, name: str) -> ITQ | None:
        """The fitted model of learned feature ``name``, or None before it is fitted."""
        from lookalike.features.itq import ITQ

        file = self.catalog.get_meta(f"model:{name}")
        if file is None:
            return None
        if name not in self._learned:
            self._learned[name] = ITQ.load(self.folder / file)
        return self._learned[name]

    def fit_learned(self, name: str, refit: bool) -> list[str]:
        """Fit (if needed) the learned code ``name`` and give every image its code; notes."""
        from lookalike.features.itq import ITQ

        bits = LEARNED_BITS[name]
        ids = self.catalog.vector_ids(DEEP.name)
        model = None if refit else self.learned(name)
        refitted = model is None
        if model is None:
            if len(ids) < bits:
                return [f"{name}: needs at least {bits} images to fit, the collection has "
                        f"{len(ids)}; it will be fitted once there are enough"]  # fmt: skip
            ids, deep = self.catalog.vectors(DEEP.name, DEEP.width)
            model = ITQ.fit(deep, bits)
            self._learned.pop(name, None)
            todo = ids
        else:
            todo = np.setdiff1d(ids, self.catalog.vector_ids(name))
            if not len(todo):
                return []
            deep = self.catalog.vectors_for(DEEP.name, DEEP.width, todo.tolist())
        codes = model.encode(deep)
        model_file = self.folder / f"{name}.model{self.catalog.generation(name) + 1}.npz"
        if refitted:
            model.save(model_file)
        with self.catalog.transaction():
            if refitted:
                self.catalog.delete_vectors(name)
                self.catalog.set_meta(f"model:{name}", model_file.name)
            for content_id, code in zip(todo.tolist(), codes, strict=True):
                self.catalog.put_vector(content_id, name, code)
            self.catalog.bump_generation([name])
        current = self.catalog.get_meta(f"model:{name}")
        for old in self.folder.glob(f"{name}.model*.npz"):
            if old.name != current:
                old.unlink(missing_ok=True)
        return [f"{name}: fitted on {len(ids)} images"] if refitted else []

    # -- a user's CLIP ----------------------------------------------------------------------------

    def use_clip(self, clip: ClipOnnx) -> None:
        """Record ``clip`` as the collection's CLIP (inside a write transaction)."""
        if self.catalog.get_meta("clip:key") != clip.key:
            self.catalog.forget_feature(CLIP)  # another model's embeddings mean nothing here
        self.catalog.set_meta("clip:folder", str(clip.folder))
        self.catalog.set_meta("clip:key", clip.key)
        self.catalog.set_meta("clip:dim", str(clip.dim))

    def clip_info(self) -> FeatureInfo | None:
        """The ``clip`` feature of a collection indexed with ``model="clip-onnx:..."``."""
        dim = self.catalog.get_meta("clip:dim")
        if dim is None:
            return None
        return FeatureInfo(
            CLIP, "clip", int(dim), np.dtype(np.float32), "cosine",
            f"CLIP image embeddings, {self.catalog.get_meta('clip:folder')}", "model",
        )  # fmt: skip

    def clip(self) -> ClipOnnx | None:
        """The collection's CLIP model, loaded (None without one)."""
        folder = self.catalog.get_meta("clip:folder")
        if folder is None:
            return None
        clip = load_clip("clip-onnx:" + folder)
        if clip.key != self.catalog.get_meta("clip:key"):
            raise CatalogError(
                f"the CLIP model in {folder} changed since this index was built; index again "
                f"with --model clip-onnx:{folder} to embed the images with it"
            )
        return clip
