"""The selection methods of the subset search, on quantized members (see :mod:`subset_scoring`).

Each method works on a :class:`Context` (the int64 transforms ``q`` of shape
(n_models, n_rows, n_classes) and a scorer) and a ``target``: which entry of the scorer's output it
maximises (0 = all rows; 1 + i = every fold but fold i, for nested CV). A candidate ensemble is a
tuple of member counts, one per model (0/1 for subsets, any count for GES).

Ties between candidates are broken the same way everywhere (and by the brute-force oracle in the
tests): scores rounded to 12 decimals, then fewer distinct members, then fewer picks, then the
lexicographically smallest member indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable

import numpy as np

from stacker.subset_scoring import Scorer

Counts = tuple  # tuple[int, ...] of length n_models
Tick = Callable[[int], None]


@dataclass
class Context:
    q: np.ndarray          # (n_models, n_rows, n_classes) int64
    scorer: Scorer

    @property
    def n_models(self) -> int:
        return self.q.shape[0]


@dataclass
class Run:
    """The outcome of one selection: the best candidate, the best of each size, the top list."""

    target: int
    best: Counts
    score: float
    by_size: dict = field(default_factory=dict)     # n distinct -> (counts, score)
    top: list = field(default_factory=list)         # [(counts, score)], best first
    n_evaluated: int = 0


def rounded(score: float) -> float:
    return -math.inf if score is None or math.isnan(score) else round(float(score), 12)


def key(counts: Counts, score: float) -> tuple:
    """Sort key: best candidate first."""
    members = tuple(i for i, c in enumerate(counts) if c)
    return (-rounded(score), len(members), sum(counts), members)


def counts_of(members, n_models: int) -> Counts:
    counts = [0] * n_models
    for m in members:
        counts[m] += 1
    return tuple(counts)


def _best_by_size(found: list) -> dict:
    by_size: dict = {}
    for counts, score in found:
        size = sum(1 for c in counts if c)
        if size not in by_size or key(counts, score) < key(*by_size[size]):
            by_size[size] = (counts, score)
    return dict(sorted(by_size.items()))


# ---------------------------------------------------------------- exhaustive


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


# ---------------------------------------------------------------- greedy, beam, GES


def greedy(ctx: Context, target: int, *, max_size: int, prune: bool = True, patience: int = 2,
           tick: Tick | None = None) -> Run:
    """Forward selection: add the model that helps most; stop after ``patience`` additions
    without a new best or at ``max_size``; keep the best subset on the path. With ``prune``, then
    drop members one at a time while that does not lower the score (backward pruning)."""
    q, scorer, n = ctx.q, ctx.scorer, ctx.n_models
    members: list[int] = []
    S = np.zeros(q.shape[1:], dtype=np.int64)
    buffer = np.empty_like(S)
    path, evaluated, stale, best_score = [], 0, 0, -math.inf
    while len(members) < min(max_size, n):
        choice, choice_score = None, -math.inf
        for j in range(n):
            if j in members:
                continue
            np.add(S, q[j], out=buffer)
            score = scorer.evaluate_one(buffer, len(members) + 1, target)
            evaluated += 1
            if choice is None or rounded(score) > rounded(choice_score):
                choice, choice_score = j, score
        members.append(choice)
        S += q[choice]
        path.append((counts_of(members, n), choice_score))
        if tick:
            tick(1)
        if rounded(choice_score) > rounded(best_score):
            best_score, stale = choice_score, 0
        else:
            stale += 1
            if stale >= patience:
                break
    found = list(path)
    best_counts, best = min(path, key=lambda item: key(*item))
    if prune:
        chosen = [m for m, c in enumerate(best_counts) if c]
        S = q[chosen].sum(axis=0)
        while len(chosen) > 1:
            options = []
            for m in chosen:
                np.subtract(S, q[m], out=buffer)
                options.append((scorer.evaluate_one(buffer, len(chosen) - 1, target), m))
                evaluated += 1
            score, drop = max(options, key=lambda o: (rounded(o[0]), -o[1]))
            if rounded(score) < rounded(best):
                break
            chosen.remove(drop)
            S -= q[drop]
            best, best_counts = score, counts_of(chosen, n)
            found.append((best_counts, best))
    found.sort(key=lambda item: key(*item))
    return Run(target=target, best=best_counts, score=best, by_size=_best_by_size(found),
               top=_unique(found), n_evaluated=evaluated)


def beam(ctx: Context, target: int, *, max_size: int, width: int = 5, patience: int = 2,
         tick: Tick | None = None) -> Run:
    """Beam search: keep the ``width`` best subsets of each size, extend each by every other
    model, keep the ``width`` best of the next size; stop ``patience`` sizes after the last new
    best or at ``max_size``."""
    q, scorer, n = ctx.q, ctx.scorer, ctx.n_models
    beams = [((), np.zeros(q.shape[1:], dtype=np.int64))]
    buffer = np.empty(q.shape[1:], dtype=np.int64)
    found, evaluated, stale, best_score = [], 0, 0, -math.inf
    for size in range(1, min(max_size, n) + 1):
        children: dict = {}
        for b, (members, S) in enumerate(beams):
            for j in range(n):
                if j in members:
                    continue
                child = tuple(sorted(members + (j,)))
                if child in children:
                    continue
                np.add(S, q[j], out=buffer)
                children[child] = (scorer.evaluate_one(buffer, size, target), b, j)
                evaluated += 1
        ranked = sorted(children.items(), key=lambda item: key(counts_of(item[0], n), item[1][0]))
        kept = ranked[:width]
        beams = [(child, beams[b][1] + q[j]) for child, (_, b, j) in kept]
        found += [(counts_of(child, n), score) for child, (score, _, _) in kept]
        if tick:
            tick(1)
        level_best = kept[0][1][0]
        if rounded(level_best) > rounded(best_score):
            best_score, stale = level_best, 0
        else:
            stale += 1
            if stale >= patience:
                break
    found.sort(key=lambda item: key(*item))
    return Run(target=target, best=found[0][0], score=found[0][1], by_size=_best_by_size(found),
               top=_unique(found), n_evaluated=evaluated)


def ges(ctx: Context, target: int, *, iterations: int = 50, max_size: int | None = None,
        tick: Tick | None = None) -> Run:
    """Ensemble selection with replacement (Caruana et al., ICML 2004): start from an empty bag,
    add at each step the model (possibly again) whose addition scores best; the counts become
    weights. Keeps the best bag over the iterations (the paper's 'select the best-performing
    ensemble size'). ``max_size`` caps the number of distinct members."""
    q, scorer, n = ctx.q, ctx.scorer, ctx.n_models
    max_size = n if max_size is None else max_size
    counts = [0] * n
    S = np.zeros(q.shape[1:], dtype=np.int64)
    buffer = np.empty_like(S)
    history, evaluated = [], 0
    for step in range(iterations):
        distinct = sum(1 for c in counts if c)
        allowed = [j for j in range(n) if counts[j] or distinct < max_size]
        choice, choice_score = None, -math.inf
        for j in allowed:
            np.add(S, q[j], out=buffer)
            score = scorer.evaluate_one(buffer, step + 1, target)
            evaluated += 1
            if choice is None or rounded(score) > rounded(choice_score):
                choice, choice_score = j, score
        counts[choice] += 1
        S += q[choice]
        history.append((tuple(counts), choice_score))
        if tick:
            tick(1)
    ordered = sorted(history, key=lambda item: key(*item))
    return Run(target=target, best=ordered[0][0], score=ordered[0][1],
               by_size=_best_by_size(history), top=_unique(ordered), n_evaluated=evaluated)


def _unique(found: list) -> list:
    seen, out = set(), []
    for counts, score in found:
        if counts not in seen:
            seen.add(counts)
            out.append((counts, score))
    return out
