"""Classic descriptors (hashes, colour, texture, shape) and the metrics that compare them."""

from __future__ import annotations

import io
import pickle

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image, ImageDraw

from lookalike.features import color, hashes, shape, texture
from lookalike.features.base import METRICS, ComputedFeature
from lookalike.features.metrics import (
    chi2_distance,
    cosine_similarity,
    hamming_distance,
    intersection,
    l2_distance,
    scores,
)

ALL_FEATURES: tuple[ComputedFeature, ...] = (
    hashes.FEATURES + color.FEATURES + texture.FEATURES + shape.FEATURES
)
HISTOGRAMS = [f for f in ALL_FEATURES if f.metric in ("chi2", "intersection")]
IMAGEHASH = {
    "ahash": imagehash.average_hash,
    "dhash": imagehash.dhash,
    "phash": imagehash.phash,
    "whash": imagehash.whash,
}


def _generated() -> Image.Image:
    rng = np.random.default_rng(7)
    image = Image.new("RGB", (300, 220), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, 250, 2))
        box = (x0, y0, x0 + int(rng.integers(10, 120)), y0 + int(rng.integers(10, 120)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    import skimage.data as data

    return {
        "astronaut": Image.fromarray(data.astronaut()).convert("RGB"),
        "coffee": Image.fromarray(data.coffee()).convert("RGB"),
        "chelsea": Image.fromarray(data.chelsea()).convert("RGB"),
        "camera": Image.fromarray(data.camera()).convert("RGB"),
        "generated": _generated(),
    }


@pytest.fixture(scope="module")
def odd_sizes() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    sizes = [(8, 8), (1, 500), (500, 1), (2000, 1500), (640, 480)]
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for w, h in sizes
    ]


@pytest.fixture(scope="module")
def recompressed(photos: dict[str, Image.Image]) -> dict[str, Image.Image]:
    out = {}
    for name, image in photos.items():
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=60)
        buffer.seek(0)
        out[name] = Image.open(buffer).convert("RGB")
    return out


# ---------------------------------------------------------------------------------------------
# Hashes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(IMAGEHASH))
def test_hashes_equal_imagehash(name: str, photos: dict[str, Image.Image]) -> None:
    feature = {f.name: f for f in hashes.FEATURES}[name]
    for image in photos.values():
        code = feature.compute(image)
        assert code.dtype == np.uint8 and code.shape == (8,)
        assert code.tobytes().hex() == str(IMAGEHASH[name](image))


def test_hash_bit_order_is_row_major_msb_first(photos: dict[str, Image.Image]) -> None:
    matrix = imagehash.phash(photos["astronaut"]).hash.ravel()
    code = hashes.phash_code(photos["astronaut"])
    bits = np.unpackbits(code)  # big-endian: bit k of the hash = bit 7 - k % 8 of byte k // 8
    assert np.array_equal(bits.astype(bool), matrix)


def test_pdq_equals_pdqhash(photos: dict[str, Image.Image]) -> None:
    for image in photos.values():
        bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(image)))
        code, our_quality = hashes.pdq_with_quality(image)
        assert code.dtype == np.uint8 and code.shape == (32,)
        assert np.array_equal(np.unpackbits(code), bits.astype(np.uint8))
        assert our_quality == quality and isinstance(our_quality, int)
        assert 0 <= our_quality <= 100
        assert np.array_equal(hashes.pdq_code(image), code)
    assert hashes.pdq_with_quality(photos["astronaut"])[1] > 50


# ---------------------------------------------------------------------------------------------
# Every feature
# ---------------------------------------------------------------------------------------------


def test_declarations() -> None:
    names = [f.name for f in ALL_FEATURES]
    assert len(set(names)) == len(names)
    assert set(names) >= {"ahash", "dhash", "phash", "whash", "pdq", "color", "texture"}
    for feature in ALL_FEATURES:
        assert feature.metric in METRICS
        assert feature.description
        assert feature.dtype == (np.uint8 if feature.binary else np.float32)
        assert pickle.loads(pickle.dumps(feature.compute)) is feature.compute


@pytest.mark.parametrize("feature", ALL_FEATURES, ids=lambda f: f.name)
def test_width_dtype_any_size(feature: ComputedFeature, odd_sizes: list[Image.Image]) -> None:
    vectors = [feature.compute(image) for image in odd_sizes]
    for vector in vectors:
        assert vector.shape == (feature.width,)
        assert vector.dtype == feature.dtype
        assert np.all(np.isfinite(vector))
    assert feature.encode(np.stack(vectors)).shape == (len(vectors), feature.width)


@pytest.mark.parametrize("feature", ALL_FEATURES, ids=lambda f: f.name)
def test_deterministic(feature: ComputedFeature, photos: dict[str, Image.Image]) -> None:
    image = photos["chelsea"]
    first = feature.compute(image)
    assert np.array_equal(first, feature.compute(image))
    assert np.array_equal(first, feature.compute(image.copy()))


@pytest.mark.parametrize("feature", HISTOGRAMS, ids=lambda f: f.name)
def test_histograms_sum_to_one(
    feature: ComputedFeature, photos: dict[str, Image.Image], odd_sizes: list[Image.Image]
) -> None:
    flat = Image.new("RGB", (64, 48), (128, 128, 128))
    for image in [*photos.values(), *odd_sizes, flat]:
        hist = feature.compute(image)
        assert np.all(hist >= 0)
        assert hist.sum() == pytest.approx(1.0, abs=1e-5)


