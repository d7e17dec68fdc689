"""Retrieval-quality evaluation, better descriptors and tuning (lookalike eval / tune)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lookalike.eval.labels import load_labelled_set
from lookalike.eval.retrieval import evaluate_scores, query_metrics, summarise
from lookalike.eval.tuning import evaluate_splits, split_by_class, split_by_image
from lookalike.features.pooling import average_pool, gem, l2_normalize
from lookalike.features.projection import Projection
from lookalike.features.whiten import Whitening
from lookalike.index.centred_search import ExpandedIndex
from lookalike.index.query_expansion import augment_database, expand_queries

# -- metrics against hand-computed values -------------------------------------------------------


def test_query_metrics_hand_computed() -> None:
    # database: [self, rel, non, rel, non]; the query itself is excluded
    score = np.array([[1.0, 0.9, 0.8, 0.7, 0.6]])
    relevant = np.array([[True, True, False, True, False]])
    excluded = np.array([[True, False, False, False, False]])
    m = query_metrics(score, relevant, excluded)
    assert m.ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert m.precision[1][0] == 1.0
    assert m.precision[5][0] == pytest.approx(2 / 5)
    assert m.recall[10][0] == 1.0
    ideal = 1 + 1 / math.log2(3)
    assert m.ndcg[0] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert m.top[0].tolist()[:4] == [1, 2, 3, 4]
    assert m.top[0, 4] == -1  # the excluded query is never a result
    # interpolated precision: 1.0 up to recall 0.5, then 2/3
    assert m.pr[0, 0] == 1.0 and m.pr[0, 10] == 1.0
    assert m.pr[0, -1] == pytest.approx(2 / 3)


def test_single_image_class_is_left_out_of_the_mean() -> None:
    labels = ["a", "a", "b"]
    x = l2_normalize(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]))
    result = evaluate_scores("x", x @ x.T, labels, np.eye(3, dtype=bool))
    assert math.isnan(result.metrics.ap[2])
    assert result.overall["queries"] == 2
    assert result.overall["mAP"] == 1.0
    assert math.isnan(result.per_class["b"]["mAP"])
    assert summarise(result.metrics)["mAP"] == 1.0


def test_duplicates_excluded_from_ranking() -> None:
    # item 1 is a duplicate of the query (excluded): AP counts only item 2
    score = np.array([[1.0, 0.99, 0.5, 0.9]])
    relevant = np.array([[True, True, True, False]])
    excluded = np.array([[True, True, False, False]])
    assert query_metrics(score, relevant, excluded).ap[0] == pytest.approx(0.5)


# -- labelled sets ------------------------------------------------------------------------------


def _coloured(path: Path, colour: tuple[int, int, int], seed: int, size: int = 96) -> Path:
    """An image of one dominant colour with a few random shapes (a "class" by colour)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, size - 30, 2))
        shade = tuple(int(max(0, min(255, c + rng.integers(-60, 60)))) for c in colour)
        draw.ellipse((x0, y0, x0 + int(rng.integers(10, 30)), y0 + int(rng.integers(10, 30))),
                     fill=shade)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=92)
    return path


