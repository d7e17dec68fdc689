"""The exact faiss index: ids, shapes, removal, atomic save."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.index import FlatIndex


def _unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_search_returns_ids_best_first() -> None:
    vectors = _unit(50, 16)
    index = FlatIndex(16)
    index.add(np.arange(100, 150), vectors)
    scores, ids = index.search(vectors[[3, 7]], 5)
    assert ids[:, 0].tolist() == [103, 107]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    expected = np.argsort(-(vectors @ vectors[3]))[:5] + 100
    assert ids[0].tolist() == expected.tolist()


def test_cosine_and_euclidean_agree_on_unit_vectors() -> None:
    vectors, query = _unit(200, 32), _unit(1, 32, seed=1)
    index = FlatIndex(32)
    index.add(np.arange(200), vectors)
    _, ids = index.search(query, 10)
    by_l2 = np.argsort(((vectors - query) ** 2).sum(axis=1))[:10]
    assert ids[0].tolist() == by_l2.tolist()


def test_remove_and_missing_slots() -> None:
    index = FlatIndex(8)
    index.add(np.array([1, 2, 3]), _unit(3, 8))
    assert index.remove(np.array([2, 99])) == 1
    assert len(index) == 2
    _, ids = index.search(_unit(1, 8), 5)
    assert sorted(ids[0][:2].tolist()) == [1, 3]
    assert ids[0][2:].tolist() == [-1, -1, -1]


def test_wrong_shapes_are_rejected() -> None:
    index = FlatIndex(8)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        index.add(np.array([1]), np.zeros((1, 9), dtype=np.float32))
    with pytest.raises(ValueError, match="ids for"):
        index.add(np.array([1, 2]), np.zeros((1, 8), dtype=np.float32))
    with pytest.raises(ValueError):
        index.search(np.zeros(8, dtype=np.float32), 1)


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    vectors = _unit(20, 8)
    index = FlatIndex(8)
    index.add(np.arange(20), vectors)
    target = tmp_path / "x.faiss"
    index.save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["x.faiss"]  # no temporary left behind
    loaded = FlatIndex.load(target, 8)
    assert len(loaded) == 20
    assert loaded.search(vectors[:1], 1)[1][0, 0] == 0
    with pytest.raises(ValueError, match="dimension"):
        FlatIndex.load(target, 16)
