"""Twenty `kill -9`s at random moments of `lookalike index`, each followed by a normal run.

After every kill the index opens and `verify` finds no error; nothing committed before the
kill is lost or changed; after the normal run every file on disk is indexed exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import committed_files, index_command, make_images

import lookalike
from lookalike.integrity import verify

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KILLS = 20
PER_ROUND = 24  # new images before each kill: 3 batches of 8


def _snapshot(db: Path) -> dict[str, str | None]:
    """``{path: sha256 (None for a failed file)}`` of every committed file row."""
    if not (db / "catalog.sqlite").exists():
        return {}
    conn = sqlite3.connect(f"file:{db / 'catalog.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT f.path, c.sha256 FROM files f LEFT JOIN contents c ON c.id = f.content_id"
        ).fetchall()
    except sqlite3.OperationalError:  # no tables yet: killed while creating the catalog
        rows = []
    finally:
        conn.close()
    return dict(rows)


def test_twenty_kill_9s_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(9)
    photos, db = tmp_path / "photos", tmp_path / "index"
    phases: list[str] = []
    longest = 2.5  # seconds a whole run takes here; grows when a run finishes before its kill
    round_ = 0
    with lookalike.open(db) as col:  # the "normal run" after each kill, in this process
        while len(phases) < KILLS:
            assert round_ < 3 * KILLS, f"only {len(phases)} kills landed in {round_} rounds"
            make_images(photos / f"r{round_:02d}", PER_ROUND, seed=1000 + round_, size=160)
            on_disk = sorted(str(p) for p in photos.rglob("*.jpg"))
            start = _snapshot(db)
            proc = subprocess.Popen(
                index_command(photos, db),
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            started = time.monotonic()
            if rng.random() < 0.5:  # at a random time
                delay = rng.uniform(0.0, longest)
                while time.monotonic() - started < delay and proc.poll() is None:
                    time.sleep(0.005)
            else:  # soon after a random number of this round's files are committed
                wanted = len(start) + rng.randint(1, PER_ROUND)
                while committed_files(db, timeout=10) < wanted and proc.poll() is None:
                    time.sleep(0.002)
                    assert time.monotonic() - started < 60
                time.sleep(rng.uniform(0.0, 0.05))
            round_ += 1
            if proc.poll() is not None:  # finished before its kill: not one of the twenty
                assert proc.returncode == 0, proc.stderr.read()
                longest = max(longest, time.monotonic() - started)
                continue
            before = _snapshot(db)
            os.killpg(proc.pid, signal.SIGKILL)  # the command and its decode workers
            proc.wait()
            proc.stderr.close()
            after = _snapshot(db)

            # nothing committed is lost or changed by the kill
            assert all(after.get(p) == sha for p, sha in before.items())
            new = len(set(after) - set(start))
            phases.append(
                "before the first commit"
                if new == 0
                else "between commits"
                if new < PER_ROUND
                else "after the last commit"
            )
            # the index opens and is consistent as the kill left it
            with lookalike.open(db, create=False) as killed:
                report = verify(killed)
                assert report.ok, (phases[-1], [p.message for p in report.errors])

            col.add([photos], workers=1)  # the normal run
            final = _snapshot(db)
            assert sorted(final) == on_disk  # every file once: nothing lost, nothing duplicated
            assert all(final[p] == sha for p, sha in after.items())
            assert all(sha is not None for sha in final.values())
            assert len(set(final.values())) == len(final)  # generated images are all distinct
            report = verify(col)
            assert report.ok and not report.problems, [p.message for p in report.problems]
            probe = photos / f"r{round_ - 1:02d}" / f"gen_{1000 + round_ - 1}_0005.jpg"
            assert col.search(probe, k=1)[0].path == str(probe)
    print("kills by phase:", {p: phases.count(p) for p in set(phases)})
    assert len(set(phases)) >= 2, f"every kill landed in the same phase: {phases}"

    done = subprocess.run(
        [str(Path(sys.executable).with_name("lookalike")), "verify", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"]
