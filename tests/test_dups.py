"""Duplicate finding: exact and near copies, the keeper rule, the HTML report, moving files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images
from PIL import Image

import lookalike
from lookalike.dups import (
    DupGroup,
    find_duplicates,
    move_files,
    similarity_groups,
    write_html_report,
)

COPY_NAME = "copy & <1>.jpg"  # needs escaping in HTML


@pytest.fixture(scope="module")
def dup_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six unrelated images, a byte-identical copy and a resized, recompressed copy."""
    folder = tmp_path_factory.mktemp("dups") / "photos"
    gen = make_images(folder, 6, seed=11)
    (folder / "sub").mkdir()
    shutil.copyfile(gen[0], folder / "sub" / COPY_NAME)
    with Image.open(gen[1]) as im:
        im.resize((230, 230), Image.LANCZOS).save(folder / "sub" / "resized.jpg", quality=85)
    return folder


@pytest.fixture(scope="module")
def dup_col(tmp_path_factory: pytest.TempPathFactory, dup_folder: Path):
    col = lookalike.open(tmp_path_factory.mktemp("dups-index"))
    col.add([dup_folder], workers=2)
    yield col
    col.close()


def _paths(group: DupGroup) -> set[str]:
    return {Path(f["path"]).name for f in group.files}


def test_exact_finds_only_the_identical_pair(dup_col) -> None:
    groups = find_duplicates(dup_col, "exact")
    assert [_paths(g) for g in groups] == [{"gen_11_0000.jpg", COPY_NAME}]
    assert groups[0].score == 1.0
    assert len(groups[0].to_remove) == 1


def test_near_also_finds_the_resized_copy(dup_col) -> None:
    groups = find_duplicates(dup_col, "near")
    found = sorted(_paths(g) for g in groups)
    assert {"gen_11_0000.jpg", COPY_NAME} in found
    assert {"gen_11_0001.jpg", "resized.jpg"} in found
    assert len(groups) == 2
    resized = next(g for g in groups if "resized.jpg" in _paths(g))
    assert 0.95 <= resized.score < 1.0
    # keeper: the larger resolution wins over the smaller copy
    assert Path(resized.keeper["path"]).name == "gen_11_0001.jpg"
    assert [Path(f["path"]).name for f in resized.to_remove] == ["resized.jpg"]
    for key in ("id", "path", "size", "width", "height", "mtime", "added", "content_id"):
        assert key in resized.keeper


def test_no_duplicates_gives_no_groups(tmp_path: Path) -> None:
    folder = tmp_path / "unique"
    make_images(folder, 5, seed=23)
    with lookalike.open(tmp_path / "index") as col:
        col.add([folder], workers=1)
        for preset in ("exact", "near"):
            assert find_duplicates(col, preset) == []


def test_unknown_preset(dup_col) -> None:
    with pytest.raises(ValueError, match="preset"):
        find_duplicates(dup_col, "fuzzy")


def _file(path: str, width: int, height: int, size: int, mtime_ns: int) -> dict:
    return {"id": 0, "path": path, "size": size, "width": width, "height": height,
            "mtime_ns": mtime_ns, "content_id": 0}  # fmt: skip


def test_keeper_rule() -> None:
    big = _file("/a/big.jpg", 2000, 1000, 10, 50)
    small_heavy = _file("/a/small.png", 1000, 1000, 10**7, 1)
    assert DupGroup([small_heavy, big], 0.97).keeper is big  # resolution first
    heavy = _file("/a/heavy.jpg", 100, 100, 900, 50)
    light = _file("/a/light.jpg", 100, 100, 500, 1)
    assert DupGroup([light, heavy], 0.97).keeper is heavy  # then file size
    old = _file("/a/old.jpg", 100, 100, 500, 1)
    new = _file("/a/new.jpg", 100, 100, 500, 9)
    assert DupGroup([new, old], 1.0).keeper is old  # then the oldest
    short = _file("/a/x.jpg", 100, 100, 500, 1)
    long = _file("/a/longer/x.jpg", 100, 100, 500, 1)
    group = DupGroup([long, short], 1.0)
    assert group.keeper is short and group.to_remove == [long]  # then the shortest path


