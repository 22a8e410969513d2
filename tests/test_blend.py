"""Blends against plain-loop twins; zeros in the geometric mean; inputs never modified."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stacker.blend import EPS, arithmetic_mean, geo_mean, power_mean, rank_mean, row_ranks
from stacker.blend import blend_arrays as blend
from stacker.errors import OptionError


def naive_geo_mean(probs, weights=None, eps=EPS):
    """probs: (n_rows, n_models, n_classes); a loop over every cell."""
    n_rows, n_models, n_classes = probs.shape
    w = [1.0] * n_models if weights is None else list(weights)
    out = np.zeros((n_rows, n_classes))
    for r in range(n_rows):
        for c in range(n_classes):
            logs = [w[m] * math.log(min(max(float(probs[r, m, c]), eps), 1.0)) for m in range(n_models)]
            out[r, c] = math.exp(sum(logs) / sum(w))
    return out


def naive_mean(probs, weights=None):
    n_rows, n_models, n_classes = probs.shape
    w = [1.0] * n_models if weights is None else list(weights)
    out = np.zeros((n_rows, n_classes))
    for r in range(n_rows):
        for c in range(n_classes):
            out[r, c] = sum(w[m] * float(probs[r, m, c]) for m in range(n_models)) / sum(w)
    return out


def naive_rank(probs):
    """Ranks by counting: below + half the other ties, scaled by n_classes - 1, then the mean."""
    n_rows, n_models, n_classes = probs.shape
    out = np.zeros((n_rows, n_classes))
    for r in range(n_rows):
        for c in range(n_classes):
            total = 0.0
            for m in range(n_models):
                row = [float(v) for v in probs[r, m]]
                below = sum(v < row[c] for v in row)
                ties = sum(v == row[c] for v in row) - 1
                total += (below + ties / 2) / (n_classes - 1)
            out[r, c] = total / n_models
    return out


def naive_power(probs, k):
    n_rows, n_models, n_classes = probs.shape
    out = np.zeros((n_rows, n_classes))
    for r in range(n_rows):
        for c in range(n_classes):
            out[r, c] = (sum(float(probs[r, m, c]) ** k for m in range(n_models)) / n_models) ** (1 / k)
    return out


@pytest.fixture
def probs():
    rng = np.random.default_rng(3)
    p = rng.random((7, 4, 5)).astype(np.float32)
    p[0, 1, 2] = 0.0                 # a zero in a geometric mean
    p[1, :, 3] = 0.0                 # every model says 0
    p[2, 0, :] = 0.25                # ties within a row, for the rank blend
    return p


def test_geo_mean_matches_naive_twin(probs):
    np.testing.assert_allclose(geo_mean(probs), naive_geo_mean(probs), rtol=1e-12)
    w = [0.5, 2.0, 1.0, 0.0]
    np.testing.assert_allclose(geo_mean(probs, weights=w), naive_geo_mean(probs, w), rtol=1e-12)


def test_geo_mean_with_zeros_is_finite_and_positive(probs):
    out = geo_mean(probs)
    assert np.all(np.isfinite(out)) and np.all(out > 0)
    assert out[1, 3] == pytest.approx(EPS)            # every model 0 -> eps, not 0 or NaN


def test_mean_rank_power_match_naive_twins(probs):
    np.testing.assert_allclose(arithmetic_mean(probs), naive_mean(probs), rtol=1e-12)
    w = [1, 3, 0, 2]
    np.testing.assert_allclose(arithmetic_mean(probs, weights=w), naive_mean(probs, w), rtol=1e-12)
    np.testing.assert_allclose(rank_mean(probs), naive_rank(probs), rtol=1e-12)
    np.testing.assert_allclose(power_mean(probs, power=3.0), naive_power(probs, 3.0), rtol=1e-12)


def test_rank_blend_is_in_unit_interval_and_ranks_within_rows(probs):
    out = rank_mean(probs)
    assert out.min() >= 0 and out.max() <= 1
    ranks = row_ranks(np.array([[0.1, 0.9, 0.5, 0.5]]))
    np.testing.assert_array_equal(ranks, [[0, 3, 1.5, 1.5]])


def test_blends_never_modify_their_input(probs):
    before = probs.copy()
    for method in ("geo-mean", "mean", "rank", "power"):
        blend(probs, method, weights=[1, 2, 3, 4])
    np.testing.assert_array_equal(probs, before)


def test_blend_along_the_fold_axis():
    """Test predictions: (n_folds, n_test, n_classes) combined over axis 0."""
    rng = np.random.default_rng(0)
    test = rng.random((3, 6, 4))
    expected = np.exp(np.log(np.clip(test, EPS, 1)).mean(axis=0))
    np.testing.assert_allclose(geo_mean(test, axis=0), expected, rtol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="median"), "unknown blend 'median'"),
    (dict(method="power", power=0.0), "`power` must be a positive"),
    (dict(method="geo-mean", eps=0.0), "`eps` must be between 0 and 1"),
    (dict(method="mean", weights=[1, -1, 1, 1]), "non-negative"),
    (dict(method="mean", weights=[1, 1]), "expected 4 weights"),
    (dict(method="mean", weights=[0, 0, 0, 0]), "not all 0"),
])
def test_bad_options_raise_option_error(probs, kwargs, message):
    with pytest.raises(OptionError, match=message):
        blend(probs, **kwargs)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.floats(1e-6, 1.0))
def test_identical_models_blend_to_the_model(n_models, n_classes, value):
    p = np.full((2, n_models, n_classes), value)
    for method in ("geo-mean", "mean", "power"):
        np.testing.assert_allclose(blend(p, method), np.full((2, n_classes), value), rtol=1e-9)
