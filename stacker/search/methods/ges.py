"""GES, completed: sorted initialisation and bagged selection (Caruana et al., ICML 2004 and
"Getting the most out of ensemble selection", ICDM 2006), built on :func:`methods.ges`.

* **Sorted initialisation** (``ges_init=N``): each selection starts from its ``N`` best single
  models (best on that selection's own rows, so a nested repeat ranks them without its held-out
  fold) instead of an empty bag; ``methods.ges`` then adds models with replacement and keeps the
  best bag of the trajectory (the best prefix, initial bag included).
* **Bagged selection** (``--method ges-bagged``): ``n_bags`` runs of GES, each on a random half
  of the models (seeded), every run's counts normalised to weights that sum to 1, the weights
  averaged over the runs. A model that only fits noise wins few of the bags it is in, so its weight
  shrinks; this is the paper's guard against the selection overfitting the hill-climbing rows.

Both work for all targets at once (all rows, and each fold held out) like the other methods.
"""

from __future__ import annotations

import numpy as np

import stacker.search.methods.core as sm


def sorted_init(ev: sm.Evaluator, targets: list, n_init: int, *,
                max_size: int | None = None) -> dict:
    """{target: counts} holding each target's ``n_init`` best single models (ties: lower index
    first), at most ``max_size`` of them."""
    n = ev.n_models
    n_init = min(int(n_init), n, n if max_size is None else int(max_size))
    if n_init < 1:
        return {}
    singles = [sm.counts_of((m,), n) for m in range(n)]
    scores = ev.sets(singles, list(targets))                      # (n_models, n_targets)
    init = {}
    for col, t in enumerate(targets):
        ranked = sorted(range(n), key=lambda m: (-sm.rounded(scores[m, col]), m))
        init[t] = sm.counts_of(ranked[:n_init], n)
    return init


def bag_pools(n_models: int, n_bags: int, seed: int) -> list[np.ndarray]:
    """``n_bags`` sorted random halves (ceil(n/2), at least one model) of the model indices."""
    rng = np.random.default_rng([int(seed), 2004])
    size = max(1, (n_models + 1) // 2)
    return [np.sort(rng.choice(n_models, size=size, replace=False)) for _ in range(n_bags)]


def bagged_ges(ctx: sm.Context, targets: list, *, n_bags: int, iterations: int,
               max_size: int | None, n_init: int, seed: int,
               tick: sm.Tick | None = None) -> tuple[dict, int]:
    """Bagged ensemble selection. Returns ({target: weights of shape (n_models,) summing to 1},
    candidates scored). Each bag runs :func:`methods.ges` (with sorted initialisation when
    ``n_init``) on its half of the models for every target."""
    n = ctx.n_models
    totals = {t: np.zeros(n) for t in targets}
    n_evaluated = 0
    for pool in bag_pools(n, n_bags, seed):
        sub = sm.Context(q=ctx.q[pool], scorer=ctx.scorer)
        ev = sm.Evaluator(sub)
        init = sorted_init(ev, targets, n_init, max_size=max_size) if n_init else None
        runs = sm.ges(ev, targets, iterations=iterations, max_size=max_size, init=init)
        n_evaluated += ev.n_evaluated
        for t, run in runs.items():
            counts = np.asarray(run.best, dtype=np.float64)
            totals[t][pool] += counts / counts.sum()
        if tick:
            tick(1)
    return {t: w / w.sum() for t, w in totals.items()}, n_evaluated
