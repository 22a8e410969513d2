"""The per-class logit bias fitted inside the nesting (stacker.search.class_bias)."""

import json

import numpy as np
import pytest
from scipy.optimize import minimize

from stacker.blend import Blend, logit
from stacker.metrics import lwlrap
from stacker.search.class_bias import apply_class_bias, choose_strength, fit_class_bias, searched_class_bias
from stacker.search.config import SearchConfig
from stacker.search.engine import search_arrays


def _pool(seed=0, n=300, n_models=4, n_classes=6, n_folds=4):
    """Models that see the labels through noise, each under-scoring some classes by a factor."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_classes)) < 0.25).astype(np.uint8)
    y[np.arange(n), rng.integers(0, n_classes, n)] = 1
    shrink = np.ones((n_models, n_classes))
    shrink[:, :2] = 0.05                                 # classes 0 and 1 ranked too low everywhere
    oof = np.empty((n, n_models, n_classes))
    for m in range(n_models):
        z = 2.0 * y + rng.normal(0, 1.2, (n, n_classes)) - 1.0
        oof[:, m] = 1 / (1 + np.exp(-z)) * shrink[m]
    fold = np.arange(n) % n_folds
    return oof, y, fold, list(range(n_folds))


def _reference_bias(probs, y, strength):
    """The same loss written row by row, minimised without a gradient."""
    z = logit(probs)
    rows = [(z[i], y[i] / y[i].sum()) for i in range(len(y)) if y[i].sum() > 0]

    def loss(b):
        total = 0.0
        for zi, ti in rows:
            s = zi + b
            log_p = s - np.log(np.sum(np.exp(s)))
            total -= np.sum(ti * log_p)
        return total / len(rows) + strength * np.sum(b * b)

    return minimize(loss, np.zeros(z.shape[1]), method="Nelder-Mead",
                    options={"maxiter": 40000, "xatol": 1e-8, "fatol": 1e-12}).x


@pytest.mark.parametrize("strength", [1e-3, 0.1])
def test_fit_matches_a_row_by_row_reference(strength):
    oof, y, _, _ = _pool(n=60, n_classes=4)
    probs = oof.mean(axis=1)
    fast = fit_class_bias(probs, y, strength)
    slow = _reference_bias(probs, y, strength)
    # the loss is invariant to adding a constant to every class; the penalty pins it down
    np.testing.assert_allclose(fast, slow, atol=2e-3)


def test_bias_lifts_the_classes_ranked_too_low():
    oof, y, fold, folds = _pool()
    probs = oof.mean(axis=1)
    strength = choose_strength(probs, y, fold, folds)
    assert strength is not None
    bias = fit_class_bias(probs, y, strength)
    assert bias[:2].min() > bias[2:].max()
    assert lwlrap(y, apply_class_bias(probs, bias)) > lwlrap(y, probs) + 0.02


def test_no_bias_when_none_helps():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 5)) < 0.3).astype(np.uint8)
    probs = np.clip(0.5 + 0.4 * (y - 0.5), 0.01, 0.99)       # already ranks every row perfectly
    assert choose_strength(probs, y, np.arange(200) % 4, [0, 1, 2, 3]) is None


def test_zero_bias_leaves_the_ranking():
    oof, _, _, _ = _pool(n=40)
    probs = oof.mean(axis=1)
    out = apply_class_bias(probs, np.zeros(probs.shape[1]))
    assert np.array_equal(np.argsort(out, axis=1), np.argsort(probs, axis=1))


def _biased_nested(oof, y, fold, folds):
    config = SearchConfig.from_options(method="ges", blend="geo-mean", seed=0, n_jobs=1)
    names = [f"m{i}" for i in range(oof.shape[1])]
    result = search_arrays(oof, y, fold, names=names, config=config, fold_numbers=folds)
    return searched_class_bias(oof, y, fold, names=names, fold_numbers=folds, config=config,
                               nested_oof=result.nested_oof)


def test_a_folds_own_labels_do_not_move_its_predictions():
    oof, y, fold, folds = _pool(n=200)
    before = _biased_nested(oof, y, fold, folds)
    assert before.strength is not None and any(s is not None for s in before.fold_strengths)
    permuted = y.copy()
    rows = np.flatnonzero(fold == 2)
    permuted[rows] = y[np.random.default_rng(3).permutation(rows)]
    after = _biased_nested(oof, permuted, fold, folds)
    np.testing.assert_array_equal(before.nested_oof[fold == 2], after.nested_oof[fold == 2])
    # the others' labels did move (the test can fail): another fold's predictions changed
    assert not np.array_equal(before.nested_oof[fold != 2], after.nested_oof[fold != 2])


def test_nested_bias_raises_the_nested_cv_on_a_miscalibrated_pool():
    oof, y, fold, folds = _pool(n=240)
    config = SearchConfig.from_options(method="ges", blend="geo-mean", seed=0, n_jobs=1)
    names = [f"m{i}" for i in range(oof.shape[1])]
    result = search_arrays(oof, y, fold, names=names, config=config, fold_numbers=folds)
    biased = searched_class_bias(oof, y, fold, names=names, fold_numbers=folds, config=config,
                                 nested_oof=result.nested_oof)
    assert biased.nested_cv > lwlrap(y, result.nested_oof) + 0.01
    assert biased.nested_cv == pytest.approx(lwlrap(y, biased.nested_oof))


def test_blend_applies_and_keeps_its_class_bias():
    oof, y, _, _ = _pool(n=50)
    blend = Blend(("a", "b"), "geo-mean", weights=[0.3, 0.7], class_bias=[1.0, -1.0, 0, 0, 0, 0])
    plain = Blend(("a", "b"), "geo-mean", weights=[0.3, 0.7])
    np.testing.assert_allclose(blend.combine(oof[:, :2]),
                               apply_class_bias(plain.combine(oof[:, :2]), blend.class_bias))
    again = Blend.from_json(json.loads(json.dumps(blend.to_json())))
    assert again == blend
    record = {"members": ["a", "b"], "weights": {"a": 0.3, "b": 0.7}, "blend": "geo-mean",
              "class_bias": list(blend.class_bias)}
    assert Blend.from_record(record, [str(c) for c in range(6)]).class_bias == blend.class_bias


def test_blend_refuses_a_bias_of_the_wrong_size():
    oof, _, _, _ = _pool(n=10)
    blend = Blend(("a", "b"), class_bias=[0.0, 1.0])
    with pytest.raises(Exception, match="class bias has 2 values for 6 classes"):
        blend.combine(oof[:, :2])
