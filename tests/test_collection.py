"""The collection through its Python API: incremental indexing, errors, removal, locking."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import make_images

import lookalike
from lookalike.catalog import CatalogError
from lookalike.lock import LockedError, WriterLock


@pytest.fixture()
def photos(tmp_path: Path, sample_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket", "chelsea", "camera", "moon"):
        shutil.copy(sample_dir / f"{name}.jpg", folder / f"{name}.jpg")
    return folder


@pytest.fixture()
def col(tmp_path: Path):
    with lookalike.open(tmp_path / "index") as collection:
        yield collection


def _paths(matches) -> list[str]:
    return [Path(m.path).name for m in matches]


def test_add_and_search(col, photos: Path) -> None:
    report = col.add([photos], workers=2)
    assert (report.embedded, report.failed, report.scanned) == (6, 0, 6)
    matches = col.search(photos / "coffee.jpg", k=3)
    assert _paths(matches)[0] == "coffee.jpg"
    assert matches[0].score == pytest.approx(1.0, abs=1e-4)
    assert matches[0].score >= matches[1].score >= matches[2].score
    assert (matches[0].width, matches[0].height) == (600, 400)
    info = col.info()
    assert (info["images"], info["errors"], info["unique_images"]) == (6, 0, 6)
    assert info["index_bytes"] > 6 * 1280 * 4
    assert col.verify() == []


def test_incremental_runs(col, photos: Path, sample_dir: Path) -> None:
    col.add([photos], workers=1)

    again = col.add([photos], workers=1)
    assert (again.embedded, again.linked, again.unchanged) == (0, 0, 6)

    # modified: new content at the same path
    shutil.copy(sample_dir / "retina.jpg", photos / "moon.jpg")
    changed = col.add([photos], workers=1)
    assert (changed.embedded, changed.unchanged) == (1, 5)
    assert _paths(col.search(sample_dir / "retina.jpg", k=1)) == ["moon.jpg"]
    assert col.info()["unique_images"] == 6  # the old moon content was dropped

    # moved: same content at a new path, recognised by its hash
    (photos / "sub").mkdir()
    os.rename(photos / "rocket.jpg", photos / "sub" / "rocket-renamed.jpg")
    moved = col.add([photos], workers=1, prune=True)
    assert (moved.embedded, moved.linked, moved.pruned) == (0, 1, 1)
    assert _paths(col.search(sample_dir / "rocket.jpg", k=1)) == ["rocket-renamed.jpg"]

    # copied: both paths listed, embedded once
    shutil.copy(photos / "coffee.jpg", photos / "coffee-copy.jpg")
    copied = col.add([photos], workers=1)
    assert (copied.embedded, copied.linked) == (0, 1)
    top2 = col.search(sample_dir / "coffee.jpg", k=2)
    assert sorted(_paths(top2)) == ["coffee-copy.jpg", "coffee.jpg"]
    assert top2[0].score == pytest.approx(top2[1].score)
    assert top2[0].content_id == top2[1].content_id and top2[0].id != top2[1].id

    # deleted: kept until --prune, then forgotten
    (photos / "camera.jpg").unlink()
    assert col.add([photos], workers=1).pruned == 0
    assert col.add([photos], workers=1, prune=True).pruned == 1
    assert "camera.jpg" not in _paths(col.search(sample_dir / "camera.jpg", k=10))
    assert col.info()["images"] == 6
    assert col.verify() == []


def test_identical_new_files_in_one_run_embed_once(col, photos: Path) -> None:
    shutil.copy(photos / "moon.jpg", photos / "moon2.jpg")
    report = col.add([photos], workers=2)
    assert (report.embedded, report.linked) == (6, 1)
    assert col.info()["images"] == 7


def test_bad_files_are_recorded_and_the_run_goes_on(col, photos: Path) -> None:
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "noise.png").write_bytes(os.urandom(5000))
    data = (photos / "coffee.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (photos / "broken-link.jpg").symlink_to(photos / "does-not-exist.jpg")
    report = col.add([photos], workers=2)
    assert report.embedded == 6
    failed = dict(report.errors)
    assert set(failed) == {
        str(photos / n) for n in ("empty.jpg", "noise.png", "truncated.jpg", "broken-link.jpg")
    }
    assert "empty" in failed[str(photos / "empty.jpg")]
    assert "truncated" in failed[str(photos / "truncated.jpg")]
    assert col.info()["errors"] == 4
    assert {p for p, _ in col.errors()} == set(failed)
    # unchanged failures are not retried, and fixed ones are picked up
    assert col.add([photos], workers=1).failed == 0
    (photos / "truncated.jpg").write_bytes(data)
    fixed = col.add([photos], workers=1)
    assert (fixed.embedded, fixed.linked) == (0, 1)
    assert col.info()["errors"] == 3


def test_remove_files_and_folders(col, photos: Path) -> None:
    (photos / "sub").mkdir()
    make_images(photos / "sub", 3)
    col.add([photos], workers=1)
    assert col.info()["images"] == 9
    assert col.remove([photos / "sub"]) == 3
    assert col.remove([photos / "coffee.jpg", photos / "nothing-here.jpg"]) == 1
    assert col.info()["images"] == 5
    assert "coffee.jpg" not in _paths(col.search(photos / "coffee.jpg", k=10))
    assert col.verify() == []


def test_missing_path_is_refused_before_any_work(col, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        col.add([tmp_path / "nope"])


def test_second_writer_is_refused(col, photos: Path) -> None:
    with WriterLock(col.folder), pytest.raises(LockedError, match=f"process {os.getpid()}"):
        col.add([photos])
    col.add([photos], workers=1)  # the lock is released


def test_open_missing_index_without_create(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no index at"):
        lookalike.open(tmp_path / "missing", create=False)


def test_stale_or_damaged_vector_index_is_rebuilt(tmp_path: Path, photos: Path) -> None:
    with lookalike.open(tmp_path / "index") as col:
        col.add([photos], workers=1)
    files = list((tmp_path / "index").glob("deep.g*.faiss"))
    assert len(files) == 1
    files[0].write_bytes(b"garbage")
    with lookalike.open(tmp_path / "index") as col:
        assert _paths(col.search(photos / "rocket.jpg", k=1)) == ["rocket.jpg"]
        assert col.verify() == []
    files[0].unlink()
    with lookalike.open(tmp_path / "index") as col:
        assert _paths(col.search(photos / "moon.jpg", k=1)) == ["moon.jpg"]


def test_search_accepts_bytes_and_pil(col, photos: Path, sample_photos) -> None:
    col.add([photos], workers=1)
    assert _paths(col.search((photos / "camera.jpg").read_bytes(), k=1)) == ["camera.jpg"]
    assert _paths(col.search(sample_photos["chelsea"], k=1)) == ["chelsea.jpg"]
    with pytest.raises(lookalike.images.ImageError):
        col.search(b"not an image")
    with pytest.raises(ValueError, match="k must"):
        col.search(photos / "camera.jpg", k=0)


def test_search_on_empty_collection(col, photos: Path) -> None:
    assert col.search(photos / "coffee.jpg") == []


def test_old_vector_index_file_is_brought_up_to_date(tmp_path: Path, photos: Path) -> None:
    folder = tmp_path / "index"
    with lookalike.open(folder) as col:
        col.add([photos], workers=1)
    (old,) = folder.glob("deep.g*.faiss")
    saved = old.read_bytes()
    make_images(photos / "more", 4)
    (photos / "moon.jpg").unlink()
    with lookalike.open(folder) as col:
        col.add([photos], workers=1, prune=True)
    # as if a crash had left only the older generation's file behind
    for path in folder.glob("deep.g*.faiss"):
        path.unlink()
    old.write_bytes(saved)
    with lookalike.open(folder) as col:
        assert col.verify() == []
        assert col.info()["images"] == 9
        assert _paths(col.search(photos / "more" / "gen_0_0002.jpg", k=1)) == ["gen_0_0002.jpg"]
        assert "moon.jpg" not in _paths(col.search(photos / "coffee.jpg", k=20))
        assert (folder / f"deep.g{col.catalog.generation('deep')}.faiss").exists()


def test_pil_queries_are_normalised_like_files(col, photos: Path, sample_photos) -> None:
    from PIL import Image

    col.add([photos], workers=1)
    rgba = sample_photos["coffee"].convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 255))
    opaque = col.embed([rgba])[0]
    assert opaque == pytest.approx(col.embed([sample_photos["coffee"]])[0], abs=1e-5)
    rgba.putalpha(Image.new("L", rgba.size, 0))  # fully transparent: a white picture
    blank = col.embed([rgba])[0]
    assert blank == pytest.approx(col.embed([Image.new("RGB", rgba.size, "white")])[0], abs=1e-5)
    large = sample_photos["rocket"].resize((2560, 1708))
    assert _paths(col.search(large, k=1)) == ["rocket.jpg"]


def test_index_from_another_model_is_refused(tmp_path: Path, photos: Path) -> None:
    with lookalike.open(tmp_path / "index") as col:
        col.add([photos / "coffee.jpg"], workers=1)
        with col.catalog.transaction():
            col.catalog.set_meta("model", "some other model")
    with pytest.raises(CatalogError, match="some other model"):
        lookalike.open(tmp_path / "index")