def test_html_report(dup_col, tmp_path: Path) -> None:
    groups = find_duplicates(dup_col, "near")
    out = write_html_report(groups, tmp_path / "report.html")
    text = out.read_text(encoding="utf-8")
    assert text.count("data:image/jpeg;base64,") == sum(len(g.files) for g in groups)
    assert "copy &amp; &lt;1&gt;.jpg" in text and COPY_NAME not in text
    assert "resized.jpg" in text and "230&times;230" in text
    assert "class='file keep'" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_move_files_moves_only_to_remove_and_never_overwrites(
    dup_col, dup_folder: Path, tmp_path: Path
) -> None:
    work = tmp_path / "photos"
    shutil.copytree(dup_folder, work)
    groups = find_duplicates(dup_col, "near")

    def here(f: dict) -> dict:
        return {**f, "path": str(work / Path(f["path"]).relative_to(dup_folder))}

    dest = tmp_path / "review"
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / "resized.jpg").write_bytes(b"already here")
    before = sorted(p.name for p in work.rglob("*.jpg"))

    to_move = [here(f) for g in groups for f in g.to_remove]
    moved = move_files(to_move, dest, root=work)

    assert len(moved) == 2
    assert (dest / "sub" / "resized.jpg").read_bytes() == b"already here"
    assert (dest / "sub" / "resized_1.jpg").is_file()
    for src, dst in moved:
        assert not Path(src).exists() and Path(dst).is_file()
    for g in groups:
        assert Path(here(g.keeper)["path"]).is_file()
    after = sorted(p.name for p in work.rglob("*.jpg"))
    assert len(after) == len(before) - 2
    # files outside root go straight into dest, de-duplicated by name
    loose = tmp_path / "loose.jpg"
    loose.write_bytes(b"x")
    (dest / "loose.jpg").write_bytes(b"y")
    [(_, dst)] = move_files([loose], dest, root=work)
    assert Path(dst).name == "loose_1.jpg" and (dest / "loose.jpg").read_bytes() == b"y"
    assert move_files([tmp_path / "missing.jpg"], dest) == []


def test_similarity_groups_finds_a_planted_cluster() -> None:
    rng = np.random.default_rng(0)
    n, dim = 3000, 64
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    planted = [5, 700, 1500, 2999]
    for i in planted[1:]:
        x[i] = x[planted[0]] + 0.02 * rng.standard_normal(dim).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) + 1000
    groups = similarity_groups(ids, x, 0.95, k=5, block=256)
    assert len(groups) == 1
    members, score = groups[0]
    assert sorted(members.tolist()) == [i + 1000 for i in planted]
    assert 0.95 <= score <= 1.0
    assert similarity_groups(ids, x, 0.9999, k=5) == []
    assert similarity_groups(ids[:1], x[:1], 0.5) == []


def test_near_confirms_resized_copies_by_phash(tmp_path: Path, sample_photos) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    coffee = sample_photos["coffee"].convert("RGB")
    coffee.save(folder / "coffee.jpg", quality=95)
    w, h = coffee.size
    coffee.resize((w // 2, h // 2), Image.LANCZOS).save(folder / "coffee-half.jpg", quality=60)
    for name in ("motorcycle_left", "motorcycle_right", "rocket", "astronaut"):
        sample_photos[name].convert("RGB").save(folder / f"{name}.jpg", quality=95)
    with lookalike.open(tmp_path / "index") as col:
        col.add([folder], workers=1)
        a, b = col.embed([folder / "coffee.jpg", folder / "coffee-half.jpg"])
        cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert 0.85 <= cosine < 0.95  # the deep vectors alone leave this copy out of "near"
        assert find_duplicates(col, "near", confirm=False) == []
        decoded = find_duplicates(col, "near")  # no stored pHash: decoded small, on the fly
        assert [_paths(g) for g in decoded] == [{"coffee.jpg", "coffee-half.jpg"}]
        assert decoded[0].score == pytest.approx(cosine, abs=1e-4)
        # the stereo pair (two frames of one scene, 4 pHash bits apart) stays apart
        col.add([folder], features="+phash", workers=1)
        stored = find_duplicates(col, "near")  # the stored codes now
        assert [_paths(g) for g in stored] == [{"coffee.jpg", "coffee-half.jpg"}]
        similar = find_duplicates(col, "similar")
        assert {"motorcycle_left.jpg", "motorcycle_right.jpg"} in [_paths(g) for g in similar]
