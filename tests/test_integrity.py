"""`lookalike verify [--repair]`: what a crash or a manual edit leaves is found and mended."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import make_images

import lookalike
from lookalike.cli import main


@pytest.fixture()
def indexed(tmp_path: Path) -> tuple[Path, Path]:
    photos, db = tmp_path / "photos", tmp_path / "db"
    make_images(photos, 12, seed=61, size=128)
    with lookalike.open(db) as col:
        col.add([photos], workers=1)
    return photos, db


def _edit(db: Path, *statements: str) -> None:
    """Change the catalog behind lookalike's back (no foreign keys, as a careless tool would)."""
    conn = sqlite3.connect(db / "catalog.sqlite")
    conn.execute("PRAGMA foreign_keys=OFF")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _verify_json(db: Path, capsys, *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    status = main(["verify", "--db", str(db), "--json", *extra])
    return status, json.loads(capsys.readouterr().out)


def test_a_fresh_index_is_consistent(indexed, capsys) -> None:
    _, db = indexed
    status, report = _verify_json(db, capsys)
    assert status == 0 and report["ok"] and report["problems"] == []
    assert report["checked"]["files"] == 12 and report["checked"]["features"]["deep"] == 12
    assert report["checked"]["index_files"] == 2  # deep and class probabilities
    with lookalike.open(db, create=False) as col:
        assert col.verify() == []


def test_manual_edits_are_found_and_repaired(indexed, capsys) -> None:
    photos, db = indexed
    _edit(
        db,
        "DELETE FROM contents WHERE id = 3",  # a file now points at nothing
        "UPDATE vectors SET vector = x'0102' WHERE content_id = 5 AND feature = 'deep'",
        "INSERT INTO vectors VALUES (9999, 'deep', zeroblob(5120))",  # a vector of nothing
        "INSERT INTO vectors VALUES (4, 'nosuchfeature', x'00')",
    )
    (db / "deep.g1.faiss.abc.tmp").write_bytes(b"half a write")
    status, report = _verify_json(db, capsys)
    kinds = {p["kind"] for p in report["problems"]}
    assert status == 1 and not report["ok"]
    assert {"dangling_file", "bad_vector", "orphan_vector", "unused_feature"} <= kinds
    assert "leftover_file" in kinds

    status, report = _verify_json(db, capsys, "--repair")
    assert report["repaired"], report
    # what cannot be mended without decoding again is said, with the command that does it
    assert [p["kind"] for p in report["problems"]] == ["missing_vector"]
    assert "lookalike index" in report["problems"][0]["fix"]
    assert not list(db.glob("*.tmp"))

    with lookalike.open(db, create=False) as col:
        col.add([photos], workers=1)  # the forgotten file and the dropped vector come back
        assert col.verify() == []
        assert col.info()["images"] == 12
    assert _verify_json(db, capsys)[1]["ok"]


def test_a_damaged_or_lying_index_file_is_rebuilt(indexed, capsys) -> None:
    photos, db = indexed
    with lookalike.open(db, create=False) as col:
        from lookalike.features.registry import DEEP

        path = col.store.path(DEEP, col.catalog.generation(DEEP.name))
    path.write_bytes(path.read_bytes()[:100])  # torn file
    status, report = _verify_json(db, capsys)
    assert status == 1 and {p["kind"] for p in report["problems"]} == {"index_damaged"}
    status, report = _verify_json(db, capsys, "--repair")
    assert status == 0 and report["ok"] and "rebuilt the deep index" in " ".join(report["repaired"])

    # an index file for the current generation that holds other ids than the catalog
    with lookalike.open(db, create=False) as col:
        index = col.store.get(DEEP)
        index.remove(index.ids()[:2])
        index.save(path)
    status, report = _verify_json(db, capsys)
    assert [p["kind"] for p in report["problems"]] == ["index_mismatch"]
    assert _verify_json(db, capsys, "--repair")[1]["ok"]
    with lookalike.open(db, create=False) as col:
        probe = photos / "gen_61_0000.jpg"
        assert col.search(probe, k=1)[0].path == str(probe)


def _overwrite_page(db: Path, name: str) -> None:
    """Scribble over the root page of the table or SQL index ``name`` in the catalog file."""
    conn = sqlite3.connect(db / "catalog.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    conn.close()
    with open(db / "catalog.sqlite", "r+b") as fh:
        fh.seek((root[0] - 1) * page_size + 8)
        fh.write(b"\x5a" * (page_size - 8))


def test_a_damaged_sql_index_page_is_found_and_rebuilt(indexed, capsys) -> None:
    photos, db = indexed
    _overwrite_page(db, "files_content")
    status, report = _verify_json(db, capsys)
    assert status == 1 and "sqlite" in {p["kind"] for p in report["problems"]}
    status, report = _verify_json(db, capsys, "--repair")
    assert status == 0 and report["ok"], report
    assert any("REINDEX" in line for line in report["repaired"])
    with lookalike.open(db, create=False) as col:
        assert col.info()["images"] == 12


def test_a_damaged_table_page_is_a_clear_error_and_salvaged(indexed, capsys) -> None:
    photos, db = indexed
    _overwrite_page(db, "files")
    capsys.readouterr()
    assert main(["verify", "--db", str(db)]) == 1
    out = capsys.readouterr()
    assert "error:" in out.out or "lookalike:" in out.err
    # --repair salvages into a new catalog (the files' paths and contents from its SQL indexes)
    assert main(["verify", "--db", str(db), "--repair"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "moved it aside" in out.out
    assert len(list(db.glob("catalog.damaged-*.sqlite"))) == 1
    with lookalike.open(db, create=False) as col:
        assert col.info()["images"] == 12
        report = col.add([photos], workers=1)  # sizes were lost: read again, nothing decoded
        assert report.embedded == 0 and col.info()["images"] == 12


def test_scribbled_vector_bytes_are_found(indexed, capsys) -> None:
    _, db = indexed
    # a deep vector is unit length: bytes changed inside a blob (where SQLite has no checksum)
    _edit(
        db, "UPDATE vectors SET vector = zeroblob(5120) WHERE content_id = 2 AND feature = 'deep'"
    )
    status, report = _verify_json(db, capsys)
    assert status == 1 and [p["kind"] for p in report["problems"]] == ["bad_vector"]


def test_repair_waits_for_no_one_and_refuses_beside_a_writer(indexed, capsys) -> None:
    from lookalike.lock import WriterLock

    _, db = indexed
    with WriterLock(db):
        capsys.readouterr()
        assert main(["verify", "--db", str(db)]) == 0  # reading needs no lock
        assert main(["verify", "--db", str(db), "--repair"]) == 1
        assert "is locked by process" in capsys.readouterr().err
