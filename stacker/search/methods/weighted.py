"""Weighted blends fitted per target: the shared core of ``ges-bagged``, ``cmaes``,
``per-class`` and ``linear`` (:mod:`stacker.search.methods`).

Every method is run once per **target**: target 0 uses every OOF row; target ``1 + i`` uses every
row but fold ``i``'s, and its fit predicts fold ``i`` (pooled over the folds: the nested CV). A
fit never sees its held-out fold's labels: the scorer's target ``1 + i`` sums over the other folds
only, and the per-class statistics and the linear stacker are computed on the target's rows only.

The reported CV is the fit of target 0 scored on every row (optimistic for all of them; for
``linear`` it is an in-sample fit); the nested CV is the honest estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from stacker.blend import LINEAR, combine, transform
from stacker.search.methods.core import Context
from stacker.search.problem import Problem
from stacker.search.result import Selection
from stacker.search.scoring import make_scorer, quantize


@dataclass(frozen=True)
class Fit:
    """One selection: pool indices of the members and how they are combined.

    weights: (k,) summing to 1, or (k, n_classes) with columns summing to 1 (per-class), or the
    linear stacker's coefficients (k, n_classes) with ``intercept`` (n_classes,).
    """

    members: tuple[int, ...]
    weights: np.ndarray
    intercept: np.ndarray | None = None

    def predict(self, oof: np.ndarray, *, blend: str, power: float, eps: float) -> np.ndarray:
        """oof: (n_rows, n_models, n_classes) of the whole pool -> (n_rows, n_classes)."""
        method = LINEAR if self.intercept is not None else blend
        return combine(oof[:, list(self.members)], method, weights=self.weights,
                       intercept=self.intercept, power=power, eps=eps)

    def summary(self) -> np.ndarray:
        """One weight per member, summing to 1 (per-class and linear: the mean over classes)."""
        w = self.weights if self.weights.ndim == 1 else self.weights.mean(axis=1)
        total = w.sum()
        return w / total if total > 0 else np.full(len(w), 1.0 / len(w))


def fit_from_weights(w: np.ndarray, *, trim: float = 0.0) -> Fit:
    """A Fit from pool-wide weights (n_models,) or (n_models, n_classes): members are the models
    with a weight (after dropping shares under ``trim``)."""
    w = np.where(w < trim * (w.sum(axis=0) if w.ndim == 2 else w.sum()), 0.0, w)
    keep = np.flatnonzero(w.sum(axis=1) > 0 if w.ndim == 2 else w > 0)
    sub = w[keep]
    return Fit(members=tuple(int(m) for m in keep), weights=sub / sub.sum(axis=0))


class WeightedProblem:
    """The arrays every weighted method shares: the float transforms on the scorer's rows, the
    quantized ones (for GES), the labels and fold of each of those rows."""

    def __init__(self, problem: Problem):
        config = problem.config
        oof, y, fold, fold_numbers = problem.oof, problem.y, problem.fold, problem.fold_numbers
        blend, power, eps = config.blend, config.power, config.eps
        self.blend, self.power, self.eps = blend, power, eps
        self.targets = problem.targets
        self.scorer = make_scorer(y, fold, fold_numbers, config.metric, blend=blend, power=power)
        rows = self.scorer.rows
        max_terms = config.ges.iterations + config.ges.init
        self.q, scale = quantize(oof, blend, max_terms=max_terms, power=power, eps=eps, rows=rows)
        self.scorer.scale = scale
        self.ctx = Context(q=self.q, scorer=self.scorer)
        self.float_scorer = make_scorer(y, fold, fold_numbers, config.metric, blend=blend,
                                        power=power)
        # (n_models, n_scored_rows, n_classes) float64: the blend is finalize(sum_m w_m t_m)
        self.t = np.stack([transform(oof[rows, m], blend, power=power, eps=eps)
                           for m in range(oof.shape[1])])
        self.y = np.asarray(y)[rows]
        self.fold_index = np.searchsorted(list(fold_numbers), np.asarray(fold)[rows])
        self.oof = oof
        self.rows = rows
        self.n_scored = 0            # candidates scored (GES steps, CMA-ES candidates, ...)
        self._members_key, self._members_t = None, None
        self.all_y = np.asarray(y)
        self.all_fold_index = np.searchsorted(list(fold_numbers), np.asarray(fold))

    def train_rows(self, target: int) -> np.ndarray:
        """Mask over the scorer's rows that target ``target`` may use (0: all)."""
        return np.ones(len(self.rows), bool) if target == 0 else self.fold_index != target - 1

    def score(self, fit_members, weights: np.ndarray, target: int) -> float:
        """Higher-is-better score on the target's rows of members blended with weights (k,) or
        (k, n_classes) summing to 1 (per column)."""
        key = tuple(int(m) for m in fit_members)
        if key != self._members_key:          # CMA-ES scores many weights of one member set
            self._members_key, self._members_t = key, self.t[list(key)]
        t = self._members_t
        if weights.ndim == 1:
            S = np.tensordot(weights, t, axes=1)
        else:
            S = np.einsum("mc,mrc->rc", weights, t)
        self.n_scored += 1
        value = self.float_scorer.evaluate_one(S, 1, target)
        return -math.inf if math.isnan(value) else float(value)


class FitBlends:
    """How weighted fits predict rows of the pool and read in a result."""

    def __init__(self, problem: Problem):
        self.oof, self.names, self.config = problem.oof, problem.names, problem.config

    def predict(self, fit: Fit, rows=slice(None)) -> np.ndarray:
        config = self.config
        return fit.predict(self.oof[rows], blend=config.blend, power=config.power, eps=config.eps)

    def describe(self, fit: Fit) -> tuple[tuple, dict]:
        members = tuple(self.names[m] for m in fit.members)
        return members, {name: float(w) for name, w in zip(members, fit.summary())}

    def combiner(self, fit: Fit) -> dict:
        """The linear stacker's coefficients and intercepts, or the per-class weights."""
        members = self.describe(fit)[0]
        if fit.intercept is not None:
            return {"coef": {name: [float(v) for v in row]
                             for name, row in zip(members, fit.weights)},
                    "intercept": [float(b) for b in fit.intercept]}
        if fit.weights.ndim == 2:
            return {"class_weights": {name: [float(v) for v in row]
                                      for name, row in zip(members, fit.weights)}}
        return {}


def run_weighted(problem: Problem, method: str, steps: int, fit: Callable,
                 settings: dict) -> Selection:
    """``fit(weighted_problem, tick) -> ({target: Fit}, candidates scored outside the problem)``
    with progress over ``steps``; ``settings``: the method's fixed settings (recorded in the
    result's params)."""
    done = [0]

    def tick(k=1):
        done[0] += k
        problem.progress(min(done[0], steps), steps)

    tick(0)
    weighted = WeightedProblem(problem)
    fits, n_evaluated = fit(weighted, tick)
    return Selection(choices=fits, blends=FitBlends(problem),
                     n_evaluated=n_evaluated + weighted.n_scored, method=method,
                     params=settings, blend=LINEAR if method == "linear" else None)
