"""ITQ / sign-PCA binary codes, the binary Hamming index, and two-stage search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.features.itq import ITQ, SignPCA
from lookalike.index.binary import BinaryIndex
from lookalike.index.flat import FlatIndex
from lookalike.index.two_stage import (
    MISSING_SCORE,
    VectorTable,
    flat_vectors_of,
    two_stage_search,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(
    n: int, dim: int, clusters: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random centres with anisotropic (low-rank-ish) structure."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * np.linspace(2.0, 0.1, dim)
    labels = rng.integers(0, clusters, n)
    points = centres[labels] + noise * rng.standard_normal((n, dim))
    return _unit(points), labels


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    return _clustered(5000, 256, 50, 0.6, seed=1)[0]


def _popcount_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    xor = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.unpackbits(xor, axis=2).sum(axis=2)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


@pytest.mark.parametrize("cls", [ITQ, SignPCA])
@pytest.mark.parametrize("bits", [64, 128])
def test_fit_encode_shapes(cls: type, bits: int, clustered: np.ndarray) -> None:
    model = cls.fit(clustered[:1000], bits, iterations=10)
    assert model.bits == bits
    assert model.mean.shape == (256,)
    assert model.projection.shape == (256, bits)
    codes = model.encode(clustered[:20])
    assert codes.dtype == np.uint8 and codes.shape == (20, bits // 8)


def test_projection_is_pca_then_rotation(clustered: np.ndarray) -> None:
    itq = ITQ.fit(clustered, 64, iterations=20)
    pca = SignPCA.fit(clustered, 64)
    # both span the same subspace; ITQ's columns stay orthonormal
    gram = itq.projection.T @ itq.projection
    np.testing.assert_allclose(gram, np.eye(64), atol=1e-4)
    rot = pca.projection.T @ itq.projection
    np.testing.assert_allclose(rot.T @ rot, np.eye(64), atol=1e-3)


def test_big_endian_bit_order(clustered: np.ndarray) -> None:
    itq = ITQ.fit(clustered, 64, iterations=5)
    bits = itq.project(clustered[:3]) > 0
    codes = itq.encode(clustered[:3])
    for j in range(64):
        assert np.array_equal((codes[:, j // 8] & (0x80 >> (j % 8))) != 0, bits[:, j])


def test_deterministic_for_seed(clustered: np.ndarray) -> None:
    a = ITQ.fit(clustered, 64, iterations=10, seed=3).encode(clustered)
    b = ITQ.fit(clustered, 64, iterations=10, seed=3).encode(clustered)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("cls", [ITQ, SignPCA])
def test_save_load_round_trip(cls: type, clustered: np.ndarray, tmp_path: Path) -> None:
    model = cls.fit(clustered, 128, iterations=10)
    path = tmp_path / "codes.npz"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["codes.npz"]  # no temporary left behind
    loaded = cls.load(path)
    assert loaded.bits == 128
    assert np.array_equal(loaded.encode(clustered), model.encode(clustered))


def test_load_wrong_kind(clustered: np.ndarray, tmp_path: Path) -> None:
    SignPCA.fit(clustered, 64).save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="signpca"):
        ITQ.load(tmp_path / "m.npz")


def test_too_few_samples(clustered: np.ndarray) -> None:
    with pytest.raises(ValueError, match="need at least 128 vectors to fit itq128"):
        ITQ.fit(clustered[:100], 128)
    with pytest.raises(ValueError, match="at least 64"):
        SignPCA.fit(clustered[:10], 64)


def test_bad_bits(clustered: np.ndarray) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        ITQ.fit(clustered, 60)
    with pytest.raises(ValueError, match="exceed"):
        ITQ.fit(clustered, 512)
    model = ITQ.fit(clustered, 64, iterations=2)
    with pytest.raises(ValueError, match="shape"):
        model.encode(clustered[:, :100])


def test_itq_lower_quantisation_loss(clustered: np.ndarray) -> None:
    train, test = clustered[:4000], clustered[4000:]
    for bits in (64, 128):
        itq = ITQ.fit(train, bits)
        pca = SignPCA.fit(train, bits)
        assert itq.quantization_loss(test) < pca.quantization_loss(test)
    # the loss never rises across iterations (monotone alternating minimisation)
    losses = [ITQ.fit(train, 64, iterations=it).quantization_loss(train) for it in (0, 5, 50)]
    assert losses[0] >= losses[1] >= losses[2]


def test_itq_recall_beats_sign_pca() -> None:
    # 500 isotropic clusters, noise as large as the centres; queries are noisy database points
    rng = np.random.default_rng(0)
    dim = 256
    centres = rng.standard_normal((500, dim)) / np.sqrt(dim)
    labels = rng.integers(0, 500, 5000)
    base = _unit(centres[labels] + 1.5 * rng.standard_normal((5000, dim)) / np.sqrt(dim))
    queries = _unit(base[:200] + 0.3 * rng.standard_normal((200, dim)) / np.sqrt(dim))
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    for bits in (64, 128):
        recalls = {}
        for cls in (ITQ, SignPCA):
            model = cls.fit(base, bits)
            index = BinaryIndex(bits)
            index.add(np.arange(len(base)), model.encode(base))
            _, found = index.search(model.encode(queries), 100)
            recalls[cls.__name__] = (_recall(found[:, :10], truth), _recall(found, truth))
        # Hamming top-10 and Hamming top-100 (a two-stage shortlist) both recall more true top-10
        assert recalls["ITQ"][0] >= recalls["SignPCA"][0], (bits, recalls)
        assert recalls["ITQ"][1] >= recalls["SignPCA"][1], (bits, recalls)


def test_binary_index_matches_popcount(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (300, 16), dtype=np.uint8)
    ids = rng.choice(10**12, 300, replace=False).astype(np.int64)
    queries = rng.integers(0, 256, (7, 16), dtype=np.uint8)
    index = BinaryIndex(128)
    index.add(ids, codes)
    assert len(index) == 300
    assert set(index.ids().tolist()) == set(ids.tolist())

    distances, found = index.search(queries, 20)
    assert distances.dtype == np.int32 and found.dtype == np.int64
    assert distances.shape == found.shape == (7, 20)
    exact = _popcount_distances(queries, codes)
    row_of = {int(i): r for r, i in enumerate(ids)}
    for q in range(7):
        rows = [row_of[int(i)] for i in found[q]]
        np.testing.assert_array_equal(distances[q], exact[q, rows])
        np.testing.assert_array_equal(distances[q], np.sort(exact[q])[:20])

    # remove, then save / load
    assert index.remove(ids[:100]) == 100
    assert index.remove(np.array([], dtype=np.int64)) == 0
    assert len(index) == 200
    _, found = index.search(queries, 250)
    assert not set(found.ravel().tolist()) & set(ids[:100].tolist())
    assert np.all(found[:, 200:] == -1)
    path = tmp_path / "bin.faiss"
    index.save(path)
    loaded = BinaryIndex.load(path, 128)
    assert len(loaded) == 200
    d1, f1 = index.search(queries, 10)
    d2, f2 = loaded.search(queries, 10)
    assert np.array_equal(d1, d2) and np.array_equal(f1, f2)
    with pytest.raises(ValueError, match="expected 64"):
        BinaryIndex.load(path, 64)


def test_binary_index_validation() -> None:
    index = BinaryIndex(64)
    with pytest.raises(ValueError, match="uint8"):
        index.add(np.arange(2), np.zeros((2, 8), dtype=np.int32))
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        index.add(np.arange(2), np.zeros((2, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match="2 ids for 3 codes"):
        index.add(np.arange(2), np.zeros((3, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="positive"):
        index.search(np.zeros((1, 8), dtype=np.uint8), 0)
    with pytest.raises(ValueError, match="multiple of 8"):
        BinaryIndex(12)
    empty_d, empty_i = index.search(np.zeros((2, 8), dtype=np.uint8), 3)
    assert np.all(empty_i == -1)


def _two_stage_setup(seed: int = 5):
    data, _ = _clustered(2050, 256, 40, 0.6, seed=seed)
    base, queries = data[:2000], data[2000:]
    ids = np.arange(2000, dtype=np.int64) * 3 + 11
    itq = ITQ.fit(base, 64)
    binary = BinaryIndex(64)
    binary.add(ids, itq.encode(base))
    flat = FlatIndex(256)
    flat.add(ids, base)
    return base, queries, ids, itq, binary, flat


def test_two_stage_matches_exact_top5() -> None:
    base, queries, ids, itq, binary, flat = _two_stage_setup()
    exact_scores, exact_ids = flat.search(queries, 5)
    codes = itq.encode(queries)
    for vectors_of in (VectorTable(ids, base), flat_vectors_of(flat)):
        scores, found = two_stage_search(queries, codes, binary, vectors_of, k=5, shortlist=200)
        assert scores.dtype == np.float32 and found.dtype == np.int64
        np.testing.assert_array_equal(found, exact_ids)
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)


def test_two_stage_single_query_and_missing_slots() -> None:
    base, queries, ids, itq, binary, flat = _two_stage_setup()
    table = VectorTable(ids, base)
    scores, found = two_stage_search(queries[:1], itq.encode(queries[:1]), binary, table, 5, 50)
    assert np.array_equal(found, flat.search(queries[:1], 5)[1])
    # a small index: fewer candidates than k leaves slots with id -1
    small = BinaryIndex(64)
    small.add(ids[:3], itq.encode(base[:3]))
    scores, found = two_stage_search(queries[:2], itq.encode(queries[:2]), small, table, 5, 10)
    assert np.all(found[:, 3:] == -1) and np.all(scores[:, 3:] == MISSING_SCORE)
    assert set(found[0, :3].tolist()) == set(ids[:3].tolist())
    assert np.all(np.diff(scores[:, :3], axis=1) <= 0)
    with pytest.raises(ValueError, match="shortlist"):
        two_stage_search(queries, itq.encode(queries), binary, table, 10, 5)


def test_vector_table_lookup() -> None:
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    table = VectorTable(np.array([40, 10, 30, 20]), vectors)
    np.testing.assert_array_equal(table(np.array([10, 40])), vectors[[1, 0]])
    with pytest.raises(KeyError):
        table(np.array([15]))
    with pytest.raises(ValueError, match="unique"):
        VectorTable(np.array([1, 1]), vectors[:2])
    identity = VectorTable(np.arange(4), vectors)
    np.testing.assert_array_equal(identity(np.array([3, 0])), vectors[[3, 0]])
