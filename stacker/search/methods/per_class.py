"""``per-class``: one weight vector per class.

The global GES weights ``g`` and, per class ``c``, weights ``w_c`` from a GES on class ``c``'s
column alone (maximising that column's ROC AUC) over the members of ``g``, shrunk towards ``g``:
``W[:, c] = (1 - a_c) g + a_c w_c`` with ``a_c = n_c / (n_c + SHRINK)`` (``n_c``: the class's
positives in the target's rows). Classes with fewer than ``MIN_CLASS_POSITIVES`` positives keep
``g``; the search refuses the method when the median class has fewer. The per-class matrix is kept
only when it scores at least as well as ``g`` on the target's rows (else ``g`` in every column).
"""

from __future__ import annotations

import math

import numpy as np

from stacker.errors import OptionError
from stacker.search.methods.ges import ges_weights
from stacker.search.methods.weighted import Fit, WeightedProblem, fit_from_weights, run_weighted
from stacker.search.problem import Problem
from stacker.search.result import Selection

SHRINK = 20.0                # positives at which a class's own weights count half
MIN_CLASS_POSITIVES = 10     # fewer positives -> the class keeps the global weights
CLASS_GES_ITERATIONS = 20    # steps of each class's own GES


def select(problem: Problem) -> Selection:
    """GES for every target, then per-class weights from each target's GES weights."""
    check_per_class(problem.y, problem.fold, problem.fold_numbers, problem.nested)
    settings = {"per_class_shrink": SHRINK, "per_class_min_positives": MIN_CLASS_POSITIVES,
                "class_ges_iterations": CLASS_GES_ITERATIONS}

    def fit(weighted: WeightedProblem, tick) -> tuple[dict, int]:
        started = ges_weights(weighted, problem)
        tick(len(problem.targets))
        fits = {}
        for t in problem.targets:
            fits[t] = _per_class(weighted, started[t], t)
            tick()
        return fits, 0

    return run_weighted(problem, "per-class", 2 * len(problem.targets), fit, settings)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of one column (ties count half), from average ranks."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(scores)
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _class_ges(t_column: np.ndarray, positive: np.ndarray, iterations: int) -> np.ndarray:
    """GES on one class column: t_column (n_models, n_rows) -> weights (n_models,) summing to 1
    that maximise the column's ROC AUC (ties: lower index first)."""
    n = len(t_column)
    counts = np.zeros(n)
    total = np.zeros(t_column.shape[1])
    best = (-math.inf, None)
    for _ in range(iterations):
        scores = [_auc(total + t_column[m], positive) for m in range(n)]
        choice = int(np.argmax(np.round(scores, 12)))
        counts[choice] += 1
        total = total + t_column[choice]
        if round(scores[choice], 12) > round(best[0], 12):
            best = (scores[choice], counts.copy())
    return best[1] / best[1].sum()


def class_positives(y: np.ndarray, fold: np.ndarray, fold_numbers, nested: bool) -> np.ndarray:
    """Positives per class in the fewest-positive training rows a selection uses: all rows, or
    (nested) all rows but one fold. Shape (n_classes,)."""
    y = np.asarray(y) > 0
    counts = y.sum(axis=0)
    if nested:
        per_fold = np.stack([y[np.asarray(fold) == k].sum(axis=0) for k in fold_numbers])
        counts = counts - per_fold.max(axis=0)
    return counts


def check_per_class(y, fold, fold_numbers, nested: bool) -> None:
    """OptionError when the median class has fewer than MIN_CLASS_POSITIVES positives in the
    training rows of a selection."""
    counts = class_positives(y, fold, fold_numbers, nested)
    median = float(np.median(counts))
    if median < MIN_CLASS_POSITIVES:
        raise OptionError(
            f"`method` per-class needs at least {MIN_CLASS_POSITIVES} positives per class in "
            f"each selection's training rows for most classes; the median class has "
            f"{median:g} ({len(counts)} classes, {len(y)} rows): use `method` ges or cmaes")


def _per_class(problem: WeightedProblem, glob: np.ndarray, target: int) -> Fit:
    """Per-class weights for one target from the global weights ``glob`` (n_models,)."""
    train = problem.train_rows(target)
    y = problem.y[train] > 0
    n_classes = y.shape[1]
    W = np.repeat(glob[:, None], n_classes, axis=1)
    members = np.flatnonzero(glob > 0)
    for c in range(n_classes):
        n_pos = int(y[:, c].sum())
        if n_pos < MIN_CLASS_POSITIVES or n_pos == len(y):
            continue
        own = np.zeros(len(glob))
        own[members] = _class_ges(problem.t[members, :, c][:, train], y[:, c],
                                  CLASS_GES_ITERATIONS)
        problem.n_scored += CLASS_GES_ITERATIONS * len(members)
        share = n_pos / (n_pos + SHRINK)
        W[:, c] = (1.0 - share) * glob + share * own
    everyone = np.arange(len(glob))
    if problem.score(everyone, W, target) >= problem.score(everyone, glob, target):
        return fit_from_weights(W)
    return fit_from_weights(np.repeat(glob[:, None], n_classes, axis=1))

