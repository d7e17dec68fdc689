"""DEV-ONLY: write tests/data/golden_lite0.npz from the reference PyTorch implementation.

Never imported by the product. Needs, in the venv, temporarily::

    pip install torch==2.13.0                          # exact pin: CPU build from local disk
    pip install efficientnet-lite-pytorch==0.1.0

and afterwards ``pip uninstall -y torch efficientnet-lite-pytorch`` so nothing at run time can
lean on them. Run from the repo root: ``python scripts/make_golden.py``.

The golden file holds the inputs (uint8 NHWC, our ``preprocess`` applied to scikit-image sample
photos plus one seeded random image) and the reference's outputs: the L2-normalised pooled
feature, the logits, and the final feature map (first ``N_FMAP`` images; all five fit easily).
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

from lookalike.features.efficientnet import MEAN, STD, preprocess, weights_path  # noqa: E402

OUT = REPO / "tests" / "data" / "golden_lite0.npz"
SAMPLES = ("chelsea", "coffee", "astronaut", "rocket")
N_FMAP = 5
SEED = 1234


def make_inputs() -> tuple[np.ndarray, list[str]]:
    """Sample photos through our preprocess, plus one seeded random uint8 image."""
    images = [preprocess(Image.fromarray(getattr(skimage.data, n)())) for n in SAMPLES]
    rng = np.random.default_rng(SEED)
    images.append(rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8))
    return np.stack(images), [*SAMPLES, f"random_seed{SEED}"]


def reference_outputs(model: EfficientNet, pixels: np.ndarray, n_fmap: int) -> dict:
    """The reference's L2-normalised pooled features, logits and first ``n_fmap`` feature maps
    for uint8 NHWC ``pixels``."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    x = (x - MEAN) / STD
    with torch.no_grad():
        fmap = model.extract_features(x)
        logits = model(x)
        pooled = torch.nn.functional.adaptive_avg_pool2d(fmap, 1).flatten(1)
    pooled_np = pooled.numpy().astype(np.float32)
    return {
        "features": (pooled_np / np.linalg.norm(pooled_np, axis=1, keepdims=True)).astype(
            np.float32
        ),
        "logits": logits.numpy().astype(np.float32),
        "feature_map": fmap[:n_fmap].numpy().astype(np.float32),
    }


def write_golden(out: Path, pixels: np.ndarray, names: list[str], outputs: dict) -> None:
    """Save the inputs and the reference's outputs; print each input's top class."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, pixels=pixels, names=np.array(names), **outputs)
    top = torch.from_numpy(outputs["logits"]).softmax(1).max(1)
    for name, idx, prob in zip(names, top.indices.tolist(), top.values.tolist(), strict=True):
        print(f"{name:>16}: class {idx} p={prob:.3f}")
    print(f"feature map {tuple(outputs['feature_map'].shape)}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path()))
    model.eval()
    pixels, names = make_inputs()
    write_golden(args.out, pixels, names, reference_outputs(model, pixels, N_FMAP))


if __name__ == "__main__":
    main()
