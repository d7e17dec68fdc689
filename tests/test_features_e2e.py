"""Many descriptors in one collection: chosen, added later, searched, re-ranked, persisted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images

import lookalike
from lookalike.features.registry import UnknownFeature, all_features, parse_feature_list


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("many")
    make_images(folder / "gen", 140, seed=11, size=160)
    for name in ("coffee", "rocket", "chelsea", "astronaut"):
        shutil.copy(sample_dir / f"{name}.jpg", folder / f"{name}.jpg")
    shutil.copy(sample_dir / "coffee.jpg", folder / "coffee-again.jpg")  # same content twice
    return folder


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory, photos: Path):
    with lookalike.open(tmp_path_factory.mktemp("many-index")) as collection:
        report = collection.add(
            [photos], features="deep,phash,color,texture,shape,itq64", workers=2
        )
        assert (report.embedded, report.linked, report.failed) == (144, 1, 0)
        assert report.notes == ["itq64: fitted on 144 images"]
        yield collection


def test_every_feature_finds_the_query_itself(col, photos: Path) -> None:
    for feature in ("deep", "phash", "color", "texture", "shape", "itq64"):
        matches = col.search(photos / "rocket.jpg", k=3, feature=feature)
        assert matches[0].path == str(photos / "rocket.jpg"), feature
        assert matches[0].score == pytest.approx(1.0, abs=1e-4), feature
        assert matches[0].distance == pytest.approx(0.0, abs=1e-4), feature
        assert matches[0].score >= matches[1].score >= matches[2].score


def test_storage_per_feature_is_reported(col) -> None:
    rows = {f["name"]: f for f in col.info()["features"]}
    assert set(rows) == {"deep", "phash", "color", "texture", "shape", "itq64"}
    assert rows["deep"]["bytes_per_image"] == 1280 * 4
    assert rows["phash"]["bytes_per_image"] == 8 and rows["itq64"]["bytes_per_image"] == 8
    assert all(r["images"] == 144 for r in rows.values())
    assert rows["phash"]["vector_bytes"] == 144 * 8
    assert all(r["index_bytes"] > 0 for r in rows.values())
    assert col.verify() == []


def test_metric_override_and_semantics(col, photos: Path) -> None:
    chi2 = col.search(photos / "coffee.jpg", k=5, feature="color")
    inter = col.search(photos / "coffee.jpg", k=5, feature="color", metric="intersection")
    assert {m.path for m in chi2[:2]} == {
        str(photos / "coffee.jpg"),
        str(photos / "coffee-again.jpg"),
    }
    assert inter[0].score == pytest.approx(1.0, abs=1e-5)  # identical histograms intersect fully
    assert all(0.0 <= m.score <= 1.0 for m in chi2 + inter)
    with pytest.raises(UnknownFeature, match="hamming only"):
        col.search(photos / "coffee.jpg", feature="phash", metric="l2")
    with pytest.raises(UnknownFeature, match="not one"):
        col.search(photos / "coffee.jpg", feature="shape", metric="chi2")
    with pytest.raises(UnknownFeature, match="no 'pdq' vectors"):
        col.search(photos / "coffee.jpg", feature="pdq")


def test_two_stage_search_returns_the_exact_top_results(col, photos: Path) -> None:
    queries = [photos / "gen" / f"gen_11_{i:04d}.jpg" for i in (3, 50, 99)]
    for query in queries:
        # plain cosine (expand=False): what --rerank deep orders by
        exact = [m.content_id for m in col.search(query, k=5, expand=False)]
        staged = col.search(query, k=5, feature="itq64", rerank="deep", shortlist=60)
        assert [m.content_id for m in staged] == exact
        assert [m.score for m in staged] == pytest.approx(
            [m.score for m in col.search(query, k=5, expand=False)], abs=1e-5
        )


def test_features_added_later_decode_each_image_once(tmp_path: Path, photos: Path) -> None:
    with lookalike.open(tmp_path / "index") as col:
        col.add([photos], workers=2)
        assert col.features == ["deep"]
        report = col.add([photos], features="+pdq,edges", workers=2)
        # 144 unique images, one of them at two paths: each decoded once more, none re-embedded
        assert (report.embedded, report.backfilled, report.unchanged) == (0, 144, 145)
        assert col.features == ["deep", "pdq", "edges"]
        assert col.search(photos / "astronaut.jpg", k=1, feature="pdq")[0].path.endswith(
            "astronaut.jpg"
        )
        again = col.add([photos], workers=2)
        assert (again.embedded, again.backfilled) == (0, 0)
        # naming a list sets it: edges is dropped with its vectors
        col.add([photos], features="deep,pdq", workers=1)
        assert col.features == ["deep", "pdq"]
        assert len(col.catalog.vector_ids("edges")) == 0
        assert col.verify() == []
    with lookalike.open(tmp_path / "index") as col:  # persisted
        assert col.features == ["deep", "pdq"]


def test_feature_lists_and_names() -> None:
    assert parse_feature_list("+phash", ["deep"]) == ["deep", "phash"]
    assert parse_feature_list("phash, color", ["deep"]) == ["phash", "color"]
    assert parse_feature_list("itq128", []) == ["deep", "itq128"]  # codes need deep vectors
    with pytest.raises(UnknownFeature, match="choose from"):
        parse_feature_list("deep,sift", [])
    names = all_features()
    for expected in (
        "deep",
        "ahash",
        "dhash",
        "phash",
        "whash",
        "pdq",
        "color",
        "texture",
        "shape",
        "itq64",
        "itq128",
        "itq256",
    ):
        assert expected in names
    assert all(np.dtype(f.dtype) in (np.float32, np.uint8) for f in names.values())


def test_learned_code_waits_for_enough_images(tmp_path: Path, sample_dir: Path) -> None:
    with lookalike.open(tmp_path / "index") as col:
        report = col.add([sample_dir / "coffee.jpg"], features="itq128", workers=1)
        assert "needs at least 128 images" in report.notes[0]
        with pytest.raises(UnknownFeature, match="not fitted"):
            col.search(sample_dir / "coffee.jpg", feature="itq128")
        assert col.search(sample_dir / "coffee.jpg", k=1)[0].path.endswith("coffee.jpg")
