"""Indexing until the disk is full: a clear message, and the last good index intact.

Two ways to run out of space, the same assertions for both:

* ``tmpfs``: the index lives on a small tmpfs mounted for the test (a real full filesystem,
  ENOSPC everywhere). Mounting needs root with CAP_SYS_ADMIN; where the test runs without it
  (an unprivileged container) this variant is skipped, and says so.
* ``fsize``: the indexing process runs under ``RLIMIT_FSIZE`` (``ulimit -f``), so a write past
  the limit fails with EFBIG -- possible for any user in any container, so it always runs. Its
  limit is per file, not for the whole disk: it shows that a failed write is rolled back and
  reported, not what a filesystem does when other programs fill it.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import make_images

import lookalike
from lookalike.integrity import verify

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _lookalike(*args: str, preexec: Callable[[], None] | None = None):
    exe = str(Path(sys.executable).with_name("lookalike"))
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, preexec_fn=preexec, timeout=300
    )


def _rows(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{db / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        return dict(
            conn.execute(
                "SELECT f.path, c.sha256 FROM files f JOIN contents c ON c.id = f.content_id"
            ).fetchall()
        )
    finally:
        conn.close()


def _try_mount(folder: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture(params=["tmpfs", "fsize"])
def full_disk(request, tmp_path: Path) -> Iterator[tuple[str, Path, Callable]]:
    """``(kind, index folder, fill)``: ``fill()`` leaves a little room and returns
    ``(preexec for the indexing process, free())``."""
    kind = request.param
    if kind == "tmpfs":
        mount = tmp_path / "small-disk"
        mount.mkdir()
        if not _try_mount(mount, "8m"):
            pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); "
                        "the fsize variant runs instead")  # fmt: skip
        try:

            def fill():
                ballast = mount / "ballast"
                free = shutil.disk_usage(mount).free
                with open(ballast, "wb") as fh:  # leave about 60 KB
                    fh.write(b"\0" * max(0, free - 60 * 1024))
                return None, lambda: ballast.unlink()

            yield kind, mount / "index", fill
        finally:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    else:
        db = tmp_path / "index"

        def fill():
            biggest = max(p.stat().st_size for p in db.iterdir())
            limit = biggest + 60 * 1024

            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

            return preexec, lambda: None

        yield kind, db, fill


def test_indexing_into_a_full_disk_stops_clearly_and_keeps_the_last_good_index(
    full_disk, tmp_path: Path
) -> None:
    kind, db, fill = full_disk
    first, more = tmp_path / "first", tmp_path / "more"
    make_images(first, 20, seed=71, size=160)
    make_images(more, 120, seed=72, size=160)

    done = _lookalike("index", str(first), "--db", str(db), "-q")
    assert done.returncode == 0, done.stderr
    good = _rows(db)
    assert len(good) == 20

    preexec, free = fill()
    done = _lookalike("index", str(more), "--db", str(db), "-q", "--batch-size", "8",
                      preexec=preexec)  # fmt: skip
    print(kind, done.stderr.strip())
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "cannot write" in done.stderr and "free some space and run again" in done.stderr

    # the last good index: opens, is consistent, has every image it had, and searches
    after = _rows(db)
    assert all(after.get(path) == sha for path, sha in good.items())
    assert len(after) < 140, "the disk never filled up"
    with lookalike.open(db, create=False) as col:
        report = verify(col)
        assert report.ok, [p.message for p in report.errors]
        probe = first / "gen_71_0004.jpg"
        assert col.search(probe, k=1)[0].path == str(probe)
    done = _lookalike("search", str(first / "gen_71_0009.jpg"), "--db", str(db), "-f", "-k", "1")
    assert done.returncode == 0 and done.stdout.strip() == str(first / "gen_71_0009.jpg")

    free()  # space again: the next run goes on from where the disk filled up
    done = _lookalike("index", str(first), str(more), "--db", str(db), "-q")
    assert done.returncode == 0, done.stderr
    assert len(_rows(db)) == 140
    done = _lookalike("verify", "--db", str(db))
    assert done.returncode == 0 and "consistent" in done.stdout, done.stdout