COLOURS = {"red": (200, 30, 30), "green": (30, 170, 40), "blue": (30, 50, 200)}


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three colour classes of 5 images, a single-image class, an exact duplicate, and a
    labels.csv with a row naming no file."""
    root = tmp_path_factory.mktemp("labelled")
    rows = []
    for label, colour in COLOURS.items():
        for i in range(5):
            p = _coloured(root / label / f"{i}.jpg", colour, seed=hash(label) % 1000 + i)
            rows.append((p.relative_to(root), label))
    lone = _coloured(root / "grey" / "0.jpg", (128, 128, 128), seed=7)
    rows.append((lone.relative_to(root), "grey"))
    shutil.copy(root / "red" / "0.jpg", root / "red" / "copy.jpg")
    rows.append((Path("red/copy.jpg"), "red"))
    lines = ["path,label"] + [f"{p},{label}" for p, label in rows] + ["gone/missing.jpg,red"]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_labels_unmatched_singletons_duplicates(labelled_dir: Path) -> None:
    data = load_labelled_set(labelled_dir, labelled_dir / "labels.csv")
    assert len(data) == 17
    assert data.unmatched == 1 and data.unmatched_examples == ["gone/missing.jpg"]
    assert data.singletons == ["grey"]
    assert len(data.groups) == 1  # red/0.jpg and red/copy.jpg, by content hash
    excluded = data.excluded()
    a, b = (data.paths.index(labelled_dir / "red" / n) for n in ("0.jpg", "copy.jpg"))
    assert excluded[a, b] and excluded[b, a]
    notes = " ".join(data.notes())
    assert "match no image file" in notes and "single image" in notes


def test_labels_from_folders(labelled_dir: Path) -> None:
    data = load_labelled_set(labelled_dir)
    assert data.classes == ["blue", "green", "grey", "red"]
    assert data.unmatched == 0


def test_labels_matching_nothing_is_an_error_not_a_crash(tmp_path: Path) -> None:
    from lookalike.eval.labels import LabelsError

    _coloured(tmp_path / "a.jpg", (1, 2, 3), 0)
    (tmp_path / "labels.csv").write_text("path,label\nnope.jpg,x\nnada.jpg,y\n")
    with pytest.raises(LabelsError, match="2 label row"):
        load_labelled_set(tmp_path, tmp_path / "labels.csv")


# -- descriptors and re-ranking -----------------------------------------------------------------


def test_gem_between_average_and_max() -> None:
    fmap = np.random.default_rng(0).random((2, 8, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(gem(fmap, 1.0), average_pool(fmap), atol=1e-5)
    np.testing.assert_allclose(gem(fmap, 200.0), l2_normalize(fmap.max(axis=(2, 3))), atol=2e-2)


def test_whitening_round_trip(tmp_path: Path) -> None:
    x = l2_normalize(np.random.default_rng(1).normal(size=(50, 16)).astype(np.float32))
    w = Whitening.fit(x, dim=8, shrinkage=0.5)
    y = w.project(x)
    assert y.shape == (50, 8)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    w.save(tmp_path / "w.npz")
    np.testing.assert_allclose(Whitening.load(tmp_path / "w.npz").project(x), y, atol=1e-6)


def test_expansion_keeps_an_exact_copy_first() -> None:
    db = l2_normalize(np.random.default_rng(2).normal(size=(40, 12)).astype(np.float32))
    q = expand_queries(db[[5]], db, 2)
    assert int(np.argmax(q @ db.T)) == 5
    aug = augment_database(db, 3)
    assert aug.shape == db.shape
    index = ExpandedIndex(np.arange(100, 140), db)
    scores, ids = index.search(db[[7]], 3)
    assert ids[0, 0] == 107 and scores[0, 0] >= scores[0, 1]
    _, ids = index.search(db[[7]], 3, allowed=np.array([120, 121]))
    assert sorted(ids[0, :2].tolist()) == [120, 121] and ids[0, 2] == -1


# -- tuning -------------------------------------------------------------------------------------


def _nuisance_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """6 labels separated along weak directions, hidden under strong within-label noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 32)) * 0.3
    labels = np.repeat(np.arange(6), 30)
    noise = rng.normal(size=(180, 32))
    noise[:, :8] *= 4.0  # loud directions that say nothing about the label
    return l2_normalize((centres[labels] + 0.3 * noise).astype(np.float32)), labels.astype(str)


def test_tune_raises_held_out_map() -> None:
    x, labels = _nuisance_data()
    splits = {s.split: s for s in evaluate_splits(x, labels)}
    assert set(splits) == {"image", "label"}
    image = splits["image"]
    assert image.after > image.before + 0.05
    # honest: test and training images never overlap
    test = split_by_image(labels)
    assert image.test_images == int(test.sum()) and image.train_images == int((~test).sum())
    by_label = split_by_class(labels)
    assert not set(labels[by_label]) & set(labels[~by_label])


def test_projection_needs_two_labels() -> None:
    from lookalike.features.projection import TuneError

    with pytest.raises(TuneError):
        Projection.fit(np.eye(4, dtype=np.float32), ["a", "a", "b", "c"])


# -- end to end: index, eval CLI, tune round trip -----------------------------------------------


