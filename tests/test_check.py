"""Geometric verification (lookalike.copies.geometry) and the copy check (copies.check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_images
from PIL import Image, ImageDraw

import lookalike
from lookalike.copies.check import CheckResult, check_copy, copy_score
from lookalike.copies.geometry import verify_pair
from lookalike.eval.transforms import crop, hflip, rotate
from lookalike.images import ImageError

INDEXED = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "motorcycle_left",
    "hubble_deep_field",
)  # fmt: skip


@pytest.fixture(scope="module")
def copy_collection(tmp_path_factory: pytest.TempPathFactory, sample_photos):
    """Eight sample photos and six generated images, indexed once."""
    folder = tmp_path_factory.mktemp("check-photos")
    for name in INDEXED:
        sample_photos[name].save(folder / f"{name}.jpg", quality=92)
    make_images(folder, 6, seed=5, size=320)
    col = lookalike.open(tmp_path_factory.mktemp("check-index"))
    col.add([folder], workers=1)
    yield col
    col.close()


def _name(result: CheckResult) -> str:
    assert result.match is not None
    return Path(result.match.path).stem


def test_verify_pair_copies_have_many_inliers(sample_photos):
    image = sample_photos["astronaut"]
    for query in (crop(image, 0.6, 0.3, 0.3), rotate(image, 10)):
        v = verify_pair(query, image)
        assert v.inliers >= 50, v
        assert v.transform in ("homography", "affine")
        assert 0 < v.inlier_ratio <= 1
    flipped = verify_pair(hflip(image), image)
    assert flipped.inliers >= 50 and flipped.flipped


def test_verify_pair_unrelated_has_few_inliers(sample_photos):
    v = verify_pair(sample_photos["coffee"], sample_photos["astronaut"])
    assert v.inliers < 10, v
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8))
    assert verify_pair(noise, sample_photos["chelsea"]).inliers < 10


def test_copy_score_increases_with_evidence():
    assert 0 <= copy_score(0, 0.3) < copy_score(15, 0.6) < copy_score(200, 0.9) <= 1


def test_corner_crop_is_a_copy(copy_collection, sample_photos):
    result = check_copy(copy_collection, crop(sample_photos["chelsea"], 0.5, 1.0, 0.0))
    assert result.verdict == "copy"
    assert _name(result) == "chelsea"
    assert result.evidence["inliers"] >= 15
    assert result.evidence["candidates"]
    assert 0.5 < result.score <= 1


def test_pasted_into_canvas_is_a_copy(copy_collection, sample_photos):
    image = sample_photos["rocket"]
    w, h = image.size
    canvas = Image.new("RGB", (w * 2, h * 2), (240, 240, 240))
    canvas.paste(image, (w // 2, h // 3))
    ImageDraw.Draw(canvas).text((10, 10), "look at this", fill=(0, 0, 0))
    result = check_copy(copy_collection, canvas)
    assert result.verdict == "copy"
    assert _name(result) == "rocket"


def test_flipped_copy_is_a_copy(copy_collection, sample_photos):
    result = check_copy(copy_collection, hflip(sample_photos["coffee"]))
    assert result.verdict == "copy"
    assert _name(result) == "coffee"
    assert result.evidence["flipped"] is True


def test_copy_given_as_path(copy_collection, sample_photos, tmp_path):
    path = tmp_path / "q.jpg"
    rotate(sample_photos["astronaut"], 10).save(path, quality=80)
    result = check_copy(copy_collection, path)
    assert result.verdict == "copy" and _name(result) == "astronaut"
    assert result.query == str(path)


def test_unrelated_is_no_copy(copy_collection, sample_photos):
    for query in (
        sample_photos["page"],
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 300, 3), np.uint8)),
    ):
        result = check_copy(copy_collection, query)
        assert result.verdict == "no_copy"
        assert "inliers" in result.evidence
        assert result.score < 0.5


def test_non_image_query_raises(copy_collection, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a picture")
    with pytest.raises(ImageError):
        check_copy(copy_collection, path)
    with pytest.raises(ImageError):
        check_copy(copy_collection, b"\x00\x01 nothing")


def test_empty_collection_is_no_copy(tmp_path, sample_photos):
    with lookalike.open(tmp_path / "empty") as col:
        result = check_copy(col, sample_photos["astronaut"])
    assert result.verdict == "no_copy" and result.match is None
    assert result.evidence["inliers"] == 0
