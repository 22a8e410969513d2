"""scikit-learn fold models: every estimator, single- vs multi-label, absent classes, naive twins."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from first_level.sklearn_models import ESTIMATORS, SklearnFoldModel, build_estimator, estimator_spec, model_factory
from stacker.errors import OptionError
from stacker.metrics import lwlrap

FAST = {"rf": {"n_estimators": 30}, "et": {"n_estimators": 30}, "hgb": {"max_iter": 15},
        "mlp": {"hidden_layer_sizes": [16], "max_iter": 200}, "knn": {"n_neighbors": 5},
        "logreg": {}}


def multilabel_data(n_rows=120, n_classes=4, n_features=6, seed=0):
    """Features that carry the labels (plus noise); 1-2 labels per row, some rows with none."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n_rows, n_classes)) < 0.35).astype(np.uint8)
    mixing = rng.normal(size=(n_classes, n_features))
    X = (y @ mixing + 0.5 * rng.normal(size=(n_rows, n_features))).astype(np.float32)
    return X, y


def single_label_data(n_rows=120, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    target = np.arange(n_rows) % n_classes
    centres = rng.normal(scale=3.0, size=(n_classes, 5))
    X = (centres[target] + rng.normal(size=(n_rows, 5))).astype(np.float32)
    y = np.eye(n_classes, dtype=np.uint8)[target]
    return X, y


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_multilabel(name):
    X, y = multilabel_data()
    model = SklearnFoldModel(name, FAST[name], seed=0, threads=1).fit(X[:80], y[:80])
    probs = model.predict_proba(X[80:])
    assert probs.shape == (40, 4) and probs.min() >= 0 and probs.max() <= 1
    assert not model.single_label_
    assert lwlrap(y[80:], probs) > 0.75      # chance is about 0.5 here


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_single_label_with_an_absent_class(name):
    X, y = single_label_data()
    train = y[:, 3] == 0                       # class 3 never seen in training
    model = SklearnFoldModel(name, FAST[name], seed=0, threads=1).fit(X[train], y[train])
    probs = model.predict_proba(X)
    assert model.single_label_ and probs.shape == (len(X), 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)   # one multiclass softmax
    assert np.all(probs[:, 3] == 0)
    seen = ~train
    assert np.mean(probs[~seen].argmax(axis=1) == y[~seen].argmax(axis=1)) > 0.9


def test_multilabel_absent_and_constant_classes_keep_their_columns():
    X, y = multilabel_data()
    y[:, 1] = 0          # absent from training: probability 0
    y[:, 2] = 1          # present in every training row: probability 1
    for name in ("logreg", "rf"):
        probs = SklearnFoldModel(name, FAST[name], threads=1).fit(X, y).predict_proba(X)
        assert np.all(probs[:, 1] == 0) and np.all(probs[:, 2] == 1)
    y[:, 3] = 0          # only class 0 varies: a single binary model
    probs = SklearnFoldModel("logreg").fit(X, y).predict_proba(X)
    assert probs.shape == (len(X), 4) and 0 < probs[:, 0].mean() < 1


def test_ovr_logreg_matches_a_naive_per_class_loop():
    X, y = multilabel_data(seed=3)
    probs = SklearnFoldModel("logreg", {"C": 0.3}, seed=0).fit(X[:90], y[:90]).predict_proba(X[90:])
    for c in range(y.shape[1]):
        naive = Pipeline([("s", StandardScaler()),
                          ("m", LogisticRegression(C=0.3, max_iter=2000, random_state=0))])
        expected = naive.fit(X[:90], y[:90, c]).predict_proba(X[90:])[:, 1]
        np.testing.assert_allclose(probs[:, c], expected, atol=1e-6)


def test_single_label_logreg_matches_a_plain_multiclass_fit():
    X, y = single_label_data(seed=2)
    probs = SklearnFoldModel("logreg", seed=0).fit(X[:80], y[:80]).predict_proba(X[80:])
    naive = Pipeline([("s", StandardScaler()), ("m", LogisticRegression(max_iter=2000))])
    expected = naive.fit(X[:80], y[:80].argmax(axis=1)).predict_proba(X[80:])
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_wrapping_follows_the_estimator():
    assert isinstance(build_estimator("logreg", {}, 0, task="multilabel")[-1], OneVsRestClassifier)
    assert isinstance(build_estimator("hgb", {}, 0, task="multilabel"), OneVsRestClassifier)
    assert not isinstance(build_estimator("rf", {}, 0, task="multilabel"), OneVsRestClassifier)
    assert isinstance(build_estimator("knn", {}, 0, task="multilabel"), Pipeline)
    assert build_estimator("rf", {"n_estimators": 7}, 5, task="multiclass").get_params()[
        "random_state"] == 5


def test_seeded_models_are_reproducible():
    X, y = multilabel_data()
    a, b, c = (SklearnFoldModel("et", FAST["et"], seed=s).fit(X[:80], y[:80]).predict_proba(X[80:])
               for s in (1, 1, 2))   # held-out rows: fully grown trees reproduce training labels
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_module_class_estimators():
    X, y = multilabel_data()
    probs = SklearnFoldModel("sklearn.naive_bayes:GaussianNB").fit(X, y).predict_proba(X)
    assert probs.shape == y.shape and lwlrap(y, probs) > 0.75
    assert estimator_spec("sklearn.tree:DecisionTreeClassifier").make(4).random_state == 4


@pytest.mark.parametrize("name, params, match", [
    ("svm", {}, "unknown estimator 'svm'; choose one of logreg"),
    ("no_such_module:X", {}, "cannot import module 'no_such_module'"),
    ("sklearn.svm:NoSuch", {}, "has no 'NoSuch'"),
    ("numpy:mean", {}, "not a scikit-learn estimator"),
    ("rf", {"n_trees": 3}, "'n_trees' is not a parameter of rf"),
    ("logreg", {"C": "big"}, "`params` for logreg"),
])
def test_bad_estimators_and_params(name, params, match):
    with pytest.raises(OptionError, match=match):
        model_factory(name, params, 0)
