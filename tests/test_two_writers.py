"""Two programs at once: the second writer is refused clearly, readers go on, nothing breaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import committed_files, make_images

import lookalike
from lookalike.integrity import verify

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EXE = str(Path(sys.executable).with_name("lookalike"))


def test_second_writer_is_refused_and_readers_keep_working(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_images(first, 16, seed=91, size=160)
    make_images(second, 160, seed=92, size=320)
    db = tmp_path / "index"
    done = subprocess.run([EXE, "index", str(first), "--db", str(db), "-q"], capture_output=True)
    assert done.returncode == 0, done.stderr

    writer = subprocess.Popen(
        [EXE, "index", str(second), "--db", str(db), "-q", "--batch-size", "8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    counts: list[int] = []
    failures: list[str] = []

    def read() -> None:  # a library reader, searching all the time the writer writes
        with lookalike.open(db, create=False) as col:
            while writer.poll() is None:
                hit = col.search(first / "gen_91_0003.jpg", k=1)[0]
                if hit.path != str(first / "gen_91_0003.jpg"):
                    failures.append(hit.path)
                counts.append(col.info()["images"])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while committed_files(db) <= 16:  # the writer holds the lock and has committed a batch
            assert writer.poll() is None and time.monotonic() < deadline, writer.stderr.read()
            time.sleep(0.02)
        # the writer is paused while the others try (it still holds the lock, as a writer
        # busy with a long batch would): on a loaded machine it could finish first otherwise
        os.kill(writer.pid, signal.SIGSTOP)
        refused = {
            "index": [EXE, "index", str(first), "--db", str(db)],
            "remove": [EXE, "remove", str(first / "gen_91_0001.jpg"), "--db", str(db)],
            "repair": [EXE, "verify", "--repair", "--db", str(db)],
        }
        for name, command in refused.items():
            other = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert other.returncode == 1, (name, other.stdout, other.stderr)
            assert f"is locked by process {writer.pid}" in other.stderr, (name, other.stderr)
            assert "Traceback" not in other.stderr
        # readers are not writers: searches (CLI and library) and verify answer meanwhile
        probe = first / "gen_91_0003.jpg"
        found = subprocess.run([EXE, "search", str(probe), "--db", str(db), "-f", "-k", "1"],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert found.returncode == 0 and found.stdout.strip() == str(probe), found.stderr
        checked = subprocess.run([EXE, "verify", "--db", str(db), "--json"],
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        assert json.loads(checked.stdout)["ok"], checked.stdout
        os.kill(writer.pid, signal.SIGCONT)
        reader.join(timeout=300)
        assert not failures, failures
        assert counts == sorted(counts), "a reader never sees the collection shrink"
        assert len(set(counts)) >= 2, f"no search ran while the writer wrote: {counts}"
    finally:
        if writer.poll() is None:
            os.kill(writer.pid, signal.SIGCONT)
            writer.kill()
        writer.wait()
    assert writer.returncode == 0, writer.stderr.read()
    with lookalike.open(db, create=False) as col:
        assert col.info()["images"] == 176
        report = verify(col)
        assert report.ok and not report.problems, [p.message for p in report.problems]
    # the lock is free again: the next writer goes ahead
    again = subprocess.run([EXE, "remove", str(first / "gen_91_0001.jpg"), "--db", str(db)],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr


def test_the_lock_names_a_living_holder_and_dies_with_it(tmp_path: Path) -> None:
    """A writer killed with -9 leaves no stale lock: the kernel drops it with the process."""
    from lookalike.lock import LockedError, WriterLock

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from lookalike.lock import WriterLock; "
         f"l = WriterLock({str(tmp_path)!r}); l.acquire(); print('held', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"locked by process {holder.pid}"):
        WriterLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    with WriterLock(tmp_path):
        assert (tmp_path / "lock").read_text() == str(os.getpid())
