"""Paths and the catalog under attack: `..` spellings, deletes outside uploads/, damaged or
read-only catalogs, metadata that names another file, folders where files should be."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_images

import lookalike
from lookalike.catalog import (
    SCHEMA_VERSION,
    CatalogDamaged,
    CatalogError,
    ReadOnlyError,
    normal_path,
    path_inside,
)
from lookalike.cli import main

TOKEN = "test-token-sec"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small indexed collection with metadata, built once; tests work on copies."""
    root = tmp_path_factory.mktemp("base")
    photos = root / "photos"
    make_images(photos, 6, seed=83, size=96)
    with lookalike.open(root / "db") as col:
        col.add([photos], workers=1)
        col.set_metadata([{"path": str(photos / "gen_83_0000.jpg"), "sku": "A-1", "price": 9}])
    return root


@pytest.fixture()
def copy(base: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(photos, db) of a private copy of the base collection (paths rewritten to the copy)."""
    shutil.copytree(base / "photos", tmp_path / "photos")
    shutil.copytree(base / "db", tmp_path / "db")
    conn = sqlite3.connect(tmp_path / "db" / "catalog.sqlite")
    for table in ("files", "metadata"):
        conn.execute(f"UPDATE {table} SET path = replace(path, ?, ?)", (str(base), str(tmp_path)))
    conn.commit()
    conn.close()
    return tmp_path / "photos", tmp_path / "db"


def _sql(db: Path, *statements: str, args: tuple = ()) -> list:
    conn = sqlite3.connect(db / "catalog.sqlite")
    out = []
    for statement in statements:
        out = conn.execute(statement, args if "?" in statement else ()).fetchall()
    conn.commit()
    conn.close()
    return out


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


# -- 4. `..` in paths: normal form when stored, migrated, seen and merged by verify ----------------


def test_normal_path_is_lexical_and_absolute() -> None:
    assert normal_path("/a/b/../c/./d//e/") == "/a/c/d/e"
    assert normal_path("//a/b") == "/a/b" and normal_path("///a") == "/a"
    assert normal_path("x/../y") == os.path.join(os.getcwd(), "y")


def test_indexing_through_dotdot_adds_nothing_twice(copy, capsys, monkeypatch) -> None:
    photos, db = copy
    (photos.parent / "a").mkdir()
    monkeypatch.chdir(photos.parent)
    status, out, err = _run(["index", "a/../photos", "--db", str(db), "-q"], capsys)
    assert status == 0, err
    with lookalike.open(db, create=False) as col:
        assert col.info()["images"] == 6
        paths = set(col.catalog.files_by_path())
    assert paths == {str(p) for p in photos.iterdir()}
    # a folder reached through `..` after a symbolic link is the link's sibling, not ours
    elsewhere = photos.parent / "elsewhere"
    make_images(elsewhere / "photos", 1, seed=84, size=96)
    (elsewhere / "deep").mkdir()
    (photos.parent / "link").symlink_to(elsewhere / "deep")
    with lookalike.open(db, create=False) as col:
        col.add([photos.parent / "link" / ".." / "photos"], workers=1)
        paths = set(col.catalog.files_by_path())
    assert str(elsewhere / "photos" / "gen_84_0000.jpg") in paths and len(paths) == 7


def test_remove_and_metadata_through_dotdot(copy) -> None:
    photos, db = copy
    first = photos / "gen_83_0000.jpg"
    with lookalike.open(db, create=False) as col:
        col.set_metadata([{"path": f"{photos}/../photos/gen_83_0000.jpg", "colour": "red"}])
        (hit,) = [m for m in col.search(first, k=3) if m.path == str(first)]
        assert hit.metadata == {"colour": "red", "price": 9, "sku": "A-1"}
        assert col.remove([f"{photos}/x/../gen_83_0001.jpg"]) == 1
        assert col.info()["images"] == 5
        assert col.clear_metadata([f"{photos}//./gen_83_0000.jpg"]) == 3


def test_an_old_catalog_is_migrated_to_normal_paths(copy) -> None:
    photos, db = copy
    first = str(photos / "gen_83_0000.jpg")
    alias = f"{photos}/../photos/gen_83_0000.jpg"
    lone = f"{photos}/./gen_83_0002.jpg"
    _sql(
        db,
        "PRAGMA user_version = 3",  # a catalog written by the lookalike before the fix
        "INSERT INTO files(path, size, mtime_ns, content_id, error, added_at, updated_at) "
        "SELECT ?, size, mtime_ns, content_id, error, added_at, updated_at + 1 FROM files "
        f"WHERE path = '{first}'",
        args=(alias,),
    )
    _sql(db, "UPDATE files SET path = ? WHERE path LIKE '%gen_83_0002.jpg'", args=(lone,))
    _sql(db, "INSERT INTO metadata VALUES (?, 'sku', 'OLD'), (?, 'colour', 'blue')",
         args=(alias, alias))  # fmt: skip
    assert len(_sql(db, "SELECT path FROM files")) == 7
    with lookalike.open(db, create=False) as col:
        assert col.catalog.schema_version == SCHEMA_VERSION
        paths = sorted(col.catalog.files_by_path())
        assert paths == sorted(str(p) for p in photos.iterdir())
        assert col.info()["images"] == 6
        # the value already under the normal path wins; the others move to it
        meta = col.catalog.metadata_of_paths([first])[first]
        assert meta == {"colour": "blue", "price": 9, "sku": "A-1"}
        assert col.verify() == []


def test_verify_sees_dotdot_rows_and_repair_merges_them(copy, capsys) -> None:
    photos, db = copy
    first = str(photos / "gen_83_0000.jpg")
    _sql(
        db,  # written behind lookalike's back into a current catalog
        "INSERT INTO files(path, size, mtime_ns, content_id, error, added_at, updated_at) "
        "SELECT ?, size, mtime_ns, content_id, error, added_at, updated_at FROM files "
        f"WHERE path = '{first}'",
        args=(f"{photos}/sub/../gen_83_0000.jpg",),
    )
    status, out, _ = _run(["verify", "--db", str(db), "--json"], capsys)
    report = json.loads(out)
    assert status == 1 and [p["kind"] for p in report["problems"]] == ["abnormal_path"]
    assert "1 of the files are listed a second time" in report["problems"][0]["message"]
    status, out, _ = _run(["verify", "--db", str(db), "--repair", "--json"], capsys)
    report = json.loads(out)
    assert status == 0 and report["ok"], report
    assert any("merged 1 second listings" in line for line in report["repaired"])
    with lookalike.open(db, create=False) as col:
        assert col.info()["images"] == 6 and len(col.catalog.files_by_path()) == 6


# -- 3. DELETE /api/images/{id} never deletes a file outside uploads/ -----------------------------


def test_path_inside() -> None:
    assert path_inside("/db/uploads/a/b.jpg", "/db/uploads")
    assert not path_inside("/db/uploads", "/db/uploads")
    assert not path_inside("/db/uploads/../../victim", "/db/uploads")
    assert not path_inside("/db/uploads-other/x.jpg", "/db/uploads")  # a prefix, not inside


def _file_id(db: Path, path: Path | str) -> int:
    (row,) = _sql(db, "SELECT id FROM files WHERE path = ?", args=(str(path),))
    return row[0]


@pytest.fixture()
def server(copy):
    from fastapi.testclient import TestClient

    from lookalike.server import ServerConfig, create_app

    photos, db = copy
    config = ServerConfig(
        db=db, token=TOKEN, allow_roots=[photos.parent], workers=1, readers=1, warm_text=False
    )
    with TestClient(create_app(config), base_url="http://localhost") as client:
        yield client, photos, db


def test_delete_never_removes_a_file_outside_uploads(server) -> None:
    client, photos, db = server
    root = photos.parent
    uploads = db / "uploads"
    victims = make_images(root / "victim", 4, seed=85, size=96)
    (uploads / "sub").mkdir(parents=True)
    # 1: indexed as DB/uploads/../../victim (stored in normal form: outside uploads/)
    with lookalike.open(db, create=False) as col:
        col.add([uploads / ".." / ".." / "victim" / victims[0].name], workers=1)
    # 2: a symbolic link inside uploads/ to a file outside, and a linked folder
    (uploads / "sub" / "link.jpg").symlink_to(victims[1])
    (uploads / "dirlink").symlink_to(root / "victim")
    with lookalike.open(db, create=False) as col:
        col.add([uploads / "sub" / "link.jpg", uploads / "dirlink" / victims[2].name], workers=1)
    # 3: a row with `..` written straight into the catalog (as an old lookalike stored it)
    content = _sql(db, "SELECT content_id FROM files LIMIT 1")[0][0]
    sneaky = f"{uploads}/../../victim/{victims[3].name}"
    _sql(
        db,
        "INSERT INTO files(path, size, mtime_ns, content_id, added_at, updated_at) "
        "VALUES (?, 1, 1, ?, 0, 0)",
        args=(sneaky, content),
    )
    ids = [
        _file_id(db, victims[0]),
        _file_id(db, uploads / "sub" / "link.jpg"),
        _file_id(db, uploads / "dirlink" / victims[2].name),
        _file_id(db, sneaky),
    ]
    for file_id in ids:
        r = client.delete(f"/api/images/{file_id}", headers=AUTH)
        assert r.status_code == 200, r.text
    assert all(v.is_file() for v in victims)  # every file outside uploads/ is still there
    assert (uploads / "sub" / "link.jpg").is_symlink()
    # a real upload is still deleted with its image
    files = {"files": ("mine.jpg", (photos / "gen_83_0003.jpg").read_bytes(), "image/jpeg")}
    r = client.post("/api/images", params={"wait": "true"}, headers=AUTH, files=files)
    assert r.status_code == 200, r.text
    (added,) = r.json()["result"]["files"]
    assert Path(added["path"]).is_file() and path_inside(added["path"], uploads)
    assert client.delete(f"/api/images/{added['id']}", headers=AUTH).status_code == 200
    assert not Path(added["path"]).exists()


# -- 13. a "path" in an upload's metadata never redirects it -------------------------------------


def test_upload_metadata_cannot_name_another_file(server) -> None:
    client, photos, db = server
    meta = {"path": "/etc/passwd", "sku": "EVIL", "title": "mine"}
    files = {"files": ("up.jpg", (photos / "gen_83_0004.jpg").read_bytes(), "image/jpeg")}
    r = client.post(
        "/api/images",
        params={"wait": "true"},
        headers=AUTH,
        files=files,
        data={"metadata": json.dumps(meta)},
    )
    assert r.status_code == 200, r.text
    (added,) = r.json()["result"]["files"]
    rows = _sql(db, "SELECT path, key, value FROM metadata WHERE value IN ('EVIL', 'mine')")
    assert {row[0] for row in rows} == {added["path"]}  # only the upload's own path
    assert not _sql(db, "SELECT 1 FROM metadata WHERE path = '/etc/passwd'")
    assert client.get(f"/api/images/{added['id']}").json()["metadata"] == {
        "sku": "EVIL", "title": "mine"
    }  # fmt: skip


def test_python_metadata_paths_are_normal_and_never_split(copy, tmp_path: Path) -> None:
    photos, db = copy
    first = photos / "gen_83_0001.jpg"
    table = tmp_path / "meta.jsonl"
    table.write_text(
        json.dumps({"path": "photos/../photos/gen_83_0001.jpg", "sku": "B-2"}) + "\n"
        + json.dumps({"path": "./photos//gen_83_0001.jpg", "colour": "green"}) + "\n"
    )  # fmt: skip
    with lookalike.open(db, create=False) as col:
        report = col.add([photos], workers=1, metadata=table)
        assert report.metadata["attached"] == 2 and report.metadata["unmatched"] == 0
        assert col.catalog.metadata_of_paths([str(first)]) == {
            str(first): {"colour": "green", "sku": "B-2"}
        }
    assert _sql(db, "SELECT count(DISTINCT path) FROM metadata")[0][0] == 2


# -- 9. a damaged catalog page: one line on every command; --repair salvages ----------------------


def _scribble_table(db: Path, table: str) -> None:
    """Random bytes over every page of ``table`` (found with the dbstat virtual table)."""
    conn = sqlite3.connect(db / "catalog.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    try:
        pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (table,))]
    except sqlite3.OperationalError:  # SQLite built without dbstat: the root page
        pages = [conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                              (table,)).fetchone()[0]]  # fmt: skip
    conn.close()
    assert pages
    with open(db / "catalog.sqlite", "r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * size)
            fh.write(os.urandom(size))


COMMANDS = [
    ["info"],
    ["info", "--json"],
    ["search", "{photo}"],
    ["search", "--text", "a red ball"],
    ["check", "{photo}"],
    ["dups"],
    ["remove", "{photo}"],
    ["index", "{photos}", "-q"],
    ["verify"],
]


def test_a_damaged_meta_page_is_one_line_everywhere_and_salvaged(copy, capsys) -> None:
    photos, db = copy
    _scribble_table(db, "meta")
    for command in COMMANDS:
        argv = [a.format(photo=photos / "gen_83_0000.jpg", photos=photos) for a in command]
        status, out, err = _run([*argv, "--db", str(db)], capsys)
        assert status == 1, (command, out, err)
        assert "Traceback" not in out + err
        if command == ["verify"]:
            assert "damaged" in out and "--repair" in out
        else:
            lines = err.strip().splitlines()  # (text search may say it embeds its names)
            assert "damaged" in lines[-1] and "lookalike verify --repair" in lines[-1]
            assert sum("damaged" in line for line in lines) == 1, (command, err)
    status, out, err = _run(["verify", "--repair", "--db", str(db)], capsys)
    assert status == 0 and "Traceback" not in out + err, out + err
    (backup,) = db.glob("catalog.damaged-*.sqlite")
    assert str(backup) in out  # says where the damaged file is kept
    with lookalike.open(db, create=False) as col:
        first = photos / "gen_83_0000.jpg"
        assert col.info()["images"] == 6
        (hit,) = [m for m in col.search(first, k=6) if m.path == str(first)]
        assert hit.metadata == {"price": 9, "sku": "A-1"}  # the metadata is back
        assert col.add([photos], workers=1).embedded == 0  # every vector was kept
    assert _run(["verify", "--db", str(db)], capsys)[0] == 0


def test_a_damaged_metadata_page_is_salvaged_through_its_index(copy, capsys) -> None:
    photos, db = copy
    _scribble_table(db, "metadata")
    status, out, err = _run(["verify", "--repair", "--db", str(db)], capsys)
    assert status == 0, out + err
    with lookalike.open(db, create=False) as col:
        first = str(photos / "gen_83_0000.jpg")
        assert col.catalog.metadata_of_paths([first])[first] == {"price": 9, "sku": "A-1"}


@pytest.mark.parametrize(
    "content",
    [b"", b"not a database at all\n" * 300, b"SQLite format 3\x00" + os.urandom(4000)],
    ids=["empty", "text", "torn-header"],
)
def test_a_catalog_that_is_not_sqlite(copy, capsys, content: bytes) -> None:
    photos, db = copy
    for extra in db.glob("catalog.sqlite-*"):
        extra.unlink()
    (db / "catalog.sqlite").write_bytes(content)
    status, out, err = _run(["info", "--db", str(db)], capsys)
    if content:  # an empty file is an empty SQLite database: a new, empty catalog
        assert status == 1 and "damaged" in err and len(err.strip().splitlines()) == 1
        status, out, err = _run(["verify", "--repair", "--db", str(db)], capsys)
        assert status == 0 and "moved it aside" in out, out + err
    with lookalike.open(db, create=False) as col:
        col.add([photos], workers=1)
        assert col.info()["images"] == 6


def test_a_catalog_from_a_future_lookalike(copy, capsys) -> None:
    _, db = copy
    _sql(db, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for argv in (["info"], ["verify"], ["verify", "--repair"], ["index", str(db.parent)]):
        status, out, err = _run([*argv, "--db", str(db)], capsys)
        assert status == 1 and "upgrade lookalike" in err and "Traceback" not in err
    with pytest.raises(CatalogError, match="newer than this lookalike"):
        lookalike.open(db, create=False)
    assert not list(db.glob("catalog.damaged-*"))  # nothing was moved or rewritten


def test_a_folder_where_the_catalog_or_index_folder_should_be(tmp_path: Path, capsys) -> None:
    (tmp_path / "db" / "catalog.sqlite").mkdir(parents=True)
    status, _, err = _run(["info", "--db", str(tmp_path / "db")], capsys)
    assert status == 1 and "is a folder" in err
    (tmp_path / "file").write_text("x")
    status, _, err = _run(["index", str(tmp_path), "--db", str(tmp_path / "file")], capsys)
    assert status == 1 and "a file of that name exists" in err


# -- 18. a folder where an index file should be ----------------------------------------------------


def test_a_folder_in_place_of_an_index_file_is_moved_aside(copy, capsys) -> None:
    from lookalike.features.registry import DEEP

    photos, db = copy
    with lookalike.open(db, create=False) as col:
        current = col.store.path(DEEP, col.catalog.generation(DEEP.name))
    current.unlink()
    current.mkdir()
    (current / "keep.txt").write_text("the user's")
    (db / "deep.g0.faiss.x.tmp").mkdir()  # and a folder named like a leftover
    status, out, _ = _run(["verify", "--db", str(db), "--json"], capsys)
    report = json.loads(out)
    assert status == 1 and "is a folder" in report["problems"][0]["message"]
    # searching still works (from the catalog), and a write does not stumble on it
    with lookalike.open(db, create=False) as col:
        assert col.search(photos / "gen_83_0000.jpg", k=1)[0].path.endswith("gen_83_0000.jpg")
        col.remove([photos / "gen_83_0005.jpg"])
    status, out, err = _run(["verify", "--repair", "--db", str(db)], capsys)
    assert status == 0 and "Traceback" not in out + err, out + err
    assert "moved the folder" in out
    aside = list(db.glob("aside-*"))
    kept = [a / "keep.txt" for a in aside if (a / "keep.txt").exists()]
    assert len(aside) == 2 and [k.read_text() for k in kept] == ["the user's"]
    assert _run(["verify", "--db", str(db)], capsys)[0] == 0


# -- 12. a read-only index folder: one line (exit 1), HTTP 503 -----------------------------------


def _unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run so that a root child obeys file permissions: through ``setpriv``, which
    drops the capabilities that override them from the bounding set before exec (a plain
    ``preexec_fn`` would fork the test process, and gRPC, loaded by other tests, prints from its
    fork handlers); unchanged when the tests do not run as root."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *argv]


@contextlib.contextmanager
def read_only(db: Path):
    """``db`` and its files made read-only for children started with ``_unprivileged()`` (a
    reader holds the catalog open, so its WAL files exist, as beside a running server)."""
    reader = sqlite3.connect(db / "catalog.sqlite")
    reader.execute("SELECT count(*) FROM files").fetchall()
    modes = {p: p.stat().st_mode for p in [db, *db.rglob("*")]}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        probe = subprocess.run(
            _unprivileged([sys.executable, "-c", f"open({str(db / 'probe')!r}, 'w')"]),
            capture_output=True,
        )
        if probe.returncode == 0:
            pytest.skip("cannot make a folder read-only here")
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
        reader.close()


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _unprivileged([sys.executable, "-m", "lookalike", *argv]),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_a_read_only_index_is_one_line_and_503(copy) -> None:
    photos, db = copy
    first = photos / "gen_83_0000.jpg"
    server_script = textwrap.dedent(f"""
        import json
        from fastapi.testclient import TestClient
        from lookalike.server import ServerConfig, create_app
        config = ServerConfig(db={str(db)!r}, token={TOKEN!r}, allow_roots=[{str(photos)!r}],
                              workers=1, readers=1, warm_text=False)
        out = {{}}
        with TestClient(create_app(config), base_url="http://localhost") as client:
            auth = {{"Authorization": "Bearer {TOKEN}"}}
            data = open({str(first)!r}, "rb").read()
            r = client.post("/api/images", params={{"wait": "true"}}, headers=auth,
                            files={{"files": ("a.jpg", data, "image/jpeg")}})
            out["upload"] = [r.status_code, r.json()["detail"]]
            r = client.delete("/api/images/1", params={{"wait": "true"}}, headers=auth)
            out["delete"] = [r.status_code, r.json().get("detail")]
            r = client.post("/api/images/paths", params={{"wait": "true"}}, headers=auth,
                            json={{"paths": [{str(photos)!r}]}})
            out["add"] = [r.status_code, r.json().get("detail")]
            r = client.post("/api/search", files={{"image": ("q.jpg", data, "image/jpeg")}})
            out["search"] = [r.status_code, len(r.json().get("results", []))]
        print(json.dumps(out))
    """)
    with read_only(db):
        for argv in (
            ["index", str(photos)],
            ["remove", str(first)],
            ["verify", "--repair"],
        ):
            done = _cli(*argv, "--db", str(db))
            assert done.returncode == 1, (argv, done.stdout, done.stderr)
            assert "Traceback" not in done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "read-only" in lines[0], (argv, done.stderr)
        searched = _cli("search", str(first), "--db", str(db), "-k", "1")
        assert searched.returncode == 0 and str(first) in searched.stdout, searched.stderr
        served = subprocess.run(
            _unprivileged([sys.executable, "-c", server_script]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert served.returncode == 0, served.stderr
        result = json.loads(served.stdout.strip().splitlines()[-1])
        for what in ("upload", "delete", "add"):
            status, detail = result[what]
            assert status == 503, (what, result)
        assert "read-only" in result["delete"][1]
        assert result["search"] == [200, 6]


def test_read_only_errors_are_catalog_errors_in_process(copy, monkeypatch) -> None:
    """The same errors without a read-only file system: the lock file cannot be created."""
    import errno

    photos, db = copy
    real_open = os.open

    def refusing(path, flags, *args):
        if str(path).endswith("/lock") and flags & os.O_RDWR:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)
    with lookalike.open(db, create=False) as col:
        with pytest.raises(ReadOnlyError, match="read-only"):
            col.add([photos], workers=1)
        with pytest.raises(ReadOnlyError):
            col.remove([photos])
    assert issubclass(ReadOnlyError, CatalogError) and issubclass(CatalogDamaged, CatalogError)


# -- the adversarial pass: odd names, odd metadata, odd files in the index folder ---------------


def test_undecodable_and_odd_names_can_be_removed(copy) -> None:
    photos, db = copy
    raw = os.fsencode(str(photos)) + b"/bad\xff.jpg"
    shutil.copy(photos / "gen_83_0001.jpg", raw)
    (photos / "new\nline.jpg").write_bytes((photos / "gen_83_0002.jpg").read_bytes())
    with lookalike.open(db, create=False) as col:
        report = col.add([photos], workers=1)
        assert report.failed == 1  # the undecodable name is recorded, escaped
        undecodable = os.fsdecode(raw)
        assert normal_path(undecodable) == f"{photos}/bad\\xff.jpg"
        assert col.remove([undecodable]) == 1  # was: UnicodeEncodeError
        assert col.remove([photos / "new\nline.jpg"]) == 1
        assert col.remove([f"{photos}/{'a' * 5000}.jpg", "\ud800.jpg"]) == 0
        assert col.clear_metadata(["/x/\udcff"]) == 0


def test_metadata_with_lone_surrogates_is_a_metadata_error(copy, tmp_path: Path) -> None:
    from lookalike.metadata import MetadataError

    photos, db = copy
    table = tmp_path / "m.jsonl"
    table.write_text('{"path": "photos/gen_83_0000.jpg", "title": "\\ud800"}\n')
    with lookalike.open(db, create=False) as col:
        with pytest.raises(MetadataError, match="not valid Unicode"):
            col.add([photos], workers=1, metadata=table)
        with pytest.raises(MetadataError, match="not valid Unicode"):
            col.set_metadata([{"path": str(photos / "a.jpg"), "\udcff": 1}])
        report = col.set_metadata([{"path": f"{photos}/\ud800.jpg", "k": 1}])
        assert report["unmatched_paths"] == [f"{photos}/\\ud800.jpg"]


def test_a_folder_where_the_lock_file_should_be(copy, capsys) -> None:
    photos, db = copy
    (db / "lock").unlink()
    (db / "lock").mkdir()
    status, _, err = _run(["index", str(photos), "--db", str(db)], capsys)
    assert status == 1 and "cannot open the lock file" in err and "Traceback" not in err


def test_two_processes_migrating_at_once(copy) -> None:
    import threading

    from lookalike.catalog import Catalog

    photos, db = copy
    _sql(
        db,
        "PRAGMA user_version = 3",
        "UPDATE files SET path = replace(path, '/photos/', '/x/../photos/')",
    )
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            Catalog(db / "catalog.sqlite").close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _sql(db, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert sorted(r[0] for r in _sql(db, "SELECT path FROM files")) == sorted(
        str(p) for p in photos.iterdir()
    )


def test_a_damaged_catalog_is_503_on_the_server(copy) -> None:
    from fastapi.testclient import TestClient

    from lookalike.server import ServerConfig, create_app

    photos, db = copy
    _scribble_table(db, "meta")
    config = ServerConfig(db=db, token=TOKEN, workers=1, readers=1, warm_text=False)
    with TestClient(create_app(config), base_url="http://localhost") as client:
        data = (photos / "gen_83_0000.jpg").read_bytes()
        r = client.post("/api/search", files={"image": ("q.jpg", data, "image/jpeg")})
        assert r.status_code == 503 and "verify --repair" in r.json()["detail"]
        r = client.delete("/api/images/1", headers=AUTH)
        assert r.status_code == 503, r.text


def test_a_salvage_that_fails_leaves_the_damaged_catalog_in_place(copy, monkeypatch) -> None:
    from lookalike.catalog import Catalog, StorageFullError
    from lookalike.integrity import repair

    photos, db = copy
    _scribble_table(db, "meta")
    before = (db / "catalog.sqlite").read_bytes()

    def full(self) -> None:
        raise StorageFullError("cannot write: disk full (simulated)")

    monkeypatch.setattr(Catalog, "normalize_paths", full)
    with lookalike.open(db, create=False) as col:
        with pytest.raises(StorageFullError):
            repair(col)
        with pytest.raises(CatalogDamaged):  # still the damaged one, still saying so
            col.info()
    assert (db / "catalog.sqlite").read_bytes() == before
    assert not list(db.glob("catalog.salvaged*")) and not list(db.glob("catalog.damaged-*"))
    monkeypatch.undo()
    with lookalike.open(db, create=False) as col:
        assert repair(col).ok and col.info()["images"] == 6


def test_verify_survives_rows_written_by_hand(copy, capsys) -> None:
    _, db = copy
    _sql(
        db,
        "INSERT INTO files(path, size, mtime_ns, error, added_at, updated_at) "
        "VALUES (x'2f2e2e2f61', 1, 1, 'e', 0, 0), (12345, 1, 1, 'e', 0, 0)",
        "INSERT INTO metadata VALUES (x'2f2e2e', 'k', 1)",
        "UPDATE meta SET value = 'garbage' WHERE key = 'generation:deep'",
    )
    status, out, err = _run(["verify", "--db", str(db)], capsys)
    assert status == 1 and "not in normal form" in out and "Traceback" not in err
    status, out, err = _run(["verify", "--repair", "--db", str(db)], capsys)
    assert status == 0, out + err


def test_a_metadata_file_that_never_ends_is_refused(copy, tmp_path: Path, capsys) -> None:
    photos, db = copy
    fifo = tmp_path / "meta.csv"
    os.mkfifo(fifo)
    status, _, err = _run(["index", str(photos), "--db", str(db), "--metadata", str(fifo)], capsys)
    assert status != 0 and "not a regular file" in err
    status, _, err = _run(
        ["index", str(photos), "--db", str(db), "--metadata", "/dev/zero"], capsys
    )
    assert status != 0 and "not a regular file" in err
