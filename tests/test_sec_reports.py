"""The duplicates HTML report decodes its thumbnails within the same limits as indexing."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lookalike.dups import _thumbnail_uri


def test_report_thumbnails_keep_the_pixel_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file swapped for a huge image after indexing gets a placeholder, not a full decode."""
    big = tmp_path / "swapped.png"
    Image.new("L", (3000, 3000)).save(big)
    monkeypatch.setenv("LOOKALIKE_MAX_PIXELS", "1000000")
    assert _thumbnail_uri(str(big)) is None
    monkeypatch.setenv("LOOKALIKE_MAX_PIXELS", "10000000")
    uri = _thumbnail_uri(str(big))
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")


def test_report_thumbnails_refuse_degenerate_strips(tmp_path: Path) -> None:
    strip = tmp_path / "strip.png"
    Image.new("L", (1, 20_000)).save(strip)
    assert _thumbnail_uri(str(strip)) is None
    assert _thumbnail_uri(str(tmp_path / "missing.jpg")) is None
