"""Indexing throughput on large real JPEGs, and how close the pipeline gets to its ideal.

Figures (all on the same set of photos, in one run):

(a) model only: images/s of ``DeepFeature.encode`` on pre-decoded uint8 224x224 tensors
    (batch 32, threads = cores), and inference CPU-s per image (``time.process_time`` counts all
    threads of the process).
(b) decode only: images/s of Pillow draft decode (what we ship) and of a full decode, via
    ``bench.decode.measure_decode``; and the CPU-s per image of exactly what a pipeline worker
    does per file (``lookalike.pipeline.process_file``: read + sha256 + draft decode + preprocess),
    measured in this process.
(c) end to end: ``Collection.add`` images/s into a fresh index (defaults), the re-run on the
    unchanged folder, and the same two runs through the CLI (``lookalike index DIR --db TMP -q``).
(d) efficiency = (c) / (cores / (worker CPU-s + inference CPU-s per image)): 1.0 means every core
    does useful work all the time.

Identical files are hashed and embedded once, so repeating a photo measures nothing; when there
are too few distinct photos, distinct variants are made by cropping each a few pixels (8 px steps
from the top-left corner, so the result stays >= 8 MP) and re-encoding it (Pillow, quality 90).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

import lookalike
import lookalike.pipeline as pipeline
from lookalike.features.deep import DeepFeature, load_deep_feature
from lookalike.features.efficientnet import preprocess

MIN_PIXELS = 8_000_000
EFFICIENCY_GOAL = 0.8
RERUN_LIMIT = 0.05
JPEG_SUFFIXES = (".jpg", ".jpeg")


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- the photo set -----------------------------------------------------------------------------


def large_jpegs(folder: Path) -> list[Path]:
    """JPEG files directly in ``folder`` of at least 8 megapixels, sorted by name."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in JPEG_SUFFIXES and p.is_file():
            with contextlib.suppress(OSError), Image.open(p) as im:
                if im.size[0] * im.size[1] >= MIN_PIXELS:
                    found.append(p)
    return found


def _make_variant(job: tuple[str, str, int]) -> str:
    src, dest, step = job
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        im.crop((8 * step, 8 * step, w, h)).save(dest, "JPEG", quality=90)
    return dest


def prepare_photos(source: Path, count: int, dest: Path) -> dict:
    """Fill ``dest`` with ``count`` distinct >= 8 MP JPEGs made from those in ``source``."""
    originals = large_jpegs(source)
    if not originals:
        raise FileNotFoundError(f"no JPEG of >= 8 MP in {source}")
    dest.mkdir(parents=True, exist_ok=True)
    chosen = originals[:count]
    for p in chosen:
        shutil.copyfile(p, dest / p.name)
    jobs = []
    step = 1
    while len(chosen) + len(jobs) < count:
        for p in originals:
            if len(chosen) + len(jobs) >= count:
                break
            jobs.append((str(p), str(dest / f"{p.stem}.crop{step}.jpg"), step))
        step += 1
    if jobs:
        with multiprocessing.get_context("spawn").Pool(cores()) as pool:
            pool.map(_make_variant, jobs)
    paths = sorted(dest.iterdir())
    mp = []
    for p in paths:
        with Image.open(p) as im:
            mp.append(im.size[0] * im.size[1] / 1e6)
    return {
        "source": str(source),
        "distinct_originals": len(originals),
        "copied": len(chosen),
        "variants": len(jobs),
        "images": len(paths),
        "megapixels_mean": float(np.mean(mp)),
        "megapixels_min": float(np.min(mp)),
        "megabytes": sum(p.stat().st_size for p in paths) / 1e6,
        "paths": [str(p) for p in paths],
    }


# -- (a) the model alone -----------------------------------------------------------------------


