"""The exhaustive search: every subset up to ``max_size``, depth-first, one array addition per
subset; one pass scores every target (all rows, and each fold held out) for free."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor, as_completed
from itertools import combinations

import numpy as np

import stacker.search.methods.workers as workers
from stacker.errors import OptionError
from stacker.search.methods.core import Context, Counts, Run, count_selection, subset_context
from stacker.search.problem import Problem
from stacker.search.result import Selection

MAX_EXHAUSTIVE_SUBSETS = 1 << 22


def select(problem: Problem) -> Selection:
    """Every subset of size 1..max_size, for every target."""
    return run(subset_context(problem, problem.max_size), problem)


def run(ctx: Context, problem: Problem) -> Selection:
    """The exhaustive search on a prepared context (also ``auto``'s)."""
    n, max_size = ctx.n_models, problem.max_size
    total = n_subsets(n, max_size)
    if n > 62 or total > MAX_EXHAUSTIVE_SUBSETS:
        raise OptionError(f"exhaustive search over {n} models up to size {max_size} is "
                          f"{total:,} subsets (limit {MAX_EXHAUSTIVE_SUBSETS:,}); lower "
                          "`max_size` or use `method` greedy, beam or ges")
    masks, scores = _score_all(ctx, problem, total)
    top = problem.config.top
    runs = {t: exhaustive_run(masks, scores, t, n, top if t == 0 else 1) for t in problem.targets}
    return count_selection(problem, ctx, runs, runs[0].n_evaluated, "exhaustive")


def _score_all(ctx: Context, problem: Problem, total: int) -> tuple[np.ndarray, np.ndarray]:
    """(masks, scores) of every subset: on the walker, in worker processes, or here."""
    max_size, nested = problem.max_size, problem.nested
    chunks = exhaustive_chunks(ctx.n_models, max_size)
    done, parts = 0, []
    problem.progress(0, total)
    if ctx.walker is not None:
        parts = _walk_exhaustive(ctx, problem, total)
    elif (ctx.n_jobs > 1 and len(chunks) > 1
          and total * ctx.q[0].size >= workers.PARALLEL_MIN_WORK):
        with workers.Workers(ctx, ctx.n_jobs) as pool:
            futures = [pool.submit(run_exhaustive_chunk, chunk, max_size, nested)
                       for chunk in chunks]
            for future in as_completed(futures):
                parts.append(future.result())
                done += len(parts[-1][0])
                problem.progress(done, total)
    else:
        for chunk in chunks:
            parts.append(run_exhaustive_chunk(ctx, chunk, max_size, nested))
            done += len(parts[-1][0])
            problem.progress(done, total)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _walk_exhaustive(ctx: Context, problem: Problem, total: int) -> list:
    """The exhaustive search on ctx.walker: chunks of about equal work, run on ``n_jobs``
    threads by the compiled kernel (it releases the GIL), in turn on a torch device."""
    n, max_size, n_jobs = ctx.n_models, problem.max_size, ctx.n_jobs
    if getattr(ctx.walker, "name", "") != "numba":
        groups = exhaustive_chunks(n, max_size, prefix_len=1)
        n_jobs = 1
    else:
        chunks = exhaustive_chunks(n, max_size)
        sizes = [chunk_size(chunk, n, max_size) for chunk in chunks]
        n_groups = min(len(chunks), 8 * n_jobs)
        groups, load = [[] for _ in range(n_groups)], [0] * n_groups
        for i in sorted(range(len(chunks)), key=lambda i: -sizes[i]):
            g = load.index(min(load))
            groups[g] += chunks[i]
            load[g] += sizes[i]
        groups = [g for g in groups if g]
    parts, done = [], 0
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(run_exhaustive_chunk, ctx, group, max_size, problem.nested)
                   for group in groups]
        for future in as_completed(futures):
            parts.append(future.result())
            done += len(parts[-1][0])
            problem.progress(min(done, total), total)
    return parts


# ---------------------------------------------------------------- subsets and their scores


def n_subsets(n_models: int, max_size: int) -> int:
    return sum(math.comb(n_models, k) for k in range(1, max_size + 1))


