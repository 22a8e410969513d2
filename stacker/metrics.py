"""Metrics for multi-label (and single-label) predictions, and a registry by name for ``--metric``.

Ties. ``lwlrap`` and ``lrap`` rank the classes of a row by score. Where scores tie, every tied
class counts as ranked *above* the positive being scored (scikit-learn's LRAP rule): the precision of
a positive label j in a row is ``#{positives k: s_k >= s_j} / #{classes k: s_k >= s_j}``. On tie-free
input this is exactly the DCASE 2019 reference; constant scores earn only chance.

Rows with no positive label are ignored by the ranking metrics (lwlrap, lrap, roc_auc, map).

Speed. lwlrap needs no sort: each positive (row, class) pair is compared with the row's scores, so
the cost is O(n_positives x n_classes), a few milliseconds for 5,000 x 80. From 2 million
comparisons on (numba installed) a compiled loop counts the same integers (50,000 x 100 with
65,000 positives: 5-9 ms against 30-80 ms with numpy), so every precision is the same number.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from stacker import compiled
from stacker.errors import OptionError

_CHUNK_ELEMENTS = 4_000_000


def _as_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(f"y_true and y_score must be 2-d arrays of one shape "
                         f"(n_rows, n_classes); got {y_true.shape} and {y_score.shape}")
    return y_true > 0, y_score


def positive_precisions(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision at every positive label.

    Returns (rows, classes, precision), each of shape (n_positives,): the row and class of every
    positive (row-major order) and the precision of the ranking at that positive.

    The work goes "pass by pass": pass j compares the j-th positive of every row that has one with
    its row, so the first pass (every labelled row) needs no gather when every row has a label,
    and the classes at or above are counted by a float32 matrix-vector product (exact below
    2**24). The positives at or above come from the few rows with several labels.
    """
    truth, scores = _as_arrays(y_true, y_score)
    n_rows, n_classes = truth.shape
    # row-major positives; a flat nonzero and a division are ~10x faster than a 2-d nonzero
    rows, classes = np.divmod(np.flatnonzero(truth), max(n_classes, 1))
    precision = np.empty(len(rows), dtype=np.float64)
    if not len(rows):
        return rows, classes, precision
    n_pos = np.bincount(rows, minlength=n_rows)
    first = np.cumsum(n_pos) - n_pos
    if _compiled_counts(scores, len(rows)):
        at_or_above = np.empty(len(rows), dtype=np.int64)
        hits = np.empty(len(rows), dtype=np.float64)
        _kernels()["counts"](scores, rows, classes, first, n_pos, at_or_above, hits)
        precision[:] = hits / at_or_above
        return rows, classes, precision
    values = scores[rows, classes]
    rank = np.arange(len(rows)) - first[rows]                  # j: the row's j-th positive
    ones = np.ones(n_classes, dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, n_classes))
    at_or_above = np.empty(len(rows), dtype=np.float32)
    buffer = np.empty((min(step, n_rows), n_classes), dtype=np.float32)
    for j in range(int(n_pos.max())):
        sel = np.flatnonzero(rank == j)
        every_row = j == 0 and len(sel) == n_rows
        for start in range(0, len(sel), step):
            part = sel[start:start + step]
            block = scores[start:start + len(part)] if every_row else scores[rows[part]]
            mask = buffer[:len(part)]
            np.greater_equal(block, values[part, None], out=mask)
            at_or_above[part] = mask @ ones
    hits = np.ones(len(rows), dtype=np.float64)
    multi = np.flatnonzero(n_pos > 1)
    if len(multi):
        # the values of the positives of each multi-label row, padded with -inf: (rows, width)
        width = int(n_pos[multi].max())
        padded = np.full((len(multi), width), -np.inf)
        slot = np.arange(width)
        index = first[multi, None] + slot
        present = slot < n_pos[multi, None]
        padded[present] = values[index[present]]
        counts = (padded[:, None, :] >= padded[:, :, None]).sum(axis=2)    # (rows, width)
        hits[index[present]] = counts[present]
    precision[:] = hits / at_or_above
    return rows, classes, precision


# positives x classes from which the counts are compiled (smaller: numpy, numba never loaded)
COMPILED_FROM = 2_000_000
_KERNELS: dict = {}
_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()
_LOADING: list = []           # the thread loading the kernel, once started


def _compiled_counts(scores: np.ndarray, n_positives: int) -> bool:
    """Whether :func:`positive_precisions` counts with the compiled kernel: a large enough
    C-contiguous float32 or float64 score matrix, numba there and the kernel loaded. A call
    that finds it not loaded yet starts loading it on a background thread and counts with
    numpy (importing numba and loading the kernel take 0.3-0.6 s, numpy's counts of 50,000 x
    100 scores 30-80 ms: the first metric never waits for the compiler)."""
    if not (n_positives * scores.shape[1] >= COMPILED_FROM and scores.flags.c_contiguous
            and scores.dtype in (np.float32, np.float64)):
        return False
    if _KERNELS:
        return True
    with _LOAD_LOCK:
        if not _LOADING and compiled.installed():
            _LOADING.append(threading.Thread(target=_load_quietly, name="stack-metric-kernel",
                                             daemon=True))
            _LOADING[0].start()
    return False