def measure_model(pixels: np.ndarray, threads: int, batch: int = 32, batches: int = 10) -> dict:
    """images/s and CPU-s per image of inference on ready uint8 tensors."""
    feature = load_deep_feature(threads=threads)
    n = len(pixels)
    take = [pixels[np.arange(i * batch, (i + 1) * batch) % n] for i in range(batches + 1)]
    feature.encode(take[0])  # warm-up
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for b in take[1:]:
        feature.encode(b)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    images = batch * batches
    return {
        "threads": threads,
        "batch": batch,
        "images": images,
        "images_per_s": images / wall,
        "cpu_s_per_image": cpu / images,
    }


# -- (b) decoding ------------------------------------------------------------------------------


def measure_worker_cost(paths: list[str], min_side: int = 448) -> tuple[dict, np.ndarray]:
    """What a pipeline worker spends per file, in this process; also returns the pixels."""
    ctrl_c = signal.getsignal(signal.SIGINT)
    pipeline._init_worker(frozenset(), {"deep": preprocess}, min_side, None)
    signal.signal(signal.SIGINT, ctrl_c)  # a worker ignores Ctrl+C; this process must not
    candidates = []
    for p in paths:
        st = os.stat(p)
        candidates.append(pipeline.Candidate(p, st.st_size, st.st_mtime_ns))
    pipeline.process_file(candidates[0])  # warm-up
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results = [pipeline.process_file(c) for c in candidates]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    errors = [r.error for r in results if r.error]
    pixels = np.stack([r.prepared["deep"] for r in results if r.prepared is not None])
    return {
        "images": len(paths),
        "errors": len(errors),
        "images_per_s": len(paths) / wall,
        "cpu_s_per_image": cpu / len(paths),
    }, pixels


def measure_decode_modes(paths: list[str]) -> dict:
    """Pillow draft vs full decode (``bench.decode.measure_decode``) on the same files."""
    from bench.decode import measure_decode

    draft = measure_decode(paths, "pillow-draft")
    full = measure_decode(paths, "pillow-full")
    return {
        "draft": draft,
        "full": full,
        "draft_speedup": draft["images_per_s"] / full["images_per_s"],
    }


# -- (c) end to end ----------------------------------------------------------------------------


