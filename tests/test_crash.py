"""kill -9 during `lookalike index`, then run again: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import committed_files, index_command, make_images

import lookalike

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_kill_9_then_resume(tmp_path: Path) -> None:
    photos, db = tmp_path / "photos", tmp_path / "index"
    make_images(photos, 240, seed=3, size=320)
    committed_before = []
    # Kill at several moments: while starting, after the first commits, further on.
    for wait_for in (0, 8, 60):
        proc = subprocess.Popen(
            index_command(photos, db),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while committed_files(db) < wait_for and proc.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        before = committed_files(db)
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its decode workers
        proc.wait()
        after = committed_files(db)
        assert after >= before  # committed work is never lost
        committed_before.append(after)
    assert committed_before[-1] > 0, "the run was never killed after a commit"
    assert committed_before[-1] < 240, "the run finished before it could be killed"

    done = subprocess.run(index_command(photos, db), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

    with lookalike.open(db, create=False) as col:
        info = col.info()
        assert (info["images"], info["unique_images"], info["errors"]) == (240, 240, 0)
        assert col.verify() == []
        paths = [row[0] for row in col.catalog.conn.execute("SELECT path FROM files")]
        assert len(paths) == len(set(paths)) == 240
        probe = photos / "gen_3_0123.jpg"
        assert col.search(probe, k=1)[0].path == str(probe)
    # and a further run has nothing left to do
    again = subprocess.run(index_command(photos, db) + ["--json"], capture_output=True, text=True)
    assert '"embedded": 0' in again.stdout


def test_ctrl_c_stops_cleanly_and_keeps_committed_work(tmp_path: Path) -> None:
    photos, db = tmp_path / "photos", tmp_path / "index"
    make_images(photos, 400, seed=4, size=400)
    proc = subprocess.Popen(
        index_command(photos, db),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # as from a shell: Ctrl+C handled, whatever this test process does with SIGINT
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while committed_files(db) < 16 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl+C: the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"finished before Ctrl+C? {committed_files(db)} committed; {err}"
    assert "interrupted" in err and "Traceback" not in err
    kept = committed_files(db)
    assert 16 <= kept < 400
    done = subprocess.run(index_command(photos, db) + ["--json"], capture_output=True, text=True)
    assert done.returncode == 0 and '"failed": 0' in done.stdout
    with lookalike.open(db, create=False) as col:
        assert col.info()["images"] == 400 and col.verify() == []