def _load_quietly() -> None:
    """:func:`warm_up`; a failure leaves the counts to numpy (the same numbers)."""
    try:
        warm_up()
    except Exception:  # noqa: BLE001 - numpy counts instead, as without numba
        pass


def _kernels() -> dict:
    return compiled.build_once(_KERNELS, _LOCK, lambda: {"counts": compiled.jit(count_ranks)})


def warm_up() -> None:
    """Load the compiled counts (numba's on-disk cache, or a compilation) with a toy call, so that
    the first large metric does not wait for them; nothing without numba."""
    if compiled.available():
        counts = np.zeros(2, dtype=np.int64)
        _kernels()["counts"](np.array([[0.5, 1.0]]), np.zeros(2, dtype=np.int64),
                             np.arange(2), np.zeros(1, dtype=np.int64),
                             np.array([2]), counts, np.zeros(2))


def count_ranks(scores, rows, classes, first, n_pos, at_or_above, hits):  # pragma: no cover
    """For each positive p (row rows[p], class classes[p]; a row's positives from first[row],
    n_pos[row] of them): at_or_above[p] = the classes of its row scored at or above it, hits[p]
    = the row's positives at or above it (1 for a row's only positive, as the numpy path
    counts it). The integers :func:`positive_precisions` counts with numpy; compiled."""
    n_classes = scores.shape[1]
    for p in range(rows.shape[0]):
        r = rows[p]
        row = scores[r]
        value = row[classes[p]]
        at = 0
        for c in range(n_classes):
            at += np.int64(row[c] >= value)
        at_or_above[p] = at
        if n_pos[r] > 1:
            count = 0
            for p2 in range(first[r], first[r] + n_pos[r]):
                count += np.int64(row[classes[p2]] >= value)
            hits[p] = count
        else:
            hits[p] = 1.0


