"""``auto``: the exhaustive search when its measured cost fits ``time_budget``, else beam, else
greedy (with backward pruning)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

import stacker.search.methods.beam as beam
import stacker.search.methods.exhaustive as exhaustive
import stacker.search.methods.greedy as greedy
from stacker.search.methods.core import Context, subset_context
from stacker.search.problem import Problem
from stacker.search.result import Selection
from stacker.search.scoring import RankScorer

_RUN = {"exhaustive": exhaustive.run, "beam": beam.run, "greedy": greedy.run}


def select(problem: Problem) -> Selection:
    """The chosen method's selection, saying why it was chosen."""
    ges = problem.config.ges
    # the pool is quantized as for GES (auto once could choose it): the same sums as before
    ctx = subset_context(problem, max(problem.max_size, ges.iterations + ges.init))
    method, reason = choose_method(ctx, problem)
    selection = _RUN[method](ctx, problem)
    return replace(selection, reason=reason)


def time_one_evaluation(ctx: Context, repeats: int = 9) -> float:
    """Seconds for one candidate (an array addition and a score), measured over different
    members (median), times 1.3: processes running side by side share the memory bandwidth."""
    if ctx.walker is not None:
        # the compiled and torch paths score a batch at a time: time one batch per candidate
        batch = list(range(ctx.n_models)) * max(1, 32 // ctx.n_models)
        ctx.walker.extensions(ctx.q[0], batch[:4])            # warm up (compile, transfer)
        start = time.perf_counter()
        ctx.walker.extensions(ctx.q[0], batch)
        return 1.3 * (time.perf_counter() - start) / len(batch)
    S = np.empty(ctx.q.shape[1:], dtype=np.int64)
    times = []
    for r in range(repeats):
        other = ctx.q[r % ctx.n_models]
        start = time.perf_counter()
        np.add(ctx.q[0], other, out=S)
        ctx.scorer.evaluate(S, 2)
        times.append(time.perf_counter() - start)
    return 1.3 * float(np.median(times))


def choose_method(ctx: Context, problem: Problem) -> tuple[str, str]:
    """(exhaustive, beam or greedy; the sentence that says why)."""
    n, max_size, n_jobs = ctx.n_models, problem.max_size, ctx.n_jobs
    budget, beam_width = problem.config.time_budget, problem.config.walk.beam_width
    per = time_one_evaluation(ctx)
    total = exhaustive.n_subsets(n, max_size)
    exhaustive_s = total * per / n_jobs
    if n <= 62 and total <= exhaustive.MAX_EXHAUSTIVE_SUBSETS and exhaustive_s <= budget:
        return "exhaustive", (f"auto chose exhaustive: {total:,} subsets x {per * 1e3:.2f} ms / "
                              f"{n_jobs} process(es) ~ {exhaustive_s:.0f} s, within the "
                              f"{budget:.0f} s budget")
    depth = min(max_size, 15)
    # the nested selections run in lockstep: with a fast scorer they share most candidates
    n_targets = len(problem.targets)
    shared = min(n_targets, 2) if isinstance(ctx.scorer, RankScorer) else n_targets
    beam_s = shared * beam_width * n * depth * per / n_jobs
    if beam_s <= budget:
        return "beam", (f"auto chose beam (width {beam_width}): exhaustive would score {total:,} "
                        f"subsets (~{exhaustive_s:.0f} s > {budget:.0f} s budget); beam ~ "
                        f"{beam_s:.0f} s")
    return "greedy", (f"auto chose greedy with backward pruning: exhaustive ~{exhaustive_s:.0f} s "
                      f"and beam ~{beam_s:.0f} s exceed the {budget:.0f} s budget")
