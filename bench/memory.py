"""Memory while indexing many images: `lookalike index` on N generated small JPEGs.

    python -m bench.memory                       # 100,000 images (about 10-20 minutes on 2 cores)
    python -m bench.memory --count 20000 --json

N distinct JPEGs (random rectangles, 64x64 px, a few KB each) are written to a temporary
folder and indexed by ``lookalike index DIR --db TMP -q`` in its own process (default
features: deep vectors and class probabilities). While it runs, the resident memory (RSS) of
the command and of all its decode workers is sampled every 0.25 s from /proc, with the number
of images committed so far. Reported: the peak of the command's own RSS (``ru_maxrss``), the
peak of the whole process tree, the RSS at 10/25/50/75/100 % of the images committed, and the
share of that peak the vectors themselves take (N x 5,248 bytes: what the search index must
hold in memory), beside the same figures for N/10 images in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

VECTOR_BYTES = 1280 * 4 + 128  # deep vector + class probabilities per image
PAGE = os.sysconf("SC_PAGE_SIZE")


def make_images(folder: Path, count: int, seed: int = 0, size: int = 64) -> None:
    """``count`` distinct small JPEGs in subfolders of 1,000."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        pixels = np.empty((size, size, 3), np.uint8)
        pixels[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        for _ in range(4):
            x, y = rng.integers(0, size - 8, 2)
            w, h = rng.integers(4, size // 2, 2)
            pixels[y : y + h, x : x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
        pixels[0, :3] = np.frombuffer(i.to_bytes(3, "little"), np.uint8)  # always distinct
        Image.fromarray(pixels).save(sub / f"img_{i:06d}.jpg", quality=85)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def rss(pid: int) -> int:
    """Resident bytes of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    tree, total, todo = _children(), 0, [pid]
    while todo:
        p = todo.pop()
        total += rss(p)
        todo += tree.get(p, [])
    return total


def _committed(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db / 'catalog.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM files").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def measure_index(folder: Path, db: Path, count: int, workers: int | None = None) -> dict:
    """Index ``folder`` with the CLI and sample its memory; the figures as a dict."""
    command = [sys.executable, "-m", "lookalike.cli", "index", str(folder), "--db", str(db),
               "-q", "--json"] + (["--workers", str(workers)] if workers else [])  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int, int, int]] = []  # (seconds, committed, main rss, tree rss)
    stop = threading.Event()

    def sample() -> None:
        committed, last_count, last_log = 0, 0.0, 0.0
        while not stop.wait(0.25):
            now = time.perf_counter() - started
            if now - last_count > 2:
                committed, last_count = _committed(db), now
            samples.append((now, committed, rss(proc.pid), tree_rss(proc.pid)))
            if now - last_log > 60:  # progress, and figures so far should the run be cut short
                last_log = now
                mib = 2**20
                peak = max(x[2] for x in samples) / mib
                print(
                    f"  {now:.0f} s: {committed} committed, command RSS {samples[-1][2] / mib:.0f}"
                    f" MiB (peak {peak:.0f}), tree {samples[-1][3] / mib:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    stop.set()
    thread.join()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"lookalike index failed: {err[-2000:]}")
    report = json.loads(out)
    peak_main = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    at: dict[str, int] = {}
    for share in (0.10, 0.25, 0.50, 0.75, 1.0):
        reached = [s for s in samples if s[1] >= share * count]
        if reached:
            at[f"{int(share * 100)}%"] = reached[0][2]
    if samples:
        at["end"] = samples[-1][2]  # after the commits: the search index files are written
    return {
        "images": report["images"],
        "failed": report["failed"],
        "seconds": seconds,
        "images_per_s": report["images"] / seconds,
        "peak_main_bytes": peak_main if peak_main > before * 1024 else max(s[2] for s in samples),
        "peak_tree_bytes": max((s[3] for s in samples), default=0),
        "main_rss_at": at,
        "vector_bytes": count * VECTOR_BYTES,
        "samples": len(samples),
    }


def measure_memory(count: int = 100_000, workers: int | None = None, baseline: bool = True) -> dict:
    """N/10 images (unless not ``baseline``) and N images, each in a fresh index."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="lookalike-memory-") as tmp:
        root = Path(tmp)
        for n in (count // 10, count) if baseline else (count,):
            print(f"writing {n} images ...", file=sys.stderr)
            make_images(root / f"photos{n}", n, seed=n)
            print(f"indexing {n} images ...", file=sys.stderr)
            out[str(n)] = measure_index(root / f"photos{n}", root / f"db{n}", n, workers)
            print(json.dumps(out[str(n)]), file=sys.stderr)
    return out


def memory_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the benchmark table."""
    mib = 2**20
    (small, s), (large, b) = sorted(r.items(), key=lambda kv: int(kv[0]))
    growth = (b["peak_main_bytes"] - s["peak_main_bytes"]) / (int(large) - int(small))
    steps = ", ".join(f"{k} {v / mib:.0f}" for k, v in b["main_rss_at"].items())
    return [
        (
            f"indexing {int(large):,} small JPEGs (CLI, {b['images_per_s']:.0f} images/s)",
            f"peak {b['peak_main_bytes'] / mib:.0f} MiB (command)",
            f"{int(small):,} images: peak {s['peak_main_bytes'] / mib:.0f} MiB",
            "ok" if b["failed"] == 0 else "FAILED FILES",
        ),
        (
            "    whole process tree (command + decode workers)",
            f"peak {b['peak_tree_bytes'] / mib:.0f} MiB",
            f"{int(small):,} images: peak {s['peak_tree_bytes'] / mib:.0f} MiB",
            "",
        ),
        (
            "    command RSS as images are committed (MiB)",
            steps,
            f"vectors alone: {b['vector_bytes'] / mib:.0f} MiB",
            "",
        ),
        (
            "    growth per image (peak, between the two runs)",
            f"{growth / 1024:.1f} KiB",
            f"vector + class probabilities: {VECTOR_BYTES / 1024:.1f} KiB",
            "",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000, help="images (default 100,000)")
    ap.add_argument("--workers", type=int, help="decode processes (default: one per core)")
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    ap.add_argument("--no-baseline", action="store_true", help="skip the N/10 run (JSON only)")
    args = ap.parse_args(argv)
    os.environ.setdefault("LOOKALIKE_CACHE", str(Path.home() / ".cache" / "lookalike"))
    r = measure_memory(args.count, args.workers, baseline=not args.no_baseline)
    if args.json or args.no_baseline:
        print(json.dumps(r, indent=2))
    else:
        from bench.report import render

        print(render(memory_rows(r)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
