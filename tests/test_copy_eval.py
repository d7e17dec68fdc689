"""Copy generator (lookalike.eval.copies) and copy-detection metrics (eval.copy_metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from lookalike.eval.copies import DEFAULT_MIX, TRANSFORMS, make_copy
from lookalike.eval.copy_metrics import micro_average_precision, recall_at_1, recall_at_precision

SIZES = [(16, 16), (1000, 200), (200, 1000), (224, 224), (301, 97)]
REQUIRED = {
    "crop", "rescale", "jpeg", "rotate", "hflip", "vflip", "colour", "greyscale", "blur",
    "noise", "text", "overlay", "border", "aspect", "screenshot",
}  # fmt: skip


def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth gradient with a block of noise: structure a copy should keep."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    pixels = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1)
    pixels = pixels.astype(np.uint8)
    rng = np.random.default_rng(seed)
    pixels[: h // 2, : w // 2] = rng.integers(0, 256, size=(h // 2, w // 2, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_all_required_transforms_present() -> None:
    assert set(TRANSFORMS) >= REQUIRED
    assert set(DEFAULT_MIX) <= set(TRANSFORMS)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_returns_sane_rgb(name: str, size: tuple[int, int]) -> None:
    image = _photo(size)
    for seed in range(4):
        out = TRANSFORMS[name](image, np.random.default_rng(seed))
        assert isinstance(out, Image.Image) and out.mode == "RGB"
        w, h = out.size
        assert w >= 1 and h >= 1
        # never larger than a 70 %-of-canvas screenshot of a 1.6x stretched / 1.5x rescaled input
        assert w <= 6 * size[0] + 16 and h <= 6 * size[1] + 16
    assert image.size == size  # the input is left alone


def test_transforms_accept_other_modes() -> None:
    for mode in ("L", "RGBA", "P"):
        image = _photo((64, 48)).convert(mode)
        for name, transform in TRANSFORMS.items():
            assert transform(image, np.random.default_rng(1)).mode == "RGB", (name, mode)


def test_make_copy_deterministic_for_a_seed() -> None:
    image = _photo((120, 90))
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(42)
        runs.append([make_copy(image, rng) for _ in range(12)])
    for (a, names_a), (b, names_b) in zip(*runs, strict=True):
        assert names_a == names_b
        assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_make_copy_mixes_one_to_three_transforms() -> None:
    rng = np.random.default_rng(0)
    counts = set()
    seen: set[str] = set()
    for _ in range(200):
        out, names = make_copy(_photo((40, 30)), rng)
        assert out.mode == "RGB" and 1 <= len(names) <= 3 and len(set(names)) == len(names)
        counts.add(len(names))
        seen.update(names)
    assert counts == {1, 2, 3}
    assert seen == set(DEFAULT_MIX)
    _, names = make_copy(_photo((40, 30)), rng, mix={"hflip": 1.0})
    assert names == ["hflip"]


# --- metrics: examples computed by hand -----------------------------------------------------


def test_perfect_ranking_has_ap_one() -> None:
    assert micro_average_precision([0.9, 0.8, 0.7], [True, True, True], 3) == pytest.approx(1.0)
    assert recall_at_1([True, True, True], 3) == 1.0


def test_false_positive_on_top() -> None:
    # ranks: FP, TP, TP -> precisions at the hits 1/2 and 2/3; AP = (1/2 + 2/3) / 2
    ap = micro_average_precision([0.9, 0.8, 0.7], [False, True, True], 2)
    assert ap == pytest.approx((1 / 2 + 2 / 3) / 2)
    # order of the input does not matter, only the scores
    assert micro_average_precision([0.7, 0.9, 0.8], [True, False, True], 2) == pytest.approx(ap)
    assert recall_at_precision([0.9, 0.8, 0.7], [False, True, True], 2) == (0.0, math.inf)


def test_recall_at_precision_with_threshold() -> None:
    scores = [0.95, 0.9, 0.85, 0.8]
    match = [True, True, False, True]
    # precision 1 down to 0.9 (recall 2/4); 2/3 at 0.85; 3/4 at 0.8
    assert recall_at_precision(scores, match, 4, 0.99) == (0.5, 0.9)
    assert recall_at_precision(scores, match, 4, 0.7) == (0.75, 0.8)
    # AP = (1 + 1 + 3/4) / 4
    assert micro_average_precision(scores, match, 4) == pytest.approx(2.75 / 4)


def test_queries_without_original_lower_precision() -> None:
    # two queries with an original (both found), one query without: its prediction at 0.8
    with_fp = micro_average_precision([0.9, 0.8, 0.7], [True, False, True], 2)
    assert with_fp == pytest.approx((1 + 2 / 3) / 2)
    assert micro_average_precision([0.9, 0.7], [True, True], 2) == pytest.approx(1.0)
    assert recall_at_precision([0.9, 0.8, 0.7], [True, False, True], 2) == (0.5, 0.9)
    # the same false positive below every true match costs nothing
    assert micro_average_precision([0.9, 0.8, 0.1], [True, True, False], 2) == pytest.approx(1.0)
    assert recall_at_precision([0.9, 0.8, 0.1], [True, True, False], 2) == (1.0, 0.8)


def test_missed_originals_cap_recall_and_ap() -> None:
    # four queries have an original, only two are found (top-1 correct)
    assert micro_average_precision([0.9, 0.8], [True, True], 4) == pytest.approx(0.5)
    assert recall_at_1([True, True, False, False], 4) == 0.5
    assert recall_at_1([True, True], 4) == 0.5


def test_ties_count_as_one_threshold() -> None:
    assert micro_average_precision([0.9, 0.9], [True, False], 1) == pytest.approx(0.5)
    assert micro_average_precision([0.9, 0.9], [False, True], 1) == pytest.approx(0.5)
    assert recall_at_precision([0.9, 0.9], [True, False], 1) == (0.0, math.inf)


def test_metric_input_errors() -> None:
    assert micro_average_precision([], [], 3) == 0.0
    with pytest.raises(ValueError):
        micro_average_precision([0.1], [True, False], 1)
    with pytest.raises(ValueError):
        micro_average_precision([0.1, 0.2], [True, True], 1)
    with pytest.raises(ValueError):
        recall_at_1([True], 0)
