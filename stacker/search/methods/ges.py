"""Ensemble selection (GES, Caruana et al., ICML 2004), completed: sorted initialisation and
bagged selection ("Getting the most out of ensemble selection", ICDM 2006).

* **GES** (``method="ges"``): add at each step the model (possibly again) whose addition scores
  best; the counts become weights; the best bag of the trajectory is kept.
* **Sorted initialisation** (``ges_init=N``): each selection starts from its ``N`` best single
  models (best on that selection's own rows, so a nested repeat ranks them without its held-out
  fold) instead of an empty bag; :func:`ges` then adds models with replacement and keeps the
  best bag of the trajectory (the best prefix, initial bag included).
* **Bagged selection** (``method="ges-bagged"``): ``n_bags`` runs of GES, each on a random half
  of the models (seeded), every run's counts normalised to weights that sum to 1, the weights
  averaged over the runs. A model that only fits noise wins few of the bags it is in, so its weight
  shrinks; this is the paper's guard against the selection overfitting the hill-climbing rows.

All work for all targets at once (all rows, and each fold held out) like the other methods;
cmaes and per-class start from :func:`ges_weights`.
"""

from __future__ import annotations

import numpy as np

from stacker.search.methods.core import (
    Context,
    Evaluator,
    Run,
    Tick,
    best_by_size,
    count_selection,
    counts_of,
    group_states,
    key,
    pick,
    plus_one,
    rounded,
    subset_context,
    unique,
)
from stacker.search.methods.weighted import WeightedProblem, fit_from_weights, run_weighted
from stacker.search.methods.workers import run_lockstep
from stacker.search.problem import Problem
from stacker.search.result import Selection


def select(problem: Problem) -> Selection:
    """GES (with sorted initialisation when ``ges.init``) for every target, in lockstep."""
    ges_config, max_size = problem.config.ges, problem.max_size
    ctx = subset_context(problem, max(max_size, ges_config.iterations + ges_config.init))
    settings = dict(iterations=ges_config.iterations, max_size=max_size)
    if ges_config.init:
        settings["init"] = sorted_init(Evaluator(ctx), problem.targets, ges_config.init,
                                       max_size=max_size)
    runs, n_evaluated = run_lockstep(ctx, problem, ges, ges_config.iterations, settings)
    return count_selection(problem, ctx, runs, n_evaluated, "ges")


def select_bagged(problem: Problem) -> Selection:
    """Bagged GES for every target: weighted fits (one candidate each)."""
    ges_config = problem.config.ges

    def fit(weighted: WeightedProblem, tick) -> tuple[dict, int]:
        weights, n_evaluated = bagged_ges(
            weighted.ctx, problem.targets, n_bags=ges_config.bags,
            iterations=ges_config.iterations, max_size=problem.max_size,
            n_init=ges_config.init, seed=problem.config.seed, tick=tick)
        return {t: fit_from_weights(w) for t, w in weights.items()}, n_evaluated

    return run_weighted(problem, "ges-bagged", ges_config.bags, fit,
                        {"ges_bags": ges_config.bags})


def ges_weights(weighted: WeightedProblem, problem: Problem) -> dict:
    """{target: pool weights (n_models,) summing to 1} of GES (sorted init when ``ges.init``),
    the start of cmaes and per-class; its candidates count in ``weighted.n_scored``."""
    ges_config, targets, max_size = problem.config.ges, problem.targets, problem.max_size
    ev = Evaluator(weighted.ctx)
    init = (sorted_init(ev, targets, ges_config.init, max_size=max_size) if ges_config.init
            else None)
    runs = ges(ev, targets, iterations=ges_config.iterations, max_size=max_size, init=init)
    weighted.n_scored += ev.n_evaluated
    out = {}
    for t, run in runs.items():
        counts = np.asarray(run.best, dtype=np.float64)
        out[t] = counts / counts.sum()
    return out


