"""Tests for the torch-free EfficientNet-Lite0: checkpoint reader, ONNX graph, DeepFeature."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.features.base import Feature
from lookalike.features.checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, read_legacy_checkpoint
from lookalike.features.deep import DeepFeature, load_deep_feature
from lookalike.features.efficientnet import model_path, preprocess, weights_path
from lookalike.features.pooling import average_pool, rmac

GOLDEN = Path(__file__).parent / "data" / "golden_lite0.npz"
TOL = 1e-4
CAT_CLASSES = range(281, 286)
ESPRESSO = 967
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private LOOKALIKE_CACHE so tests never touch or depend on the user's cache."""
    path = tmp_path_factory.mktemp("lookalike_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKALIKE_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def deep(cache_dir: Path) -> DeepFeature:
    """The model, built once per test session."""
    return load_deep_feature(threads=2)


@pytest.fixture(scope="session")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def weights() -> dict[str, np.ndarray]:
    return read_legacy_checkpoint(weights_path())


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _legacy_header() -> bytes:
    sys_info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}
    return b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, LEGACY_PROTOCOL, sys_info))


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


# ---------------------------------------------------------------- checkpoint reader


def test_checkpoint_keys_shapes_dtypes(weights: dict[str, np.ndarray]) -> None:
    assert len(weights) == 296
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert weights["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_fc.bias"].shape == (1000,)
    for key, value in weights.items():
        expected = np.int64 if key.endswith("num_batches_tracked") else np.float32
        assert value.dtype == expected, key
        assert np.all(np.isfinite(value)), key
    assert np.all(weights["_bn1.running_var"] > 0)
    assert 0.01 < float(np.abs(weights["_fc.weight"]).mean()) < 1.0


def test_checkpoint_refuses_forbidden_global(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_header() + pickle.dumps({"x": _Evil()}, protocol=2))
    with pytest.raises(ValueError, match="forbidden global"):
        read_legacy_checkpoint(path)
    bare = tmp_path / "bare.pth"  # a plain malicious pickle, not even a checkpoint
    bare.write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(ValueError):
        read_legacy_checkpoint(bare)


def test_checkpoint_rejects_garbage_and_truncation(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError):
        read_legacy_checkpoint(garbage)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        read_legacy_checkpoint(empty)
    not_legacy = tmp_path / "other.pkl"
    not_legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a legacy"):
        read_legacy_checkpoint(not_legacy)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights_path().read_bytes()[: 1 << 20])
    with pytest.raises(ValueError, match="truncated"):
        read_legacy_checkpoint(truncated)


# ---------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (100, 60), (224, 224), (300, 224)])
def test_preprocess_shape(size: tuple[int, int]) -> None:
    img = Image.new("RGB", size, (10, 20, 30))
    out = preprocess(img)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert np.all(out == (10, 20, 30))


def test_preprocess_modes_and_centre_crop() -> None:
    assert preprocess(Image.new("L", (300, 500), 7)).shape == (224, 224, 3)
    assert preprocess(Image.new("RGBA", (500, 300))).shape == (224, 224, 3)
    # wide image: left third red, middle green, right third blue -> crop keeps the middle
    arr = np.zeros((224, 672, 3), np.uint8)
    arr[:, :224, 0] = arr[:, 224:448, 1] = arr[:, 448:, 2] = 255
    out = preprocess(Image.fromarray(arr))
    assert np.all(out[:, :, 1] == 255) and np.all(out[:, :, [0, 2]] == 0)


