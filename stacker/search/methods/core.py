"""The core of the subset methods: integer-count ensembles of quantized members.

Each method works on a :class:`Context` (the int64 transforms ``q`` of shape
(n_models, n_rows, n_classes) of :mod:`stacker.search.scoring`, a scorer, the fast walker) for
``targets``: which entries of the scorer's output they maximise (0 = all rows; 1 + i = every fold
but fold i, for nested CV). A candidate ensemble is a tuple of member counts, one per model (0/1
for subsets, any count for GES); :class:`CountBlends` turns counts into the blend they stand for.

Ties between candidates are broken the same way everywhere (and by the brute-force oracle in the
tests): scores rounded to 12 decimals, then fewer distinct members, then fewer picks, then the
lexicographically smallest member indices.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from itertools import compress
from typing import Callable

import numpy as np

from stacker.blend import check_weights, finalize, transform
from stacker.search.backends import make_walker
from stacker.search.config import ROW_MAJOR_METHODS
from stacker.search.member_sums import weighted_sum
from stacker.search.problem import Problem, check_probabilities
from stacker.search.result import Selection
from stacker.search.row_major import parallel_calls
from stacker.search.scoring import (
    Scorer,
    make_scorer,
    quantize,
    quantize_model,
    quantize_row,
    quantize_scale,
    transform_bound,
)
from stacker.search.spare import SpareMemory

Counts = tuple  # tuple[int, ...] of length n_models
Tick = Callable[[int], None]


@dataclass
class Context:
    q: np.ndarray          # (n_models, n_rows, n_classes) int64
    scorer: Scorer
    # a fast path for the RankScorer (stacker.search.kernel.KernelWalker or
    # stacker.search.torch_scoring.TorchWalker); None: the scorer's numpy path
    walker: object | None = None
    backend: str = ""      # what scores the candidates (recorded in the result's params)
    n_jobs: int = 1        # threads of the walker, or processes of the numpy scorer

    @property
    def n_models(self) -> int:
        return self.q.shape[0]

    def member(self, m: int) -> np.ndarray:
        """Model ``m``'s quantized (n_rows, n_classes) values, contiguous (the row-major pool's
        walker keeps copies of the last few; ``q[m]`` is a strided view there)."""
        member = getattr(self.walker, "member", None)
        return self.q[m] if member is None else member(m)

    def spare_memory(self) -> SpareMemory:
        """The memory the walker touched (member copies, bases), handed over once the search is
        done, for the result's arrays (an empty SpareMemory for walkers that keep none)."""
        hand_over = getattr(self.walker, "hand_over", None)
        return SpareMemory(hand_over() if hand_over is not None else ())


SOURCE_BLOCK_BYTES = 1024 * 1024      # float64 scratch of a member read from the pool


