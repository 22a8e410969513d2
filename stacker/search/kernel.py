"""A compiled (numba) kernel that scores many blends of quantized members in one pass over the rows.

The numpy scorer (:class:`stacker.search.scoring.RankScorer`) scores one running sum at a time:
each candidate reads and writes the whole (n_rows, n_classes) int64 sum several times (the
addition, the comparisons, the counts), so the search is bound by memory bandwidth. The kernel
turns the loops around: it takes a *walk* (a list of steps ``slot[dst] = slot[src] + q[model]``,
each optionally scored) and runs the whole walk on a block of rows before moving to the next
block. A block of every slot and every member stays in the core's cache, the addition and the
comparisons are fused, and each member's rows are read from memory once per walk, not once per
candidate.

The walk scores the exhaustive search; the extensions of greedy, beam and GES (each base plus each
candidate) go through :mod:`stacker.search.stable_rows`: its settled-row pass skips the rows a
candidate cannot re-rank, its dense pass computes every row without a test (the faster with one
base, where reading the rows is the cost); :class:`KernelWalker` times both and runs the faster.

The scores are bit-identical to the numpy scorer's: the counts are integers, and the weighted
precisions of a fold are added one after the other in the row-major order of
:meth:`RankScorer.fold_sums_from_counts`.

``numba`` is imported on first use only (``stack --help`` and ``stacker.layout`` never load it);
:func:`available` says whether it can be.
"""

from __future__ import annotations

import numpy as np

# (the search's kernels reach these through this module)
from stacker.compiled import available, build_once  # noqa: F401
from stacker.compiled import jit as _jit

# rows per block: the blocks of every slot and of 16 members together about this many bytes
# (measured on the exhaustive walk of 16 x 5,000 x 80, one thread: 4 rows 110-114 us a subset,
# 24 rows (512 KB, a core's L2) 125-140, 99 rows 127-142, 1 row 145)
CACHE_BYTES = 64 * 1024
_KERNEL = None
# the compiled add_row_precisions (a module global: the kernels that call it find it here when
# numba compiles them, and their on-disk caches stay valid)
_add_row_precisions = None


def add_row_precisions(acc, o, sums, i, p0, p1, row_cols, row_fold, row_weight):  # pragma: no cover
    """Add the weighted precision of each positive ``p`` in ``p0:p1`` of one row of sums,
    ``sums[i]`` (n_classes values), to ``acc[o, row_fold[p]]``, in order: the hits (positives at
    or above it) over the classes at or above it. Compiled by :func:`row_precisions`; the one
    per-row scoring loop of the walk kernel, :mod:`stacker.search.stable_rows` and
    :mod:`stacker.search.row_major`.

    Indexed, not handed views (``sums[i]``, ``acc[o]``): a view made for each row is a reference
    count taken and dropped, two atomic operations (measured: 44% of the exhaustive walk's time)."""
    n_classes = sums.shape[1]
    for p in range(p0, p1):
        value = sums[i, row_cols[p]]
        # the comparisons added as integers, not counted under an ``if``: LLVM vectorises this
        # form (measured: 41 against 85 ns per row of 80 classes)
        at_or_above = 0
        for c in range(n_classes):
            at_or_above += np.int64(sums[i, c] >= value)
        hits = 0
        for p2 in range(p0, p1):
            hits += np.int64(sums[i, row_cols[p2]] >= value)
        acc[o, row_fold[p]] += hits / at_or_above * row_weight[p]


def row_precisions():
    """:func:`add_row_precisions` compiled (once), for the kernels that call it."""
    global _add_row_precisions
    if _add_row_precisions is None:
        _add_row_precisions = _jit(add_row_precisions, inline="always")
    return _add_row_precisions


