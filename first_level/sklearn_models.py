"""scikit-learn estimators as fold models: by name (logreg, rf, et, hgb, knn, mlp) or `module:Class`.

Targets. Single-label data (every row exactly one class) is trained as one multiclass problem;
multi-label data as one binary problem per class: natively for the estimators that accept a label
matrix (rf, et, knn, mlp), through one-vs-rest otherwise (logreg, hgb, and any `module:Class`).
A class that a training fold lacks still gets its column: probability 0 (or 1 for a class every
training row has), since the estimator never saw it vary.

Scale-sensitive estimators (logreg, knn, mlp) are wrapped in a Pipeline with a StandardScaler.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from stacker.errors import OptionError


def _sklearn(path: str):
    """The scikit-learn class at ``package.module.Class``, imported on first use, so that importing
    this module (and `stack --help`) does not load scikit-learn."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class EstimatorSpec:
    """How to build one named estimator: a factory of the seeded default, whether it takes a
    label matrix itself, and whether it needs standardised features."""

    make: Callable[[int], object]
    native_multilabel: bool
    scale: bool


ESTIMATORS: dict[str, EstimatorSpec] = {
    "logreg": EstimatorSpec(lambda seed: _sklearn("sklearn.linear_model.LogisticRegression")(
        C=1.0, max_iter=2000,
                                                            random_state=seed), False, True),
    "rf": EstimatorSpec(lambda seed: _sklearn("sklearn.ensemble.RandomForestClassifier")(
        n_estimators=300, min_samples_leaf=1, max_features="sqrt", n_jobs=1,
        random_state=seed), True, False),
    "et": EstimatorSpec(lambda seed: _sklearn("sklearn.ensemble.ExtraTreesClassifier")(
        n_estimators=300, min_samples_leaf=1, max_features="sqrt", n_jobs=1,
        random_state=seed), True, False),
    "hgb": EstimatorSpec(lambda seed: _sklearn("sklearn.ensemble.HistGradientBoostingClassifier")(
        max_iter=100, learning_rate=0.1, early_stopping=False, random_state=seed), False, False),
    "knn": EstimatorSpec(lambda seed: _sklearn("sklearn.neighbors.KNeighborsClassifier")(
        n_neighbors=10, weights="distance"), True, True),
    "mlp": EstimatorSpec(lambda seed: _sklearn("sklearn.neural_network.MLPClassifier")(
        hidden_layer_sizes=(256,), alpha=1e-3, max_iter=300, early_stopping=False,
        random_state=seed), True, True),
}


def estimator_spec(name: str) -> EstimatorSpec:
    """The spec of ``name`` (a key of ESTIMATORS or ``module:Class``); OptionError otherwise."""
    if name in ESTIMATORS:
        return ESTIMATORS[name]
    if ":" not in name:
        raise OptionError(f"unknown estimator '{name}'; choose one of {', '.join(ESTIMATORS)} "
                          "or give module:Class (e.g. sklearn.svm:SVC)")
    module_name, _, class_name = name.partition(":")
    if not module_name.strip() or not class_name.strip():
        raise OptionError(f"`estimator` '{name}': give both parts of module:Class "
                          "(e.g. sklearn.svm:SVC)")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, ValueError, TypeError) as error:
        raise OptionError(f"`estimator` {name}: cannot import module '{module_name}' "
                          f"({error})") from None
    except AttributeError:
        raise OptionError(f"`estimator` {name}: module '{module_name}' has no '{class_name}'") \
            from None
    if not (inspect.isclass(cls) and hasattr(cls, "fit") and hasattr(cls, "get_params")):
        raise OptionError(f"`estimator` {name}: '{class_name}' is not a scikit-learn estimator "
                          "class (it needs fit and get_params)")
    if not hasattr(cls, "predict_proba"):
        raise OptionError(f"`estimator` {name}: '{class_name}' has no predict_proba, so it cannot "
                          "write probabilities; use a classifier with predict_proba (for SVC: "
                          "params probability=true)")

    def make(seed: int):
        accepts_seed = "random_state" in inspect.signature(cls).parameters
        return cls(random_state=seed) if accepts_seed else cls()

    return EstimatorSpec(make, False, False)


def build_estimator(name: str, params: dict | None, seed: int, *, task: str):
    """An unfitted estimator for ``task`` ('binary', 'multiclass' or 'multilabel').

    params are set on the named estimator itself (inside any Pipeline or one-vs-rest wrapper);
    an unknown name or a value it rejects raises OptionError before any training.
    """
    spec = estimator_spec(name)
    base = spec.make(seed)
    if params:
        valid = base.get_params(deep=False)
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise OptionError(f"`params`: '{unknown[0]}' is not a parameter of {name} "
                              f"({type(base).__name__}); valid: {', '.join(sorted(valid))}")
        base.set_params(**params)
    if hasattr(base, "_validate_params"):      # scikit-learn's own type/range checks, pre-fit
        try:
            base._validate_params()
        except (ValueError, TypeError) as error:
            raise OptionError(f"`params` for {name}: {str(error).splitlines()[0]}") from None
    if not hasattr(base, "predict_proba"):    # e.g. SVC without probability=True
        raise OptionError(f"`estimator` {name}: {type(base).__name__} with these params has no "
                          "predict_proba; set the parameter that enables it (SVC: "
                          "probability=true) or use another estimator")
    model = base
    if task == "multilabel" and not spec.native_multilabel:
        model = _sklearn("sklearn.multiclass.OneVsRestClassifier")(base)
    if spec.scale:
        scaler = _sklearn("sklearn.preprocessing.StandardScaler")()
        model = _sklearn("sklearn.pipeline.Pipeline")([("scale", scaler), ("model", model)])
    return model


