"""Bring your own CLIP: a user's exported CLIP image and text encoders as ONNX files.

lookalike ships no CLIP weights (none can be installed here); a user who has exported a CLIP
model can point lookalike at a folder holding:

- ``image.onnx``: input float32 ``[N, 3, S, S]`` (RGB, normalised with ``mean``/``std``), first
  output ``[N, D]`` image embeddings;
- ``text.onnx``: inputs int64 ``input_ids [N, L]`` and, if the graph takes it,
  ``attention_mask [N, L]``; first output ``[N, D]`` text embeddings in the same space;
- ``tokenizer.json``: the text encoder's tokenizer in the Hugging Face ``tokenizers`` format;
- ``clip.json`` (optional): ``{"image_size": 224, "mean": [...], "std": [...],
  "context_length": 77}``; missing keys take OpenAI CLIP's values.

``lookalike index DIR --model clip-onnx:FOLDER`` then stores every image's CLIP embedding (the
``clip`` feature) and ``search --text`` compares text and images in CLIP's shared space
(cosine similarity); an ``--image`` query is mixed in as rclip does, by a weighted sum of the
two unit embeddings. Embeddings are L2-normalised here, whether or not the graphs do it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import BadInput

PREFIX = "clip-onnx:"
IMAGE_FILE, TEXT_FILE, TOKENIZER_FILE, CONFIG_FILE = (
    "image.onnx",
    "text.onnx",
    "tokenizer.json",
    "clip.json",
)
DEFAULTS: dict[str, Any] = {  # overridden by the model folder's config file
    "image_size": 224,
    "mean": [0.48145466, 0.4578275, 0.40821073],  # OpenAI CLIP
    "std": [0.26862954, 0.26130258, 0.27577711],
    "context_length": 77,
}


class ClipModelError(BadInput):
    """The CLIP folder is missing a file or its graphs do not fit together."""


def parse_model(spec: str) -> Path:
    """The folder named by ``clip-onnx:FOLDER``."""
    if not spec.startswith(PREFIX) or not spec[len(PREFIX) :]:
        raise ClipModelError(f"unknown model {spec!r}; expected clip-onnx:FOLDER")
    return Path(spec[len(PREFIX) :]).expanduser().absolute()


def preprocess(image, size: int) -> np.ndarray:
    """Shorter side to ``size`` (bicubic), centre crop: uint8 ``[size, size, 3]`` (picklable)."""
    from lookalike.features.efficientnet import preprocess as resize_crop

    return resize_crop(image, size)


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class ClipOnnx:
    """A user's CLIP: ``encode_images(pixels)`` and ``encode_text(texts)``, unit rows ``[N, D]``."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        from lookalike.text.encoder import _session

        self.folder = Path(folder)
        missing = [f for f in (IMAGE_FILE, TEXT_FILE, TOKENIZER_FILE) if not (folder / f).is_file()]
        if missing:
            raise ClipModelError(f"{folder} lacks {', '.join(missing)} (see lookalike.text.clip)")
        config = dict(DEFAULTS)
        if (self.folder / CONFIG_FILE).is_file():
            config.update(json.loads((self.folder / CONFIG_FILE).read_text()))
        self.image_size = int(config["image_size"])
        self.context_length = int(config["context_length"])
        self.mean = np.asarray(config["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(config["std"], np.float32).reshape(1, 3, 1, 1)
        self.image_session = _session(self.folder / IMAGE_FILE, threads)
        self.text_session = _session(self.folder / TEXT_FILE, threads)
        self.text_inputs = [i.name for i in self.text_session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(self.context_length)
        self.tokenizer.no_padding()
        try:  # one probe of each graph: the shapes must fit what the folder says
            self.dim = int(self.encode_text(["a photo"]).shape[1])
            probe = np.zeros((1, *self.input_shape), np.uint8)
            image_dim = int(self.encode_images(probe).shape[1])
        except ClipModelError:
            raise
        except Exception as exc:
            raise ClipModelError(f"{folder}: the graphs do not run as described: {exc}") from None
        if image_dim != self.dim:
            raise ClipModelError(
                f"{folder}: image embeddings have {image_dim} values and text embeddings "
                f"{self.dim}: not one shared space"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    @functools.cached_property
    def key(self) -> str:
        """A hash of the model's files: a collection refuses to mix embeddings of two models."""
        h = hashlib.sha256()
        for name in (IMAGE_FILE, TEXT_FILE, TOKENIZER_FILE, CONFIG_FILE):
            path = self.folder / name
            if path.is_file():
                h.update(name.encode() + path.read_bytes())
        return h.hexdigest()[:16]

    def preparer(self):
        """What the decode workers run on each image (picklable)."""
        return functools.partial(preprocess, size=self.image_size)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``[N, S, S, 3]`` -> float32 ``[N, D]``, unit rows."""
        pixels = np.asarray(pixels)
        if pixels.ndim != 4 or pixels.shape[1:] != self.input_shape or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 [N, {self.image_size}, {self.image_size}, 3]")
        x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        x = np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)
        name = self.image_session.get_inputs()[0].name
        return _l2(self.image_session.run(None, {name: x})[0])

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Texts -> float32 ``[N, D]``, unit rows."""
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        if any(not e.ids for e in encodings):
            raise ValueError("the text query is empty")
        ids = np.zeros((len(encodings), length), np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        missing = [n for n in self.text_inputs if n not in feeds]
        if missing:
            raise ClipModelError(f"text.onnx wants inputs {missing}; lookalike gives {list(feeds)}")
        out = self.text_session.run(None, {n: feeds[n] for n in self.text_inputs})[0]
        return _l2(out)


@functools.lru_cache(maxsize=4)
def _load(folder: str, stamp: tuple) -> ClipOnnx:
    return ClipOnnx(Path(folder))


def load_clip(folder: str | os.PathLike) -> ClipOnnx:
    """The CLIP in ``folder``, loaded once per process (again if its files change)."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.is_file())
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _load(str(folder), stamp)