def _compile():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    row_precisions()            # compiled first: walk_kernel calls it

    def walk_kernel(q, starts, src, model, dst, out_row, row_start, row_cols, row_fold, row_weight,
                    n_slots, block_rows, out):  # pragma: no cover - compiled
        n_rows = q.shape[1]
        n_classes = q.shape[2]
        n_steps = src.shape[0]
        # slot s's row i at buf[s * block_rows + i] (indexed: no view made for a row)
        buf = np.empty((n_slots * block_rows, n_classes), dtype=np.int64)
        for r0 in range(0, n_rows, block_rows):
            nb = min(block_rows, n_rows - r0)
            for s in range(starts.shape[0]):
                for i in range(nb):
                    for c in range(n_classes):
                        buf[s * block_rows + i, c] = starts[s, r0 + i, c]
            for k in range(n_steps):
                d = dst[k] * block_rows
                m = model[k]
                if m >= 0:
                    a = src[k] * block_rows
                    for i in range(nb):
                        for c in range(n_classes):
                            buf[d + i, c] = buf[a + i, c] + q[m, r0 + i, c]
                o = out_row[k]
                if o < 0:
                    continue
                for i in range(nb):
                    _add_row_precisions(out, o, buf, d + i, row_start[r0 + i],
                                        row_start[r0 + i + 1], row_cols, row_fold, row_weight)
        return out

    _KERNEL = _jit(walk_kernel)
    return _KERNEL


