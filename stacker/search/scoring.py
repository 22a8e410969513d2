"""The engine of the subset search: exact running sums of blended models and fast scoring.

Every blend of :mod:`stacker.blend` is ``finalize(sum_m w_m t_m)`` for a per-model transform ``t``.
The search precomputes ``t`` once per model and stores it as **fixed-point int64**
(``round(t * 2**bits)``), so adding or removing a member is one integer array addition and is
*exact*: the running sum of a subset does not depend on the order the members were added, and equal
values stay equal (ties in real data, 0/1 probabilities, kNN votes, are kept as ties, never broken
by rounding drift). ``bits`` is as large as the int64 range allows for the largest sum (about 2**-48
resolution for a geo-mean of 16 models), far below float32's resolution of the inputs.

Ranking metrics need no ``finalize``: for a fixed subset, ``exp`` (geo-mean), ``x ** (1/k)`` (power)
and the division by the number of members are one increasing function applied to the whole matrix,
so the order of the classes within every row (what lwlrap and lrap score) is that of the raw sum.
:class:`RankScorer` scores lwlrap/lrap straight from the int64 sum without sorting: the precision at
a positive (row r, class c) is ``#{positives >= s[r, c]} / #{classes >= s[r, c]}``, one comparison of
the row with the positive's score. Other metrics go through :class:`MetricScorer`, which dequantizes,
finalizes and calls the metric.

The precisions of a fold are added one after the other in row-major order
(:meth:`RankScorer.fold_sums_from_counts`); the compiled kernel (:mod:`stacker.search.kernel`) and
the torch path (:mod:`stacker.search.torch_scoring`) keep that order, so every backend returns
bit-identical scores.

Scores are returned "higher is better" (multiplied by the metric's sign) as a vector
``[all rows, all rows but fold 0, all rows but fold 1, ...]`` (folds in ``fold_numbers`` order): the
search uses entry ``1 + i`` to repeat a selection with fold ``i`` held out (nested CV).
"""

from __future__ import annotations

import math

import numpy as np

from stacker.blend import finalize, transform
from stacker.metrics import Metric, get_metric
from stacker.search.pages import empty_for_scans, small_pages_empty
from stacker.search.problem import check_probabilities

FAST_METRICS = ("lwlrap", "lrap")
_INT64_BITS = 62          # leave a bit of headroom under int64's 63 value bits
_MAX_FRACTION_BITS = 52
QUANTIZE_MIN_VALUES = 4_000_000   # values per thread below which quantize uses one thread


def transform_bound(method: str, n_classes: int, eps: float) -> float:
    """The largest |transform(p)| for probabilities p in [0, 1]."""
    if method == "geo-mean":
        return -math.log(eps)
    if method == "rank":
        return float(max(n_classes - 1, 1))
    return 1.0


