"""Approximate indexes, the auto choice, multi-index hashing, and every index type end to end:
add, search, delete, reopen, filter (issue 8)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images

import lookalike
from lookalike.index import choose
from lookalike.index.ann import AnnIndex, Plan, load, parse_plan
from lookalike.index.flat import FlatIndex
from lookalike.index.mih import MihIndex, load_binary

DIM = 64
KINDS = ["hnsw", "hnsw-sq8", "ivfpq", "pca32-hnsw", "pca32-ivfpq"]


@pytest.fixture(scope="module")
def data():
    """Clustered unit vectors, their ids, a fetch function and exact neighbours of queries."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 30, 3000)] + 0.5 * rng.standard_normal((3000, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(len(x), dtype=np.int64) * 7 + 3
    rows = {int(i): r for r, i in enumerate(ids)}

    def fetch(wanted):
        return x[[rows[int(i)] for i in wanted]]

    queries = x[:40] + 0.1 * rng.standard_normal((40, DIM)).astype(np.float32)
    exact = FlatIndex(DIM)
    exact.add(ids, x)
    _, truth = exact.search(queries, 10)
    return x, ids, fetch, queries, truth


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in pairs]))


@pytest.mark.parametrize("kind", KINDS)
def test_ann_search_delete_reopen_filter(kind, data, tmp_path):
    x, ids, fetch, queries, truth = data
    index = AnnIndex.build(parse_plan(kind), DIM, ids, x, fetch)
    assert index.plan == parse_plan(kind) and len(index) == len(ids)
    scores, found = index.search(queries, 10)
    assert recall(found, truth) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    # exact re-scoring: the scores are the true inner products
    np.testing.assert_allclose(scores[0], queries[0] @ fetch(found[0]).T, rtol=1e-4, atol=1e-4)

    gone = found[:, 0]
    assert index.remove(gone) == len(np.unique(gone))
    _, after = index.search(queries, 10)
    assert not np.isin(after, gone).any()
    assert len(index) == len(ids) - len(np.unique(gone))

    path = tmp_path / "deep.g1.faiss"
    index.save(path)
    again = load(path, DIM, fetch)
    assert isinstance(again, AnnIndex) and again.mapped and again.plan == index.plan
    np.testing.assert_array_equal(again.search(queries, 10)[1], after)
    assert again.tombstones() == index.tombstones()
    again.add(gone[:1], fetch(gone[:1]))  # a memory-mapped index takes writes (on a copy)
    assert again.search(fetch(gone[:1]), 1)[1][0, 0] == gone[0]

    for allowed in (ids[100:130], ids[::2]):  # scored directly / faiss id selector
        _, inside = again.search(queries[:5], 10, ids=allowed)
        assert np.isin(inside[inside >= 0], allowed).all()
        assert (inside >= 0).sum(axis=1).min() == 10


def test_compaction_flag(data):
    x, ids, fetch, _, _ = data
    index = AnnIndex.build(Plan("hnsw"), DIM, ids[:500], x[:500], fetch)
    index.remove(ids[:50])
    assert not index.needs_compaction()
    index.remove(ids[50:150])
    assert index.needs_compaction()


def test_parse_plan_errors():
    assert parse_plan("PCA256-HNSW") == Plan("hnsw", 256)
    for bad in ("annoy", "pca-hnsw", "pca64-flat", ""):
        with pytest.raises(ValueError, match="unknown index"):
            parse_plan(bad)