def ges(ev: Evaluator, targets: list, *, iterations: int = 50, max_size: int | None = None,
        tick: Tick | None = None, init: dict | None = None) -> dict:
    """Ensemble selection with replacement (Caruana et al., ICML 2004) for each target: start
    from an empty bag, add at each step the model (possibly again) whose addition scores best;
    the counts become weights. Keeps the best bag over the iterations (the paper's 'select the
    best-performing ensemble size'). ``max_size`` caps the number of distinct members.
    init: {target: counts} to start from instead of the empty bag (the paper's sorted
    initialisation, :mod:`stacker.search.methods.ges`); the initial bag is a candidate too.
    Returns {target: Run}."""
    n = ev.n_models
    max_size = n if max_size is None else max_size
    states = {t: {"counts": counts_of((), n), "history": [], "active": True} for t in targets}
    for t, counts in (init or {}).items():
        if t in states and sum(counts):
            states[t]["counts"] = tuple(counts)
            states[t]["history"].append((tuple(counts), float(ev.sets([tuple(counts)], [t])[0, 0])))
    for _ in range(iterations):
        requests = []
        for base, group in group_states(states, "counts").items():
            distinct = sum(1 for c in base if c)
            requests.append((base, [j for j in range(n) if base[j] or distinct < max_size], group))
        for (base, candidates, group), scores in zip(requests, ev.extend_many(requests)):
            for col, t in enumerate(group):
                choice, score = pick(candidates, scores[:, col])
                counts = plus_one(base, choice)
                states[t]["counts"] = counts
                states[t]["history"].append((counts, score))
        if tick:
            tick(1)
    runs = {}
    for t, state in states.items():
        ordered = sorted(state["history"], key=lambda item: key(*item))
        runs[t] = Run(target=t, best=ordered[0][0], score=ordered[0][1],
                      by_size=best_by_size(state["history"]), top=unique(ordered))
    return runs


def sorted_init(ev: Evaluator, targets: list, n_init: int, *,
                max_size: int | None = None) -> dict:
    """{target: counts} holding each target's ``n_init`` best single models (ties: lower index
    first), at most ``max_size`` of them."""
    n = ev.n_models
    n_init = min(int(n_init), n, n if max_size is None else int(max_size))
    if n_init < 1:
        return {}
    singles = [counts_of((m,), n) for m in range(n)]
    scores = ev.sets(singles, list(targets))                      # (n_models, n_targets)
    init = {}
    for col, t in enumerate(targets):
        ranked = sorted(range(n), key=lambda m: (-rounded(scores[m, col]), m))
        init[t] = counts_of(ranked[:n_init], n)
    return init


def bag_pools(n_models: int, n_bags: int, seed: int) -> list[np.ndarray]:
    """``n_bags`` sorted random halves (ceil(n/2), at least one model) of the model indices."""
    rng = np.random.default_rng([int(seed), 2004])
    size = max(1, (n_models + 1) // 2)
    return [np.sort(rng.choice(n_models, size=size, replace=False)) for _ in range(n_bags)]


def bagged_ges(ctx: Context, targets: list, *, n_bags: int, iterations: int,
               max_size: int | None, n_init: int, seed: int,
               tick: Tick | None = None) -> tuple[dict, int]:
    """Bagged ensemble selection. Returns ({target: weights of shape (n_models,) summing to 1},
    candidates scored). Each bag runs :func:`ges` (with sorted initialisation when
    ``n_init``) on its half of the models for every target."""
    n = ctx.n_models
    totals = {t: np.zeros(n) for t in targets}
    n_evaluated = 0
    for pool in bag_pools(n, n_bags, seed):
        sub = Context(q=ctx.q[pool], scorer=ctx.scorer)
        ev = Evaluator(sub)
        init = sorted_init(ev, targets, n_init, max_size=max_size) if n_init else None
        runs = ges(ev, targets, iterations=iterations, max_size=max_size, init=init)
        n_evaluated += ev.n_evaluated
        for t, run in runs.items():
            counts = np.asarray(run.best, dtype=np.float64)
            totals[t][pool] += counts / counts.sum()
        if tick:
            tick(1)
    return {t: w / w.sum() for t, w in totals.items()}, n_evaluated
