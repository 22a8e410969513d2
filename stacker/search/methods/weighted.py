"""Weighted blends beyond GES, each with nested CV: ``ges-bagged``, ``cmaes``, ``per-class`` and
``linear`` (``search-subsets --method ...``).

Every method is run once per **target**: target 0 uses every OOF row; target ``1 + i`` uses every
row but fold ``i``'s, and its fit predicts fold ``i`` (pooled over the folds: the nested CV). A
fit never sees its held-out fold's labels: the scorer's target ``1 + i`` sums over the other folds
only, and the per-class statistics and the linear stacker are computed on the target's rows only.

* ``ges-bagged``: bagged ensemble selection (:mod:`stacker.search.methods.ges`).
* ``cmaes``: CMA-ES (the ``cma`` package) over the blend weights, started from the GES weights
  (Purucker & Beel, AutoML-Conf 2023). A candidate ``x`` becomes weights ``max(x, 0) / sum``
  (GES-style: non-negative, summing to 1); weights under ``TRIM`` are set to 0 at the end. Pools
  larger than ``CMAES_MAX_MODELS`` are first cut to the GES bag's members (the most picked ones).
  Seeded by ``seed`` (cma's own random numbers come from a seeded numpy Generator) and evaluated
  one candidate at a time, so a seed gives one result.
* ``per-class``: one weight vector per class: the global GES weights ``g`` and, per class ``c``,
  weights ``w_c`` from a GES on class ``c``'s column alone (maximising that column's ROC AUC)
  over the members of ``g``, shrunk towards ``g``: ``W[:, c] = (1 - a_c) g + a_c w_c`` with ``a_c = n_c / (n_c + SHRINK)``
  (``n_c``: the class's positives in the target's rows). Classes with fewer than
  ``MIN_CLASS_POSITIVES`` positives keep ``g``; the search refuses the method when the median class
  has fewer. The per-class matrix is kept only when it scores at least as well as ``g`` on the
  target's rows (else ``g`` in every column).
* ``linear``: a non-negative linear stacker on the models' logits, per class (H2O's GLM
  metalearner with non_negative=True): ``sigmoid(b_c + sum_m W[m, c] logit(p_m[:, c]))``, fitted by
  L-BFGS-B on the logistic loss with a small L2 penalty (``LINEAR_L2``). It ignores ``--blend``
  and ``--max-size`` (every model of the pool gets a coefficient, 0 drops it).

The reported CV is the fit of target 0 scored on every row (optimistic for all of them; for
``linear`` it is an in-sample fit); the nested CV is the honest estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import stacker.search.methods.core as sm
import stacker.search.methods.ges as ges_variants
from stacker.blend import LINEAR, combine, logit, transform
from stacker.errors import OptionError
from stacker.metrics import Metric, fold_scores
from stacker.search.scoring import make_scorer, quantize

WEIGHTED_METHODS = ("ges-bagged", "cmaes", "per-class", "linear")
TRIM = 0.01                  # weights under this share are dropped (cmaes)
CMAES_MAX_MODELS = 16        # larger pools are cut to the GES bag's members first
CMAES_SIGMA = 0.3            # initial step size, as a multiple of the mean weight 1/k
SHRINK = 20.0                # per-class: positives at which a class's own weights count half
MIN_CLASS_POSITIVES = 10     # per-class: fewer positives -> the class keeps the global weights
CLASS_GES_ITERATIONS = 20    # per-class: steps of each class's own GES
LINEAR_L2 = 1e-3             # linear: L2 penalty on the coefficients (per row of the mean loss)
LINEAR_TRIM = 1e-6           # linear: coefficients under this are 0


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


def _fit_from_weights(w: np.ndarray, *, trim: float = 0.0) -> Fit:
    """A Fit from pool-wide weights (n_models,) or (n_models, n_classes): members are the models
    with a weight (after dropping shares under ``trim``)."""
    w = np.where(w < trim * (w.sum(axis=0) if w.ndim == 2 else w.sum()), 0.0, w)
    keep = np.flatnonzero(w.sum(axis=1) > 0 if w.ndim == 2 else w > 0)
    sub = w[keep]
    return Fit(members=tuple(int(m) for m in keep), weights=sub / sub.sum(axis=0))


class _Problem:
    """The arrays every method shares: the float transforms on the scorer's rows, the quantized
    ones (for GES), the labels and fold of each of those rows."""

    def __init__(self, oof, y, fold, fold_numbers, metric, *, blend, power, eps, max_terms):
        self.blend, self.power, self.eps = blend, power, eps
        self.scorer = make_scorer(y, fold, fold_numbers, metric, blend=blend, power=power)
        rows = self.scorer.rows
        self.q, scale = quantize(oof, blend, max_terms=max_terms, power=power, eps=eps, rows=rows)
        self.scorer.scale = scale
        self.ctx = sm.Context(q=self.q, scorer=self.scorer)
        self.float_scorer = make_scorer(y, fold, fold_numbers, metric, blend=blend, power=power)
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


# ---------------------------------------------------------------- the methods


def _ges_weights(problem: _Problem, targets, *, iterations, max_size, n_init) -> dict:
    """{target: pool weights (n_models,) summing to 1} of GES (sorted init when ``n_init``)."""
    ev = sm.Evaluator(problem.ctx)
    init = ges_variants.sorted_init(ev, targets, n_init, max_size=max_size) if n_init else None
    runs = sm.ges(ev, targets, iterations=iterations, max_size=max_size, init=init)
    problem.n_scored += ev.n_evaluated
    out = {}
    for t, run in runs.items():
        counts = np.asarray(run.best, dtype=np.float64)
        out[t] = counts / counts.sum()
    return out


def _cmaes(problem: _Problem, start: np.ndarray, target: int, *, evaluations: int,
           seed: int, max_size: int) -> Fit:
    """CMA-ES from the GES weights ``start`` (n_models,) for one target: over every model of a
    small pool, else (or when ``max_size`` caps the members) over the GES bag's members."""
    import cma

    cut = len(start) > CMAES_MAX_MODELS or max_size < len(start)
    idx = np.flatnonzero(start > 0) if cut else np.arange(len(start))
    if len(idx) > CMAES_MAX_MODELS:
        idx = np.sort(np.argsort(-start, kind="stable")[:CMAES_MAX_MODELS])
    k = len(idx)
    x0 = start[idx] / start[idx].sum()
    best = (problem.score(idx, x0, target), x0)
    if k == 1:
        return _fit_from_weights(_spread(idx, x0, len(start)))

    def weights_of(x):
        w = np.clip(np.asarray(x, dtype=np.float64), 0.0, None)
        total = w.sum()
        return w / total if total > 0 else np.full(k, 1.0 / k)

    rng = np.random.default_rng([int(seed), int(target), 2023])
    options = {"seed": np.nan, "randn": lambda *shape: rng.standard_normal(shape),
               "maxfevals": int(evaluations), "verbose": -9, "tolfun": 1e-12, "tolx": 1e-9}
    es = cma.CMAEvolutionStrategy(list(x0), CMAES_SIGMA / k, options)
    while not es.stop():
        candidates = es.ask()
        losses = []
        for x in candidates:
            w = weights_of(x)
            score = problem.score(idx, w, target)
            # scores rounded as everywhere in the search: float noise cannot reorder candidates
            losses.append(-round(score, 12) if math.isfinite(score) else 1e300)
            if round(score, 12) > round(best[0], 12):
                best = (score, w)
        es.tell(candidates, losses)
    w = best[1]
    trimmed = np.where(w < TRIM, 0.0, w)
    trimmed = trimmed / trimmed.sum()
    # the trimmed weights, unless trimming lost to the GES start (then CMA-ES found nothing)
    if round(problem.score(idx, trimmed, target), 12) < round(problem.score(idx, x0, target), 12):
        trimmed = x0
    return _fit_from_weights(_spread(idx, trimmed, len(start)))


