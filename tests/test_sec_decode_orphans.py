"""Killing ``lookalike index`` (or a server during an add) leaves no process of its behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def _children() -> dict[int, int]:
    """``{pid: parent pid}`` of every process on the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] != b"Z":  # a zombie is dead already, only not reaped
            out[int(entry)] = int(fields[1])
    return out


def _descendants(pid: int) -> set[int]:
    table = _children()
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _children()
    return {p for p in pids if p in table}


def _kill_and_expect_no_survivor(proc: subprocess.Popen, want: int) -> None:
    deadline = time.monotonic() + 120
    tree: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        tree = _descendants(proc.pid)
        if len(tree) >= want:  # fork server + resource tracker + workers
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its workers could be seen"
    assert len(tree) >= want, f"only {len(tree)} helper processes appeared"
    time.sleep(0.5)
    tree |= _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while _alive(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = _alive(tree)
    for pid in survivors:  # clean up what this test started, then fail
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes outlived the killed parent: {sorted(survivors)}"


def test_kill_9_of_index_leaves_no_worker_fork_server_or_tracker(tmp_path: Path) -> None:
    make_images(tmp_path / "photos", 400, size=640)
    exe = Path(sys.executable).with_name("lookalike")
    cmd = [str(exe), "index", str(tmp_path / "photos"), "--db", str(tmp_path / "db"), "-q",
           "--batch-size", "8", "--workers", "3"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _kill_and_expect_no_survivor(proc, want=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill_9_of_a_server_during_an_add_leaves_no_helper(tmp_path: Path) -> None:
    import httpx

    photos = tmp_path / "root" / "photos"
    make_images(photos, 400, size=640)
    token = "t" * 32
    exe = Path(sys.executable).with_name("lookalike")
    cmd = [str(exe), "serve", "--db", str(tmp_path / "db"), "--port", "0", "--readers", "1",
           "--workers", "3", "--allow-root", str(tmp_path / "root"), "--token", token]  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            lines = [ln for ln in log.read_text().splitlines() if ln.strip().startswith("open")]
            url = lines[0].split()[-1] if lines else None
            time.sleep(0.1)
        r = httpx.post(url + "api/images/paths", json={"paths": [str(photos)]}, timeout=30,
                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert r.status_code == 202, r.text
        _kill_and_expect_no_survivor(proc, want=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