def test_hog_is_unit_length(photos: dict[str, Image.Image]) -> None:
    for image in [*photos.values(), Image.new("RGB", (50, 50), (10, 10, 10))]:
        assert np.linalg.norm(shape.hog_descriptor(image)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("feature", ALL_FEATURES, ids=lambda f: f.name)
def test_recompressed_closer_than_unrelated(
    feature: ComputedFeature,
    photos: dict[str, Image.Image],
    recompressed: dict[str, Image.Image],
) -> None:
    names = list(photos)
    database = np.stack([feature.compute(photos[n]) for n in names])
    queries = np.stack([feature.compute(recompressed[n]) for n in names])
    score, distance = scores(feature.metric, queries, database, bits=feature.dim)
    for i in range(len(names)):
        others = np.delete(score[i], i)
        assert score[i, i] > others.max(), (feature.name, names[i], score[i])
        assert distance[i, i] < np.delete(distance[i], i).min()


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_chi2_and_intersection_semantics() -> None:
    rng = np.random.default_rng(0)
    hist = rng.random((5, 16)).astype(np.float32)
    hist /= hist.sum(axis=1, keepdims=True)
    assert np.allclose(np.diag(chi2_distance(hist, hist)), 0.0, atol=1e-6)
    assert np.allclose(np.diag(intersection(hist, hist)), 1.0, atol=1e-6)

    left = np.zeros((1, 8), np.float32)
    left[0, :4] = 0.25
    right = np.zeros((1, 8), np.float32)
    right[0, 4:] = 0.25
    assert chi2_distance(left, right)[0, 0] == pytest.approx(1.0)
    assert intersection(left, right)[0, 0] == pytest.approx(0.0)

    chi2 = chi2_distance(hist, hist)
    assert np.all((chi2 >= -1e-7) & (chi2 <= 1 + 1e-6))
    assert np.allclose(chi2, chi2.T, atol=1e-7)

    score, distance = scores("chi2", left, np.concatenate([left, right]))
    assert np.allclose(score, [[1.0, 0.0]]) and np.allclose(distance, [[0.0, 1.0]])
    score, distance = scores("intersection", left, np.concatenate([left, right]))
    assert np.allclose(score, [[1.0, 0.0]]) and np.allclose(distance, [[0.0, 1.0]])


def test_hamming() -> None:
    rng = np.random.default_rng(1)
    for width in (8, 32, 5):  # 64-bit fast path and the byte-wise path
        a = rng.integers(0, 256, (7, width), dtype=np.uint8)
        b = rng.integers(0, 256, (9, width), dtype=np.uint8)
        distance = hamming_distance(a, b)
        expected = (np.unpackbits(a[:, None] ^ b[None], axis=-1)).sum(axis=-1)
        assert distance.shape == (7, 9)
        assert np.array_equal(distance, expected)
        assert np.array_equal(hamming_distance(b, a), distance.T)
        assert np.all(np.diag(hamming_distance(a, a)) == 0)
    zero = np.zeros((1, 8), np.uint8)
    ones = np.full((1, 8), 255, np.uint8)
    assert hamming_distance(zero, ones)[0, 0] == 64
    score, distance = scores("hamming", zero, np.concatenate([zero, ones]), bits=64)
    assert np.allclose(score, [[1.0, 0.0]]) and np.allclose(distance, [[0.0, 64.0]])


def test_l2_and_cosine() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 32))
    b = rng.normal(size=(300, 32))
    expected = np.linalg.norm(a[:, None] - b[None], axis=-1)
    assert np.allclose(l2_distance(a, b), expected, atol=1e-4)
    unit_a = a / np.linalg.norm(a, axis=1, keepdims=True)
    unit_b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosine = cosine_similarity(unit_a, unit_b)
    assert np.allclose(cosine, unit_a @ unit_b.T, atol=1e-5)
    # On unit vectors, Euclidean distance and cosine similarity rank identically.
    l2 = l2_distance(unit_a, unit_b)
    for i in range(len(a)):
        assert np.array_equal(np.argsort(l2[i], kind="stable"), np.argsort(-cosine[i]))
    score, distance = scores("cosine", unit_a, unit_b)
    assert np.allclose(distance, 1 - score) and np.all(score <= 1) and np.all(score >= -1)
    score, distance = scores("l2", a, b)
    assert np.allclose(score, 1 / (1 + distance))
    assert np.all(cosine_similarity(np.zeros((1, 32)), b) == 0)


def test_metrics_blocked_large_database(monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike.features import metrics

    rng = np.random.default_rng(4)
    queries = rng.random((3, 16)).astype(np.float32)
    database = rng.random((1000, 16)).astype(np.float32)
    codes = rng.integers(0, 256, (1000, 8), dtype=np.uint8)
    full = {m: scores(m, queries, database)[0] for m in ("chi2", "intersection", "l2", "cosine")}
    full_hamming = hamming_distance(codes[:3], codes)
    monkeypatch.setattr(metrics, "_ELEMENT_BUDGET", 100)  # a few rows per block
    monkeypatch.setattr(metrics, "_MATMUL_BLOCK", 7)
    for metric, expected in full.items():
        assert np.allclose(scores(metric, queries, database)[0], expected, atol=1e-6)
    assert np.array_equal(hamming_distance(codes[:3], codes), full_hamming)


def test_scores_accepts_single_query_and_rejects_unknown_metric() -> None:
    database = np.eye(4, dtype=np.float32)
    score, distance = scores("cosine", database[0], database)
    assert score.shape == distance.shape == (1, 4)
    with pytest.raises(ValueError):
        scores("manhattan", database, database)
