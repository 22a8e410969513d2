"""Which rows early-stop a level-2 fold model: never the rows it predicts out of fold.

``inner-holdout`` (the default) sets aside a seeded, label-stratified fraction of the *training*
rows (the other folds) as the early-stopping rows: they pick the best epoch, drive the
learning-rate schedule and stop the training. Fold ``k``'s labels take no part, so the fold-``k``
predictions are true out-of-fold predictions. ``fold`` is the old behaviour (fold ``k`` itself
early-stops the fold-``k`` model): its CV is optimistic.
"""

from __future__ import annotations

import numpy as np

from stacker.errors import OptionError

INNER_HOLDOUT = "inner-holdout"
ON_FOLD = "fold"
EARLY_STOPPING_MODES = (INNER_HOLDOUT, ON_FOLD)
OPTIMISTIC_NOTE = ("early stopping used each fold's own labels (--early-stop-on-fold), so this CV "
                   "is optimistic")


def check_mode(mode: str) -> str:
    if mode not in EARLY_STOPPING_MODES:
        raise OptionError(f"early_stopping must be one of {', '.join(EARLY_STOPPING_MODES)}, "
                          f"got '{mode}'")
    return mode


def inner_holdout_mask(y: np.ndarray, fraction: float, *, seed: int) -> np.ndarray:
    """A seeded choice of about ``fraction`` of the rows of ``y``, spread over the classes.

    y: array of shape (n_rows, n_classes), 0/1. Rows are shuffled, then ordered by the rarest
    class they carry (rows without a label last) and every ``1/fraction``-th one is taken, so each
    class gives about ``fraction`` of its rows. At least one row is taken and at least one is left.
    Returns a bool array of shape (n_rows,).
    """
    n_rows = len(y)
    if n_rows < 2:
        raise OptionError(f"{n_rows} training row(s) cannot be split into rows to fit and rows to "
                          "early-stop on; use more rows or fewer folds")
    y = np.asarray(y) > 0
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_rows)
    counts = y.sum(0)
    rank = np.argsort(np.argsort(counts, kind="stable"), kind="stable")   # 0 = rarest class
    key = np.where(y, rank[None, :], len(counts)).min(1)                 # rarest class of each row
    order = order[np.argsort(key[order], kind="stable")]
    position = np.arange(n_rows)
    offset = rng.random()
    taken = np.floor((position + 1) * fraction + offset) > np.floor(position * fraction + offset)
    if not taken.any():
        taken[0] = True
    if taken.all():
        taken[-1] = False
    mask = np.zeros(n_rows, dtype=bool)
    mask[order[taken]] = True
    return mask