def exhaustive_chunks(n_models: int, max_size: int, prefix_len: int = 3) -> list[list]:
    """Split the subsets of size 1..max_size into chunks of work.

    A chunk is a list of (prefix, extend): the subset ``prefix`` itself and, when ``extend``, every
    subset that adds models numbered above the prefix's last one. Chunks of long prefixes come
    largest first, so that processes share the work evenly.
    """
    length = max(1, min(prefix_len, max_size, n_models))
    short = [(combo, False) for k in range(1, length) for combo in combinations(range(n_models), k)]
    long = [[(combo, True)] for combo in combinations(range(n_models), length)]
    long.sort(key=lambda chunk: -(n_models - 1 - chunk[0][0][-1]))
    return ([short] if short else []) + long


def chunk_size(chunk, n_models: int, max_size: int) -> int:
    total = 0
    for prefix, extend in chunk:
        total += 1
        if extend:
            rest = n_models - 1 - prefix[-1]
            total += sum(math.comb(rest, k) for k in range(1, max_size - len(prefix) + 1))
    return total


def run_exhaustive_chunk(ctx: Context, chunk, max_size: int,
                         nested: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Score every subset of ``chunk``. Returns (masks (n,), int64 bitmask of the members;
    scores (n, n_outputs), or (n, 1) without ``nested``: the all-rows score only).

    Depth-first: the sum of a subset is its parent's sum plus one member, kept in one buffer per
    depth, so each subset costs a single array addition (like a Gray-code walk, without
    subtractions).
    """
    q, scorer, n = ctx.q, ctx.scorer, ctx.n_models
    if ctx.walker is not None:
        masks, sums = ctx.walker.exhaustive(chunk, max_size)
        scores = scorer.outputs_from_fold_sums(sums)
        return masks, (scores if nested else scores[:, :1])
    buffers = np.empty((max_size + 1,) + q.shape[1:], dtype=np.int64)
    masks: list[int] = []
    scores: list = []
    width = scorer.n_outputs if nested else 1

    def evaluate(S, n_terms):
        return scorer.evaluate(S, n_terms) if nested else scorer.evaluate_one(S, n_terms, 0)

    def visit(depth: int, last: int, mask: int) -> None:
        masks.append(mask)
        scores.append(evaluate(buffers[depth], depth))
        if depth == max_size:
            return
        for j in range(last + 1, n):
            np.add(buffers[depth], q[j], out=buffers[depth + 1])
            visit(depth + 1, j, mask | (1 << j))

    for prefix, extend in chunk:
        depth = len(prefix)
        buffers[depth] = q[prefix[0]]
        for m in prefix[1:]:
            buffers[depth] += q[m]
        mask = sum(1 << m for m in prefix)
        if extend:
            visit(depth, prefix[-1], mask)
        else:
            masks.append(mask)
            scores.append(evaluate(buffers[depth], depth))
    return (np.asarray(masks, dtype=np.int64),
            np.asarray(scores, dtype=np.float64).reshape(len(masks), width))


def order_subsets(masks: np.ndarray, values: np.ndarray, n_models: int) -> np.ndarray:
    """Indices of ``masks`` sorted best first by :func:`key`'s rule."""
    sizes = np.zeros(len(masks), dtype=np.int64)
    reversed_bits = np.zeros(len(masks), dtype=np.int64)
    for m in range(n_models):
        bit = (masks >> m) & 1
        sizes += bit
        # model 0 as the most significant bit: a larger value is a lexicographically smaller set
        reversed_bits |= bit << (n_models - 1 - m)
    r = np.round(np.where(np.isnan(values), -np.inf, values), 12)
    return np.lexsort((-reversed_bits, sizes, -r))


def mask_counts(mask: int, n_models: int) -> Counts:
    return tuple((int(mask) >> m) & 1 for m in range(n_models))


def exhaustive_run(masks: np.ndarray, scores: np.ndarray, target: int, n_models: int,
                   top: int) -> Run:
    """The best subset, best by size and top list for ``target`` from all scored subsets."""
    values = scores[:, target]
    order = order_subsets(masks, values, n_models)
    sizes = np.array([bin(int(m)).count("1") for m in masks[order]])
    first_of_size = {}
    for pos, size in enumerate(sizes):
        first_of_size.setdefault(int(size), pos)
    pick = lambda pos: (mask_counts(masks[order[pos]], n_models), float(values[order[pos]]))
    best = pick(0)
    return Run(target=target, best=best[0], score=best[1],
               by_size={s: pick(p) for s, p in sorted(first_of_size.items())},
               top=[pick(p) for p in range(min(top, len(order)))], n_evaluated=len(masks))

