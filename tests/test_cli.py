"""The command line: output contracts, exit codes and messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.cli import main


@pytest.fixture()
def photos(tmp_path: Path, sample_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket", "chelsea"):
        shutil.copy(sample_dir / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return folder


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return str(tmp_path / "index")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_index_search_info_remove(capsys, photos: Path, db: str) -> None:
    status, out, _ = run(capsys, "index", str(photos), "--db", db, "--json")
    assert status == 0
    report = json.loads(out)
    assert (report["embedded"], report["failed"], report["images"]) == (4, 1, 4)
    assert report["errors"][0]["path"].endswith("broken.jpg")

    status, out, _ = run(capsys, "index", str(photos), "--db", db)
    assert status == 0 and "indexed 0 new" in out and "5 unchanged" in out

    q1, q2 = str(photos / "coffee.jpg"), str(photos / "rocket.jpg")
    status, out, _ = run(capsys, "search", "--json", "-k", "3", q1, q2, "--db", db)
    assert status == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["query"] for line in lines] == [q1, q2]
    first = lines[0]["results"]
    assert len(first) == 3
    assert set(first[0]) == {"path", "score", "distance", "id", "width", "height", "metadata"}
    assert first[0]["path"] == q1 and first[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [r["score"] for r in first] == sorted((r["score"] for r in first), reverse=True)
    assert lines[1]["results"][0]["path"] == q2

    status, out, _ = run(capsys, "search", "-f", "-k", "2", q1, "--db", db)
    assert status == 0 and out.splitlines()[0] == q1 and len(out.splitlines()) == 2

    status, out, _ = run(capsys, "search", q1, "--db", db)
    assert status == 0 and "rank" in out and "600x400" in out

    status, out, _ = run(capsys, "info", "--json", "--db", db)
    info = json.loads(out)
    assert (info["images"], info["errors"]) == (4, 1)

    status, out, _ = run(capsys, "info", "--errors", "--db", db)
    assert "broken.jpg" in out and "images:" in out

    status, out, _ = run(capsys, "remove", str(photos / "coffee.jpg"), "--db", db, "--json")
    assert json.loads(out) == {"removed": 1}
    status, out, _ = run(capsys, "info", "--json", "--db", db)
    assert json.loads(out)["images"] == 3


def test_missing_index_is_a_clear_error(capsys, photos: Path, db: str) -> None:
    for command in (["search", str(photos / "coffee.jpg")], ["info"], ["remove", "x"]):
        status, out, err = run(capsys, *command, "--db", db)
        assert status == 1
        assert "no index at" in err and "lookalike index" in err
        assert "Traceback" not in err
    assert not Path(db).exists()  # reading commands never create an index


def test_bad_paths_and_queries(capsys, photos: Path, db: str, tmp_path: Path) -> None:
    status, _, err = run(capsys, "index", str(tmp_path / "missing"), "--db", db)
    assert status == 1 and "no such file or folder" in err

    run(capsys, "index", str(photos), "--db", db, "-q")
    status, out, err = run(
        capsys,
        "search",
        "--json",
        str(tmp_path / "nope.jpg"),
        str(photos / "coffee.jpg"),
        "--db",
        db,
    )
    assert status == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert "no such file" in lines[0]["error"] and lines[0]["results"] == []
    assert lines[1]["results"][0]["path"].endswith("coffee.jpg")  # the run went on
    assert "cannot read query" in err

    status, _, err = run(capsys, "search", str(photos / "broken.jpg"), "--db", db)
    assert status == 1 and "cannot read query" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["search"],
        ["search", "-k", "0", "x.jpg"],
        ["index"],
        ["frobnicate"],
        ["index", "--workers", "many", "."],
    ],
)
def test_usage_errors_exit_2(capsys, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.integration
def test_console_script_and_env_db(photos: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("lookalike")
    env = dict(os.environ, LOOKALIKE_DB=str(tmp_path / "env-index"))
    done = subprocess.run(
        [str(exe), "index", str(photos), "-q"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # quiet: no progress bar when not a terminal
    done = subprocess.run(
        [str(exe), "search", "-f", "-k", "1", str(photos / "chelsea.jpg")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stdout.strip() == str(photos / "chelsea.jpg")
    assert (tmp_path / "env-index" / "catalog.sqlite").exists()


def test_features_command_and_feature_search(capsys, photos: Path, db: str) -> None:
    status, out, _ = run(capsys, "features", "--json", "--no-speed")
    rows = [json.loads(line) for line in out.splitlines()]
    names = [r["name"] for r in rows]
    assert names[0] == "deep" and {"phash", "pdq", "color", "itq128"} <= set(names)
    assert {r["name"]: r["bytes_per_image"] for r in rows}["pdq"] == 32
    status, out, _ = run(capsys, "features", "--no-speed")
    assert status == 0 and "hamming" in out and "score semantics" in out

    status, out, _ = run(
        capsys, "index", str(photos), "--db", db, "--features", "deep,dhash", "--json"
    )
    assert json.loads(out)["features"] == ["deep", "dhash"]
    status, out, _ = run(
        capsys, "search", "--json", "--feature", "dhash", str(photos / "rocket.jpg"), "--db", db
    )
    best = json.loads(out)["results"][0]
    assert best["path"].endswith("rocket.jpg") and best["distance"] == 0 and best["score"] == 1
    status, _, err = run(
        capsys, "search", "--feature", "pdq", str(photos / "rocket.jpg"), "--db", db
    )
    assert status == 1 and "--features +pdq" in err
    status, _, err = run(capsys, "index", str(photos), "--db", db, "--features", "sift")
    assert status == 1 and "unknown feature" in err


def test_dups_command(capsys, photos: Path, db: str, tmp_path: Path) -> None:
    shutil.copy(photos / "coffee.jpg", photos / "coffee-copy.jpg")
    run(capsys, "index", str(photos), "--db", db, "-q")
    status, out, _ = run(capsys, "dups", "--db", db, "--preset", "exact", "--to-remove")
    assert status == 0 and out.splitlines() == [str(photos / "coffee-copy.jpg")]
    status, out, _ = run(capsys, "dups", "--db", db, "--json")
    (group,) = [json.loads(line) for line in out.splitlines()]
    assert group["keeper"]["path"] == str(photos / "coffee.jpg")
    report = tmp_path / "report.html"
    status, out, _ = run(capsys, "dups", "--db", db, "--html", str(report))
    assert status == 0 and "1 groups" in out and "keep" in out
    assert "data:image/jpeg;base64" in report.read_text()
    moved = tmp_path / "moved"
    status, _, _ = run(capsys, "dups", "--db", db, "--move-to", str(moved), "-q")
    assert (moved / "coffee-copy.jpg").exists() and not (photos / "coffee-copy.jpg").exists()
    assert (photos / "coffee.jpg").exists()  # the keeper stays
    # the moved file is forgotten by the index: no group left, no search hit on the old path
    status, out, _ = run(capsys, "dups", "--db", db, "--preset", "exact", "--json")
    assert status == 0 and out == ""
    status, out, _ = run(capsys, "search", "--json", "-k", "3", str(photos / "coffee.jpg"),
                         "--db", db)  # fmt: skip
    assert str(photos / "coffee-copy.jpg") not in out


def test_check_command(capsys, photos: Path, db: str, tmp_path: Path, sample_photos) -> None:
    from lookalike.eval.transforms import crop

    run(capsys, "index", str(photos), "--db", db, "-q")
    suspect = tmp_path / "suspect.jpg"
    crop(sample_photos["rocket"], 0.6, 0.2, 0.3).save(suspect)
    unrelated = tmp_path / "unrelated.jpg"
    sample_photos["page"].save(unrelated)
    status, out, err = run(
        capsys,
        "check",
        "--json",
        str(suspect),
        str(unrelated),
        str(photos / "broken.jpg"),
        "--db",
        db,
    )
    assert status == 1 and "cannot read query" in err  # the broken file; the others went on
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["verdict"] == "copy"
    assert lines[0]["match"]["path"] == str(photos / "rocket.jpg")
    assert lines[0]["evidence"]["inliers"] >= 12 and 0.5 <= lines[0]["score"] <= 1.0
    assert lines[1]["verdict"] == "no_copy" and lines[1]["match"] is None
    assert lines[1]["score"] < 0.5
    assert lines[2]["verdict"] is None and "error" in lines[2]
    status, out, _ = run(capsys, "check", str(suspect), "--db", db)
    assert status == 0 and "copy of" in out and "matching points" in out