@pytest.mark.slow
def test_eval_cli_json(labelled_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lookalike.cli import main

    html = tmp_path / "report.html"

    status = main([
        "eval", str(labelled_dir), "--labels", str(labelled_dir / "labels.csv"),
        "--features", "deep,deep+center+qe,color", "--json", "--html", str(html),
    ])  # fmt: skip
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 1  # the precision-recall curves, embedded
    assert page.count('class="query"') == 9  # 3 worst classes x 3 queries, as thumbnails
    assert "http://" not in page and "https://" not in page  # offline
    assert [r["name"] for r in out["results"]] == ["deep", "deep+center+qe", "color"]
    assert out["set"]["unmatched_labels"] == 1
    assert out["set"]["single_image_classes"] == ["grey"]
    assert any("single image" in n for n in out["notes"])
    for r in out["results"]:
        assert 0.0 <= r["overall"]["mAP"] <= 1.0
        assert r["overall"]["queries"] == 16  # 17 images, the grey one has no relevant item
        assert r["per_class"]["grey"]["mAP"] is None or math.isnan(r["per_class"]["grey"]["mAP"])
    # colour classes: the colour histogram must separate them almost perfectly
    assert out["results"][2]["overall"]["mAP"] > 0.9


@pytest.mark.slow
def test_eval_cli_bad_setting(labelled_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from lookalike.cli import main

    assert main(["eval", str(labelled_dir), "--features", "deep+bogus"]) == 1
    assert "unknown step" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_round_trip(labelled_dir: Path, tmp_path: Path, capsys) -> None:
    import lookalike
    from lookalike.cli import main
    from lookalike.eval.tuning import expanded_index, load_tuning

    db = tmp_path / "index"
    with lookalike.open(db) as col:
        col.add([labelled_dir])
        before = [m.path for m in col.search(labelled_dir / "red" / "1.jpg", k=5)]
    assert main(["tune", str(labelled_dir), "--labels", str(labelled_dir / "labels.csv"),
                 "--db", str(db), "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["stored"] and report["splits"][0]["split"] == "image"
    assert any("match no image file" in n for n in report["notes"])
    with lookalike.open(db, create=False) as col:  # persisted across reopening
        projection = load_tuning(col)
        assert projection is not None and projection.matrix.shape[0] == 1280
        assert expanded_index(col).projection is not None
        tuned = col.search(labelled_dir / "red" / "1.jpg", k=5)
        assert len(tuned) == 5 and len(before) == 5
        assert tuned[0].path.endswith("red/1.jpg")
        plain = col.search(labelled_dir / "red" / "1.jpg", k=5, expand=False)
        assert plain[0].score == pytest.approx(1.0, abs=1e-4)
    assert main(["tune", "--clear", "--db", str(db)]) == 0
    with lookalike.open(db, create=False) as col:
        assert load_tuning(col) is None
        assert expanded_index(col).projection is None


def test_quality_bench_table_and_skip(tmp_path: Path, monkeypatch) -> None:
    import bench.quality as quality

    monkeypatch.setattr(quality, "DATASETS", tmp_path)
    assert "skipped" in quality.measure_dataset("absent")
    row = {"setting": "s", "mAP": 0.5, "P@10": 0.5, "copy R@1": 0.9, "ms/image": 4.0,
           "ms/query": 0.1, "dim": 8, "note": ""}  # fmt: skip
    tune = {"split": "image", "train_images": 4, "test_images": 4, "test_labels": 2,
            "map_before": 0.5, "map_after": 0.6, "gain": 0.1}  # fmt: skip
    lines = quality.table_lines(
        {
            "datasets": [
                {"dataset": "d", "rows": [row, row | {"setting": "t", "mAP": 0.6}], "tune": [tune]}
            ]
        }  # fmt: skip
    )
    text = "\n".join(lines)
    assert (
        "| t | 8 | 0.600 (+10.0)" in text
        and "| by image | d | 4 / 4 | 2 | 0.500 | 0.600 | +10.0 |" in text
    )


@pytest.mark.slow
def test_eval_copies_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import make_images

    from lookalike.cli import main

    make_images(tmp_path / "imgs", 12, seed=3)
    assert main(["eval", "--copies", str(tmp_path / "imgs"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["held_out_originals"] == 3 and r["indexed"] == 9
    assert r["queries"] == 12 and r["queries_with_original"] == 6
    assert 0.0 <= r["micro_ap"] <= 1.0 and 0.0 <= r["recall_at_1"] <= 1.0