def block_rows(n_slots: int, n_classes: int) -> int:
    """Rows per block for ``n_slots`` buffers of ``n_classes`` int64 values."""
    return int(max(4, min(512, CACHE_BYTES // (8 * max(n_classes, 1) * (n_slots + 16)))))


def run_walk(q: np.ndarray, starts: np.ndarray, steps: np.ndarray, n_out: int, scorer,
             n_slots: int) -> np.ndarray:
    """Run a walk and return the per-fold sums of its scored steps.

    q: (n_models, n_rows, n_classes) int64 (rows in ``scorer.rows`` order); starts:
    (n_starts, n_rows, n_classes) int64, the first slots. steps: (n_steps, 4) int64 rows
    ``(src, model, dst, out)``: ``slot[dst] = slot[src] + q[model]`` (model -1: no addition), then,
    when ``out >= 0``, slot ``dst`` is scored into row ``out``. A step may only read a slot written
    by an earlier step (or a start). scorer: a RankScorer. Returns (n_out, n_folds) float64, the
    input of :meth:`RankScorer.outputs_from_fold_sums`.
    """
    kernel = _compile()
    steps = np.ascontiguousarray(steps, dtype=np.int64).reshape(-1, 4)
    out = np.zeros((n_out, scorer.n_folds), dtype=np.float64)
    if n_out == 0 or q.shape[1] == 0:
        return out
    rows = block_rows(n_slots, q.shape[2])
    kernel(np.ascontiguousarray(q), np.ascontiguousarray(starts, dtype=np.int64),
           np.ascontiguousarray(steps[:, 0]), np.ascontiguousarray(steps[:, 1]),
           np.ascontiguousarray(steps[:, 2]), np.ascontiguousarray(steps[:, 3]),
           scorer.row_start, scorer.row_cols, scorer.row_fold, scorer.row_weight,
           int(n_slots), int(rows), out)
    return out


def exhaustive_steps(chunk, n_models: int, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The walk of a chunk of the exhaustive search (see :func:`methods.exhaustive_chunks`).

    Slot 0 holds zeros and slot ``d`` the sum of the current subset of ``d`` members. Each
    ``(prefix, extend)`` builds its prefix, scores it (an empty prefix is not scored) and, with
    ``extend``, walks depth-first through every subset adding models numbered above the prefix's
    last one. Returns (steps (n_steps, 4) int64, masks (n_scored,) int64 bitmasks in out order).
    """
    steps: list = []
    masks: list = []

    def visit(depth: int, last: int, mask: int) -> None:
        if depth == max_size:
            return
        for j in range(last + 1, n_models):
            child = mask | (1 << j)
            steps.append((depth, j, depth + 1, len(masks)))
            masks.append(child)
            visit(depth + 1, j, child)

    for prefix, extend in chunk:
        mask = 0
        for depth, m in enumerate(prefix):
            mask |= 1 << m
            last_step = depth == len(prefix) - 1
            steps.append((depth, m, depth + 1, len(masks) if last_step else -1))
        if prefix:
            masks.append(mask)
        if extend:
            visit(len(prefix), prefix[-1] if prefix else -1, mask)
    return (np.asarray(steps, dtype=np.int64).reshape(-1, 4), np.asarray(masks, dtype=np.int64))


class KernelWalker:
    """Scores candidates of the search with the compiled kernel (lwlrap, lrap).

    q: (n_models, n_rows, n_classes) int64; scorer: the RankScorer of the rows. Large batches of
    extensions are split between ``n_jobs`` threads (the kernel releases the GIL); every sum is
    computed the same way whatever the split, so the scores do not depend on ``n_jobs``.
    """

    name = "numba"
    min_parallel = 2_000_000        # candidates x rows x classes below which one thread is used

    def __init__(self, q: np.ndarray, scorer, n_jobs: int = 1):
        from stacker.search.stable_rows import StableRows

        self.q, self.scorer, self.n_jobs = q, scorer, max(1, int(n_jobs))
        self.stable = StableRows(q, scorer)
        self._calls = 0
        # seconds per (candidate, row) of each pass, last measured, by number of bases
        self._cost: dict = {}
        self._warm: set = set()

    def exhaustive(self, chunk, max_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(masks (n,), per-fold sums (n, n_folds)) of every subset of ``chunk``."""
        steps, masks = exhaustive_steps(chunk, self.q.shape[0], max_size)
        starts = np.zeros((1,) + self.q.shape[1:], dtype=np.int64)
        return masks, run_walk(self.q, starts, steps, len(masks), self.scorer, max_size + 1)

    # Two passes give the same scores: "dense" computes every row (the rows stream at the memory's
    # pace; with one base, where reading the rows is the cost, measured the faster at every step
    # of GES: 53 against 80-130 ms a step of 200 models x 5,000 rows x 80 classes), "stable" skips
    # what a candidate cannot re-rank (the faster with several bases, where the computing is the
    # cost: 6 bases 280 against 350 ms). One base runs dense; with several the walker times both
    # on its first calls for each number of bases, runs the faster one, and every PROBE_EVERY
    # calls the other one again (the choice changes only the time).
    PASSES = ("dense", "stable")
    PROBE_EVERY = 5

    def choose_pass(self, n_bases: int) -> str:
        """The pass of the next call with ``n_bases`` bases."""
        if n_bases == 1:
            return "dense"
        costs = [self._cost.get((name, n_bases)) for name in self.PASSES]
        for name, cost in zip(self.PASSES, costs):
            if cost is None:
                return name
        ranked = sorted(zip(costs, self.PASSES))
        return ranked[1][1] if self._calls % self.PROBE_EVERY == 0 else ranked[0][1]

    def extensions_many(self, base_sums: list, candidate_lists: list) -> list:
        """:meth:`extensions` of several bases at once, each member read once for all bases,
        by the pass measured faster (the same scores either way)."""
        import time

        self._calls += 1
        n_bases = len(base_sums)
        name = self.choose_pass(n_bases)
        if name not in self._warm:         # its first call loads (or compiles) its kernels:
            warm_up(name)                  # not part of what it costs
            self._warm.add(name)
        started = time.perf_counter()
        out = extensions_many(self, base_sums, candidate_lists, name)
        work = sum(len(c) for c in candidate_lists) * self.q.shape[1]
        if work:
            self._cost[name, n_bases] = (time.perf_counter() - started) / work
        return out

    def extensions(self, base_sum: np.ndarray, candidates) -> np.ndarray:
        """Per-fold sums (len(candidates), n_folds) of ``base_sum + q[j]`` for each candidate j."""
        return extensions_many(self, [base_sum], [list(candidates)])[0]


_PRELOADING = None           # the thread of preload(), once started


def preload(row_major: bool = False) -> None:
    """Import numba and load the extension kernels on a background thread, so that their fixed
    cost (about 0.3 s to import numba and 0.3 s for its first call; measured) overlaps the pool's
    reading and quantizing instead of adding to them. Once per process; nothing when numba is not
    installed; a failure there is met again, and reported, where the kernels are used."""
    global _PRELOADING
    import importlib.util
    import threading

    if _PRELOADING is not None or importlib.util.find_spec("numba") is None:
        return

    def load() -> None:
        try:
            if row_major:           # greedy, beam, GES: the row-major pool's kernels
                from stacker.search import row_major as rows

                rows.warm_up()
            else:
                warm_up("dense")
            from stacker.search import member_sums

            member_sums.warm_up()   # what the reported scores are computed with
            from stacker import metrics

            metrics.warm_up()       # and scored with
        except Exception:      # noqa: BLE001 - the search meets it again and says what it is
            pass

    _PRELOADING = threading.Thread(target=load, name="stack-kernels", daemon=True)
    _PRELOADING.start()


def warm_up(pass_name: str) -> None:
    """Run the kernels of ``pass_name`` once on a toy pool: their first call loads them from
    numba's on-disk cache (or compiles them), which then costs nothing in a timed call."""
    from stacker.search.scoring import make_scorer

    y = np.array([[1, 0], [0, 1]])
    scorer = make_scorer(y, np.array([0, 1]), [0, 1], "lwlrap", blend="mean", power=1.0)
    q = np.array([[[3, 1], [0, 2]], [[1, 1], [2, 0]]], dtype=np.int64)
    walker = KernelWalker(q, scorer)
    extensions_many(walker, [np.zeros((2, 2), dtype=np.int64)], [[0, 1]], pass_name)


def extensions_many(walker: KernelWalker, base_sums: list, candidate_lists: list,
                    pass_name: str = "stable") -> list:
    """Per-fold sums of ``base_sums[g] + q[j]`` for every j of ``candidate_lists[g]``: a list of
    arrays of shape (len(candidate_lists[g]), n_folds). One pass over the pool
    (:mod:`stacker.search.stable_rows`): model-major, each model's rows read once for every base;
    ``pass_name`` "stable" reads only where its addition can change a ranking, "dense" every row."""
    n_bases = len(base_sums)
    sizes = [len(c) for c in candidate_lists]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offsets[-1])
    out = np.zeros((total, walker.scorer.n_folds))
    if total == 0:
        return [out[offsets[g]:offsets[g + 1]] for g in range(n_bases)]
    starts = np.ascontiguousarray(np.stack([np.asarray(s, dtype=np.int64) for s in base_sums]))
    stable = walker.stable
    n_jobs = walker.n_jobs if total * walker.q[0].size >= walker.min_parallel else 1
    if pass_name not in KernelWalker.PASSES:
        raise ValueError(f"unknown pass {pass_name!r}: {', '.join(KernelWalker.PASSES)}")
    state = stable.bases(starts, n_jobs) if pass_name == "stable" else None

    def score(steps, n_out):
        return stable.run(starts, state, steps, n_out)
    # (base, model, out) of every candidate, model-major
    base = np.repeat(np.arange(n_bases, dtype=np.int64), sizes)
    model = np.concatenate([np.asarray(c, dtype=np.int64) for c in candidate_lists])
    order = np.lexsort((base, model))
    steps = np.column_stack([base[order], model[order], order])
    if n_jobs <= 1:
        return _split(score(steps, total), offsets)
    # whole models to each thread: every output row is summed by one thread, in row order
    cuts = np.searchsorted(steps[:, 1], np.quantile(steps[:, 1], np.linspace(0, 1, n_jobs + 1)[1:-1]),
                           side="right")
    parts = [part for part in np.split(steps, cuts) if len(part)]
    from concurrent.futures import ThreadPoolExecutor

    def run(part):
        local = np.column_stack([part[:, :2], np.arange(len(part))])
        return part[:, 2], score(local, len(part))

    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        for rows, sums in pool.map(run, parts):
            out[rows] = sums
    return _split(out, offsets)


def _split(out: np.ndarray, offsets: np.ndarray) -> list:
    return [out[offsets[g]:offsets[g + 1]] for g in range(len(offsets) - 1)]
