"""Retrieval itself: altered copies of the sample photos find their original first."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.eval.transforms import STANDARD

# The two stereo views of one scene are near-duplicates of each other: either counts.
SAME_SCENE = {"motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle"}


@pytest.mark.parametrize("transform", sorted(STANDARD))
def test_altered_copies_rank_their_original_first(sample_index, sample_photos, transform) -> None:
    names = sorted(sample_photos)
    queries = [STANDARD[transform](sample_photos[name]) for name in names]
    results = sample_index.search_vectors(sample_index.embed(queries), k=2)
    misses = {}
    for name, matches in zip(names, results, strict=True):
        top = Path(matches[0].path).stem
        if SAME_SCENE.get(top, top) != SAME_SCENE.get(name, name):
            misses[name] = top
        elif name in SAME_SCENE:
            # the exact original is at worst right behind its stereo twin
            assert name in {Path(m.path).stem for m in matches}
    assert not misses, f"{transform}: {misses}"
