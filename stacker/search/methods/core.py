"""The selection methods of the subset search, on quantized members (see :mod:`subset_scoring`).

Each method works on a :class:`Context` (the int64 transforms ``q`` of shape
(n_models, n_rows, n_classes) and a scorer) for ``targets``: which entries of the scorer's output
they maximise (0 = all rows; 1 + i = every fold but fold i, for nested CV). A candidate ensemble is
a tuple of member counts, one per model (0/1 for subsets, any count for GES).

Ties between candidates are broken the same way everywhere (and by the brute-force oracle in the
tests): scores rounded to 12 decimals, then fewer distinct members, then fewer picks, then the
lexicographically smallest member indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations, compress
from typing import Callable

import numpy as np

from stacker.search.scoring import Scorer

Counts = tuple  # tuple[int, ...] of length n_models
Tick = Callable[[int], None]


@dataclass
class Context:
    q: np.ndarray          # (n_models, n_rows, n_classes) int64
    scorer: Scorer
    # a fast path for the RankScorer (stacker.search.kernel.KernelWalker or
    # stacker.search.torch_scoring.TorchWalker); None: the scorer's numpy path
    walker: object | None = None

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
    members = tuple(compress(range(len(counts)), counts))
    return (-rounded(score), len(members), sum(counts), members)


def plus_one(counts: Counts, m: int) -> Counts:
    """``counts`` with one more of model ``m``."""
    return counts[:m] + (counts[m] + 1,) + counts[m + 1:]


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


# ---------------------------------------------------------------- greedy, beam, GES


class Evaluator:
    """Scores candidates for several targets at once; counts how many it scored.

    The selection methods below run the selections of all targets (all rows, and each fold held
    out) in lockstep: while two targets' ensembles are equal, each candidate is scored once and
    the fast scorer's one pass gives every target's score, so nested CV costs little more than
    the selection itself. Subclasses may spread a batch over processes.
    """

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.n_evaluated = 0
        self._previous_sums: dict = {}      # the bases of the last extend_many: counts -> sum

    @property
    def n_models(self) -> int:
        return self.ctx.n_models

    def extend(self, base: Counts, candidates: list, targets: list) -> np.ndarray:
        """Scores of ``base`` plus one more of each candidate model: (len(candidates),
        len(targets))."""
        if self.ctx.walker is not None:
            return self.extend_many([(base, candidates, targets)])[0]
        self.n_evaluated += len(candidates)
        return score_extensions(self.ctx, base, candidates, targets)

    def extend_many(self, requests: list) -> list:
        """:meth:`extend` for several ``(base, candidates, targets)`` at once: a list of arrays
        (len(candidates), len(targets)). The compiled path reads each candidate model once for
        every base (the nested selections' bases differ once they diverge), and forms each base's
        sum from the previous call's bases (one addition, not one per member)."""
        walker = self.ctx.walker
        if walker is None:
            return [self.extend(base, candidates, targets) for base, candidates, targets in requests]
        self.n_evaluated += sum(len(candidates) for _, candidates, _ in requests)
        sums = {base: self._base_sum(base) for base, _, _ in requests}
        self._previous_sums = sums
        bases = [sums[base] for base, _, _ in requests]
        lists = [candidates for _, candidates, _ in requests]
        if hasattr(walker, "extensions_many"):
            parts = walker.extensions_many(bases, lists)
        else:
            parts = [walker.extensions(S, candidates) for S, candidates in zip(bases, lists)]
        return [self.ctx.scorer.outputs_from_fold_sums(part)[:, list(targets)]
                for part, (_, _, targets) in zip(parts, requests)]

    def _base_sum(self, counts: Counts) -> np.ndarray:
        """The int64 sum of ``counts``: a base of the previous call plus one member when one is a
        member away (exact, like every sum here), else from scratch."""
        previous = self._previous_sums
        if counts in previous:
            return previous[counts]
        for m, c in enumerate(counts):
            if c:
                smaller = counts[:m] + (c - 1,) + counts[m + 1:]
                if smaller in previous:
                    return previous[smaller] + self.ctx.q[m]
        return ensemble_sum(self.ctx.q, counts)

    def sets(self, ensembles: list, targets: list) -> np.ndarray:
        """Scores of whole ensembles (counts): (len(ensembles), len(targets))."""
        self.n_evaluated += len(ensembles)
        out = np.empty((len(ensembles), len(targets)))
        for i, counts in enumerate(ensembles):
            out[i] = self.ctx.scorer.evaluate_targets(ensemble_sum(self.ctx.q, counts),
                                                      sum(counts), targets)
        return out


def ensemble_sum(q: np.ndarray, counts: Counts) -> np.ndarray:
    S = np.zeros(q.shape[1:], dtype=np.int64)
    for m, c in enumerate(counts):
        if c:
            S += q[m] if c == 1 else c * q[m]
    return S


def score_extensions(ctx: Context, base: Counts, candidates, targets) -> np.ndarray:
    S = ensemble_sum(ctx.q, base)
    if ctx.walker is not None:
        sums = ctx.walker.extensions(S, candidates)
        return ctx.scorer.outputs_from_fold_sums(sums)[:, list(targets)]
    buffer = np.empty_like(S)
    n_terms = sum(base) + 1
    out = np.empty((len(candidates), len(targets)))
    for i, j in enumerate(candidates):
        np.add(S, ctx.q[j], out=buffer)
        out[i] = ctx.scorer.evaluate_targets(buffer, n_terms, targets)
    return out


def _pick(candidates: list, scores: np.ndarray) -> tuple[int, float]:
    """The best candidate (first on ties: candidates come in model order)."""
    r = np.round(np.where(np.isnan(scores), -np.inf, scores), 12)
    i = int(np.argmax(r))
    return candidates[i], float(scores[i])


def _group(states: dict, attribute: str) -> dict:
    groups: dict = {}
    for t, state in states.items():
        if state["active"]:
            groups.setdefault(state[attribute], []).append(t)
    return groups


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
                    for base, group in _group(states, "counts").items()]
        for (base, candidates, group), scores in zip(requests, ev.extend_many(requests)):
            for col, t in enumerate(group):
                state = states[t]
                choice, score = _pick(candidates, scores[:, col])
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
    runs = {}
    for t, state in states.items():
        found = list(state["path"])
        best_counts, best = min(found, key=lambda item: key(*item))
        if prune:
            while sum(best_counts) > 1:
                chosen = [m for m, c in enumerate(best_counts) if c]
                smaller = [tuple(0 if m == drop else c for m, c in enumerate(best_counts))
                           for drop in chosen]
                scores = ev.sets(smaller, [t])[:, 0]
                drop, score = _pick(list(range(len(smaller))), scores)
                if rounded(score) < rounded(best):
                    break
                best_counts, best = smaller[drop], score
                found.append((best_counts, best))
        found.sort(key=lambda item: key(*item))
        runs[t] = Run(target=t, best=best_counts, score=best, by_size=_best_by_size(found),
                      top=_unique(found))
    return runs


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
                      by_size=_best_by_size(found), top=_unique(found))
    return runs


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
        for base, group in _group(states, "counts").items():
            distinct = sum(1 for c in base if c)
            requests.append((base, [j for j in range(n) if base[j] or distinct < max_size], group))
        for (base, candidates, group), scores in zip(requests, ev.extend_many(requests)):
            for col, t in enumerate(group):
                choice, score = _pick(candidates, scores[:, col])
                counts = plus_one(base, choice)
                states[t]["counts"] = counts
                states[t]["history"].append((counts, score))
        if tick:
            tick(1)
    runs = {}
    for t, state in states.items():
        ordered = sorted(state["history"], key=lambda item: key(*item))
        runs[t] = Run(target=t, best=ordered[0][0], score=ordered[0][1],
                      by_size=_best_by_size(state["history"]), top=_unique(ordered))
    return runs


def _unique(found: list) -> list:
    seen, out = set(), []
    for counts, score in found:
        if counts not in seen:
            seen.add(counts)
            out.append((counts, score))
    return out
