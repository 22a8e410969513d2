"""``linear``: a non-negative linear stacker on the models' logits, per class (H2O's GLM
metalearner with non_negative=True).

``sigmoid(b_c + sum_m W[m, c] logit(p_m[:, c]))``, fitted by L-BFGS-B on the logistic loss with a
small L2 penalty (``LINEAR_L2``). It ignores ``--blend`` and ``--max-size`` (every model of the
pool gets a coefficient, 0 drops it).
"""

from __future__ import annotations

import math

import numpy as np

from stacker.blend import logit
from stacker.search.methods.weighted import Fit, WeightedProblem, run_weighted
from stacker.search.problem import Problem
from stacker.search.result import Selection

LINEAR_L2 = 1e-3             # L2 penalty on the coefficients (per row of the mean loss)
LINEAR_TRIM = 1e-6           # coefficients under this are 0


def select(problem: Problem) -> Selection:
    """The linear stacker fitted for every target."""

    def fit(weighted: WeightedProblem, tick) -> tuple[dict, int]:
        fits = {}
        for t in problem.targets:
            fits[t] = _linear(weighted, t)
            tick()
        return fits, 0

    return run_weighted(problem, "linear", len(problem.targets), fit,
                        {"linear_l2": LINEAR_L2, "linear_trim": LINEAR_TRIM})


def _fit_logistic(X: np.ndarray, positive: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Non-negative logistic regression with intercept: X (n_rows, k), positive (n_rows,) bool ->
    (coef (k,) >= 0, intercept)."""
    from scipy.optimize import minimize

    n, k = X.shape
    target = positive.astype(np.float64)

    def loss(params):
        coef, b = params[:k], params[k]
        z = X @ coef + b
        # log(1 + exp(z)) - y z, stable
        value = np.mean(np.logaddexp(0.0, z) - target * z) + l2 * coef @ coef
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        residual = (p - target) / n
        grad = np.concatenate([X.T @ residual + 2 * l2 * coef, [residual.sum()]])
        return value, grad

    rate = min(max(target.mean(), 1e-6), 1 - 1e-6)
    x0 = np.concatenate([np.full(k, 1.0 / k), [math.log(rate / (1 - rate))]])
    bounds = [(0.0, None)] * k + [(None, None)]
    result = minimize(loss, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 500, "gtol": 1e-9})
    coef = np.where(result.x[:k] < LINEAR_TRIM, 0.0, result.x[:k])
    return coef, float(result.x[k])


def _linear(problem: WeightedProblem, target: int) -> Fit:
    """The linear stacker fitted on the target's rows (every row but the held-out fold's, rows
    without a positive label included: they are negatives of every class), every class."""
    rows = (np.arange(len(problem.all_y)) if target == 0
            else np.flatnonzero(problem.all_fold_index != target - 1))
    y = problem.all_y[rows] > 0
    n_models, n_classes = problem.oof.shape[1], problem.oof.shape[2]
    coef = np.zeros((n_models, n_classes))
    intercept = np.zeros(n_classes)
    for c in range(n_classes):
        positive = y[:, c]
        if positive.all() or not positive.any():
            rate = min(max(positive.mean(), problem.eps), 1 - problem.eps)
            intercept[c] = math.log(rate / (1 - rate))
            continue
        X = logit(problem.oof[rows, :, c], eps=problem.eps)
        coef[:, c], intercept[c] = _fit_logistic(X, positive, LINEAR_L2)
    keep = np.flatnonzero(coef.sum(axis=1) > 0)
    if len(keep) == 0:
        keep = np.arange(n_models)
    return Fit(members=tuple(int(m) for m in keep), weights=coef[keep], intercept=intercept)