def subset_context(problem: Problem, max_terms: int) -> Context:
    """The quantized pool on the scorer's rows (sums of up to ``max_terms`` members cannot
    overflow) and the walker of the config's device; laid out row-major on the CPU for the
    config's method when it is one of ROW_MAJOR_METHODS (:mod:`stacker.search.row_major`)."""
    config = problem.config
    scorer = make_scorer(problem.y, problem.fold, problem.fold_numbers, config.metric,
                         blend=config.blend, power=config.power)
    n_jobs = max(1, min(int(config.n_jobs), os.cpu_count() or 1))
    layout = ("rows" if config.method in ROW_MAJOR_METHODS and row_major_likely(config)
              else "models")
    check = not problem.range_checked
    if check:       # the rows the quantizer does not read (no positive label) checked here
        unread = np.setdiff1d(np.arange(len(problem.oof)), scorer.rows)
        check_probabilities(problem.oof[unread])
    n_models, n_classes = problem.oof.shape[1], problem.oof.shape[2]
    placed = None
    if layout == "rows":        # the walker's bounds computed as the pool is put in place
        from stacker.search.row_major import Placer

        # the pool as int32 high parts, the values of a row where they decide (exact_row)
        largest = transform_bound(config.blend, n_classes, config.eps) * quantize_scale(
            config.blend, n_classes, eps=config.eps, max_terms=max_terms)
        placed = Placer(scorer, n_models, n_classes, largest=largest)
    q, scale = quantize(problem.oof, config.blend, max_terms=max_terms, power=config.power,
                        eps=config.eps, rows=scorer.rows, n_jobs=n_jobs, layout=layout,
                        check=check, place=placed)
    scorer.scale = scale

    step = max(1, SOURCE_BLOCK_BYTES // (8 * max(n_classes, 1)))
    blocks = [(a, min(a + step, len(scorer.rows))) for a in range(0, len(scorer.rows), step)]
    n_source = max(1, min(n_jobs, len(blocks)))
    buffers = [np.empty((min(step, len(scorer.rows)), n_classes)) for _ in range(n_source)]

    def source(m: int, out: np.ndarray) -> None:
        """out[...] = q[m], from the pool (checked above); called by the search's own thread
        only, the blocks of rows shared by ``n_jobs`` threads (numpy releases the GIL; the
        fresh pages of ``out`` are touched on both cores: 115 ms against 40-60 for a 40 MB
        member on bench_scale's pool), each with its scratch buffer, reused."""
        def fill(i: int) -> None:
            for a, b in blocks[i::n_source]:
                quantize_model(problem.oof, m, config.blend, scale=scale, power=config.power,
                               eps=config.eps, rows=scorer.rows[a:b], out=out[a:b],
                               buffer=buffers[i][:b - a])

        parallel_calls(fill, range(n_source))

    def exact_row(r: int, out: np.ndarray) -> None:
        """out[c, m] = the values of the pool's row r (each thread its own ``out``)."""
        quantize_row(problem.oof, int(scorer.rows[r]), config.blend, scale=scale,
                     power=config.power, eps=config.eps, out=out)

    walker, backend = make_walker(q, scorer, config.device, n_jobs, placed=placed,
                                  source=source if placed is not None else None,
                                  exact_row=exact_row if placed is not None else None)
    if hasattr(walker, "max_bases"):
        walker.max_bases = len(problem.targets)
    # the context holds the only reference to q: the worker pool may swap it for its
    # memory-mapped twin
    return Context(q=q, scorer=scorer, walker=walker, backend=backend, n_jobs=n_jobs)


def row_major_likely(config) -> bool:
    """True when the walker will be the compiled row-major one (lwlrap/lrap, CPU, numba)."""
    from stacker.search import kernel
    from stacker.search.backends import compiled_path_likely

    return compiled_path_likely(config.metric, config.device) and kernel.available()


class CountBlends:
    """:func:`stacker.blend.blend_arrays` of count ensembles (integer counts as weights: the
    division by their sum comes last, which keeps exact ties), the same operations in the same
    order, with each member's transform computed once for the whole result."""

    predicts_into = True        # predict(..., out=buffer)
    row_wise = True             # predict(choice, rows) is predict(choice)[rows], bit for bit

    def __init__(self, problem: Problem, spare: SpareMemory | None = None):
        self.oof, self.names = problem.oof, problem.names
        self.config = problem.config
        self._transforms: dict = {}
        # where the members' transforms are made (memory the search touched), when given
        self._spare = SpareMemory() if spare is None else spare

    def _transform(self, m: int) -> np.ndarray:
        """Model ``m``'s transform, made in the spare memory when a piece is left."""
        config = self.config
        out = self._spare.take((self.oof.shape[0], self.oof.shape[2]))
        return transform(self.oof[:, m], config.blend, power=config.power, eps=config.eps,
                         out=out)

    def warm(self, choices: list, n_jobs: int = 2) -> None:
        """Compute the transforms of every member of ``choices`` now (before threads share
        them), the members shared by ``n_jobs`` threads (numpy releases the GIL; each transform
        is computed as it is alone)."""
        todo = list(dict.fromkeys(m for counts in choices for m, c in enumerate(counts)
                                  if c and m not in self._transforms))
        done: dict = {}

        def fill(part: list) -> None:
            for m in part:
                done[m] = self._transform(m)

        n_jobs = max(1, min(int(n_jobs), len(todo)))
        parallel_calls(fill, [todo[i::n_jobs] for i in range(n_jobs)])
        self._transforms.update(done)

    def _transform_members(self, idx: list) -> None:
        for m in idx:
            if m not in self._transforms:
                self._transforms[m] = self._transform(m)

    def predict(self, counts: Counts, rows=slice(None), out: np.ndarray | None = None
                ) -> np.ndarray:
        """The blend of ``counts`` on ``rows`` (into ``out``, float64 of its shape, when given:
        a caller that scores it at once reuses one buffer instead of new memory each time)."""
        config = self.config
        idx = [m for m, c in enumerate(counts) if c]
        self._transform_members(idx)
        w = check_weights([counts[m] for m in idx], len(idx))
        # blend_arrays' np.sum(t * w, axis=members) adds the weighted members one after the other
        # in member order (the reduced axis is not the contiguous one): the same additions here,
        # without stacking the members into one (rows, members, classes) copy
        # (:func:`stacker.search.member_sums.weighted_sum`: those operations, in one pass)
        # (the division by the weights' sum fused with the last additions; finalize in place)
        total = weighted_sum([self._transforms[m] for m in idx], w, rows, out=out,
                             divisor=w.sum())
        return finalize(total, config.blend, power=config.power, in_place=True)

    def describe(self, counts: Counts) -> tuple[tuple[str, ...], dict]:
        idx = [m for m, c in enumerate(counts) if c]
        total = sum(counts)
        return tuple(self.names[m] for m in idx), {self.names[m]: counts[m] / total for m in idx}

    def combiner(self, counts: Counts) -> dict:
        return {}


def count_selection(problem: Problem, ctx: Context, runs: dict, n_evaluated: int,
                    method: str) -> Selection:
    """The Selection of a subset method (or GES) from its {target: Run}; the search is done,
    and the memory its walker touched is the result's to make arrays in."""
    spare = ctx.spare_memory()
    return Selection(choices={t: run.best for t, run in runs.items()},
                     blends=CountBlends(problem, spare=spare), n_evaluated=n_evaluated,
                     method=method, params={"backend": ctx.backend}, ranked=runs, spare=spare)


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


def best_by_size(found: list) -> dict:
    by_size: dict = {}
    for counts, score in found:
        size = sum(1 for c in counts if c)
        if size not in by_size or key(counts, score) < key(*by_size[size]):
            by_size[size] = (counts, score)
    return dict(sorted(by_size.items()))


# ---------------------------------------------------------------- scoring candidates


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
        self._previous_stack = None         # (row-major walker) the last call's stacked bases
        self._formed = None                 # (counts, sum) last formed in the walker's scratch

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
        lists = [candidates for _, candidates, _ in requests]
        self._formed = None             # (the walker's scratch may be a buffer of bases)
        if hasattr(walker, "bases_buffer"):
            # the row-major walker: the sums are formed in its buffer (not the one holding the
            # previous call's bases), no copy, no fresh memory; a base one member (or none) from
            # a previous one is formed by the kernel itself, row by row as it reads them
            stacked = walker.bases_buffer(len(requests))
            position = {base: g for g, base in enumerate(self._previous_sums)}   # in the stack
            plan = [None if near is None else (position[near[0]], near[1])
                    for near in (self._one_away(base) for base, _, _ in requests)]
            added = {step[1] for step in plan if step is not None and step[1] >= 0}
            fused = (self._previous_stack is not None and any(plan)
                     and walker.fuses(len(requests), len(added)))
            for g, ((base, _, _), step) in enumerate(zip(requests, plan)):
                if not fused or step is None:
                    self._base_sum(base, out=stacked[g])
            formed_from = (self._previous_stack, plan) if fused else None
            # a selection with a fold held out reads nothing of that fold: its sums are skipped
            read = [self.ctx.scorer.folds_read(targets) for _, _, targets in requests]
            parts = walker.extensions_stacked(stacked, lists, formed_from,
                                              empty=[not any(base) for base, _, _ in requests],
                                              read=read)
            self._previous_sums = {base: stacked[g] for g, (base, _, _) in enumerate(requests)}
            self._previous_stack = stacked
            return [self.ctx.scorer.outputs_from_fold_sums(part)[:, list(targets)]
                    for part, (_, _, targets) in zip(parts, requests)]
        sums = {base: self._base_sum(base) for base, _, _ in requests}
        self._previous_sums = sums
        bases = [sums[base] for base, _, _ in requests]
        if hasattr(walker, "extensions_many"):
            parts = walker.extensions_many(bases, lists)
        else:
            parts = [walker.extensions(S, candidates) for S, candidates in zip(bases, lists)]
        return [self.ctx.scorer.outputs_from_fold_sums(part)[:, list(targets)]
                for part, (_, _, targets) in zip(parts, requests)]

    def _one_away(self, counts: Counts):
        """(a base of the previous call, the member ``counts`` adds to it: -1 when it is that
        base), or None when no base is a member away."""
        previous = self._previous_sums
        if counts in previous:
            return counts, -1
        for m, c in enumerate(counts):
            if c:
                smaller = counts[:m] + (c - 1,) + counts[m + 1:]
                if smaller in previous:
                    return smaller, m
        return None

    def _base_sum(self, counts: Counts, out: np.ndarray | None = None) -> np.ndarray:
        """The int64 sum of ``counts`` (into ``out`` when given): a base of the previous call
        plus one member when one is a member away (exact, like every sum here), else from
        scratch."""
        near = self._one_away(counts)
        if near is not None:
            base, m = near
            if m >= 0:
                member = self.ctx.member(m)
                if out is None:
                    return self._previous_sums[base] + member
                add_rows(self._previous_sums[base], member, out, self.ctx.n_jobs)
                return out
            if out is None:
                return self._previous_sums[base]
            np.copyto(out, self._previous_sums[base])
            return out
        total = ensemble_sum(self.ctx.q, counts, self.ctx.member)
        if out is None:
            return total
        np.copyto(out, total)
        return out

    def sets(self, ensembles: list, targets: list) -> np.ndarray:
        """Scores of whole ensembles (counts): (len(ensembles), len(targets))."""
        self.n_evaluated += len(ensembles)
        out = np.empty((len(ensembles), len(targets)))
        score_sums = getattr(self.ctx.walker, "score_sums", None)
        anchor = None          # the first sum formed from scratch: the others from it, when near
        for i, counts in enumerate(ensembles):
            S = near_sum(counts, anchor, self.ctx.member) if anchor else None
            if S is None:
                S = ensemble_sum(self.ctx.q, counts, self.ctx.member)
                anchor = anchor or (counts, S)
            if score_sums is not None:          # the compiled pass: the numpy scorer's values
                scores = self.ctx.scorer.outputs_from_fold_sums(score_sums(S)[None])[0]
                out[i] = scores[list(targets)]
                continue
            out[i] = self.ctx.scorer.evaluate_targets(S, sum(counts), targets)
        return out

    def sets_without(self, counts: Counts, drops: list, targets: list) -> np.ndarray:
        """:meth:`sets` of ``counts`` without each member of ``drops`` (all of its picks):
        (len(drops), len(targets)); the row-major walker scores them in one pass."""
        smaller = [tuple(0 if m == drop else c for m, c in enumerate(counts)) for drop in drops]
        score_without = getattr(self.ctx.walker, "score_without", None)
        if score_without is None or not drops:
            return self.sets(smaller, targets)
        self.n_evaluated += len(drops)
        S = self._formed_sum(counts)
        sums = score_without(S, list(drops), [counts[m] for m in drops])
        return self.ctx.scorer.outputs_from_fold_sums(sums)[:, list(targets)]

    def _formed_sum(self, counts: Counts) -> np.ndarray:
        """The int64 sum of ``counts`` in the walker's scratch array (memory already touched,
        no new pages): formed from the nearest sum known (a base of the last call, or the last
        sum formed here: greedy's pruning drops one member at a time) when that takes fewer
        additions than starting from zero. Integer additions: exact in any order."""
        known = list(self._previous_sums.items())
        if self._formed is not None:
            known.append(self._formed)
        nearest = min(known, key=lambda item: picks_apart(counts, item[0]), default=None)
        if nearest is None or picks_apart(counts, nearest[0]) >= sum(counts):
            S = ensemble_sum(self.ctx.q, counts, self.ctx.member)
        else:
            S = near_sum(counts, nearest, self.ctx.member, limit=sum(counts) - 1,
                         out=self.ctx.walker.scratch())
        self._formed = (counts, S)
        return S


def picks_apart(a: Counts, b: Counts) -> int:
    """How many picks (additions or removals of one member) turn ``b`` into ``a``."""
    return sum(abs(x - y) for x, y in zip(a, b))


NEAR_MEMBERS = 2          # a sum is formed from a known one when they differ by this many picks


def near_sum(counts: Counts, known: tuple, member, *, limit: int = NEAR_MEMBERS,
             out: np.ndarray | None = None) -> np.ndarray | None:
    """The sum of ``counts`` from ``known`` = (its counts, its sum) when they differ by at most
    ``limit`` picks (greedy's pruning: the best set without one member, then another), else
    None; formed in ``out`` when given (which may be ``known``'s sum itself), else in a copy.
    Integer additions: exact, the same sum whatever the order."""
    known_counts, known_sum = known
    if picks_apart(counts, known_counts) > limit:
        return None
    changes = [(m, c - k) for m, (c, k) in enumerate(zip(counts, known_counts)) if c != k]
    if out is None:
        S = known_sum.copy()
    else:
        S = out
        if S is not known_sum:
            np.copyto(S, known_sum)
    for m, d in changes:
        if d > 0:
            S += member(m) if d == 1 else d * member(m)
        else:
            S -= member(m) if d == -1 else -d * member(m)
    return S


ADD_ROWS_MIN_VALUES = 1_000_000       # values below which add_rows uses one thread


def add_rows(a: np.ndarray, b: np.ndarray, out: np.ndarray, n_jobs: int) -> None:
    """``np.add(a, b, out=out)`` of (n_rows, ...) arrays, the rows split between ``n_jobs``
    threads (the same integer additions; the fresh pages of ``out`` touched on every core)."""
    n_jobs = max(1, min(int(n_jobs), len(out), out.size // ADD_ROWS_MIN_VALUES))
    edges = np.linspace(0, len(out), n_jobs + 1).round().astype(int)
    parallel_calls(lambda i: np.add(a[edges[i]:edges[i + 1]], b[edges[i]:edges[i + 1]],
                                    out=out[edges[i]:edges[i + 1]]), range(n_jobs))


def ensemble_sum(q: np.ndarray, counts: Counts, member=None) -> np.ndarray:
    """The int64 sum of ``counts`` of the members of ``q``; ``member(m)``: q[m] (or a
    contiguous copy of it)."""
    member = (lambda m: q[m]) if member is None else member
    S = np.zeros(q.shape[1:], dtype=np.int64)
    for m, c in enumerate(counts):
        if c:
            S += member(m) if c == 1 else c * member(m)
    return S


def score_extensions(ctx: Context, base: Counts, candidates, targets) -> np.ndarray:
    S = ensemble_sum(ctx.q, base, ctx.member)
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


def pick(candidates: list, scores: np.ndarray) -> tuple[int, float]:
    """The best candidate (first on ties: candidates come in model order)."""
    r = np.round(np.where(np.isnan(scores), -np.inf, scores), 12)
    i = int(np.argmax(r))
    return candidates[i], float(scores[i])


def group_states(states: dict, attribute: str) -> dict:
    groups: dict = {}
    for t, state in states.items():
        if state["active"]:
            groups.setdefault(state[attribute], []).append(t)
    return groups


def unique(found: list) -> list:
    seen, out = set(), []
    for counts, score in found:
        if counts not in seen:
            seen.add(counts)
            out.append((counts, score))
    return out
