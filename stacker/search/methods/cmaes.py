"""``cmaes``: CMA-ES (the ``cma`` package) over the blend weights, started from the GES weights
(Purucker & Beel, AutoML-Conf 2023).

A candidate ``x`` becomes weights ``max(x, 0) / sum`` (GES-style: non-negative, summing to 1);
weights under ``TRIM`` are set to 0 at the end. Pools larger than ``CMAES_MAX_MODELS`` are first
cut to the GES bag's members (the most picked ones). Seeded by ``seed`` (cma's own random numbers
come from a seeded numpy Generator) and evaluated one candidate at a time, so a seed gives one
result.
"""

from __future__ import annotations

import math

import numpy as np

from stacker.search.methods.ges import ges_weights
from stacker.search.methods.weighted import Fit, WeightedProblem, fit_from_weights, run_weighted
from stacker.search.problem import Problem
from stacker.search.result import Selection

TRIM = 0.01                  # weights under this share are dropped
CMAES_MAX_MODELS = 16        # larger pools are cut to the GES bag's members first
CMAES_SIGMA = 0.3            # initial step size, as a multiple of the mean weight 1/k


def select(problem: Problem) -> Selection:
    """GES for every target, then CMA-ES from each target's GES weights."""
    config = problem.config
    settings = {"cmaes_evaluations": config.cmaes.evaluations, "cmaes_trim": TRIM,
                "cmaes_max_models": CMAES_MAX_MODELS, "cmaes_sigma": CMAES_SIGMA}

    def fit(weighted: WeightedProblem, tick) -> tuple[dict, int]:
        started = ges_weights(weighted, problem)
        tick(len(problem.targets))
        fits = {}
        for t in problem.targets:
            fits[t] = _cmaes(weighted, started[t], t, evaluations=config.cmaes.evaluations,
                             seed=config.seed, max_size=problem.max_size)
            tick()
        return fits, 0

    return run_weighted(problem, "cmaes", 2 * len(problem.targets), fit, settings)


def _cmaes(problem: WeightedProblem, start: np.ndarray, target: int, *, evaluations: int,
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
        return fit_from_weights(_spread(idx, x0, len(start)))

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
    return fit_from_weights(_spread(idx, trimmed, len(start)))


def _spread(idx, w, n_models) -> np.ndarray:
    full = np.zeros(n_models)
    full[idx] = w
    return full
