"""The stress bench (searches beside adds and deletes, server memory per round) runs clean."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_stress_benchmark_runs_without_errors() -> None:
    from bench.stress import measure_stress, stress_rows

    r = measure_stress(clients=4, rounds=2, seconds=3.0, warmup=1.0)
    assert r["errors"] == 0, r["statuses"]
    kinds = r["by_kind"]
    assert kinds["search"]["requests"] > 10
    assert kinds["add"]["requests"] > 0 and kinds["delete"]["requests"] > 0
    assert len(r["rss_bytes"]) == 3 and min(r["rss_bytes"]) > 0
    assert r["all"]["p99_ms"] >= r["all"]["p50_ms"] > 0
    assert len(stress_rows(r)) == 4
