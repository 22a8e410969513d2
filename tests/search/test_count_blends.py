"""The report's blends of count ensembles (CountBlends.predict: each member's transform once, the
members added one by one) against stacker.blend.blend_arrays, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from test_backends import pool

from stacker.blend import blend_arrays
from stacker.search.config import SearchConfig
from stacker.search.methods.core import CountBlends
from stacker.search.problem import prepare


@pytest.mark.parametrize("blend", ["geo-mean", "mean", "rank", "power"])
def test_count_blends_are_blend_arrays_bit_for_bit(blend):
    oof, y, fold, names = pool(seed=5, n_models=9)
    problem = prepare(oof, y, fold, names=names, config=SearchConfig(blend=blend))
    blends = CountBlends(problem)
    rows = fold == 1
    for counts in [(0, 0, 1, 0, 0, 0, 0, 0, 0), (3, 1, 0, 2, 5, 1, 0, 7, 1), (1,) * 9]:
        idx = [m for m, c in enumerate(counts) if c]
        weights = [counts[m] for m in idx]
        expected = blend_arrays(oof[:, idx], blend, weights=weights)
        np.testing.assert_array_equal(blends.predict(counts), expected)
        np.testing.assert_array_equal(blends.predict(counts, rows),
                                      blend_arrays(oof[rows][:, idx], blend, weights=weights))
        buffer = np.full(expected.shape, np.nan)        # a reused buffer: the same values
        assert blends.predict(counts, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, expected)
