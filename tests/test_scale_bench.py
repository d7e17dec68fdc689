"""The scale benchmark runs end to end on a tiny stand-in for the real embeddings."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_scale_bench_smoke(tmp_path, monkeypatch):
    from bench.scale import Generator, measure_scale, scale_rows

    rng = np.random.default_rng(0)
    real = rng.standard_normal((300, 1280)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    np.save(tmp_path / "real_deep.npy", real)
    monkeypatch.setenv("LOOKALIKE_BENCH_CACHE", str(tmp_path))
    chunk = Generator(real).chunk(1, 50)
    np.testing.assert_allclose(np.linalg.norm(chunk, axis=1), 1.0, rtol=1e-5)

    r = measure_scale(n=2000, n_queries=8, work=tmp_path / "work")
    assert r["auto_plan"] == "flat"  # 2,000 vectors: exact search is fast enough
    assert set(r["results"]) == {"flat", "ivfpq", "binary", "binary-mih"}
    assert r["results"]["flat"]["recall"] == 1.0 and r["bound_ms"] > 0
    assert 0 < r["results"]["ivfpq"]["chosen"]["recall"] <= 1
    rows = scale_rows(r)
    assert rows[0][0].startswith("(s) exact, 2,000 x 1280")
