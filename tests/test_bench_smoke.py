"""The benchmarks still run: each measurement on tiny inputs returns the figures it promises.

Timings are not asserted (they belong to `python -m bench`); this only keeps the benchmark
code in step with the library it measures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_images

pytestmark = pytest.mark.slow


def test_indexing_measurements(tmp_path: Path) -> None:
    from bench.indexing import measure_add, measure_model, measure_worker_cost

    paths = [str(p) for p in make_images(tmp_path / "photos", 12, seed=21, size=300)]
    worker, pixels = measure_worker_cost(paths)
    assert pixels.shape == (12, 224, 224, 3) and worker["cpu_s_per_image"] > 0
    model = measure_model(pixels, threads=1, batch=4, batches=1)
    assert model["images_per_s"] > 0 and model["cpu_s_per_image"] > 0
    added = measure_add(tmp_path / "photos", workers=1, threads=1, batch_size=4)
    assert added["images"] == 12 and added["rerun_unchanged"] == 12
    assert added["workers_cpu_s"] > 0 and 0 < added["rerun_ratio"] < 1


def test_search_and_two_stage_measurements() -> None:
    from bench.binary import measure_two_stage
    from bench.search import measure_search

    search = measure_search(sizes=(500,), repeats=3)
    assert set(search["sizes"]) == {"500"}
    two = measure_two_stage(n=3000, dim=64, bits=(64,), shortlists=(100,))
    recalls = [entry["shortlists"][100]["recall"] for entry in two["codes"]]
    assert len(recalls) == 2  # ITQ and sign-of-PCA
    assert all(0.0 <= r <= 1.0 for r in recalls)
    assert "acceptance" in two


def test_feature_latency_on_every_index_kind() -> None:
    from bench.features import measure_latency, synthetic_vectors
    from lookalike.features.registry import all_features

    rng = np.random.default_rng(0)
    for info in all_features().values():
        rows = synthetic_vectors(info, 5, rng)
        assert rows.shape == (5, info.width) and rows.dtype == info.dtype
        assert measure_latency(info, n=200, queries=3) > 0


def test_imagededup_hashing_baseline_without_torch(sample_photos) -> None:
    import sys

    from bench.copydetect import import_imagededup_hashing
    from lookalike.features.hashes import dhash_code, phash_code

    phash, dhash = import_imagededup_hashing()
    assert "torch" not in sys.modules
    p, d = phash(verbose=False), dhash(verbose=False)
    for name in ("astronaut", "coffee", "chelsea"):
        image = sample_photos[name].convert("RGB")
        pixels = np.asarray(image)
        # the same dHash bit for bit; pHash differs in resampling details only
        assert d.encode_image(image_array=pixels) == dhash_code(image).tobytes().hex()
        theirs = int(p.encode_image(image_array=pixels), 16)
        ours = int(phash_code(image).tobytes().hex(), 16)
        assert bin(theirs ^ ours).count("1") <= 4