def test_preprocess_does_not_import_onnx() -> None:
    code = (
        "import sys, types\n"
        # stub the package root so only this module's own imports are measured
        f"m = types.ModuleType('lookalike'); m.__path__ = [{str(REPO / 'lookalike')!r}]\n"
        "sys.modules['lookalike'] = m\n"
        "from PIL import Image\n"
        "from lookalike.features.efficientnet import preprocess\n"
        "preprocess(Image.new('RGB', (320, 240)))\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('onnx', 'onnxruntime', 'torch')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------- graph vs reference


def test_graph_matches_golden(deep: DeepFeature, golden: dict[str, np.ndarray]) -> None:
    out = deep.run(golden["pixels"])
    n = len(golden["pixels"])
    assert out["features"].shape == (n, 1280) and out["features"].dtype == np.float32
    assert out["logits"].shape == (n, 1000) and out["logits"].dtype == np.float32
    assert out["feature_map"].shape == (n, 1280, 7, 7)
    for key in ("features", "logits", "feature_map"):
        ref = golden[key]
        diff = float(np.abs(out[key][: len(ref)] - ref).max())
        assert diff < TOL, f"{key}: max abs diff {diff:.3g}"


def test_golden_inputs_are_our_preprocess(golden: dict[str, np.ndarray]) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    chelsea = preprocess(Image.fromarray(skimage_data.chelsea()))
    np.testing.assert_array_equal(chelsea, golden["pixels"][0])


def test_features_unit_norm_and_encode_consistent(
    deep: DeepFeature, golden: dict[str, np.ndarray]
) -> None:
    feats = deep.encode(golden["pixels"])
    assert feats.shape == (len(golden["pixels"]), 1280) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    outputs = deep.run(golden["pixels"])
    np.testing.assert_allclose(feats, rmac(outputs["feature_map"]), atol=1e-6)
    average = load_deep_feature(threads=1, pooling="average").encode(golden["pixels"])
    np.testing.assert_allclose(average, outputs["features"], atol=1e-6)
    np.testing.assert_allclose(average, average_pool(outputs["feature_map"]), atol=1e-5)
    with pytest.raises(ValueError, match="unknown pooling"):
        load_deep_feature(pooling="median")
    # batch composition does not change a row
    np.testing.assert_allclose(deep.encode(golden["pixels"][1:2]), feats[1:2], atol=1e-5)


def test_classification(deep: DeepFeature) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    pixels = np.stack(
        [
            deep.preprocess(Image.fromarray(skimage_data.chelsea())),
            deep.preprocess(Image.fromarray(skimage_data.coffee())),
        ]
    )
    probs = _softmax(deep.run(pixels)["logits"].astype(np.float64))
    assert int(probs[0].argmax()) in CAT_CLASSES
    assert int(probs[1].argmax()) == ESPRESSO
    assert probs[1, ESPRESSO] > 0.8


# ---------------------------------------------------------------- DeepFeature / cache


def test_deep_feature_protocol(deep: DeepFeature) -> None:
    assert isinstance(deep, Feature)
    assert (deep.name, deep.dim, deep.metric, deep.input_size) == ("deep", 1280, "cosine", 224)
    assert deep.dtype == np.float32
    assert deep.encode(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 1280)
    with pytest.raises(ValueError):
        deep.encode(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ValueError):
        deep.encode(np.zeros((1, 200, 200, 3), np.uint8))


def test_model_cached_and_reused(deep: DeepFeature, cache_dir: Path) -> None:
    path = model_path()
    assert path.parent == cache_dir and path.is_file()
    assert path == deep.model_path
    assert path.name.endswith(".onnx")
    before = path.stat().st_mtime_ns
    assert model_path() == path
    assert path.stat().st_mtime_ns == before
    assert [p.name for p in cache_dir.iterdir()] == [path.name]  # no stray temp files


def test_cache_written_atomically_and_keyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "sub"))
    path = model_path()
    assert path.parent == tmp_path / "sub"
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["pixels"]
    assert [o.name for o in model.graph.output] == ["features", "logits", "feature_map"]
    assert all(n.op_type != "Sigmoid" for n in model.graph.node)  # ReLU6, never swish
    assert all(n.op_type != "BatchNormalization" for n in model.graph.node)  # folded
    assert os.listdir(tmp_path / "sub") == [path.name]


def test_pixels_contract_dynamic_batch(deep: DeepFeature) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    out = deep.run(pixels)
    assert out["features"].shape == (3, 1280)
    single = deep.encode(pixels[0])  # a lone image is accepted as a batch of one
    np.testing.assert_allclose(single[0], deep.encode(pixels)[0], atol=1e-5)


def test_buffer_roundtrip_of_golden_file() -> None:
    # keep the golden file small: it travels in the repo
    assert GOLDEN.stat().st_size < 1_500_000
    with np.load(io.BytesIO(GOLDEN.read_bytes())) as data:
        assert data["pixels"].dtype == np.uint8