def quantize(probs: np.ndarray, method: str, *, max_terms: int, power: float, eps: float,
             rows: np.ndarray | None = None, n_jobs: int = 1, layout: str = "models",
             check: bool = False, place=None) -> tuple[np.ndarray, float]:
    """Fixed-point per-model transforms, one model at a time (no float64 copy of the pool).

    probs: array of shape (n_rows, n_models, n_classes), values in [0, 1].
    max_terms: the largest number of (repeated) members a sum will hold.
    Returns (q, scale): q of shape (n_models, n_used_rows, n_classes), int64, with
    ``q[m] == round(transform(probs[rows, m]) * scale)``; ``scale`` is a power of two chosen so
    that a sum of ``max_terms`` values cannot overflow. layout "rows": the same values, with q the
    transposed view of a C-contiguous (n_used_rows, n_classes, n_models) array
    (:mod:`stacker.search.row_major`), filled a block of rows at a time. check: raise
    OptionError when a value read is not a probability in [0, 1] (each block as it is read).
    place: (layout "rows") ``place(qr, values, a, b)`` puts the float64 block ``values`` of rows
    a:b, shape (b - a, n_models, n_classes), into ``qr[a:b]`` transposed (and may compute what it
    needs from the block while it is in the cache: :class:`stacker.search.row_major.Placer`);
    the row-major array has ``place.dtype`` (the Placer's int32 high parts) when it has one.
    """
    n_rows = probs.shape[0] if rows is None else len(rows)
    n_models, n_classes = probs.shape[1], probs.shape[2]
    scale = quantize_scale(method, n_classes, eps=eps, max_terms=max_terms)
    if layout == "rows":
        return _quantize_rows(probs, method, scale=scale, power=power, eps=eps, rows=rows,
                              n_jobs=n_jobs, check=check, place=place), scale
    if layout != "models":
        raise ValueError(f"unknown layout {layout!r}: models or rows")
    q = small_pages_empty((n_models, n_rows, n_classes), np.int64)

    def fill(models) -> None:
        t = np.empty((n_rows, n_classes), dtype=np.float64)     # one buffer, reused: no page faults
        for m in models:
            quantize_model(probs, m, method, scale=scale, power=power, eps=eps, rows=rows,
                           out=q[m], buffer=t, check=check)

    # numpy releases the GIL in each of these operations: threads share the models (every
    # model's values are the same whichever thread computes them)
    n_jobs = max(1, min(int(n_jobs), n_models, q.size // QUANTIZE_MIN_VALUES))
    if n_jobs == 1:
        fill(range(n_models))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            list(pool.map(fill, [range(i, n_models, n_jobs) for i in range(n_jobs)]))
    return q, scale


def quantize_scale(method: str, n_classes: int, *, eps: float, max_terms: int) -> float:
    """The power of two :func:`quantize` scales by: a sum of ``max_terms`` values cannot
    overflow."""
    largest = transform_bound(method, n_classes, eps)
    bits = _INT64_BITS - math.ceil(math.log2(largest * max(max_terms, 1) + 1))
    return float(2.0 ** min(_MAX_FRACTION_BITS, bits))


def quantize_model(probs: np.ndarray, m: int, method: str, *, scale: float, power: float,
                   eps: float, rows: np.ndarray | None, out: np.ndarray,
                   buffer: np.ndarray | None = None, check: bool = False) -> None:
    """``out[...] = q[m]``, model ``m``'s values of :func:`quantize` (either layout), computed
    from ``probs`` alone (``buffer``: a float64 (n_rows, n_classes) scratch array to reuse)."""
    column = probs[:, m] if rows is None else probs[rows, m]
    if check:
        check_probabilities(column)
    t = np.empty(column.shape, dtype=np.float64) if buffer is None else buffer
    _transform_into(column, method, power=power, eps=eps, out=t)
    t *= scale
    np.rint(t, out=t)
    out[...] = t


ROWS_BLOCK_BYTES = 2 * 1024 * 1024       # float64 bytes of one block of rows (all models): 2 MB measured
                                         # 0.9 s for bench_scale's pool, 8 MB 3.6-5.5 s (2 threads)


def _quantize_rows(probs: np.ndarray, method: str, *, scale: float, power: float, eps: float,
                   rows: np.ndarray | None, n_jobs: int, check: bool = False,
                   place=None) -> np.ndarray:
    """:func:`quantize`'s values as the transposed view of a (rows, classes, models) array: each
    block of rows goes through the same float64 operations as the model-major path (contiguous
    buffers, elementwise), then into place transposed."""
    n_rows = probs.shape[0] if rows is None else len(rows)
    n_models, n_classes = probs.shape[1], probs.shape[2]
    # (written once, then read a few strips of every row at each step: huge pages when they
    # come faster, :mod:`stacker.search.pages`)
    qr = empty_for_scans((n_rows, n_classes, n_models), getattr(place, "dtype", np.int64))
    step = max(1, ROWS_BLOCK_BYTES // (8 * max(n_models * n_classes, 1)))
    blocks = [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]

    # a Placer reads the rows and clips them in one compiled pass (no gathered copy, no
    # separate cast or range check), numpy takes the logarithm or the power in place, and the
    # Placer scales and rounds while it puts the values in place: numpy's operations, in the
    # same order, on the same float64 values
    clip = _CLIPS[method](eps) if method in _CLIPS else None
    gather = getattr(place, "gather", None) if clip is not None else None
    source = np.asarray(probs)
    if gather is not None:
        # the rows read in the pool's own order, each put at its place in ``rows``'s: a block
        # is then a run of each model's rows, not rows picked across it (the gather of
        # bench_scale's pool 0.64-0.82 s against 0.84-1.22 on one thread)
        order = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        where = np.argsort(order, kind="stable")
        order = order[where]

    def fill(part) -> None:
        t = np.empty((step, n_models, n_classes), dtype=np.float64)
        for a, b in part:
            out = t[:b - a]
            if gather is not None:
                if not gather(source, order, a, clip[0], clip[1], check, out):
                    check_probabilities(probs[order[a:b]])        # (raises, naming the fix)
                if method == "geo-mean":
                    np.log(out, out=out)
                elif method == "power":
                    np.power(out, power, out=out)
                place(qr, out, a, b, scale=scale, positions=where[a:b])
                continue
            chunk = probs[a:b] if rows is None else probs[rows[a:b]]
            if check:
                check_probabilities(chunk)
            _block_values(chunk, method, scale=scale, power=power, eps=eps, out=out)
            if place is None:
                qr[a:b] = out.transpose(0, 2, 1)
            else:
                place(qr, out, a, b)

    n_jobs = max(1, min(int(n_jobs), len(blocks), qr.size // QUANTIZE_MIN_VALUES))
    if n_jobs == 1:
        fill(blocks)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            list(pool.map(fill, [blocks[i::n_jobs] for i in range(n_jobs)]))
    return qr.transpose(2, 0, 1)


# the clip of :func:`_transform_into` for each blend the Placer's gather does: (lo, hi) of eps
_CLIPS = {"geo-mean": lambda eps: (float(eps), 1.0),
          "power": lambda eps: (0.0, math.inf),
          "mean": lambda eps: (-math.inf, math.inf)}


def _block_values(chunk: np.ndarray, method: str, *, scale: float, power: float, eps: float,
                  out: np.ndarray) -> None:
    """``out[...]`` = the quantized values of ``chunk`` (rows, n_models, n_classes) as integral
    float64: the row-major quantizer's operations, and :func:`quantize_row`'s."""
    _transform_into(chunk, method, power=power, eps=eps, out=out)       # (per row: rank)
    out *= scale
    np.rint(out, out=out)


def quantize_row(probs: np.ndarray, row: int, method: str, *, scale: float, power: float,
                 eps: float, out: np.ndarray, buffer: np.ndarray | None = None) -> None:
    """``out[c, m]`` = the int64 value :func:`quantize` gives row ``row`` of ``probs`` (an index
    into ``probs``), class ``c``, model ``m``: the row-major quantizer's operations on that row
    alone (the exact values behind a pool kept as high parts, :mod:`stacker.search.row_major`).
    buffer: float64 (1, n_models, n_classes) scratch to reuse."""
    chunk = probs[row:row + 1]
    t = np.empty(chunk.shape, dtype=np.float64) if buffer is None else buffer
    _block_values(chunk, method, scale=scale, power=power, eps=eps, out=t)
    out[...] = t[0].T


def _transform_into(column: np.ndarray, method: str, *, power: float, eps: float,
                    out: np.ndarray) -> None:
    """``out[...] = transform(column, method)``, the same operations in place."""
    if method == "rank":
        out[...] = transform(column, method, power=power, eps=eps)
        return
    out[...] = column
    if method == "geo-mean":
        np.clip(out, eps, 1.0, out=out)
        np.log(out, out=out)
    elif method == "power":
        np.clip(out, 0.0, None, out=out)
        np.power(out, power, out=out)


class Scorer:
    """Scores the blend held as an int64 running sum ``S`` of ``n_terms`` quantized members.

    y: (n_rows, n_classes) labels; fold: (n_rows,) fold of each row; fold_numbers: the folds, in
    the order of the entries of :meth:`evaluate`. ``rows`` are the rows the sums must cover
    (indices into y); ``n_outputs == 1 + n_folds``.
    """

    def __init__(self, y, fold, fold_numbers, metric: str | Metric, *, blend: str, power: float,
                 scale: float = 1.0):
        self.metric = get_metric(metric)
        self.blend = blend
        self.power = power
        self.scale = scale
        self.fold_numbers = list(fold_numbers)
        self.sign = self.metric.sign()
        self.rows = np.arange(len(y))

    @property
    def n_outputs(self) -> int:
        return 1 + len(self.fold_numbers)

    def evaluate(self, S: np.ndarray, n_terms: int) -> np.ndarray:
        """Scores (higher is better) of shape (1 + n_folds,): all rows, then each fold left out."""
        raise NotImplementedError

    def evaluate_one(self, S: np.ndarray, n_terms: int, target: int) -> float:
        """Entry ``target`` of :meth:`evaluate` (cheaper for metrics that are not decomposable)."""
        return float(self.evaluate(S, n_terms)[target])

    def evaluate_targets(self, S: np.ndarray, n_terms: int, targets) -> np.ndarray:
        """Entries ``targets`` of :meth:`evaluate`, shape (len(targets),)."""
        return self.evaluate(S, n_terms)[list(targets)]


class RankScorer(Scorer):
    """lwlrap / lrap from the raw sum; rows without a positive label are left out (they do not
    count in either metric), so ``rows`` lists the rows with at least one positive."""

    def __init__(self, y, fold, fold_numbers, metric, *, blend, power, scale=1.0):
        super().__init__(y, fold, fold_numbers, metric, blend=blend, power=power, scale=scale)
        if self.metric.name not in FAST_METRICS:
            raise ValueError(f"RankScorer scores {FAST_METRICS}, not {self.metric.name}")
        truth = np.asarray(y) > 0
        counts = truth.sum(axis=1)
        # rows with a positive, most positives first: the rows of pass j are then a leading block
        # of the sum (a view, no gather)
        self.rows = np.flatnonzero(counts > 0)
        self.rows = self.rows[np.argsort(-counts[self.rows], kind="stable")]
        truth = truth[self.rows]
        n_rows, n_classes = truth.shape
        fold_index = np.searchsorted(self.fold_numbers, np.asarray(fold)[self.rows])
        pos_rows, pos_cols = np.nonzero(truth)              # row-major
        n_pos = np.bincount(pos_rows, minlength=n_rows)
        rank_in_row = np.arange(len(pos_rows)) - np.repeat(np.cumsum(n_pos) - n_pos, n_pos)
        # Positives in "pass-major" order: pass j holds the j-th positive of every row that has
        # more than j; pass 0 is then every row, in order, and compares S with no gather.
        order = np.lexsort((pos_rows, rank_in_row))
        self.pos_rows, self.pos_cols = pos_rows[order], pos_cols[order]
        self.pos_flat = self.pos_rows * n_classes + self.pos_cols
        width = int(n_pos.max()) if n_rows else 0
        self.pass_size = [int(np.count_nonzero(n_pos > j)) for j in range(width)]
        self.pass_start = np.concatenate([[0], np.cumsum(self.pass_size)]).astype(np.int64)
        # pairs (a, b) of distinct positives of one row: the hits at a count b when s_b >= s_a
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))             # row-major index -> pass-major
        # (row by row; in a row, a in order, then b in order, b != a: pair t of a row of k
        # positives is a = t // (k - 1), b = the (t % (k - 1))-th of the others)
        multi = np.flatnonzero(n_pos > 1)
        k = n_pos[multi].astype(np.int64)
        per_row = k * (k - 1)
        row_of = np.repeat(np.arange(len(multi)), per_row)
        t = np.arange(int(per_row.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(per_row) - per_row, per_row)
        others = k[row_of] - 1
        i, j = t // np.maximum(others, 1), t % np.maximum(others, 1)
        j = j + (j >= i)
        first = (np.cumsum(n_pos) - n_pos)[multi][row_of]
        self.pairs_a = position[first + i].astype(np.int64)
        self.pairs_b = position[first + j].astype(np.int64)
        n_folds = len(self.fold_numbers)
        self.pos_fold = fold_index[self.pos_rows]
        if self.metric.name == "lwlrap":
            # the mean over positives: each positive weighs 1
            self.pos_weight = np.ones(len(self.pos_rows))
            self.fold_counts = np.bincount(self.pos_fold, minlength=n_folds).astype(np.float64)
        else:
            # lrap: the mean over rows of the row's mean precision
            self.pos_weight = 1.0 / n_pos[self.pos_rows]
            self.fold_counts = np.bincount(fold_index, minlength=n_folds).astype(np.float64)
        # The same positives in row-major order (rows in ``self.rows`` order, classes ascending):
        # every backend sums the weighted precisions of a fold in this order, one after the
        # other, so numpy, the compiled kernel and torch give bit-identical scores.
        self.row_major = np.argsort(self.pos_rows * n_classes + self.pos_cols, kind="stable")
        self.row_start = np.concatenate([[0], np.cumsum(n_pos)]).astype(np.int64)
        self.row_cols = self.pos_cols[self.row_major].astype(np.int64)
        self.row_fold = self.pos_fold[self.row_major].astype(np.int64)
        self.row_weight = np.ascontiguousarray(self.pos_weight[self.row_major], dtype=np.float64)
        self._fold_positions = [np.flatnonzero(self.row_fold == f) for f in range(n_folds)]
        self._total_count = float(self.fold_counts.sum())
        rest = self._total_count - self.fold_counts
        self._rest_counts = np.where(rest > 0, rest, np.nan)
        self._ones = np.ones(n_classes, dtype=np.float32)
        self._buffer = np.empty((n_rows, n_classes), dtype=np.float32)

    @property
    def n_folds(self) -> int:
        return len(self.fold_numbers)

    def counts(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hits, at_or_above) at every positive, row-major order, int64 of shape (n_positives,):
        the positives of the row scored >= the positive, and the classes scored >= it."""
        S = np.ascontiguousarray(S)
        scores = S.reshape(-1).take(self.pos_flat)
        at_or_above = np.empty(len(scores), dtype=np.float32)
        for j, size in enumerate(self.pass_size):
            lo, hi = self.pass_start[j], self.pass_start[j + 1]
            buffer = self._buffer[:size]
            # count with a float32 matrix-vector product: exact for counts below 2**24
            np.greater_equal(S[:size], scores[lo:hi, None], out=buffer)
            at_or_above[lo:hi] = buffer @ self._ones
        hits = 1 + np.bincount(self.pairs_a, weights=scores[self.pairs_b] >= scores[self.pairs_a],
                               minlength=len(scores))
        return (hits[self.row_major].astype(np.int64),
                at_or_above[self.row_major].astype(np.int64))

    def precisions(self, S: np.ndarray) -> np.ndarray:
        """Precision at every positive (row-major order), shape (n_positives,)."""
        hits, at_or_above = self.counts(S)
        return hits / at_or_above

    def fold_sums_from_counts(self, hits: np.ndarray, at_or_above: np.ndarray) -> np.ndarray:
        """Weighted precisions summed per fold, in row-major order one after the other.

        hits, at_or_above: (n_candidates, n_positives) integers (row-major positives).
        Returns (n_candidates, n_folds) float64.
        """
        hits = np.atleast_2d(hits)
        weighted = hits / np.atleast_2d(at_or_above) * self.row_weight
        sums = np.zeros((len(hits), self.n_folds))
        for f, positions in enumerate(self._fold_positions):
            if len(positions):
                # a running sum is sequential (unlike sum's pairwise order): the kernels' order
                sums[:, f] = np.cumsum(weighted[:, positions], axis=1)[:, -1]
        return sums

    def outputs_from_fold_sums(self, sums: np.ndarray) -> np.ndarray:
        """Scores (higher is better), shape (n_candidates, n_outputs), from per-fold sums of shape
        (n_candidates, n_folds): all rows, then each fold left out."""
        sums = np.atleast_2d(sums)
        out = np.empty((len(sums), self.n_outputs))
        count = self._total_count
        out[:, 0] = _sum_folds(sums, range(sums.shape[1])) / count if count else np.nan
        for i in range(sums.shape[1]):
            # the kept folds added in fold order (not the total less fold i: a left-out score
            # reads nothing of its fold, whose sums the row-major walker then need not compute)
            kept = _sum_folds(sums, (f for f in range(sums.shape[1]) if f != i))
            out[:, 1 + i] = kept / self._rest_counts[i]     # nan where a fold holds every positive
        return self.sign * out

    def folds_read(self, targets) -> np.ndarray:
        """(n_folds,) bool: the folds whose sums :meth:`outputs_from_fold_sums` reads for the
        outputs ``targets`` (0: every fold; 1 + i: every fold but i)."""
        n_folds = self.n_folds
        read = np.zeros(n_folds, dtype=bool)
        for t in targets:
            read |= (np.arange(n_folds) != t - 1) if t else True
        return read

    def evaluate(self, S, n_terms):
        return self.outputs_from_fold_sums(self.fold_sums_from_counts(*self.counts(S)))[0]


def _sum_folds(sums: np.ndarray, folds) -> np.ndarray:
    """``sums[:, f]`` of ``folds`` added one after the other, in that order, from zero."""
    total = np.zeros(len(sums))
    for f in folds:
        total += sums[:, f]
    return total


class MetricScorer(Scorer):
    """Any metric: dequantize the sum, finalize the blend, call the metric on the rows."""

    def __init__(self, y, fold, fold_numbers, metric, *, blend, power, scale=1.0):
        super().__init__(y, fold, fold_numbers, metric, blend=blend, power=power, scale=scale)
        self.y = np.asarray(y)
        self.keep = [np.asarray(fold) != k for k in self.fold_numbers]

    def values(self, S, n_terms) -> np.ndarray:
        return finalize(S / (self.scale * n_terms), self.blend, power=self.power)

    def evaluate(self, S, n_terms):
        values = self.values(S, n_terms)
        out = [self.metric(self.y, values)]
        out += [self.metric(self.y[keep], values[keep]) for keep in self.keep]
        return self.sign * np.asarray(out, dtype=np.float64)

    def evaluate_targets(self, S, n_terms, targets):
        if len(targets) == 1:
            return np.array([self.evaluate_one(S, n_terms, targets[0])])
        return self.evaluate(S, n_terms)[list(targets)]

    def evaluate_one(self, S, n_terms, target):
        values = self.values(S, n_terms)
        if target == 0:
            return self.sign * self.metric(self.y, values)
        keep = self.keep[target - 1]
        return self.sign * self.metric(self.y[keep], values[keep])


def make_scorer(y, fold, fold_numbers, metric, *, blend: str, power: float) -> Scorer:
    """The fast scorer for lwlrap/lrap, the generic one otherwise (``scale`` is set later)."""
    cls = RankScorer if get_metric(metric).name in FAST_METRICS else MetricScorer
    return cls(y, fold, fold_numbers, metric, blend=blend, power=power)