def _spread(idx, w, n_models) -> np.ndarray:
    full = np.zeros(n_models)
    full[idx] = w
    return full


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


def _per_class(problem: _Problem, glob: np.ndarray, target: int) -> Fit:
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
        return _fit_from_weights(W)
    return _fit_from_weights(np.repeat(glob[:, None], n_classes, axis=1))


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


def _linear(problem: _Problem, target: int) -> Fit:
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


# ---------------------------------------------------------------- the search


def fit_targets(oof, y, fold, fold_numbers, *, method: str, metric: Metric, blend: str,
                power: float, eps: float, nested: bool, seed: int, max_size: int,
                ges_iterations: int, ges_init: int, ges_bags: int, cmaes_evaluations: int,
                on_progress=None) -> tuple[dict, int]:
    """Run ``method`` for every target. Returns ({target: Fit}, candidates scored); the fit of
    target ``1 + i`` used no label of fold ``fold_numbers[i]``."""
    y = np.asarray(y)
    fold = np.asarray(fold)
    if method == "per-class":
        check_per_class(y, fold, fold_numbers, nested)
    targets = list(range(1 + len(fold_numbers))) if nested else [0]
    steps = len(targets) * (2 if method in ("cmaes", "per-class") else 1)
    if method == "ges-bagged":
        steps = ges_bags
    done = [0]

    def tick(k=1):
        done[0] += k
        if on_progress:
            on_progress(min(done[0], steps), steps)

    tick(0)
    problem = _Problem(oof, y, fold, fold_numbers, metric, blend=blend, power=power, eps=eps,
                       max_terms=ges_iterations + ges_init)
    n_evaluated = 0
    fits: dict = {}
    if method == "ges-bagged":
        weights, n_evaluated = ges_variants.bagged_ges(
            problem.ctx, targets, n_bags=ges_bags, iterations=ges_iterations, max_size=max_size,
            n_init=ges_init, seed=seed, tick=tick)
        fits = {t: _fit_from_weights(w) for t, w in weights.items()}
    elif method in ("cmaes", "per-class"):
        started = _ges_weights(problem, targets, iterations=ges_iterations, max_size=max_size,
                               n_init=ges_init)
        tick(len(targets))
        for t in targets:
            if method == "cmaes":
                fits[t] = _cmaes(problem, started[t], t, evaluations=cmaes_evaluations,
                                 seed=seed, max_size=max_size)
            else:
                fits[t] = _per_class(problem, started[t], t)
            tick()
    elif method == "linear":
        for t in targets:
            fits[t] = _linear(problem, t)
            tick()
    else:
        raise OptionError(f"unknown weighted method '{method}'; choose one of: "
                          f"{', '.join(WEIGHTED_METHODS)}")
    return fits, n_evaluated + problem.n_scored


