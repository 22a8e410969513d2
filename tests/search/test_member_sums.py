"""weighted_sum against numpy's chain of multiply-then-add, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from stacker.search import kernel
from stacker.search.member_sums import weighted_sum


def chain(members, weights, rows):
    total = members[0][rows] * weights[0]
    for t, weight in zip(members[1:], weights[1:]):
        total += t[rows] * weight
    return total


@pytest.mark.parametrize("n_members", [1, 2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("rows", ["all", "mask", "index", "none"])
def test_weighted_sum_is_the_numpy_chain_bit_for_bit(n_members, rows):
    rng = np.random.default_rng(n_members)
    members = [np.log(rng.random((120, 7)) + 1e-9) for _ in range(n_members)]
    weights = rng.integers(1, 6, n_members).astype(np.float64) / 7.0
    chosen = {"all": slice(None), "mask": rng.random(120) < 0.3,
              "index": rng.permutation(120)[:50], "none": np.zeros(120, bool)}[rows]
    got = weighted_sum(members, weights, chosen)
    expected = chain(members, weights, chosen)
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)
    if len(expected):
        buffer = np.full(expected.shape, np.nan)
        assert weighted_sum(members, weights, chosen, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, expected)
        with pytest.raises(ValueError, match="out must be"):
            weighted_sum(members, weights, chosen, out=buffer[:, :3])
    # the division by the weights' sum, fused with the last group: numpy's in-place division
    divided = chain(members, weights, chosen)
    divided /= weights.sum()
    np.testing.assert_array_equal(weighted_sum(members, weights, chosen, divisor=weights.sum()),
                                  divided)


@pytest.mark.skipif(not kernel.available(), reason="numba is not installed")
def test_without_numba_it_is_the_chain(monkeypatch):
    monkeypatch.setattr(kernel, "available", lambda: False)
    members = [np.arange(12.0).reshape(4, 3) / 7, np.ones((4, 3)) / 3]
    np.testing.assert_array_equal(weighted_sum(members, [2.0, 3.0]),
                                  chain(members, [2.0, 3.0], slice(None)))
    np.testing.assert_array_equal(weighted_sum(members, [2.0, 3.0], divisor=5.0),
                                  chain(members, [2.0, 3.0], slice(None)) / 5.0)