def per_class_lwlrap(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Per-class label-ranking average precision and the class weights that lwlrap uses.

    Returns (scores, weights), each of shape (n_classes,); a class with no positive gets score 0
    and weight 0. ``lwlrap == (scores * weights).sum()``.
    """
    truth, _ = _as_arrays(y_true, y_score)
    _, classes, precision = positive_precisions(y_true, y_score)
    n_classes = truth.shape[1]
    counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
    sums = np.bincount(classes, weights=precision, minlength=n_classes)
    scores = sums / np.maximum(counts, 1)
    weights = counts / max(counts.sum(), 1)
    return scores, weights


def lwlrap(y_true, y_score) -> float:
    """Label-weighted label-ranking average precision (DCASE 2019 Task 2 metric).

    The mean, over every positive (row, class) pair, of the precision at that positive; nan when
    there is no positive label at all.
    """
    _, _, precision = positive_precisions(y_true, y_score)
    return float(precision.mean()) if len(precision) else float("nan")


def lrap(y_true, y_score) -> float:
    """Label-ranking average precision: the mean over rows (with a positive) of the row's mean
    precision at its positives. Equals scikit-learn's when every row has a positive."""
    truth, _ = _as_arrays(y_true, y_score)
    rows, _, precision = positive_precisions(y_true, y_score)
    if not len(rows):
        return float("nan")
    per_row = np.bincount(rows, weights=precision, minlength=truth.shape[0])
    counts = truth.sum(axis=1)
    keep = counts > 0
    return float(np.mean(per_row[keep] / counts[keep]))


def _labelled(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    truth, scores = _as_arrays(y_true, y_score)
    keep = truth.any(axis=1)
    return truth[keep], scores[keep]


def _macro(score_fn, y_true, y_score) -> float:
    truth, scores = _labelled(y_true, y_score)
    values = [score_fn(truth[:, j], scores[:, j]) for j in range(truth.shape[1])
              if 0 < truth[:, j].sum() < len(truth)]
    return float(np.mean(values)) if values else float("nan")


def roc_auc(y_true, y_score) -> float:
    """Macro ROC AUC over the classes that have both positive and negative rows."""
    from sklearn.metrics import roc_auc_score  # imported on use: sklearn is slow to import

    return _macro(roc_auc_score, y_true, y_score)


def mean_average_precision(y_true, y_score) -> float:
    """Macro average precision over the classes that have a positive (and a negative) row."""
    from sklearn.metrics import average_precision_score

    return _macro(average_precision_score, y_true, y_score)


def log_loss(y_true, y_score, eps: float = 1e-7) -> float:
    """Cross-entropy. Single-label data (one label in every row): -mean log p(true class) of the
    row-normalised scores. Multi-label: mean binary cross-entropy over every (row, class)."""
    truth, scores = _as_arrays(y_true, y_score)
    p = np.clip(scores.astype(np.float64), eps, 1 - eps)
    if np.all(truth.sum(axis=1) == 1):
        p = p / p.sum(axis=1, keepdims=True)
        return float(-np.mean(np.log(p[truth])))
    return float(-np.mean(np.where(truth, np.log(p), np.log1p(-p))))


def accuracy(y_true, y_score) -> float:
    """Top-1 accuracy: how often the highest-scoring class is one of the row's labels (rows with a
    label only)."""
    truth, scores = _labelled(y_true, y_score)
    if not len(truth):
        return float("nan")
    return float(np.mean(truth[np.arange(len(truth)), np.argmax(scores, axis=1)]))


def _any_positive(y_true) -> bool:
    """Whether a ranking metric (lwlrap, lrap) or accuracy has a value on ``y_true``: it scores
    the rows with a positive label, so it has one exactly when some label is positive."""
    return bool(np.any(np.asarray(y_true) > 0))


@dataclass(frozen=True)
class Metric:
    """A named metric: ``metric(y_true, y_score) -> float``; ``greater_is_better`` orders scores.
    ``defined(y_true) -> bool``, when given, says without scoring whether the metric of perfect
    predictions on ``y_true`` is a number (:meth:`is_defined`)."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool = True
    defined: Callable[[np.ndarray], bool] | None = None

    def __call__(self, y_true, y_score) -> float:
        return self.fn(y_true, y_score)

    def is_defined(self, y_true) -> bool:
        """Whether the metric has a value on the labels ``y_true`` (n_rows, n_classes): the metric
        of perfect predictions (y_true itself) is a number."""
        if self.defined is not None:
            return self.defined(y_true)
        y_true = np.asarray(y_true)
        return bool(np.isfinite(self(y_true, y_true.astype(np.float64))))

    def is_better(self, a: float, b: float) -> bool:
        """True when score ``a`` is strictly better than ``b`` (nan is never better)."""
        if np.isnan(a):
            return False
        if np.isnan(b):
            return True
        return a > b if self.greater_is_better else a < b

    def sign(self) -> float:
        """+1 when greater is better, -1 otherwise: ``sign * score`` is always 'higher is better'."""
        return 1.0 if self.greater_is_better else -1.0


METRICS: dict[str, Metric] = {
    m.name: m for m in (
        Metric("lwlrap", lwlrap, defined=_any_positive),
        Metric("lrap", lrap, defined=_any_positive),
        Metric("roc_auc", roc_auc),
        Metric("map", mean_average_precision),
        Metric("log_loss", log_loss, greater_is_better=False),
        Metric("accuracy", accuracy, defined=_any_positive),
    )
}


def get_metric(name: str | Metric) -> Metric:
    """The metric called ``name``; raises OptionError listing the known names."""
    if isinstance(name, Metric):
        return name
    try:
        return METRICS[name]
    except KeyError:
        raise OptionError(f"unknown metric '{name}'; choose one of: {', '.join(METRICS)}") from None


def fold_scores(y_true, y_score, fold, fold_numbers, metric: str | Metric = "lwlrap") -> list[float]:
    """The metric on each fold's rows, in ``fold_numbers`` order: the one per-fold scoring loop.

    y_true, y_score: (n_rows, n_classes); fold: (n_rows,) fold number of each row.
    """
    metric = get_metric(metric)
    fold = np.asarray(fold)
    return [metric(y_true[fold == k], y_score[fold == k]) for k in fold_numbers]


def check_defined(metric: str | Metric, y_true, fold, fold_numbers) -> None:
    """Raise LayoutError when ``metric`` has no value on the labels: no labelled row at all, or a
    fold whose rows leave it undefined (no label in the fold). A choice made on NaN scores would
    be arbitrary, so every command that scores on the folds refuses first.

    The test: the metric of perfect predictions (y_true itself) must be a number, overall and on
    every fold (:meth:`Metric.is_defined`, which the ranking metrics answer without scoring).
    y_true: (n_rows, n_classes) 0/1; fold: (n_rows,).
    """
    from stacker.errors import LayoutError

    metric = get_metric(metric)
    y_true = np.asarray(y_true)
    if not y_true.any() or not metric.is_defined(y_true):
        raise LayoutError(f"metric {metric.name} is undefined: no row of folds.csv has a label; "
                          "fill the labels column of folds.csv (stack make-folds)")
    fold = np.asarray(fold)
    for k in fold_numbers:
        if not metric.is_defined(y_true[fold == k]):
            raise LayoutError(f"metric {metric.name} is undefined on fold {k} of folds.csv: its "
                              f"{int((fold == k).sum())} rows have no label it can score; label "
                              "them or rebuild the folds with `stack make-folds`")
