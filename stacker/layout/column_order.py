"""The class of each column of an unnamed prediction array: never guessed silently.

An ``.npy`` array does not name its columns. Their order comes from, in this order of precedence:
``--classes``; else the class columns of the template given with ``--test-ids`` (a
``sample_submission.csv`` header names the competition's order, which a notebook's arrays
usually follow); else ``classes.txt``. When ``--classes`` and the template disagree, the import is
refused. Before anything is written, the chosen order is checked against the labels: each
class's out-of-fold AUC, and the same under the other orders a user could have meant (the
template's, classes.txt's, natural order ``label_2 < label_10``, text order
``label_10 < label_2``). A chosen order that ranks most classes below chance, or that a
plausible alternative beats clearly, is refused with the score under each order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from stacker.errors import OptionError
from stacker.layout import memory
from stacker.layout.folds import Folds

CLEARLY_BETTER = 0.05      # mean-AUC margin by which another order must win to refuse the chosen one
CHANCE = 0.5


def natural_key(name: str) -> tuple:
    """Sort key that puts ``label_2`` before ``label_10`` (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", str(name))
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), str(name)


def template_classes(path, known: Sequence[str]) -> tuple[str, ...] | None:
    """The class columns of a template CSV's header (every column after the first; or of a
    DataFrame's header, :func:`stacker.layout.memory.header`), when they are exactly the classes
    ``known``; None for an ids-only file or other columns."""
    if path is None:
        return None
    if memory.in_memory(path):          # a DataFrame such as a pandas-read sample_submission.csv
        header = memory.header(path) or []
    else:
        import csv

        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                header = next(csv.reader(handle), [])
        except (OSError, UnicodeError, csv.Error):   # the ids reader reports such files itself
            return None
    columns = [c.strip() for c in header[1:] if c.strip()]
    if len(columns) > 1 and sorted(columns) == sorted(known) and len(set(columns)) == len(columns):
        return tuple(columns)
    return None


def resolve_column_order(classes: Sequence[str] | None, template: Sequence[str] | None,
                         known: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """(the class of each array column, where that order came from)."""
    if classes is not None:
        named = tuple(c.strip() for c in classes)
        if template is not None and sorted(named) == sorted(template) and named != tuple(template):
            raise OptionError("--classes names another column order than the class columns of the "
                              "--test-ids template; give the order your arrays really have with "
                              "--classes (it must then agree with the template), or drop --classes "
                              "to use the template's")
        return named, "--classes"
    if template is not None:
        return tuple(template), "the class columns of the --test-ids template"
    return tuple(known), "classes.txt"


def class_aucs(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-class ROC AUC of ``scores`` (n_rows, n_classes) against ``y`` (n_rows, n_classes), ties
    counted half; NaN for a class with no positive or no negative row."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    positives = y.astype(bool)
    n_pos = positives.sum(axis=0)
    n_neg = len(y) - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positives).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def check_column_order(values: np.ndarray, folds: Folds, columns: Sequence[str], source: str, *,
                       path: Path, alternatives: dict[str, Sequence[str]]) -> None:
    """OptionError when the columns of the OOF array ``values`` (n_rows, n_columns), read as the
    classes ``columns`` (from ``source``), do not fit the labels of folds.csv: most classes at
    below chance, or another plausible order (``alternatives``: name -> column classes) clearly
    better by mean AUC."""
    def aucs_of(order: Sequence[str]) -> np.ndarray:
        position = {c: j for j, c in enumerate(order)}
        return class_aucs(folds.y, values[:, [position[c] for c in folds.classes]])

    def mean_auc(order: Sequence[str]) -> float:
        aucs = aucs_of(order)
        return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")

    aucs = aucs_of(columns)
    if not np.isfinite(aucs).any():
        return
    chosen = float(np.nanmean(aucs))
    scores = {name: mean_auc(order) for name, order in alternatives.items()
              if tuple(order) != tuple(columns)}
    best_name = max(scores, key=lambda n: scores[n], default=None)
    below = int(np.sum(aucs[np.isfinite(aucs)] < CHANCE))
    n_scored = int(np.isfinite(aucs).sum())
    better = best_name is not None and scores[best_name] > chosen + CLEARLY_BETTER
    if better or (below > n_scored / 2 and chosen < CHANCE):
        listed = "; ".join([f"{source}: {chosen:.3f}"] + [f"{n}: {s:.3f}" for n, s in scores.items()])
        raise OptionError(
            f"{path}: the array's columns do not look like the classes in the order of {source} "
            f"({below} of {n_scored} classes below chance); mean out-of-fold AUC by "
            f"column order: {listed}. Name the arrays' real column order with --classes a,b,c")


def plausible_orders(known: Sequence[str], template: Sequence[str] | None) -> dict[str, tuple]:
    """The column orders a user could have meant: classes.txt's, the template's, natural, text."""
    orders = {"classes.txt": tuple(known), "natural order": tuple(sorted(known, key=natural_key)),
              "text order": tuple(sorted(known))}
    if template is not None:
        orders["the template"] = tuple(template)
    return orders


__all__ = ["check_column_order", "class_aucs", "natural_key", "plausible_orders",
           "resolve_column_order", "template_classes"]
