"""Shared fixtures: a private cache and index location, sample photos, generated images."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="lookalike-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    # Never touch the user's cache or default index; subprocesses inherit these.
    os.environ["LOOKALIKE_CACHE"] = str(_SESSION_DIR / "cache")
    os.environ["LOOKALIKE_DB"] = str(_SESSION_DIR / "default-index")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def committed_files(db: Path, timeout: float = 5) -> int:
    """Files committed to the index at ``db`` so far, read-only beside a writer (0 if none)."""
    try:
        conn = sqlite3.connect(f"file:{db / 'catalog.sqlite'}?mode=ro", uri=True, timeout=timeout)
        try:
            return conn.execute("SELECT count(*) FROM files").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def index_command(photos: Path, db: Path) -> list[str]:
    """``lookalike index`` in small batches with two workers, as the crash tests run it."""
    exe = Path(sys.executable).with_name("lookalike")
    return [str(exe), "index", str(photos), "--db", str(db), "-q", "--batch-size", "8",
            "--workers", "2"]  # fmt: skip


def make_images(folder: Path, count: int, seed: int = 0, size: int = 256) -> list[Path]:
    """Write ``count`` distinct synthetic JPEGs (random shapes on random backgrounds)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.integers(0, size - 40, 2)
            x1, y1 = x0 + rng.integers(20, size // 2), y0 + rng.integers(20, size // 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                draw.ellipse((int(x0), int(y0), int(x1), int(y1)), fill=colour)
            else:
                draw.rectangle((int(x0), int(y0), int(x1), int(y1)), fill=colour)
        path = folder / f"gen_{seed}_{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, Image.Image]:
    """scikit-image's bundled sample photos, by name."""
    from lookalike.eval.samples import sample_photos

    return sample_photos()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory, sample_photos) -> Path:
    """A folder with the sample photos as JPEG files (read-only for tests)."""
    folder = tmp_path_factory.mktemp("samples")
    for name, image in sample_photos.items():
        image.save(folder / f"{name}.jpg", quality=92)
    return folder


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path):
    """A collection of the sample photos, indexed once (do not modify it in tests)."""
    import lookalike

    col = lookalike.open(tmp_path_factory.mktemp("sample-index"))
    col.add([sample_dir], workers=2)
    yield col
    col.close()


CRASH_SIZE = (13, 17)


def preprocess_or_crash(image):
    """The real preprocessing, except that a 13x17 image kills its worker process."""
    if image.size == CRASH_SIZE:
        os._exit(3)
    from lookalike.features.efficientnet import preprocess

    return preprocess(image)