def search_weighted(oof, y, fold, fold_numbers, names, *, method: str, metric: Metric,
                    blend: str, power: float, eps: float, nested: bool, **options) -> dict:
    """Run ``method`` for every target (:func:`fit_targets`, which takes ``options``). Returns
    the fields of a SearchResult (members, weights, cv, fold_cv, nested_cv, nested_folds, top,
    by_size, n_evaluated, combiner, blend)."""
    from stacker.search.engine import Candidate, NestedFold, SizeScore

    y = np.asarray(y)
    fold = np.asarray(fold)
    fits, n_evaluated = fit_targets(oof, y, fold, fold_numbers, method=method, metric=metric,
                                    blend=blend, power=power, eps=eps, nested=nested, **options)

    def predict(fit: Fit, rows=slice(None)) -> np.ndarray:
        return fit.predict(oof[rows], blend=blend, power=power, eps=eps)

    def describe(fit: Fit) -> tuple[tuple, dict]:
        members = tuple(names[m] for m in fit.members)
        return members, {name: float(w) for name, w in zip(members, fit.summary())}

    main = fits[0]
    members, weights = describe(main)
    chosen = predict(main)
    cv = metric(y, chosen)
    fold_cv = fold_scores(y, chosen, fold, fold_numbers, metric)
    nested_cv, nested_folds, pooled = None, [], None
    if nested:
        pooled = np.empty(y.shape, dtype=np.float64)
        for i, k in enumerate(fold_numbers):
            rows = fold == k
            pooled[rows] = predict(fits[1 + i], rows)
            fm, fw = describe(fits[1 + i])
            nested_folds.append(NestedFold(fold=k, members=fm, weights=fw,
                                           cv=metric(y[rows], pooled[rows])))
        nested_cv = metric(y, pooled)
    combiner: dict = {}
    if main.intercept is not None:
        combiner = {"coef": {name: [float(v) for v in row]
                             for name, row in zip(members, main.weights)},
                    "intercept": [float(b) for b in main.intercept]}
    elif main.weights.ndim == 2:
        combiner = {"class_weights": {name: [float(v) for v in row]
                                      for name, row in zip(members, main.weights)}}
    return dict(members=members, weights=weights, cv=cv, fold_cv=fold_cv, nested_cv=nested_cv,
                nested_folds=nested_folds,
                top=[Candidate(members=members, weights=weights, cv=cv)],
                by_size=[SizeScore(size=len(members), members=members, cv=cv, nested_cv=None)],
                n_evaluated=n_evaluated, combiner=combiner, nested_oof=pooled,
                blend=LINEAR if method == "linear" else blend)


def settings(method: str, *, ges_bags: int, cmaes_evaluations: int) -> dict:
    """The fixed settings of ``method``, recorded in the result's params."""
    if method == "ges-bagged":
        return {"ges_bags": ges_bags}
    if method == "cmaes":
        return {"cmaes_evaluations": cmaes_evaluations, "cmaes_trim": TRIM,
                "cmaes_max_models": CMAES_MAX_MODELS, "cmaes_sigma": CMAES_SIGMA}
    if method == "per-class":
        return {"per_class_shrink": SHRINK, "per_class_min_positives": MIN_CLASS_POSITIVES,
                "class_ges_iterations": CLASS_GES_ITERATIONS}
    return {"linear_l2": LINEAR_L2, "linear_trim": LINEAR_TRIM}
