"""The Milvus backend against a real Milvus server (the PyPI package ``milvus``: an embedded
Milvus standalone, started here on loopback without docker), and filter translation."""

from __future__ import annotations

import os
import shutil
import socket

import numpy as np
import pytest
from conftest import make_images

import lookalike
from lookalike.index.milvus_filter import to_milvus


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    """A Milvus standalone server on a free loopback port, for this module."""
    try:
        from milvus import MilvusServer
    except ImportError:
        if os.environ.get("LOOKALIKE_REQUIRE_MILVUS"):
            raise
        pytest.skip("the milvus package (embedded server) is not installed")
    from lookalike.index.milvus import forget_client

    server = MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    server.listen_port = _free_port()
    cwd = os.getcwd()
    server.start()
    os.chdir(cwd)  # the launcher changes the working directory
    uri = f"http://127.0.0.1:{server.listen_port}"
    yield uri
    forget_client(uri)
    server.stop()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A faiss collection of generated images with metadata (deep + phash), and the images."""
    root = tmp_path_factory.mktemp("milvus-data")
    images = make_images(root / "img", 48, seed=11)
    folder = root / "faiss"
    with lookalike.open(folder) as col:
        col.add([root / "img"], workers=1, features="deep,phash", index="flat")
        col.set_metadata(
            [
                {"path": str(p), "n": i, "half": "a" if i % 2 else "b", "tag": f"t{i % 3}"}
                for i, p in enumerate(images)
            ]
        )
    return folder, images


def _milvus_copy(indexed, tmp_path, uri):
    folder, images = indexed
    target = tmp_path / "milvus"
    shutil.copytree(folder, target)
    col = lookalike.open(target)
    col.add([], backend="milvus", uri=uri, index="flat")
    return col, images


def test_filter_translation():
    assert to_milvus("price < 50") == '(meta["price"] < 50)'
    assert to_milvus("size = '42'") == '(meta["size"] == 42 or meta["size"] == "42")'
    assert to_milvus({"brand": ["a", "b"], "n": {"gte": 2}}) == (
        '(meta["brand"] in ["a", "b"] and (meta["n"] >= 2))'
    )
    assert to_milvus("path = '/x/\"y'") == '(path == "/x/\\"y")'
    assert to_milvus("a = 1 or b = 2", folder="/data/shop") == (
        '((meta["a"] == 1) or (meta["b"] == 2)) and '
        '(path == "/data/shop" or path like "/data/shop/%")'
    )
    for exact_only in ("not a = 1", "a != 1", "title like 'red%'", "a is null"):
        assert to_milvus(exact_only) is None  # sent as the allowed ids instead
    assert to_milvus(None) == ""


@pytest.mark.slow
@pytest.mark.integration
def test_milvus_backend_end_to_end(milvus_uri, indexed, tmp_path):
    col, images = _milvus_copy(indexed, tmp_path, milvus_uri)
    with col:
        index = col.store.get(col._searchable("deep"))
        assert type(index).__name__ == "MilvusIndex" and len(index) == len(images)
        assert any(p.suffix == ".milvus" for p in col.folder.iterdir())
        top = col.search(images[4], k=3)
        assert top[0].path == str(images[4]) and top[0].score == pytest.approx(1.0, abs=1e-4)
        # pushed down as a Milvus expression
        hits = col.search(images[4], k=5, where="half = 'a' and n < 30")
        assert len(hits) == 5
        assert all(m.metadata["half"] == "a" and m.metadata["n"] < 30 for m in hits)
        # no exact Milvus form: sent as ids
        hits = col.search(images[4], k=5, where="not tag = 't1'")
        assert len(hits) == 5 and all(m.metadata["tag"] != "t1" for m in hits)
        # binary codes in Milvus too (Hamming)
        assert col.search(images[9], k=2, feature="phash")[0].path == str(images[9])
        # metadata changes reach Milvus
        col.set_metadata([{"path": str(images[4]), "half": "z"}])
        assert [m.path for m in col.search(images[4], k=3, where="half = 'z'")] == [str(images[4])]
        assert col.remove([images[4]]) == 1
        assert all(m.path != str(images[4]) for m in col.search(images[4], k=10))
        assert len(col.store.get(col._searchable("deep"))) == len(images) - 1
    with lookalike.open(col.folder) as again:  # reopen: the marker names the collection
        hits = again.search(images[6], k=10)
        assert hits[0].path == str(images[6])
        assert all(m.path != str(images[4]) for m in hits)
        assert again.verify() == []
        again.add([], backend="faiss")  # and back: the catalog rebuilds the local indexes
        assert type(again.store.get(again._searchable("deep"))).__name__ == "FlatIndex"
        assert type(again.store.get(again._searchable("phash"))).__name__ == "BinaryIndex"
        assert again.search(images[6], k=1)[0].path == str(images[6])


@pytest.mark.slow
@pytest.mark.integration
def test_parity_faiss_and_milvus_exact(milvus_uri, indexed, tmp_path):
    folder, images = indexed
    col, _ = _milvus_copy(indexed, tmp_path, milvus_uri)
    with lookalike.open(folder) as local, col:
        ids, vectors = local.catalog.vectors("deep", 1280)
        queries = vectors[:12] + 0.02 * np.random.default_rng(0).standard_normal((12, 1280)).astype(
            np.float32
        )
        for where in (None, "half = 'b'", {"n": {"lt": 20}}):
            a = local.search_vectors(queries, 10, where=where)
            b = col.search_vectors(queries, 10, where=where)
            for row_a, row_b in zip(a, b, strict=True):
                assert [m.path for m in row_a] == [m.path for m in row_b]
                np.testing.assert_allclose(
                    [m.score for m in row_a], [m.score for m in row_b], atol=1e-5
                )


def test_unreachable_milvus_is_a_clear_error(indexed, tmp_path):
    pytest.importorskip("pymilvus")
    from lookalike.index.milvus import MilvusError

    folder, _ = indexed
    shutil.copytree(folder, tmp_path / "col")
    with lookalike.open(tmp_path / "col") as col, pytest.raises(MilvusError, match="127.0.0.1"):
        col.add([], backend="milvus", uri=f"http://127.0.0.1:{_free_port()}")