class SklearnFoldModel:
    """A FoldModel around a scikit-learn estimator. X: (n_rows, n_features) float array;
    y: (n_rows, n_classes) 0/1. ``single_label`` None means: decide from the training labels."""

    def __init__(self, estimator: str, params: dict | None = None, seed: int = 0, *,
                 single_label: bool | None = None, threads: int | None = None):
        self.estimator = estimator
        self.params = dict(params or {})
        self.seed = seed
        self.single_label = single_label
        self.threads = threads

    def _threads(self):
        """Cap BLAS/OpenMP threads: on a shared machine oversubscription makes hgb/mlp 5-30x slower."""
        return threadpool_limits(self.threads) if self.threads else nullcontext()

    def fit(self, X_train, y_train, X_val=None, y_val=None) -> "SklearnFoldModel":
        y = np.asarray(y_train) > 0
        self.n_classes_ = y.shape[1]
        single = self.single_label if self.single_label is not None else \
            bool(np.all(y.sum(axis=1) == 1))
        self.single_label_ = single
        X = np.asarray(X_train, dtype=np.float32)
        with warnings.catch_warnings(), self._threads():
            # a fold that stops short of convergence still predicts; the CV score shows it
            warnings.simplefilter("ignore", _sklearn("sklearn.exceptions.ConvergenceWarning"))
            if single:
                self._fit_single(X, y.argmax(axis=1))
            else:
                self._fit_multi(X, y)
        return self

    def _fit_single(self, X, target):
        self.present_ = np.unique(target)
        self.model_ = None
        if len(self.present_) > 1:
            self.model_ = build_estimator(self.estimator, self.params, self.seed,
                                          task="multiclass").fit(X, target)

    def _fit_multi(self, X, y):
        totals = y.sum(axis=0)
        self.active_ = np.flatnonzero((totals > 0) & (totals < len(y)))
        self.constant_ = (totals == len(y)).astype(np.float32)   # 1 for a class every row has
        self.model_ = None
        if len(self.active_) == 1:
            self.model_ = build_estimator(self.estimator, self.params, self.seed,
                                          task="binary").fit(X, y[:, self.active_[0]])
        elif len(self.active_) > 1:
            self.model_ = build_estimator(self.estimator, self.params, self.seed,
                                          task="multilabel").fit(X, y[:, self.active_])

    def predict_proba(self, X) -> np.ndarray:
        """(n_rows, n_classes) probabilities in the training label-matrix column order."""
        with self._threads():
            return self._predict(np.asarray(X, dtype=np.float32))

    def _predict(self, X: np.ndarray) -> np.ndarray:
        if self.single_label_:
            probs = np.zeros((len(X), self.n_classes_), dtype=np.float32)
            if self.model_ is None:
                probs[:, self.present_] = 1.0
            else:
                out = self.model_.predict_proba(X)
                probs[:, np.asarray(_classes_of(self.model_), dtype=int)] = out
            return probs
        probs = np.tile(self.constant_, (len(X), 1))
        if self.model_ is None:
            return probs
        if len(self.active_) == 1:
            probs[:, self.active_[0]] = _positive_column(self.model_.predict_proba(X),
                                                         _classes_of(self.model_))
            return probs
        out = self.model_.predict_proba(X)
        if isinstance(out, list):   # rf/et/knn: one (n_rows, 2) array per label
            out = np.stack([_positive_column(o, c) for o, c in zip(out, _classes_of(self.model_))],
                           axis=1)
        probs[:, self.active_] = out
        return probs


def _classes_of(model):
    pipeline = _sklearn("sklearn.pipeline.Pipeline")
    return model[-1].classes_ if isinstance(model, pipeline) else model.classes_


def _positive_column(out: np.ndarray, classes) -> np.ndarray:
    """P(label = 1) from a binary predict_proba output with ``classes`` its column labels."""
    classes = list(np.asarray(classes).ravel())
    return out[:, classes.index(1)] if 1 in classes else np.zeros(len(out))


def model_factory(estimator: str, params: dict | None, seed: int, *,
                  single_label: bool | None = None,
                  threads: int | None = None) -> Callable[[int], SklearnFoldModel]:
    """``make_model(fold)`` for the runner; checks the estimator and params once, up front."""
    build_estimator(estimator, params, seed, task="multiclass")
    return lambda fold: SklearnFoldModel(estimator, params, seed, single_label=single_label,
                                         threads=threads)


__all__ = ["ESTIMATORS", "SklearnFoldModel", "build_estimator", "estimator_spec",
           "model_factory"]
