"""A per-class logit bias on a searched blend, fitted inside the nesting (post-processing).

For ranking metrics (lwlrap, LRAP) only the order of the classes within a row counts, and a
blend of models calibrated class by class in different ways can rank a rare class too low in
every row. The bias ``b`` (one per class) moves each class's logit: ``sigmoid(logit(p) + b)``.
It is fitted on the blend's out-of-fold predictions by a listwise loss (for each labelled row the
softmax over its classes against its positives, spread evenly), with an L2 penalty whose strength
is chosen by cross-validation over the folds among :data:`STRENGTHS` (or no bias, when none beats
the blend as it is).

Honesty. The blend's nested predictions of fold ``k`` come from a selection made without fold
``k``. Their bias must be too: it is fitted on nested predictions of the *other* folds made by a
search that never saw fold ``k`` (the same search, run on the rows of the other folds: its own
nested predictions), and its strength is chosen there. So fold ``k``'s labels shape neither the
selection nor the bias of fold ``k``'s predictions (a double nesting: one extra search per fold).
The bias of the test predictions is fitted on the full search's nested predictions of every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from stacker.blend import EPS, logit
from stacker.metrics import Metric, fold_scores, get_metric

STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)   # L2 penalties tried (per labelled row of the mean loss)


def fit_class_bias(probs: np.ndarray, y: np.ndarray, strength: float, *,
                   eps: float = EPS) -> np.ndarray:
    """The bias (n_classes,) minimising the mean listwise loss of ``logit(probs) + b`` over the
    rows of ``y`` that have a positive, plus ``strength * |b|^2``. probs, y: (n_rows, n_classes)."""
    from scipy.optimize import minimize

    z = logit(probs, eps=eps)
    y = np.asarray(y) > 0
    labelled = y.any(axis=1)
    z, target = z[labelled], y[labelled].astype(np.float64)
    if not len(z):
        return np.zeros(np.shape(probs)[1])
    target /= target.sum(axis=1, keepdims=True)
    n = len(z)

    def loss(b):
        s = z + b
        s -= s.max(axis=1, keepdims=True)
        log_p = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        value = -(target * log_p).sum() / n + strength * (b @ b)
        grad = (np.exp(log_p) - target).sum(axis=0) / n + 2 * strength * b
        return value, grad

    result = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B",
                      options={"maxiter": 500, "gtol": 1e-10})
    return result.x


def apply_class_bias(probs: np.ndarray, bias, *, eps: float = EPS) -> np.ndarray:
    """``sigmoid(logit(probs) + bias)``, (n_rows, n_classes) float64."""
    z = logit(probs, eps=eps) + np.asarray(bias, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def choose_strength(probs: np.ndarray, y: np.ndarray, fold: np.ndarray,
                    fold_numbers: Sequence[int], metric: str | Metric = "lwlrap", *,
                    strengths: Sequence[float] = STRENGTHS, eps: float = EPS) -> float | None:
    """The strength whose bias, fitted on the other folds and applied to each fold, scores best
    on the pooled rows; None when no strength beats the predictions without a bias."""
    metric = get_metric(metric)
    fold = np.asarray(fold)
    best, best_score = None, metric(y, probs)
    for strength in strengths:
        out = np.empty(np.shape(probs), dtype=np.float64)
        for k in fold_numbers:
            held = fold == k
            out[held] = apply_class_bias(probs[held], fit_class_bias(
                probs[~held], y[~held], strength, eps=eps), eps=eps)
        score = metric(y, out)
        if metric.is_better(score, best_score):
            best, best_score = strength, score
    return best


def fitted_bias(probs: np.ndarray, y: np.ndarray, fold: np.ndarray, fold_numbers: Sequence[int],
                metric: str | Metric = "lwlrap", *, eps: float = EPS) -> tuple[np.ndarray, float | None]:
    """(bias, strength): the strength chosen by :func:`choose_strength` and the bias fitted with
    it on every row (zeros and None when no bias helps)."""
    strength = choose_strength(probs, y, fold, fold_numbers, metric, eps=eps)
    if strength is None:
        return np.zeros(np.shape(probs)[1]), None
    return fit_class_bias(probs, y, strength, eps=eps), strength


@dataclass(frozen=True)
class ClassBias:
    """A searched blend's bias. bias: (n_classes,) for the test predictions (fitted on the full
    search's nested predictions); strength: its penalty (None: no bias); nested_oof: the nested
    predictions with each fold's own bias (fitted without that fold); fold_strengths: those
    biases' penalties, in fold order; nested_fold_cv: the scores of nested_oof per fold."""

    bias: np.ndarray
    strength: float | None
    nested_oof: np.ndarray
    fold_strengths: tuple
    nested_cv: float
    nested_fold_cv: tuple


def nested_class_bias(nested_oof: np.ndarray, y: np.ndarray, fold: np.ndarray,
                      fold_numbers: Sequence[int], search_without: Callable[[int], np.ndarray],
                      metric: str | Metric = "lwlrap", *, eps: float = EPS) -> ClassBias:
    """The bias of a searched blend, inside the nesting (module docstring).

    nested_oof: the search's nested predictions (n_rows, n_classes); search_without(k): the nested
    predictions of the same search run on the rows of the folds other than ``k`` (those rows, in
    their order: ``fold != k``).
    """
    metric = get_metric(metric)
    fold = np.asarray(fold)
    out = np.array(nested_oof, dtype=np.float64)
    strengths = []
    for k in fold_numbers:
        held = fold == k
        inner = search_without(k)
        others = [f for f in fold_numbers if f != k]
        bias, strength = fitted_bias(inner, y[~held], fold[~held], others, metric, eps=eps)
        strengths.append(strength)
        if strength is not None:
            out[held] = apply_class_bias(nested_oof[held], bias, eps=eps)
    bias, strength = fitted_bias(nested_oof, y, fold, fold_numbers, metric, eps=eps)
    per_fold = fold_scores(y, out, fold, fold_numbers, metric)
    return ClassBias(bias=bias, strength=strength, nested_oof=out, fold_strengths=tuple(strengths),
                     nested_cv=float(metric(y, out)), nested_fold_cv=tuple(per_fold))


def searched_class_bias(oof: np.ndarray, y: np.ndarray, fold: np.ndarray, *,
                        names: Sequence[str], fold_numbers: Sequence[int], config,
                        nested_oof: np.ndarray) -> ClassBias:
    """:func:`nested_class_bias` of the search ``config`` (a :class:`~stacker.search.config.
    SearchConfig`) whose nested predictions on ``oof`` (n_rows, n_models, n_classes) are
    ``nested_oof``: the search is run again without each fold, on the other folds' rows."""
    from stacker.search.engine import search_arrays

    fold = np.asarray(fold)

    def without(k: int) -> np.ndarray:
        rows = fold != k
        inner = search_arrays(oof[rows], y[rows], fold[rows], names=names, config=config,
                              fold_numbers=[f for f in fold_numbers if f != k])
        return inner.nested_oof

    return nested_class_bias(nested_oof, y, fold, fold_numbers, without, config.metric,
                             eps=config.eps)
