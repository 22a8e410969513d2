"""Forward selection with backward pruning, every target in lockstep."""

from __future__ import annotations

import math

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
from stacker.search.methods.workers import run_lockstep
from stacker.search.problem import Problem
from stacker.search.result import Selection


def select(problem: Problem) -> Selection:
    return run(subset_context(problem, problem.max_size), problem)


def run(ctx: Context, problem: Problem) -> Selection:
    """Greedy on a prepared context (also ``auto``'s)."""
    walk = problem.config.walk
    settings = dict(max_size=problem.max_size, prune=walk.prune, patience=walk.patience)
    runs, n_evaluated = run_lockstep(ctx, problem, greedy, problem.max_size, settings)
    return count_selection(problem, ctx, runs, n_evaluated, "greedy")


def greedy(ev: Evaluator, targets: list, *, max_size: int, prune: bool = True,
           patience: int = 2, tick: Tick | None = None) -> dict:
    """Forward selection for each target: add the model that helps most; stop after
    ``patience`` additions without a new best or at ``max_size``; keep the best subset on the
    path. With ``prune``, then drop members one at a time while that does not lower the score
    (backward pruning). Returns {target: Run}."""
    n = ev.n_models
    limit = min(max_size, n)
    states = {t: {"counts": counts_of((), n), "path": [], "best": -math.inf, "stale": 0,
                  "active": limit > 0} for t in targets}
    while any(state["active"] for state in states.values()):
        requests = [(base, [j for j in range(n) if not base[j]], group)
                    for base, group in group_states(states, "counts").items()]
        for (base, candidates, group), scores in zip(requests, ev.extend_many(requests)):
            for col, t in enumerate(group):
                state = states[t]
                choice, score = pick(candidates, scores[:, col])
                state["counts"] = plus_one(base, choice)
                state["path"].append((state["counts"], score))
                if rounded(score) > rounded(state["best"]):
                    state["best"], state["stale"] = score, 0
                else:
                    state["stale"] += 1
                if state["stale"] >= patience or sum(state["counts"]) >= limit:
                    state["active"] = False
        if tick:
            tick(1)
    pruned = {}
    for t, state in states.items():
        found = list(state["path"])
        pruned[t] = [*min(found, key=lambda item: key(*item)), found]
    if prune:
        # backward pruning in lockstep too: the targets whose best set is the same score its
        # smaller sets in one pass (each target's scores are the ones it gets alone)
        pruning = [t for t in targets if sum(pruned[t][0]) > 1]
        while pruning:
            groups: dict = {}
            for t in pruning:
                groups.setdefault(pruned[t][0], []).append(t)
            pruning = []
            for best_counts, group in groups.items():
                chosen = [m for m, c in enumerate(best_counts) if c]
                smaller = [tuple(0 if m == drop else c for m, c in enumerate(best_counts))
                           for drop in chosen]
                scores = ev.sets_without(best_counts, chosen, group)
                for col, t in enumerate(group):
                    drop, score = pick(list(range(len(smaller))), scores[:, col])
                    if rounded(score) < rounded(pruned[t][1]):
                        continue
                    pruned[t][:2] = smaller[drop], score
                    pruned[t][2].append((smaller[drop], score))
                    if sum(smaller[drop]) > 1:
                        pruning.append(t)
    runs = {}
    for t in states:
        best_counts, best, found = pruned[t]
        found.sort(key=lambda item: key(*item))
        runs[t] = Run(target=t, best=best_counts, score=best, by_size=best_by_size(found),
                      top=unique(found))
    return runs

