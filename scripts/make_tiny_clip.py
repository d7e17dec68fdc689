"""DEV-ONLY: write tests/data/tiny_clip/, a tiny randomly initialised "CLIP" in ONNX.

Never imported by the product. It tests the plumbing of ``--model clip-onnx:FOLDER`` (files,
shapes, normalisation, the shared space, mixing an image into a text query) without real
weights, which cannot be shipped: the embeddings mean nothing. Needs onnx and tokenizers (both
in .venv); run from the repository root: ``python scripts/make_tiny_clip.py``.

- ``image.onnx``: ``pixel_values`` float32 [N, 3, 32, 32] -> Conv 3x3/2 (8) -> ReLU -> global
  average -> Gemm -> ``image_embeds`` [N, 16] (not normalised: lookalike does it);
- ``text.onnx``: ``input_ids``, ``attention_mask`` int64 [N, L] -> embedding (vocabulary of 32
  words) -> mean over real tokens -> Gemm -> ``text_embeds`` [N, 16];
- ``tokenizer.json``: lower case, whitespace split, a word-level vocabulary;
- ``clip.json``: image size 32, context length 16.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "data" / "tiny_clip"
DIM = 16
SIZE = 32
WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "at",
    "on",
    "and",
    "with",
    "cat",
    "dog",
    "kitty",
    "puppy",
    "cup",
    "espresso",
    "coffee",
    "red",
    "sports",
    "car",
    "night",
    "beach",
    "tabby",
    "monkey",
    "squirrel",
    "rocket",
    "horse",
    "astronaut",
    "clock",
]
SEED = 7


def _model(nodes, inputs, outputs, inits, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def image_model(rng: np.random.Generator) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv.b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, DIM)).astype(np.float32), "proj.w"),
        numpy_helper.from_array(np.zeros(DIM, np.float32), "proj.b"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["pixel_values", "conv.w", "conv.b"], ["c"], strides=[2, 2], pads=[1] * 4
        ),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "proj.w", "proj.b"], ["image_embeds"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["N", DIM])],
        inits,
        "tiny_clip_image",
    )


def text_model(rng: np.random.Generator, vocab: int) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(rng.normal(0, 1, (vocab, DIM)).astype(np.float32), "emb"),
        numpy_helper.from_array(rng.normal(0, 0.5, (DIM, DIM)).astype(np.float32), "proj.w"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
        helper.make_node("Mul", ["tokens", "m3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("MatMul", ["mean", "proj.w"], ["text_embeds"]),
    ]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "L"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "L"]),
        ],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["N", DIM])],
        inits,
        "tiny_clip_text",
    )


def tokenizer_json(vocab: dict[str, int]) -> str:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    vocab = {"[PAD]": 0, "[UNK]": 1} | {w: i + 2 for i, w in enumerate(WORDS)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "image.onnx").write_bytes(image_model(rng).SerializeToString())
    (args.out / "text.onnx").write_bytes(text_model(rng, len(vocab)).SerializeToString())
    (args.out / "tokenizer.json").write_text(tokenizer_json(vocab))
    (args.out / "clip.json").write_text(json.dumps({"image_size": SIZE, "context_length": 16}))
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({total / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
