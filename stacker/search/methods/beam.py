"""Beam search, every target in lockstep."""

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
    key,
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
    """Beam search on a prepared context (also ``auto``'s)."""
    walk = problem.config.walk
    settings = dict(max_size=problem.max_size, width=walk.beam_width, patience=walk.patience)
    runs, n_evaluated = run_lockstep(ctx, problem, beam, problem.max_size, settings)
    return count_selection(problem, ctx, runs, n_evaluated, "beam")


def beam(ev: Evaluator, targets: list, *, max_size: int, width: int = 5, patience: int = 2,
         tick: Tick | None = None) -> dict:
    """Beam search for each target: keep the ``width`` best subsets of each size, extend each
    by every other model, keep the ``width`` best of the next size; stop ``patience`` sizes after
    the last new best or at ``max_size``. Returns {target: Run}."""
    n = ev.n_models
    states = {t: {"beams": [counts_of((), n)], "found": [], "best": -math.inf, "stale": 0,
                  "active": max_size > 0} for t in targets}
    for size in range(1, min(max_size, n) + 1):
        # every (parent, targets) to extend this level, each child scored once per target
        parents: dict = {}
        for t, state in states.items():
            if state["active"]:
                for parent in state["beams"]:
                    parents.setdefault(parent, []).append(t)
        children: dict = {t: {} for t, state in states.items() if state["active"]}   # child -> score
        planned: dict = {t: set() for t in children}
        requests, plans = [], []
        for parent, group in parents.items():
            # a child reached from an earlier parent (for these targets) is not scored again
            candidates, kids = [], []
            for j in range(n):
                if parent[j]:
                    continue
                child = plus_one(parent, j)
                if any(child not in planned[t] for t in group):
                    candidates.append(j)
                    kids.append(child)
            for t in group:
                planned[t].update(kids)
            if candidates:
                requests.append((parent, candidates, group))
                plans.append(kids)
        for (parent, candidates, group), kids, scores in zip(requests, plans,
                                                             ev.extend_many(requests)):
            for i, child in enumerate(kids):
                for col, t in enumerate(group):
                    children[t].setdefault(child, float(scores[i, col]))
        for t, scored in children.items():
            state = states[t]
            ranked = sorted(scored.items(), key=lambda item: key(*item))[:width]
            state["beams"] = [counts for counts, _ in ranked]
            state["found"] += ranked
            if rounded(ranked[0][1]) > rounded(state["best"]):
                state["best"], state["stale"] = ranked[0][1], 0
            else:
                state["stale"] += 1
                if state["stale"] >= patience:
                    state["active"] = False
        if tick:
            tick(1)
        if not any(state["active"] for state in states.values()):
            break
    runs = {}
    for t, state in states.items():
        found = sorted(state["found"], key=lambda item: key(*item))
        runs[t] = Run(target=t, best=found[0][0], score=found[0][1],
                      by_size=best_by_size(found), top=unique(found))
    return runs

