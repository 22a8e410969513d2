"""Weighted blends beyond GES (ges-bagged, cmaes, per-class, linear) and GES's sorted
initialisation: planted optima, naive references, seeds, and honest nested CV."""

from __future__ import annotations

import numpy as np
import pytest
from test_search import noise_pool, planted_pool, random_pool

from stacker.blend import blend_arrays, logit_linear
from stacker.errors import OptionError
from stacker.metrics import get_metric
from stacker.search.config import SearchConfig
from stacker.search.engine import search_arrays
from stacker.search.methods import SELECTORS, WEIGHTED_METHODS, cmaes, linear
from stacker.search.methods.ges import bag_pools
from stacker.search.problem import prepare

EPS = 1e-7
lwlrap = get_metric("lwlrap")
SETTINGS = dict(metric=lwlrap, blend="geo-mean", power=2.0, eps=EPS, seed=0, max_size=99,
                ges_iterations=20, ges_init=0, ges_bags=4, cmaes_evaluations=200)


def fit_targets(oof, y, fold, method):
    """{target: Fit} of ``method``'s selector alone (no result around it), nested."""
    config = SearchConfig.from_options(method=method, nested=True, **SETTINGS)
    problem = prepare(oof, y, fold, names=[f"m{m}" for m in range(oof.shape[1])], config=config)
    return SELECTORS[method].select(problem).choices


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def specialist_pool(seed=0, n_rows=400, n_classes=6):
    """Model 'a' knows classes 0-2 and guesses on 3-5; model 'b' the reverse; 'c' is noise."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_rows, n_classes), dtype=np.uint8)
    y[np.arange(n_rows), rng.integers(n_classes, size=n_rows)] = 1
    signal = 2.0 * y - 1
    half = np.arange(n_classes) < n_classes // 2
    a = sigmoid(np.where(half, 2.0, 0.0) * signal + rng.normal(0, 1.0, y.shape) - 1)
    b = sigmoid(np.where(half, 0.0, 2.0) * signal + rng.normal(0, 1.0, y.shape) - 1)
    c = rng.random(y.shape)
    oof = np.stack([a, b, c], axis=1)
    return oof, y, np.arange(n_rows) % 4, ["a", "b", "noise"]


# ---------------------------------------------------------------- GES, completed


def test_sorted_initialisation_starts_from_the_best_single_models():
    oof, y, fold, names = random_pool(seed=3, n_models=6)
    singles = sorted(range(6), key=lambda m: -lwlrap(y, oof[:, m]))       # naive ranking
    result = search_arrays(oof, y, fold, names=names, method="ges", ges_init=3,
                           ges_iterations=4, nested=False, n_jobs=1)
    # the best bag is the initial bag or one grown from it: it holds the three best singles
    assert {names[m] for m in singles[:3]} <= set(result.members)
    assert result.params["ges_init"] == 3


def test_one_bag_equals_plain_ges_on_that_half_of_the_models():
    oof, y, fold, names, _ = planted_pool(seed=3)
    bagged = search_arrays(oof, y, fold, names=names, method="ges-bagged", ges_bags=1,
                           ges_iterations=15, nested=False, n_jobs=1, seed=5)
    half = bag_pools(len(names), 1, 5)[0]
    plain = search_arrays(oof[:, half], y, fold, names=[names[m] for m in half], method="ges",
                          ges_iterations=15, nested=False, n_jobs=1)
    assert bagged.members == plain.members
    assert bagged.weights == pytest.approx(plain.weights, abs=1e-12)
    assert bagged.cv == pytest.approx(plain.cv, abs=1e-12)


def test_bagged_weights_average_the_bags_and_favour_the_planted_models():
    oof, y, fold, names, planted = planted_pool()
    result = search_arrays(oof, y, fold, names=names, method="ges-bagged", ges_bags=12,
                           nested=False, n_jobs=1)
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert sum(result.weights[m] for m in planted) > 0.6


# ---------------------------------------------------------------- CMA-ES


def test_cmaes_finds_a_planted_continuous_optimum_that_coarse_ges_misses():
    """Mean blend of an all-0 and an all-1 model scored by log loss: the best blend predicts the
    base rate, 0.3, so the best weight of the all-1 model is exactly 0.3."""
    n_rows, n_classes = 400, 3
    y = np.zeros((n_rows, n_classes), dtype=np.uint8)
    y[np.arange(n_rows) % 10 < 3] = 1                   # 30 % positives, in every fold too
    oof = np.stack([np.zeros(y.shape), np.ones(y.shape)], axis=1)
    fold = (np.arange(n_rows) // 10) % 4
    options = dict(names=["zeros", "ones"], metric="log_loss", blend="mean", nested=False,
                   n_jobs=1, ges_iterations=6)
    ges = search_arrays(oof, y, fold, method="ges", **options)
    cmaes = search_arrays(oof, y, fold, method="cmaes", **options)
    assert abs(ges.weights["ones"] - 0.3) > 0.02            # sixths: 2/6 is the nearest
    assert cmaes.weights["ones"] == pytest.approx(0.3, abs=0.005)
    assert cmaes.cv < ges.cv                                 # log loss: lower is better


def test_cmaes_scores_at_least_as_well_as_its_ges_start_and_is_seeded():
    oof, y, fold, names, planted = planted_pool(seed=4)
    ges = search_arrays(oof, y, fold, names=names, method="ges", ges_iterations=20,
                        nested=False, n_jobs=1)
    one = search_arrays(oof, y, fold, names=names, method="cmaes", ges_iterations=20,
                        cmaes_evaluations=300, nested=False, n_jobs=1, seed=7)
    again = search_arrays(oof, y, fold, names=names, method="cmaes", ges_iterations=20,
                          cmaes_evaluations=300, nested=False, n_jobs=1, seed=7)
    assert one.cv >= ges.cv - 1e-12
    assert (one.members, one.weights, one.cv) == (again.members, again.weights, again.cv)
    assert all(w >= cmaes.TRIM for w in one.weights.values())     # tiny weights trimmed
    assert sum(one.weights[m] for m in planted) > 0.8


# ---------------------------------------------------------------- per-class


def test_per_class_weights_follow_the_specialists():
    oof, y, fold, names = specialist_pool()
    result = search_arrays(oof, y, fold, names=names, method="per-class", n_jobs=1)
    ges = search_arrays(oof, y, fold, names=names, method="ges", n_jobs=1)
    matrix = result.combiner["class_weights"]
    assert np.all(np.array(matrix["a"][:3]) > np.array(matrix["b"][:3]))
    assert np.all(np.array(matrix["b"][3:]) > np.array(matrix["a"][3:]))
    assert result.cv > ges.cv + 0.01
    assert result.nested_cv > ges.nested_cv
    # the reported CV is the per-class blend, recomputed from its matrix
    members = list(result.members)
    W = np.array([matrix[m] for m in members])
    idx = [names.index(m) for m in members]
    naive = np.exp(np.einsum("mc,rmc->rc", W / W.sum(axis=0), np.log(np.clip(oof[:, idx], EPS, 1))))
    assert result.cv == pytest.approx(lwlrap(y, naive), abs=1e-12)


def test_per_class_is_refused_with_too_few_positives_per_class():
    oof, y, fold, names = random_pool(n_rows=60, n_classes=8)
    with pytest.raises(OptionError, match="median class has .* use `method` ges or cmaes"):
        search_arrays(oof, y, fold, names=names, method="per-class", n_jobs=1)


# ---------------------------------------------------------------- linear stacker


def test_linear_stacker_equals_sklearn_logistic_regression_where_coefficients_are_positive():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    positive = rng.random(300) < sigmoid(X @ np.array([1.0, 0.5, 2.0]) - 0.5)
    coef, intercept = linear._fit_logistic(X, positive, linear.LINEAR_L2)
    # ours: mean loss + l2 |w|^2 == (sum loss + 0.5 |w|^2 / C) / n with C = 1 / (2 n l2)
    reference = LogisticRegression(C=1 / (2 * 300 * linear.LINEAR_L2), tol=1e-10,
                                   max_iter=10_000).fit(X, positive)
    np.testing.assert_allclose(coef, reference.coef_[0], atol=1e-4)
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-4)
    # a feature that would want a negative coefficient gets 0 instead
    flipped, _ = linear._fit_logistic(np.c_[X, -X[:, 2]], positive, linear.LINEAR_L2)
    assert flipped[3] == 0.0 and np.all(flipped[:3] >= 0)


def test_linear_result_is_the_logit_stacker_of_its_coefficients():
    oof, y, fold, names, planted = planted_pool(seed=5)
    result = search_arrays(oof, y, fold, names=names, method="linear", n_jobs=1)
    assert result.blend == "linear"
    members = list(result.members)
    coef = np.array([result.combiner["coef"][m] for m in members])
    b = np.array(result.combiner["intercept"])
    p = np.clip(oof[:, [names.index(m) for m in members]].astype(np.float64), EPS, 1 - EPS)
    naive = sigmoid(b + np.einsum("mc,rmc->rc", coef, np.log(p / (1 - p))))
    assert result.cv == pytest.approx(lwlrap(y, naive), abs=1e-12)
    assert (coef >= 0).all()
    assert sum(result.weights[m] for m in planted) > 0.7


# ---------------------------------------------------------------- honesty and seeds


@pytest.mark.parametrize("method", WEIGHTED_METHODS)
def test_a_folds_labels_never_reach_its_nested_predictions(method):
    """Permute the labels of fold 1's rows: the selection made without fold 1, and so its
    predictions for fold 1, stay exactly the same; the all-rows selection may change."""
    oof, y, fold, _names = specialist_pool(seed=2) if method == "per-class" else (
        planted_pool(seed=6)[:4])
    fold_numbers = sorted(set(fold.tolist()))
    permuted = y.copy()
    rows = np.flatnonzero(fold == 1)
    permuted[rows] = y[np.random.default_rng(0).permutation(rows)]
    assert not np.array_equal(permuted, y)
    fits = fit_targets(oof, y, fold, method)
    again = fit_targets(oof, permuted, fold, method)
    target = 1 + fold_numbers.index(1)
    options = dict(blend="geo-mean", power=2.0, eps=EPS)
    np.testing.assert_array_equal(fits[target].predict(oof[rows], **options),
                                  again[target].predict(oof[rows], **options))
    # the fits that saw fold 1's labels can tell (the test can fail)
    assert any(not np.array_equal(fits[t].predict(oof, **options),
                                  again[t].predict(oof, **options))
               for t in fits if t != target)


@pytest.mark.parametrize("method", WEIGHTED_METHODS)
def test_nested_cv_is_below_the_selected_cv_when_selection_fits_noise(method):
    oof, y, fold, names = noise_pool(n_models=8)
    if method == "per-class":        # noise_pool has too few positives per class for it
        oof, y, fold, names = specialist_pool(seed=1)
        oof[:, :2] = np.random.default_rng(3).random(oof[:, :2].shape)
    result = search_arrays(oof, y, fold, names=names, method=method, n_jobs=1,
                           cmaes_evaluations=200)
    assert result.cv - result.nested_cv > 0.005
    assert len(result.nested_folds) == len(set(fold.tolist()))


@pytest.mark.parametrize("method", WEIGHTED_METHODS)
def test_each_method_is_deterministic_for_a_seed(method):
    oof, y, fold, names = specialist_pool(seed=4)
    runs = [search_arrays(oof, y, fold, names=names, method=method, n_jobs=1, seed=3,
                          cmaes_evaluations=150, ges_bags=3) for _ in range(2)]
    assert runs[0].to_json().keys() == runs[1].to_json().keys()
    for key in ("members", "weights", "cv", "nested_cv", "combiner"):
        assert getattr(runs[0], key) == getattr(runs[1], key)
    assert [f.weights for f in runs[0].nested_folds] == [f.weights for f in runs[1].nested_folds]


# ---------------------------------------------------------------- the blends themselves


def test_per_class_blend_equals_one_blend_per_class():
    rng = np.random.default_rng(0)
    probs = rng.random((20, 3, 4))
    W = rng.random((3, 4))
    for method in ("geo-mean", "mean", "power"):
        whole = blend_arrays(probs, method, weights=W)
        for c in range(4):
            alone = blend_arrays(probs, method, weights=W[:, c])
            np.testing.assert_allclose(whole[:, c], alone[:, c], rtol=1e-12)
    with pytest.raises(OptionError, match="per-class weights"):
        blend_arrays(probs, weights=np.zeros((3, 4)))


def test_logit_linear_on_test_shaped_arrays():
    rng = np.random.default_rng(1)
    probs = rng.random((5, 2, 3))                     # (n_test, k, n_classes), models on axis 1
    coef, b = rng.random((2, 3)), rng.normal(size=3)
    expected = np.empty((5, 3))
    for r in range(5):
        for c in range(3):
            z = b[c] + sum(coef[m, c] * np.log(probs[r, m, c] / (1 - probs[r, m, c]))
                           for m in range(2))
            expected[r, c] = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(logit_linear(probs, coef, b, axis=1), expected, rtol=1e-12)
    with pytest.raises(OptionError, match="non-negative"):
        logit_linear(probs, -coef, b, axis=1)


def test_sorted_initialisation_is_nested_honestly():
    """GES with --ges-init ranks the single models on each selection's own rows: fold 1's labels
    do not change the bag chosen without fold 1, and on noise the nested CV is below the selected."""
    oof, y, fold, names = noise_pool(n_models=8)
    result = search_arrays(oof, y, fold, names=names, method="ges", ges_init=3, n_jobs=1)
    assert result.cv - result.nested_cv > 0.005
    permuted = y.copy()
    rows = np.flatnonzero(fold == 1)
    permuted[rows] = y[np.random.default_rng(1).permutation(rows)]
    again = search_arrays(oof, permuted, fold, names=names, method="ges", ges_init=3, n_jobs=1)
    assert again.nested_folds[1].members == result.nested_folds[1].members
    assert again.nested_folds[1].weights == result.nested_folds[1].weights
