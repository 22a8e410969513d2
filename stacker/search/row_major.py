"""The extensions of greedy, beam and GES scored on the quantized pool laid out row-major:
``qr[r, c, m]``, every model's value of one (row, class) side by side.

A step scores ``S + q[m]`` for each base ``S`` (one per distinct selection) and every candidate
``m``. At a positive ``p`` (row r, class c_p) a class ``c`` counts as scored at or above it when
``S[r,c] + q[m,r,c] >= S[r,c_p] + q[m,r,c_p]``, that is when ``q[m,r,c] - q[m,r,c_p] >= need``
with ``need = S[r,c_p] - S[r,c]``, a number of the base alone. :func:`bounds` keeps, for every
positive and class, the least and the greatest of ``q[m,r,c] - q[m,r,c_p]`` over all models: a
class with ``need`` at or below the least counts for every candidate, one above the greatest for
none, and only the classes in between (*contested*) are compared model by model. Once the
ensemble holds a few members, one model moves the sum little and few classes are contested (on
bench_scale's pool: a third of the classes at the first step, 1 to 2 in 100 after 30 steps), so
a step reads the base's row and a few contiguous runs of ``qr``, not every model's row.

With ``qr`` row-major the comparisons of one class run over the models in contiguous memory (the
compiler vectorises them), every base reads the same block of the row, and the precisions of all
candidates are added to ``acc[base, fold, model]`` side by side. Every precision is added in the
row-major order of :meth:`stacker.search.scoring.RankScorer.fold_sums_from_counts`, so the scores
are bit-identical to the other backends'. Threads share the (base, fold) pairs: each pair's
rows are one thread's, so each candidate's sums of a fold stay in one thread, in row order (with
fewer pairs than threads, the models are shared instead).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

import stacker.search.kernel as kernel
from stacker.search.pages import small_pages_empty

_KERNELS: dict = {}
_LOCK = threading.Lock()
# contiguous (n_rows, n_classes) copies of members kept for the bases' sums, in bytes
MEMBER_CACHE_BYTES = 512 * 1024 * 1024
# what a thread does with a (base, fold) pair (``take[g, fold]`` of the extend kernel): nothing
# (another thread's pair), form the base's rows of the fold only (no output reads its sums: a
# selection with that fold held out), or form them and score the candidates on them
OTHERS, FORMED, SCORED = 0, 1, 2
# the cost of a pair formed only, against one scored, in the share of pairs between threads
FORMED_COST = 0.05


def _compile() -> dict:
    return kernel.build_once(_KERNELS, _LOCK, _build)


_add_row_precisions = None       # kernel.add_row_precisions compiled (set by _build)
_positive = None                 # positive compiled (set by _build; extend calls it)
_form_row = None                 # form_row compiled (set by _build)
_ahead = None                    # ahead compiled (set by _build)
# stacker.search.intrinsics' helpers, imported by _build (that module imports numba)
prefetch = units = diff = None


def positive(block, br, shift, starts, g, r, dmin, dmax, p, p0, p1, row_cols, w, m0, m1, acc, f,
             at, hits, contested, needs, flags, words):  # pragma: no cover - compiled
    """acc[g, f, m0 + i] += the weighted precision at positive ``p`` of ``starts[g, r] + q[m0 +
    i]`` (base g's sums of the positive's row r; ``block[br]``: that row's values (class, model)
    or their high parts, ``q >> shift``; dmin[p], dmax[p]: the positive's bounds). Returns 1,
    adding nothing, when the high parts do not decide a comparison; else 0. at, hits: int32
    scratch (width,); contested, needs: int64 scratch (n_classes,); flags: uint8 scratch of
    n_classes rounded up to 8, zero past n_classes, and ``words`` its uint64 view.

    The arrays come whole, with indices: a view is a reference count taken and dropped, two
    atomic operations (the five views of every call were 15% of a nested GES's time under
    perf). Views are made only of the models' strips that a loop over the models reads
    (vectorised; indexed there, the loops were slower), when it runs: kernel time of bench_scale's
    nested GES 6.0 s against 6.7-7.1 (both threads, same run).

    With high parts H (``q = H * 2**shift + L``, 0 <= L < 2**shift) a difference of two values
    is ``d + (L_c - L_p)`` with ``d = (H_c - H_p) * 2**shift`` and ``|L_c - L_p| <= span``
    (``2**shift - 1``): at or above ``need`` for sure when ``d >= need + span``, below for sure
    when ``d < need - span``; in between only the values decide. shift 0: always decided. The
    comparisons run in the block's own type (:func:`stacker.search.intrinsics.units`)."""
    n_classes = starts.shape[2]
    width = m1 - m0
    v = starts[g, r, row_cols[p]]
    # counted without a branch (vectorised): at or above for every model, and at or above for
    # some model; flags[c]: class c contested (at or above for some model, not for all)
    fixed = 0
    some = 0
    for c in range(n_classes):
        need = v - starts[g, r, c]
        low = need <= dmin[p, c]
        high = need <= dmax[p, c]
        fixed += np.int64(low)
        some += np.int64(high)
        flags[c] = np.uint8(high) - np.uint8(low)     # (lows <= highs: low implies high)
    fixed_hits = 0
    some_hits = 0
    for p2 in range(p0, p1):
        c2 = row_cols[p2]
        need = v - starts[g, r, c2]
        fixed_hits += np.int64(need <= dmin[p, c2])
        some_hits += np.int64(need <= dmax[p, c2])
    if some == fixed and some_hits == fixed_hits:
        value = fixed_hits / fixed * w        # the same for every candidate
        out = acc[g, f, m0:m1]
        for i in range(width):
            out[i] += value
        return 0
    span = (np.int64(1) << shift) - 1
    n = 0
    wanted = some - fixed
    for k in range(words.shape[0]):         # the contested classes, eight flags at a time
        if words[k] == 0:
            continue
        for c in range(8 * k, 8 * k + 8):
            if flags[c]:
                contested[n] = c
                needs[n] = v - starts[g, r, c]
                n += 1
        if n == wanted:
            break
    cp = row_cols[p]
    qp = block[br, cp, m0:m1]
    out = acc[g, f, m0:m1]
    if some_hits == fixed_hits and n == 1:
        # one contested class, no contested positive: at is fixed or fixed + 1 for every
        # candidate, the two precisions computed once (the same integers, the same division)
        qc = block[br, contested[0], m0:m1]
        low = units(needs[0] - span, shift, block)
        high = units(needs[0] + span, shift, block)
        unsure = np.int32(0)
        for i in range(width):
            d = diff(qc[i], qp[i], block)
            unsure += np.int32(d >= low) - np.int32(d >= high)
        if unsure:
            return 1
        below = fixed_hits / fixed * w
        above = fixed_hits / (fixed + 1) * w
        for i in range(width):
            out[i] += above if diff(qc[i], qp[i], block) >= high else below
        return 0
    if some_hits == fixed_hits and n == 2:
        # two: at is fixed, fixed + 1 or fixed + 2 (three precisions)
        qa = block[br, contested[0], m0:m1]
        qb = block[br, contested[1], m0:m1]
        low_a = units(needs[0] - span, shift, block)
        high_a = units(needs[0] + span, shift, block)
        low_b = units(needs[1] - span, shift, block)
        high_b = units(needs[1] + span, shift, block)
        unsure = np.int32(0)
        for i in range(width):
            da = diff(qa[i], qp[i], block)
            db = diff(qb[i], qp[i], block)
            unsure += (np.int32(da >= low_a) - np.int32(da >= high_a)
                       + np.int32(db >= low_b) - np.int32(db >= high_b))
        if unsure:
            return 1
        v0 = fixed_hits / fixed * w
        v1 = fixed_hits / (fixed + 1) * w
        v2 = fixed_hits / (fixed + 2) * w
        for i in range(width):
            a = diff(qa[i], qp[i], block) >= high_a
            b = diff(qb[i], qp[i], block) >= high_b
            out[i] += (v2 if b else v1) if a else (v1 if b else v0)
        return 0
    at[:] = fixed
    hits[:] = fixed_hits
    unsure = np.int32(0)
    for j in range(n):
        qc = block[br, contested[j], m0:m1]
        low = units(needs[j] - span, shift, block)
        high = units(needs[j] + span, shift, block)
        for i in range(width):
            d = diff(qc[i], qp[i], block)
            at[i] += np.int32(d >= high)
            unsure += np.int32(d >= low) - np.int32(d >= high)
    if some_hits != fixed_hits:
        for p2 in range(p0, p1):
            c2 = row_cols[p2]
            need = v - starts[g, r, c2]
            if need > dmin[p, c2] and need <= dmax[p, c2]:
                q2 = block[br, c2, m0:m1]
                low = units(need - span, shift, block)
                high = units(need + span, shift, block)
                for i in range(width):
                    d = diff(q2[i], qp[i], block)
                    hits[i] += np.int32(d >= high)
                    unsure += np.int32(d >= low) - np.int32(d >= high)
    if unsure:
        return 1
    # (compiled with numpy's error model: at >= 1, the positive's own class, so the division
    # needs no zero test and is vectorised; the same division of the same integers)
    if some_hits == fixed_hits:
        for i in range(width):
            out[i] += fixed_hits / at[i] * w
        return 0
    for i in range(width):
        out[i] += hits[i] / at[i] * w
    return 0


def form_row(r, f, g0, g1, take, starts, parents, parent, slot, cache):  # pragma: no cover
    """Row ``r`` (of fold ``f``) of each base g0:g1 the kernel forms (parent[g] >= 0) and takes
    in that fold (formed or scored): starts[g, r] = parents[parent[g], r] (+ cache[slot[g], r]
    when slot[g] >= 0). Compiled."""
    n_classes = starts.shape[2]
    for g in range(g0, g1):
        if parent[g] >= 0 and take[g, f] != OTHERS:
            a = parent[g]
            k = slot[g]
            if k >= 0:
                for c in range(n_classes):
                    starts[g, r, c] = parents[a, r, c] + cache[k, r, c]
            else:
                for c in range(n_classes):
                    starts[g, r, c] = parents[a, r, c]


def ahead(flat, n_classes, n_models, r, f, g0, g1, m0, m1, take, starts, row_start, row_cols,
          dmin, dmax, flags, words):  # pragma: no cover - compiled
    """Ask the cache for what :func:`positive` will read of row ``r`` (``flat``: the pool's
    values or high parts, (row, class, model) flattened), while the row before is scored: each
    positive's models, and those of every class contested for some base (the classes of one
    row are 40 KB apart on bench_scale's pool: read cold, each waited for memory, a third of a
    step). Only hints: nothing changes."""
    for p in range(row_start[r], row_start[r + 1]):
        strip = (r * n_classes + row_cols[p]) * n_models
        for i in range(m0, m1, 16):
            prefetch(flat, strip + i)
        prefetch(flat, strip + m1 - 1)
        flags[:] = 0
        for g in range(g0, g1):
            if take[g, f] != SCORED:
                continue
            v = starts[g, r, row_cols[p]]
            for c in range(n_classes):
                need = v - starts[g, r, c]
                flags[c] |= np.uint8(need <= dmax[p, c]) - np.uint8(need <= dmin[p, c])
        for k in range(words.shape[0]):
            if words[k] == 0:
                continue
            for c in range(8 * k, 8 * k + 8):
                if flags[c]:
                    strip = (r * n_classes + c) * n_models
                    for i in range(m0, m1, 16):
                        prefetch(flat, strip + i)
                    prefetch(flat, strip + m1 - 1)


def _build() -> dict:
    global _add_row_precisions, _positive, _form_row, _ahead, prefetch, units, diff
    from stacker.search import intrinsics

    prefetch, units, diff = intrinsics.prefetch, intrinsics.units, intrinsics.diff
    _add_row_precisions = kernel.row_precisions()   # score calls it: compiled first
    # (extend calls these three)
    _positive = kernel._jit(positive, error_model="numpy")
    _form_row = kernel._jit(form_row)
    _ahead = kernel._jit(ahead)

    def score(S, row_start, row_cols, row_fold, row_weight, out):  # pragma: no cover - compiled
        """out[fold] += the weighted precisions of the sums S (n_rows, n_classes), row by row."""
        acc = out.reshape(1, out.shape[0])
        for r in range(S.shape[0]):
            _add_row_precisions(acc, 0, S, r, row_start[r], row_start[r + 1], row_cols, row_fold,
                                row_weight)

    def bounds(qr, row_start, row_cols, r0, r1, dmin, dmax):  # pragma: no cover - compiled
        """dmin[p, c], dmax[p, c]: least and greatest of qr[r, c, m] - qr[r, c_p, m] over m,
        for the positives of rows r0:r1."""
        n_classes = qr.shape[1]
        for r in range(r0, r1):
            block = qr[r]
            for p in range(row_start[r], row_start[r + 1]):
                qp = block[row_cols[p]]
                for c in range(n_classes):
                    qc = block[c]
                    lo = qc[0] - qp[0]
                    hi = lo
                    for m in range(1, qc.shape[0]):
                        d = qc[m] - qp[m]
                        lo = min(lo, d)
                        hi = max(hi, d)
                    dmin[p, c] = lo
                    dmax[p, c] = hi

    def extend(qr, shift, exact, exact_r, state, starts, g0, g1, m0, m1, take, row_start,
               row_cols, row_fold, row_weight, dmin, dmax, acc, parents, parent, slot,
               cache):  # pragma: no cover - compiled
        """acc[g, fold, m] += the weighted precisions of starts[g] + q[m], bases g0:g1, models
        m0:m1, the rows of each fold with take[g, fold] == SCORED only (a positive's bounds are
        read once for all bases). A base with parent[g] >= 0 is formed row by row first (the
        rows it takes, FORMED or SCORED): starts[g, r] = parents[parent[g], r] (+ cache[slot[g],
        r] when slot[g] >= 0), the integer addition done where the row is read anyway.

        qr holds the values' high parts (``q >> shift``; shift 0: the values). Starts at
        (row, positive, base) ``state`` (positive -1: the row from its start); returns 0 when
        done, or 1 with ``state`` at the first (row, positive, base) whose comparisons the high
        parts do not decide (nothing of it added): called again with ``exact`` holding row
        ``exact_r`` = state[0]'s values (exact[0, class, model]), it goes on from there."""
        n_rows = qr.shape[0]
        n_classes = qr.shape[1]
        n_models = qr.shape[2]
        flat = qr.reshape(-1)
        width = m1 - m0
        at = np.empty(width, dtype=np.int32)
        hits = np.empty(width, dtype=np.int32)
        contested = np.empty(n_classes, dtype=np.int64)
        needs = np.empty(n_classes, dtype=np.int64)
        flags = np.zeros(8 * ((n_classes + 7) // 8), dtype=np.uint8)
        words = flags.view(np.uint64)
        first = state[0]
        resume_p = state[1]
        resume_g = state[2]
        ready = -1                      # the row formed ahead
        for r in range(first, n_rows):
            p0 = row_start[r]
            p1 = row_start[r + 1]
            if p0 == p1:
                continue                # (every row of the pool has a positive)
            f = row_fold[p0]            # (a row's positives are of its fold)
            resumed = r == first and resume_p >= 0
            if not resumed and r != ready:
                _form_row(r, f, g0, g1, take, starts, parents, parent, slot, cache)
            # the next row formed now (again after a resume: the same sums) and its reads asked
            # for, so that they arrive while this row is scored
            following = r + 1
            if following < n_rows and row_start[following] < row_start[following + 1]:
                f_next = row_fold[row_start[following]]
                _form_row(following, f_next, g0, g1, take, starts, parents, parent, slot, cache)
                _ahead(flat, n_classes, n_models, following, f_next, g0, g1, m0, m1, take,
                       starts, row_start, row_cols, dmin, dmax, flags, words)
                ready = following
            for p in range(resume_p if resumed else p0, p1):
                for g in range(resume_g if resumed and p == resume_p else g0, g1):
                    if take[g, f] != SCORED:
                        continue
                    if r == exact_r:
                        unsure = _positive(exact, 0, 0, starts, g, r, dmin, dmax, p, p0, p1,
                                           row_cols, row_weight[p], m0, m1, acc, row_fold[p],
                                           at, hits, contested, needs, flags, words)
                    else:
                        unsure = _positive(qr, r, shift, starts, g, r, dmin, dmax, p, p0, p1,
                                           row_cols, row_weight[p], m0, m1, acc, row_fold[p],
                                           at, hits, contested, needs, flags, words)
                    if unsure:
                        state[0] = r
                        state[1] = p
                        state[2] = g
                        return 1
        return 0

    def without(S, cache, slots, mult, j0, j1, row_start, row_cols, row_fold, row_weight,
                out):  # pragma: no cover - compiled
        """out[j, fold] += the weighted precisions of S - mult[j] * cache[slots[j]] for
        j in j0:j1, row by row (each as :func:`score` scores that sum)."""
        n_rows, n_classes = S.shape
        row = np.empty((1, n_classes), dtype=np.int64)
        for r in range(n_rows):
            p0 = row_start[r]
            p1 = row_start[r + 1]
            if p0 == p1:
                continue
            for j in range(j0, j1):
                k = mult[j]
                for c in range(n_classes):
                    row[0, c] = S[r, c] - k * cache[slots[j], r, c]
                _add_row_precisions(out, j, row, 0, p0, p1, row_cols, row_fold, row_weight)

    def gather(probs, rows, a, lo, hi, check, out):  # pragma: no cover - compiled
        """out[i] = float64(probs[rows[a + i]]) clipped to [lo, hi] (the quantizer's first
        operations, numpy's clip: max, then min), in one pass; returns False when ``check``
        and a value is not a probability in [0, 1] (or NaN)."""
        ok = True
        for i in range(out.shape[0]):
            source = probs[rows[a + i]]
            target = out[i]
            for m in range(out.shape[1]):
                for c in range(out.shape[2]):
                    v = np.float64(source[m, c])
                    if check and not (v >= 0.0 and v <= 1.0):
                        ok = False
                    target[m, c] = min(max(v, lo), hi)
        return ok

    def place(qr, values, a, positions, scale, shift, row_start, row_cols, row_weight, dmin,
              dmax, single):  # pragma: no cover - compiled
        """qr[r, c, m] = rint(values[i, m, c] * scale) >> shift, r = positions[i] (or a + i
        when ``positions`` is empty) (the quantizer's last operations on its float64 block,
        numpy's multiply and rint; scale 1: a block already integral; shift 0: the values
        themselves); for the positives of those rows, their bounds (as :func:`bounds`, of the
        values) and ``single[p, m]``: the weighted precision of model m alone (the extension
        of the empty base: the same integers, the same division)."""
        n_models, n_classes = values.shape[1], values.shape[2]
        at = np.empty(n_models, dtype=np.int64)
        hits = np.empty(n_models, dtype=np.int64)
        exact = np.empty((n_classes, n_models), dtype=np.int64)
        given = positions.shape[0] > 0
        for i in range(values.shape[0]):
            r = positions[i] if given else a + i
            block = qr[r]
            for m in range(n_models):
                for c in range(n_classes):
                    exact[c, m] = np.int64(np.rint(values[i, m, c] * scale))
            for c in range(n_classes):
                for m in range(n_models):
                    block[c, m] = exact[c, m] >> shift
            for p in range(row_start[r], row_start[r + 1]):
                qp = exact[row_cols[p]]
                at[:] = 0
                for c in range(n_classes):
                    qc = exact[c]
                    lo = qc[0] - qp[0]
                    hi = lo
                    for m in range(n_models):
                        d = qc[m] - qp[m]
                        lo = min(lo, d)
                        hi = max(hi, d)
                        at[m] += np.int64(d >= 0)
                    dmin[p, c] = lo
                    dmax[p, c] = hi
                hits[:] = 0
                for p2 in range(row_start[r], row_start[r + 1]):
                    q2 = exact[row_cols[p2]]
                    for m in range(n_models):
                        hits[m] += np.int64(q2[m] - qp[m] >= 0)
                w = row_weight[p]
                for m in range(n_models):
                    single[p, m] = hits[m] / at[m] * w

    def fold_sums(single, row_fold, acc):  # pragma: no cover - compiled
        """acc[fold, m] += single[p, m], the positives in row order (the extensions' order)."""
        for p in range(single.shape[0]):
            out = acc[row_fold[p]]
            for m in range(single.shape[1]):
                out[m] += single[p, m]

    def column(qr, m, r0, r1, out):  # pragma: no cover - compiled
        """out[r, c] = qr[r, c, m] for rows r0:r1."""
        for r in range(r0, r1):
            for c in range(qr.shape[1]):
                out[r, c] = qr[r, c, m]

    return {"bounds": kernel._jit(bounds), "extend": kernel._jit(extend),
            "column": kernel._jit(column), "score": kernel._jit(score),
            "place": kernel._jit(place), "fold_sums": kernel._jit(fold_sums),
            "gather": kernel._jit(gather),
            "without": kernel._jit(without)}


def is_row_major(q: np.ndarray) -> bool:
    """True when ``q`` (n_models, n_rows, n_classes) is the transposed view of a C-contiguous
    (n_rows, n_classes, n_models) array."""
    return q.ndim == 3 and q.transpose(1, 2, 0).flags.c_contiguous and q.strides[0] == q.itemsize


def _split(n: int, parts: int) -> list:
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


HIGH_BITS = 31      # the high parts are int32: |q >> shift| < 2**30, their differences fit too


def high_shift(largest: float) -> int:
    """The shift that keeps the high parts ``q >> shift`` of values up to ``largest`` in
    absolute value under 2**30 (their differences under 2**31)."""
    return max(0, int(math.ceil(largest)).bit_length() - (HIGH_BITS - 1))


_NO_POSITIONS = np.zeros(0, dtype=np.int64)


class Placer:
    """:func:`stacker.search.scoring.quantize`'s ``place`` for the row-major pool of ``scorer``'s
    rows: each block goes into place with the compiled kernel, which computes the walker's
    bounds and every model's own precisions (the first step's extensions, the empty base) from
    the block while it is in the cache, instead of two more passes over the whole pool.

    largest: the largest |value| of the pool; given, the pool holds the values' int32 high
    parts (``q >> shift``, half the memory of int64: on bench_scale's pool 2 GB less written,
    fresh memory, and read at every step): the bounds and the models' own precisions are of the
    values themselves, and the walker decides from the high parts every comparison they decide
    (all but about one in 10 million), the rest from the row's values (its ``exact_row``).
    shift: the shift to use (tests; default from ``largest``). Neither: the int64 values."""

    def __init__(self, scorer, n_models: int, n_classes: int, *, largest: float | None = None,
                 shift: int | None = None):
        n_pos = len(scorer.row_cols)
        self.scorer = scorer
        high = largest is not None or shift is not None
        self.shift = int(shift if shift is not None else high_shift(largest) if high else 0)
        if not 0 <= self.shift < 63:
            raise ValueError(f"shift {self.shift} is out of range (0 to 62)")
        self.dtype = np.int32 if high else np.int64
        self.dmin = np.empty((n_pos, n_classes), dtype=np.int64)
        self.dmax = np.empty_like(self.dmin)
        self.single = np.empty((n_pos, n_models), dtype=np.float64)
        self._run = _compile()["place"]
        self._gather = _compile()["gather"]

    def __call__(self, qr: np.ndarray, values: np.ndarray, a: int, b: int,
                 scale: float = 1.0, positions: np.ndarray | None = None) -> None:
        """Rows a:b (or the rows ``positions``, one per row of the block) into place from
        ``values``, the block's integral float64 values, or (scale given) the transforms they
        are ``rint(values * scale)`` of."""
        s = self.scorer
        at = _NO_POSITIONS if positions is None else positions
        self._run(qr, values, a, at, float(scale), self.shift, s.row_start, s.row_cols,
                  s.row_weight, self.dmin, self.dmax, self.single)

    def gather(self, probs: np.ndarray, rows: np.ndarray, a: int, lo: float, hi: float,
               check: bool, out: np.ndarray) -> bool:
        """out[i] = the float64 values of ``probs[rows[a + i]]`` clipped to [lo, hi], one
        pass (no gathered copy, no separate cast); False when ``check`` finds a value that is
        not a probability."""
        return bool(self._gather(probs, rows, a, lo, hi, check, out))


class RowWalker:
    """Scores the extensions of a step on the row-major pool (lwlrap, lrap, CPU).

    q: (n_models, n_rows, n_classes) int64, the transposed view of the C-contiguous row-major
    array (:func:`stacker.search.scoring.quantize` with ``layout="rows"``); scorer: the
    RankScorer of the rows. ``n_jobs`` threads share the models; the scores do not depend on it.
    """

    name = "numba"
    min_parallel = 2_000_000        # models x rows x classes below which one thread is used

    def __init__(self, q: np.ndarray, scorer, n_jobs: int = 1, placed: Placer | None = None,
                 source=None, exact_row=None):
        if not is_row_major(q):
            raise ValueError("RowWalker needs the row-major pool (quantize(..., layout='rows'))")
        self.q, self.scorer, self.n_jobs = q, scorer, max(1, int(n_jobs))
        self.qr = q.transpose(1, 2, 0)
        # placed: the Placer that quantize put q in place with (its bounds and the models' own
        # precisions); source(m, out): out[...] = q[m] from the pool itself (one contiguous read
        # of the model's float32 values, not a strided gather from qr); exact_row(r, out):
        # out[c, m] = the values of row r (where q holds high parts, Placer(largest=...))
        self.shift = 0 if placed is None else placed.shift
        if q.dtype != np.int64 and (placed is None or placed.dtype != q.dtype):
            raise ValueError("a pool of high parts needs the Placer that put it in place")
        if q.dtype != np.int64 and (source is None or exact_row is None):
            raise ValueError("a pool of high parts needs source and exact_row (its values)")
        self.exact_row = exact_row
        self.unsure_rows = 0        # rows whose values decided a comparison (exact_row calls)
        self._bounds = None if placed is None else (placed.dmin, placed.dmax)
        self._single = None if placed is None else placed.single
        self._single_sums = None
        self.source = source
        self._members: OrderedDict = OrderedDict()       # model -> its slot in _cache
        per_member = max(1, q[0].size * 8)
        self._member_slots = max(2, MEMBER_CACHE_BYTES // per_member)
        self._cache = None          # (slots, n_rows, n_classes) int64, allocated on first use
        self.max_bases = 1          # the most bases a call will have (the search's targets)
        self._buffers: list = [None, None]
        self._touched = [0, 0]               # the bases of each buffer touched so far
        self._scratch = None                 # scratch()'s array when no buffer is idle
        self._turn = 0

    def _threads(self) -> int:
        return self.n_jobs if self.q.size >= self.min_parallel else 1

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(dmin, dmax), each (n_positives, n_classes), computed on first use."""
        if self._bounds is None:
            s = self.scorer
            n_pos, n_classes = len(s.row_cols), self.qr.shape[1]
            dmin = np.empty((n_pos, n_classes), dtype=np.int64)
            dmax = np.empty_like(dmin)
            run = _compile()["bounds"]
            parts = _split(self.qr.shape[0], self._threads())

            def fill(part):
                run(self.qr, s.row_start, s.row_cols, part[0], part[1], dmin, dmax)

            parallel_calls(fill, parts)
            self._bounds = dmin, dmax
        return self._bounds

    def member(self, m: int) -> np.ndarray:
        """Model ``m``'s (n_rows, n_classes) values, contiguous (copies kept for the last few)."""
        slot = self.member_slot(m)          # (allocates the cache on first use)
        return self._cache[slot]

    def member_slot(self, m: int) -> int:
        """The slot of the member cache holding model ``m``'s copy (made now if it is not
        there, in the slot of the least recently used one)."""
        m = int(m)
        if m in self._members:
            self._members.move_to_end(m)
            return self._members[m]
        if self._cache is None:
            self._cache = small_pages_empty((self._member_slots,) + self.q.shape[1:], np.int64)
        if len(self._members) < self._member_slots:
            slot = len(self._members)
        else:
            _, slot = self._members.popitem(last=False)
        out = self._cache[slot]
        if out.size and self.source is not None:
            self.source(m, out)
        elif out.size:
            run = _compile()["column"]
            parallel_calls(lambda part: run(self.qr, m, part[0], part[1], out),
                      _split(self.qr.shape[0], self._threads()))
        self._members[m] = slot
        return slot

    def bases_buffer(self, n_bases: int) -> np.ndarray:
        """(n_bases, n_rows, n_classes) int64 to form the next call's bases in: two buffers
        alternate, so the previous call's bases (the next ones are formed from them) stay."""
        self._turn = 1 - self._turn
        held = self._buffers[self._turn]
        if held is None or len(held) < n_bases:
            # room for every selection's base at once (max_bases, the number of targets): a
            # buffer grown step by step is fresh memory touched in a step (measured: steps of
            # 370 ms instead of 130 on bench_scale's pool)
            size = max(n_bases, self.max_bases)
            held = small_pages_empty((size,) + self.q.shape[1:], np.int64)
            self._buffers[self._turn] = held
            self._touched[self._turn] = 0
        if self._touched[self._turn] < n_bases:
            # the bases used for the first time touched now, the pages shared by the threads:
            # touched by the kernel, a new base's pages were one thread's, while the other
            # waited (bench_scale's pool: 110-220 ms more in each of the two steps after a
            # selection diverged, 1.1 s of a nested GES)
            fresh = held[self._touched[self._turn]:n_bases].reshape(-1)
            parallel_calls(lambda part: fresh[part[0]:part[1]].fill(0),
                           _split(len(fresh), self._threads()))
            self._touched[self._turn] = n_bases
        return held[:n_bases]

    def scratch(self) -> np.ndarray:
        """An int64 (n_rows, n_classes) array to form a sum in (greedy's pruning), memory
        already touched when there is some: the first base of the buffer the last call did not
        use (the next call overwrites it), else an array of its own, kept."""
        idle = 1 - self._turn
        if self._buffers[idle] is not None and self._touched[idle] >= 1:
            return self._buffers[idle][0]
        if self._scratch is None:
            self._scratch = small_pages_empty(self.q.shape[1:], np.int64)
        return self._scratch

    def hand_over(self) -> list:
        """The memory the walker touched for its member copies, bases and scratch (arrays whose
        values no longer matter), for a caller that is done searching to make its own arrays in
        (:class:`stacker.search.spare.SpareMemory`); the walker lets go of them, and a later call
        makes new ones."""
        arrays = []
        if self._cache is not None and self._members:
            arrays.append(self._cache[:len(self._members)])
        for held, touched in zip(self._buffers, self._touched):
            if held is not None and touched:
                arrays.append(held[:touched])
        if self._scratch is not None:
            arrays.append(self._scratch)
        self._cache, self._scratch = None, None
        self._members.clear()
        self._buffers, self._touched = [None, None], [0, 0]
        return arrays

    def extensions_many(self, base_sums: list, candidate_lists: list) -> list:
        """Per-fold sums (len(candidate_lists[g]), n_folds) of ``base_sums[g] + q[j]`` for every
        j of ``candidate_lists[g]``, one pass over the rows for every base."""
        if not base_sums:
            return []
        starts = (np.asarray(base_sums[0], dtype=np.int64)[None] if len(base_sums) == 1 else
                  np.stack([np.asarray(b, dtype=np.int64) for b in base_sums]))
        return self.extensions_stacked(starts, candidate_lists)

    def fuses(self, n_bases: int, n_members: int) -> bool:
        """Whether :meth:`extensions_stacked` can form ``n_bases`` bases from parents itself,
        adding ``n_members`` distinct members: each row of each base is then one thread's (the
        (base, fold) pairs split between threads) and the members fit the cache together."""
        return self._pairs_split(n_bases, self._threads()) and n_members <= self._member_slots

    def _pairs_split(self, n_bases: int, threads: int) -> bool:
        """Whether :meth:`_parts` shares (base, fold) pairs between ``threads`` (not models)."""
        n_folds = np.count_nonzero(np.bincount(self.scorer.row_fold,
                                               minlength=self.scorer.n_folds))
        return threads <= 1 or n_folds * n_bases >= threads

    def single_sums(self) -> np.ndarray | None:
        """(n_folds, n_models): the per-fold sums of each model alone (the extensions of the
        empty base), from the precisions the Placer computed; None without a Placer."""
        if self._single is None:
            return None
        if self._single_sums is None:
            acc = np.zeros((self.scorer.n_folds, self.q.shape[0]), dtype=np.float64)
            _compile()["fold_sums"](self._single, self.scorer.row_fold, acc)
            self._single_sums = acc
        return self._single_sums

    def extensions_stacked(self, starts: np.ndarray, candidate_lists: list,
                           formed_from=None, empty=None, read=None) -> list:
        """:meth:`extensions_many` of the bases ``starts`` (n_bases, n_rows, n_classes).

        formed_from: None (``starts`` holds every base), or (parents, plan): plan[g] is
        (index into parents, member) for a base the kernel forms, ``parents[index]`` plus one
        more of ``member`` (-1: none), or None for a base ``starts[g]`` already holds
        (:meth:`fuses` says when this may be used). empty: one flag per base, True for a base
        that holds no member (all zeros): when every base is, the models' own sums answer.
        read: (n_bases, n_folds) bool, the folds whose sums are wanted of each base (None:
        every fold); the others are left at zero (their rows are still formed)."""
        s = self.scorer
        n_models = self.q.shape[0]
        n_bases = len(starts)
        singles = self.single_sums() if empty is not None and all(empty) else None
        if singles is not None and formed_from is None:
            return [singles[:, np.asarray(c, dtype=np.int64)].T.copy() if len(c) else
                    np.zeros((0, s.n_folds)) for c in candidate_lists]
        acc = np.zeros((n_bases, s.n_folds, n_models), dtype=np.float64)
        parent = np.full(n_bases, -1, dtype=np.int64)
        slot = np.full(n_bases, -1, dtype=np.int64)
        parents = cache = np.zeros((1, 1, 1), dtype=np.int64)
        if formed_from is not None:
            parents, plan = formed_from
            for g, step in enumerate(plan):
                if step is not None:
                    parent[g] = step[0]
                    slot[g] = -1 if step[1] < 0 else self.member_slot(step[1])
            cache = self._cache if self._cache is not None else cache
        threads = self._threads()
        if (formed_from is not None and (parent >= 0).any()
                and not self._pairs_split(n_bases, threads)):
            raise ValueError("bases formed by the kernel need their rows split by folds between "
                             "threads (see fuses())")
        if self.q.shape[1] and (any(len(c) for c in candidate_lists) or (parent >= 0).any()):
            starts = np.ascontiguousarray(starts, dtype=np.int64)
            dmin, dmax = self.bounds()
            run = _compile()["extend"]

            n_classes = self.qr.shape[1]

            def fill(part):
                take, (m0, m1) = part
                g0, g1 = _taken_range(take)
                state = np.array([0, -1, 0], dtype=np.int64)
                exact = np.zeros((1, n_classes, n_models), dtype=np.int64)
                exact_r = -1
                while run(self.qr, self.shift, exact, exact_r, state, starts, g0, g1, m0, m1,
                          take, s.row_start, s.row_cols, s.row_fold, s.row_weight, dmin, dmax,
                          acc, parents, parent, slot, cache):
                    exact_r = int(state[0])         # the values decide: that row's, exactly
                    self.exact_row(exact_r, exact[0])
                    self.unsure_rows += 1

            parallel_calls(fill, self._parts(n_bases, n_models, threads, read))
        return [acc[g][:, np.asarray(c, dtype=np.int64)].T.copy() if len(c) else
                np.zeros((0, s.n_folds)) for g, c in enumerate(candidate_lists)]

    def _parts(self, n_bases: int, n_models: int, threads: int, read=None) -> list:
        """(take, models) of each thread: what it does with each (base, fold) pair
        (take[g, fold]: OTHERS, FORMED or SCORED, the pairs of ``read`` scored), every model;
        each pair's sums stay in one thread, in row order. The pairs are shared by the folds'
        positives, a pair formed only at FORMED_COST (one base: the folds split 3 to 2, where
        splitting the models left each thread scanning every positive's classes: no faster
        than one thread on bench_scale's pool; three bases: no 2 to 1). With fewer pairs than
        threads, the models are split instead."""
        n_folds = self.scorer.n_folds
        wanted = (np.ones((n_bases, n_folds), dtype=np.bool_) if read is None
                  else np.asarray(read, dtype=np.bool_).reshape(n_bases, n_folds))
        every = np.where(wanted, SCORED, FORMED).astype(np.uint8)
        weight = np.bincount(self.scorer.row_fold, minlength=n_folds).astype(np.float64)
        if threads <= 1 or not self._pairs_split(n_bases, threads):
            return [(every, models) for models in _split(n_models, max(threads, 1))]
        units = [(g, f, weight[f] * (1.0 if wanted[g, f] else FORMED_COST))
                 for g in range(n_bases) for f in range(n_folds) if weight[f]]
        total = sum(cost for _, _, cost in units)
        takes = np.full((threads, n_bases, n_folds), OTHERS, dtype=np.uint8)
        done = 0.0
        for g, f, cost in units:
            t = min(threads - 1, int((done + cost / 2) * threads / total))
            takes[t, g, f] = every[g, f]
            done += cost
        return [(take, (0, n_models)) for take in takes if take.any()]

    def extensions(self, base_sum: np.ndarray, candidates) -> np.ndarray:
        """Per-fold sums (len(candidates), n_folds) of ``base_sum + q[j]`` for each candidate j."""
        return self.extensions_many([base_sum], [list(candidates)])[0]

    def score_sums(self, S: np.ndarray) -> np.ndarray:
        """Per-fold sums (n_folds,) of the sums ``S`` themselves (a whole ensemble: greedy's
        pruning, GES's sorted initialisation), one pass over its rows."""
        s = self.scorer
        out = np.zeros(s.n_folds, dtype=np.float64)
        if S.shape[0]:
            _compile()["score"](np.ascontiguousarray(S, dtype=np.int64), s.row_start,
                                s.row_cols, s.row_fold, s.row_weight, out)
        return out

    def score_without(self, S: np.ndarray, members: list, mult: list) -> np.ndarray:
        """Per-fold sums (len(members), n_folds) of ``S - mult[j] * q[members[j]]`` for each j
        (greedy's pruning: the best set without each of its members), one pass over the rows
        of ``S`` and the members' copies; each the sums :meth:`score_sums` gives."""
        s = self.scorer
        out = np.zeros((len(members), s.n_folds), dtype=np.float64)
        if not len(members) or not S.shape[0]:
            return out
        if len(members) > self._member_slots:         # the copies would not fit together
            for j, (m, k) in enumerate(zip(members, mult)):
                out[j] = self.score_sums(S - np.int64(k) * self.member(m))
            return out
        # (at most as many as the cache holds: each copy made here evicts one not used here)
        slots = np.array([self.member_slot(m) for m in members], dtype=np.int64)
        mult = np.asarray(mult, dtype=np.int64)
        S = np.ascontiguousarray(S, dtype=np.int64)
        run = _compile()["without"]

        def fill(part):
            run(S, self._cache, slots, mult, part[0], part[1], s.row_start, s.row_cols,
                s.row_fold, s.row_weight, out)

        threads = self._threads() if S.size * len(members) >= self.min_parallel else 1
        parallel_calls(fill, _split(len(members), min(threads, len(members))))
        return out


def _taken_range(take: np.ndarray) -> tuple[int, int]:
    """The bases (g0, g1) with some fold taken."""
    bases = np.flatnonzero(take.any(axis=1))
    return (int(bases[0]), int(bases[-1]) + 1) if len(bases) else (0, 0)


def parallel_calls(function, items) -> None:
    """``function(item)`` for each item, on as many threads as items (one: no thread)."""
    items = list(items)
    if len(items) <= 1:
        for item in items:
            function(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        list(pool.map(function, items))


def warm_up() -> None:
    """Run the kernels once on a toy pool of high parts, as the search uses them (their first
    call loads them from numba's cache)."""
    from stacker.search.scoring import make_scorer

    y = np.array([[1, 0], [0, 1]])
    scorer = make_scorer(y, np.array([0, 1]), [0, 1], "lwlrap", blend="mean", power=1.0)
    values = np.array([[[3, 1], [0, 2]], [[1, 1], [2, 0]]], dtype=np.int64)  # (row, class, model)
    placed = Placer(scorer, 2, 2, shift=1)
    qr = np.empty(values.shape, dtype=placed.dtype)
    placed(qr, values.transpose(0, 2, 1).astype(np.float64), 0, 2)

    def source(m, out):
        out[...] = values[:, :, m]

    def exact_row(r, out):
        out[...] = values[r]

    walker = RowWalker(qr.transpose(2, 0, 1), scorer, placed=placed, source=source,
                       exact_row=exact_row)
    walker.single_sums()
    walker.extensions(np.array([[0, 1], [1, 0]], dtype=np.int64), [0, 1])
    walker.member(1)
    walker.score_sums(values[:, :, 0])
    walker.score_without(values[:, :, 0], [1], [1])