def test_auto_choice_by_size_and_budget():
    gb = 1 << 30
    auto = choose.Settings(memory_budget=16 * gb)
    assert choose.choose(auto, 10_000, 1280) == Plan("flat")
    assert choose.choose(auto, 1_000_000, 1280) == Plan("hnsw", 256)
    assert choose.choose(auto, 500_000, 128) == Plan("hnsw")  # narrow: no PCA
    tight = choose.Settings(memory_budget=int(0.6 * gb))
    assert choose.choose(tight, 1_000_000, 1280) == Plan("hnsw-sq8", 256)
    assert choose.choose(choose.Settings(memory_budget=gb // 4), 10_000_000, 1280).kind == "ivfpq"
    assert choose.choose(choose.Settings(index="ivfpq"), 10, 1280) == Plan("ivfpq")
    assert choose.binary_kind(choose.Settings(), 1_000_000) == "flat"
    assert choose.binary_kind(choose.Settings(), 50_000_000) == "mih"
    assert choose.parse_size("1.5G") == int(1.5 * gb) and choose.parse_size("512M") == 512 << 20
    with pytest.raises(ValueError):
        choose.parse_size("lots")


def test_multi_index_hashing(tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (2000, 16), dtype=np.uint8)
    ids = np.arange(2000, dtype=np.int64) + 100
    index = MihIndex(128)
    index.add(ids, codes)
    near = codes[:20].copy()
    near[:, 0] ^= 1  # one bit away
    distances, found = index.search(near, 5)
    assert (found[:, 0] == ids[:20]).all() and (distances[:, 0] == 1).all()
    index.remove(ids[:5])
    _, found = index.search(near, 5)
    assert not np.isin(found, ids[:5]).any() and len(index) == 1995
    path = tmp_path / "itq128.g1.bfaiss"
    index.save(path)
    again = load_binary(path, 128)
    assert isinstance(again, MihIndex)
    np.testing.assert_array_equal(again.search(near, 5)[1], found)
    _, inside = again.search(near, 5, ids=ids[100:200])
    assert np.isin(inside, ids[100:200]).all()


@pytest.fixture(scope="module")
def base_collection(tmp_path_factory):
    """A small collection (generated images, deep + itq64) indexed once; tests copy it."""
    root = tmp_path_factory.mktemp("scale")
    images = make_images(root / "img", 72, seed=8)
    folder = root / "base"
    with lookalike.open(folder) as col:
        col.add([root / "img"], workers=1, features="deep,itq64")
        col.set_metadata(
            [{"path": str(p), "n": i, "half": "a" if i % 2 else "b"} for i, p in enumerate(images)]
        )
    return folder, images


def _copy(base: Path, to: Path) -> Path:
    shutil.copytree(base, to)
    return to


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["flat", "hnsw", "hnsw-sq8", "ivfpq", "pca16-hnsw", "pca16-ivfpq"]
)  # PCA is fitted from 4 vectors a dimension: 72 images allow 16
def test_every_index_type_in_a_collection(kind, base_collection, tmp_path):
    base, images = base_collection
    folder = _copy(base, tmp_path / "col")
    with lookalike.open(folder) as col:
        col.add([], index=kind)
        index = col.store.get(col._searchable("deep"))
        assert (Plan("flat") if kind == "flat" else parse_plan(kind)) == (
            index.plan if isinstance(index, AnnIndex) else Plan("flat")
        )
        top = col.search(images[3], k=3)
        assert top[0].path == str(images[3])
        if kind != "flat":  # the collection's own index answers (no query expansion)
            assert top[0].score == pytest.approx(1.0, abs=1e-4)
        odd = col.search(images[3], k=5, where="half = 'a' and n < 40")
        assert len(odd) == 5 and all(m.metadata["half"] == "a" for m in odd)
        assert col.remove([images[3]]) == 1
        assert all(m.path != str(images[3]) for m in col.search(images[3], k=10))
    with lookalike.open(folder) as col:  # reopen: the saved index, tombstones included
        assert col.info()["images"] == len(images) - 1
        hits = col.search(images[5], k=10)
        assert hits[0].path == str(images[5])
        assert all(m.path != str(images[3]) for m in hits)
        assert col.verify() == []


@pytest.mark.slow
def test_auto_switches_and_compacts(base_collection, tmp_path, monkeypatch):
    base, images = base_collection
    folder = _copy(base, tmp_path / "col")
    monkeypatch.setattr(choose, "FLAT_MAX_BYTES", 40 * 1280 * 4)  # 40 vectors "fit" exactly
    with lookalike.open(folder) as col:
        col.add([], index="auto", memory_budget="1G")
        index = col.store.get(col._searchable("deep"))
        assert isinstance(index, AnnIndex) and index.plan == Plan("hnsw")  # too few for PCA
        col.remove(images[:30])  # 42 left, 30 tombstones: compacted on the next write
        col.remove(images[30:33])
        index = col.store.get(col._searchable("deep"))
        assert isinstance(index, FlatIndex)  # 39 vectors: exact again
        assert col.search(images[50], k=1)[0].path == str(images[50])


@pytest.mark.slow
def test_binary_mih_in_a_collection(base_collection, tmp_path, monkeypatch):
    base, images = base_collection
    folder = _copy(base, tmp_path / "col")
    monkeypatch.setattr(choose, "BINARY_EXACT_MAX", 10)
    with lookalike.open(folder) as col:
        col.add([], index="flat")
        assert isinstance(col.store.get(col._searchable("itq64")), MihIndex)
        hits = col.search(images[7], k=3, feature="itq64")
        assert hits[0].path == str(images[7])
        col.remove([images[7]])
    with lookalike.open(folder) as col:
        hits = col.search(images[7], k=5, feature="itq64", where="half = 'b'")
        assert all(m.path != str(images[7]) and m.metadata["half"] == "b" for m in hits)


def test_bad_index_option_fails_before_work(base_collection, tmp_path):
    base, _ = base_collection
    folder = _copy(base, tmp_path / "col")
    with lookalike.open(folder) as col:
        with pytest.raises(ValueError, match="unknown index"):
            col.add([], index="annoy")
        with pytest.raises(ValueError, match="needs --uri"):
            col.add([], backend="milvus")
        assert choose.read_settings(col.catalog).index == "auto"


def test_cli_index_option(base_collection, tmp_path, capsys):
    import json

    from lookalike.cli import main

    base, images = base_collection
    folder = _copy(base, tmp_path / "col")
    assert main(["index", "--db", str(folder), "--index", "hnsw", "--json"]) == 0
    capsys.readouterr()
    assert main(["info", "--db", str(folder), "--json"]) == 0
    about = json.loads(capsys.readouterr().out)["vector_index"]
    assert about["index"] == "hnsw" and about["backend"] == "faiss"
    assert main(["info", "--db", str(folder)]) == 0
    assert "hnsw, faiss" in capsys.readouterr().out
    assert main(["search", "--db", str(folder), "--json", "-k", "1", str(images[2])]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["path"] == str(images[2])
    assert main(["index", "--db", str(folder), "--index", "annoy"]) == 1
    assert "unknown index 'annoy'" in capsys.readouterr().err


def test_flat_scan_of_few_queries_matches_faiss():
    from lookalike.index import flat as flat_module

    rng = np.random.default_rng(5)
    x = rng.standard_normal((flat_module.SCAN_MIN + 500, 32)).astype(np.float32)
    ids = rng.permutation(len(x)).astype(np.int64) * 3
    index = FlatIndex(32)
    index.add(ids, x)
    index.remove(ids[:100])
    queries = rng.standard_normal((3, 32)).astype(np.float32)
    scores, found = index.search(queries, 10)  # the BLAS scan
    want_scores, want = index._index.search(queries, 10)  # faiss's own
    np.testing.assert_array_equal(found, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
