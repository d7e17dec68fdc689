"""Pooling a feature map into one search vector."""

from __future__ import annotations

import numpy as np

from lookalike.features.pooling import average_pool, l2_normalize, rmac, rmac_regions


def test_rmac_regions_on_a_7x7_map() -> None:
    regions = rmac_regions(7, 7, levels=3)
    assert regions[0] == (0, 0, 7)  # level 1: the whole map
    assert sorted({side for _, _, side in regions}) == [3, 4, 7]
    assert len(regions) == 1 + 9 + 16
    for top, left, side in regions:
        assert top >= 0 and top + side <= 7 and left >= 0 and left + side <= 7
    # regions reach every border
    assert {t for t, _, s in regions if s == 4} == {0, 1, 3}


def test_rmac_regions_on_a_wide_map() -> None:
    regions = rmac_regions(5, 9, levels=2)
    assert regions[0] == (0, 2, 5)  # centred square on the shorter side
    assert all(left + side <= 9 and top + side <= 5 for top, left, side in regions)


def test_rmac_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    fmap = rng.random((2, 16, 7, 7)).astype(np.float32)
    expected = np.zeros((2, 16), np.float32)
    for n in range(2):
        for top, left, side in rmac_regions(7, 7):
            region = fmap[n, :, top : top + side, left : left + side].reshape(16, -1).max(axis=1)
            expected[n] += region / np.linalg.norm(region)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(rmac(fmap), expected, atol=1e-6)


def test_unit_length_and_zero_safe() -> None:
    assert np.allclose(np.linalg.norm(rmac(np.random.rand(3, 8, 7, 7)), axis=1), 1.0)
    assert np.all(l2_normalize(np.zeros((1, 4))) == 0)
    assert np.allclose(np.linalg.norm(average_pool(np.random.rand(2, 8, 7, 7)), axis=1), 1.0)
