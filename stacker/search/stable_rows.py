"""The candidates of one step (greedy, beam, GES) scored in one pass, skipping the rows whose ranking
the candidate cannot change.

A step scores ``S + q[j]`` for each base ``S`` (one per distinct selection: all rows, each fold held
out) and each candidate model ``j``. lwlrap and lrap only see, at each positive (row r, class c),
which classes score at or above it. Adding ``q[j]`` cannot change that for a class ``k`` of the row
when the base's margin is wider than anything ``q[j]`` can move them apart:

* ``k`` below the positive (``S[r,k] < S[r,c]``) stays below when
  ``up[j,p] = max_k q[j,r,k] - q[j,r,c]`` is less than ``gap_below[p]``, the distance from the
  positive down to the next lower class of the base;
* ``k`` at or above (``S[r,k] >= S[r,c]``) stays there when
  ``down[j,p] = q[j,r,c] - min_k q[j,r,k]`` is at most ``gap_above[p]``, the distance up to the
  next class at or above.

When every positive of a row passes both tests, the row's precisions are the base's, so the pass
adds the base's values and never reads ``q[j]``'s row. ``up`` and ``down`` depend on the model
only (computed once per pool, two int64 per positive and model); the gaps and the base's
precisions once per base and step. Once the ensemble holds a few members, most rows of a good
pool are settled (the positive on top with a margin no single model overturns), so most of each
candidate's rows are skipped: less memory read and fewer comparisons.

Skipping rows costs a test per row and breaks the memory's streaming: with one base (GES without
nesting), where reading ``q[j]``'s rows, not scoring them, is the cost, the *dense* pass is the
faster (every row computed, no test, no base state; measured 53 against 80-130 ms a step on 200
models x 5,000 rows x 80 classes); with several bases (nested selections) the computing dominates
and the settled-row pass wins (6 bases: about 280 against 350 ms). The walker
(:class:`stacker.search.kernel.KernelWalker`) times both and runs the faster.

Everything is integer arithmetic on the exact fixed-point sums and the precisions are added per
fold in the row-major order of :meth:`RankScorer.fold_sums_from_counts` (a skipped row adds the
very value the full computation gives), so the scores are bit-identical to the numpy scorer's.
"""

from __future__ import annotations

import threading

import numpy as np

import stacker.search.kernel as kernel

_KERNELS: dict = {}
_add_row_precisions = None       # kernel.add_row_precisions compiled (set by _build)
_LOCK = threading.Lock()


def _compile() -> dict:
    return kernel.build_once(_KERNELS, _LOCK, _build)


def _build() -> dict:
    global _add_row_precisions
    _add_row_precisions = kernel.row_precisions()   # extend calls it: compiled first

    def margins(q, row_start, row_cols, up, down):  # pragma: no cover - compiled
        """up[m, p], down[m, p] of every model and positive."""
        n_models, n_rows, n_classes = q.shape
        for m in range(n_models):
            for r in range(n_rows):
                row = q[m, r]
                hi = row[0]
                lo = row[0]
                for c in range(1, n_classes):
                    v = row[c]
                    if v > hi:
                        hi = v
                    if v < lo:
                        lo = v
                for p in range(row_start[r], row_start[r + 1]):
                    v = row[row_cols[p]]
                    up[m, p] = hi - v
                    down[m, p] = v - lo

    def base_state(S, row_start, row_cols, row_weight, below, above, value):  # pragma: no cover
        """gap_below, gap_above and the weighted precision of every positive of base ``S``."""
        big = np.iinfo(np.int64).max
        n_rows, n_classes = S.shape
        for r in range(n_rows):
            row = S[r]
            p0 = row_start[r]
            p1 = row_start[r + 1]
            for p in range(p0, p1):
                c = row_cols[p]
                v = row[c]
                lower = big
                upper = big
                at_or_above = 0
                for k in range(n_classes):
                    d = row[k] - v
                    if d >= 0:
                        at_or_above += 1
                        if k != c and d < upper:
                            upper = d
                    elif -d < lower:
                        lower = -d
                hits = 0
                for p2 in range(p0, p1):
                    if row[row_cols[p2]] >= v:
                        hits += 1
                below[p] = lower
                above[p] = upper
                value[p] = hits / at_or_above * row_weight[p]

    def extend(q, starts, base, model, out_row, row_start, row_cols, row_fold, row_weight,
               up, down, below, above, value, test_rows, block_rows, out,
               settled_rows):  # pragma: no cover - compiled
        """out[out_row[k], fold] += the precisions of ``starts[base[k]] + q[model[k]]``. With
        ``test_rows``, a row the candidate's addition cannot re-rank adds the base's precisions
        (settled_rows[0] += the rows skipped); without, every row is computed (the dense pass: no
        test, no branch, the rows stream through at the memory's pace; up ... value unused)."""
        n_rows = q.shape[1]
        n_classes = q.shape[2]
        # each step's per-fold sums are held in ``acc`` over a block: the same additions, in
        # the same order, as adding into ``out`` (no store-to-load chain through memory)
        acc = np.empty((1, out.shape[1]))              # (indexed: no view made for a row)
        row = np.empty((1, n_classes), dtype=np.int64)  # an unsettled row's sums
        for r0 in range(0, n_rows, block_rows):
            r1 = min(n_rows, r0 + block_rows)
            for k in range(base.shape[0]):
                g = base[k]
                m = model[k]
                o = out_row[k]
                for f in range(out.shape[1]):
                    acc[0, f] = out[o, f]
                for r in range(r0, r1):
                    p0 = row_start[r]
                    p1 = row_start[r + 1]
                    if test_rows:
                        settled = True
                        for p in range(p0, p1):
                            if up[m, p] >= below[g, p] or down[m, p] > above[g, p]:
                                settled = False
                        if settled:
                            settled_rows[0] += 1
                            for p in range(p0, p1):
                                acc[0, row_fold[p]] += value[g, p]
                            continue
                    for c in range(n_classes):
                        row[0, c] = starts[g, r, c] + q[m, r, c]
                    _add_row_precisions(acc, 0, row, 0, p0, p1, row_cols, row_fold, row_weight)
                for f in range(out.shape[1]):
                    out[o, f] = acc[0, f]
        return out

    return {"margins": kernel._jit(margins), "base_state": kernel._jit(base_state),
            "extend": kernel._jit(extend)}