@contextlib.contextmanager
def _profiled() -> Iterator[dict]:
    """Time spent in inference and blocked on workers during ``Collection.add``."""
    stats = {"encode_s": 0.0, "wait_s": 0.0, "first_result_s": None, "batches": 0}
    start = time.perf_counter()
    real_encode, real_wait = DeepFeature.encode, pipeline.wait

    def encode(self: DeepFeature, pixels: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        try:
            return real_encode(self, pixels)
        finally:
            stats["encode_s"] += time.perf_counter() - t
            stats["batches"] += 1

    def wait(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - mirrors concurrent.futures.wait
        t = time.perf_counter()
        try:
            return real_wait(*args, **kwargs)
        finally:
            now = time.perf_counter()
            stats["wait_s"] += now - t
            if stats["first_result_s"] is None:
                stats["first_result_s"] = now - start

    DeepFeature.encode, pipeline.wait = encode, wait  # type: ignore[method-assign]
    try:
        yield stats
    finally:
        DeepFeature.encode, pipeline.wait = real_encode, real_wait  # type: ignore[method-assign]


def measure_add(
    folder: Path,
    *,
    workers: int | None = None,
    threads: int | None = None,
    batch_size: int = 32,
    rerun: bool = True,
) -> dict:
    """``Collection.add`` into a fresh temporary index; CPU use of main process and workers."""
    with tempfile.TemporaryDirectory(prefix="lk-bench-index-") as tmp:
        col = lookalike.open(tmp, threads=threads)
        with _profiled() as prof:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            report = col.add([folder], workers=workers, batch_size=batch_size)
            wall = time.perf_counter() - wall0
            # workers report their own CPU time (they are not our children under forkserver)
            main_cpu, child_cpu = time.process_time() - cpu0, report.decode_cpu_s
        out = {
            "workers": workers or pipeline.default_workers(),
            "threads": threads or cores(),
            "batch_size": batch_size,
            "images": report.embedded,
            "failed": report.failed,
            "wall_s": wall,
            "images_per_s": report.embedded / wall,
            "main_cpu_s": main_cpu,
            "workers_cpu_s": child_cpu,
            "cpu_s_per_image": (main_cpu + child_cpu) / max(1, report.embedded),
            "core_utilisation": (main_cpu + child_cpu) / (wall * cores()),
            "encode_wall_s": prof["encode_s"],
            "main_blocked_on_workers_s": prof["wait_s"],
            "first_result_s": prof["first_result_s"],
        }
        if rerun:
            wall0 = time.perf_counter()
            again = col.add([folder], workers=workers, batch_size=batch_size)
            out["rerun_s"] = time.perf_counter() - wall0
            out["rerun_unchanged"] = again.unchanged
            out["rerun_ratio"] = out["rerun_s"] / wall
        col.close()
    return out


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "lookalike"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from lookalike.cli import main; sys.exit(main())"]


def measure_cli(folder: Path, images: int) -> dict:
    """Wall time of ``lookalike index DIR --db TMP -q``, first run and re-run."""
    with tempfile.TemporaryDirectory(prefix="lk-bench-cli-") as tmp:
        cmd = [*_cli(), "index", str(folder), "--db", tmp, "-q"]
        times = []
        for _ in range(2):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
    return {
        "first_s": times[0],
        "rerun_s": times[1],
        "images_per_s": images / times[0],
        "rerun_ratio": times[1] / times[0],
    }


# -- (d) the grid ------------------------------------------------------------------------------


def measure_grid(folder: Path, quick: bool = False) -> list[dict]:
    """``Collection.add`` over workers x threads (batch 32), then batch sizes at the defaults."""
    n = cores()
    combos = [(w, t, 32) for w in (1, n, n + 1) for t in (1, n)]
    if not quick:
        combos += [(n, n, b) for b in (8, 64)]
    keep = (
        "workers", "threads", "batch_size", "images_per_s", "cpu_s_per_image",
        "core_utilisation", "encode_wall_s", "main_blocked_on_workers_s", "first_result_s",
    )  # fmt: skip
    rows = []
    for w, t, b in combos:
        r = measure_add(folder, workers=w, threads=t, batch_size=b, rerun=False)
        rows.append({k: r[k] for k in keep})
    return rows


# -- all of it ---------------------------------------------------------------------------------


def measure_indexing(photos: Path, quick: bool = False, grid: bool = True) -> dict:
    """Run (a)-(d) on photos made from the >= 8 MP JPEGs in ``photos``."""
    count = 40 if quick else 300
    n = cores()
    out: dict = {"cores": n}
    with tempfile.TemporaryDirectory(prefix="lk-bench-photos-") as tmp:
        folder = Path(tmp) / "photos"
        t = time.perf_counter()
        info = prepare_photos(photos, count, folder)
        info["prepare_s"] = time.perf_counter() - t
        paths = info.pop("paths")
        out["photos"] = info

        worker, pixels = measure_worker_cost(paths)
        out["model"] = measure_model(pixels, threads=n)
        out["model_1thread"] = measure_model(pixels, threads=1)
        out["decode"] = measure_decode_modes(paths)
        out["worker"] = worker

        out["add"] = measure_add(folder)
        out["cli"] = measure_cli(folder, out["add"]["images"])

        ideal = n / (worker["cpu_s_per_image"] + out["model"]["cpu_s_per_image"])
        out["ideal_images_per_s"] = ideal
        out["efficiency"] = out["add"]["images_per_s"] / ideal
        out["efficiency_cli"] = out["cli"]["images_per_s"] / ideal
        out["efficiency_goal"] = EFFICIENCY_GOAL
        out["rerun_limit"] = RERUN_LIMIT
        if grid:
            out["grid"] = measure_grid(folder, quick)
    return out


if __name__ == "__main__":
    import json

    quick = "--quick" in sys.argv
    print(
        json.dumps(
            measure_indexing(
                Path(__file__).resolve().parent.parent / ".bench-data" / "photos", quick
            ),
            indent=2,
        )
    )