# bytes of one block of every base and of the model being added: well inside a core's L2 cache
# (measured: 16 rows of 6 bases x 100 classes run 1.5x faster than 128)
BLOCK_BYTES = 96 * 1024


def block_rows(n_bases: int, n_classes: int) -> int:
    """Rows per block: every base's block stays in cache while the models stream past it."""
    return int(max(4, min(512, BLOCK_BYTES // (8 * max(n_classes, 1) * (n_bases + 1)))))


class StableRows:
    """``up`` and ``down`` of a pool (computed on first use), and the scoring of a step."""

    def __init__(self, q: np.ndarray, scorer):
        self.q, self.scorer = q, scorer
        self._margins = None
        self.settled = 0         # (candidate, row) pairs skipped as settled, for diagnostics

    def margins(self) -> tuple[np.ndarray, np.ndarray]:
        if self._margins is None:
            n_pos = len(self.scorer.row_cols)
            up = np.empty((self.q.shape[0], n_pos), dtype=np.int64)
            down = np.empty_like(up)
            _compile()["margins"](self.q, self.scorer.row_start, self.scorer.row_cols, up, down)
            self._margins = up, down
        return self._margins

    def bases(self, starts: np.ndarray, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
        """(gap_below, gap_above, weighted precisions), each (n_bases, n_positives); ``n_jobs``
        threads share the bases."""
        s = self.scorer
        n_pos = len(s.row_cols)
        below = np.empty((len(starts), n_pos), dtype=np.int64)
        above = np.empty_like(below)
        value = np.empty((len(starts), n_pos), dtype=np.float64)
        base_state = _compile()["base_state"]

        def fill(g: int) -> None:
            base_state(starts[g], s.row_start, s.row_cols, s.row_weight, below[g], above[g],
                       value[g])

        n_jobs = max(1, min(int(n_jobs), len(starts)))
        if n_jobs == 1:
            for g in range(len(starts)):
                fill(g)
        else:                   # the kernel releases the GIL: one base per thread at a time
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                list(pool.map(fill, range(len(starts))))
        return below, above, value

    def run(self, starts: np.ndarray, state, steps: np.ndarray, n_out: int) -> np.ndarray:
        """Per-fold sums (n_out, n_folds) of the steps ``(base, model, out)``, (n_steps, 3).

        state: :meth:`bases` of ``starts``, and the settled rows are skipped; or None, the dense
        pass: every row computed, no base state, and with one base no blocks (the model's rows
        are read once whatever the order), the faster pass when reading the rows is the cost."""
        s = self.scorer
        out = np.zeros((n_out, s.n_folds), dtype=np.float64)
        if n_out == 0 or self.q.shape[1] == 0:
            return out
        steps = np.ascontiguousarray(steps, dtype=np.int64).reshape(-1, 3)
        settled = np.zeros(1, dtype=np.int64)
        rows = block_rows(len(starts), self.q.shape[2])
        if state is None:
            unused = np.zeros((1, 1), dtype=np.int64)
            up = down = below = above = unused
            value = np.zeros((1, 1))
            if len(starts) == 1:
                rows = self.q.shape[1]
        else:
            up, down = self.margins()
            below, above, value = state
        _compile()["extend"](self.q, starts, np.ascontiguousarray(steps[:, 0]),
                             np.ascontiguousarray(steps[:, 1]), np.ascontiguousarray(steps[:, 2]),
                             s.row_start, s.row_cols, s.row_fold, s.row_weight, up, down, below,
                             above, value, state is not None, int(rows), out, settled)
        self.settled += int(settled[0])     # (threads: a lost update only misses a count)
        return out
