"""Folds for K-fold training: multi-label iterative stratification, with groups kept in one fold.

The algorithm is Sechidis, Tsoumakas & Vlahavas (2011), "On the stratification of multi-label
data": repeatedly take the label with the fewest unassigned examples and give each of its examples
to the fold that most wants that label (largest remaining desired count), breaking ties by the
fold that wants the most examples overall, then at random (seeded). Handling the rarest labels
first is what spreads every class over the folds.

Groups (a speaker, a recording session) are the units that get assigned: a group carries the
summed label counts of its rows and its row count, so a fold's desired counts fall by whole groups.
Without groups every row is its own unit and this is exactly the published algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from stacker import layout
from stacker.errors import LayoutError, OptionError, OutputExistsError
from stacker.layout import provenance
from stacker.layout.column_order import natural_key


def iterative_stratification(y: np.ndarray, n_folds: int, *, groups: Sequence | None = None,
                             seed: int = 0) -> np.ndarray:
    """Fold numbers 0..n_folds-1 for each row.

    y: array of shape (n_rows, n_classes), 0/1 (rows may have no label or several).
    groups: optional array of shape (n_rows,); rows of one group always share a fold.
    Returns an int64 array of shape (n_rows,).
    """
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"y must have shape (n_rows, n_classes), got {y.shape}")
    n_rows = len(y)
    if n_folds < 2:
        raise OptionError(f"`n_folds` must be at least 2, got {n_folds}")
    if int(seed) < 0:
        raise OptionError(f"`seed` must be 0 or more, got {seed}")
    if groups is None:
        unit_of_row = np.arange(n_rows)
    else:
        _, unit_of_row = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_units = int(unit_of_row.max()) + 1 if n_rows else 0
    if n_units < n_folds:
        what = "groups" if groups is not None else "rows"
        raise OptionError(f"{n_units} {what} cannot fill {n_folds} folds; use `n_folds` "
                          f"{max(2, n_units)} or fewer")
    # unit label counts (how many of the unit's rows have each label) and unit sizes (rows)
    counts = np.zeros((n_units, y.shape[1]), dtype=np.float64)
    np.add.at(counts, unit_of_row, (y > 0).astype(np.float64))
    sizes = np.bincount(unit_of_row, minlength=n_units).astype(np.float64)
    unit_fold = _stratify_units(counts, sizes, n_folds, np.random.default_rng(seed))
    unit_fold = _repair_missing_classes(unit_fold, counts > 0, sizes, n_folds)
    return unit_fold[unit_of_row].astype(np.int64)


def _stratify_units(counts: np.ndarray, sizes: np.ndarray, n_folds: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Sechidis et al.'s loop over units. counts: (n_units, n_classes); sizes: (n_units,)."""
    n_units, n_classes = counts.shape
    ratio = 1.0 / n_folds
    want_rows = np.full(n_folds, sizes.sum() * ratio)                   # c_j
    want_label = np.tile(counts.sum(axis=0) * ratio, (n_folds, 1))     # c_j^i, (n_folds, n_classes)
    fold = np.full(n_units, -1, dtype=np.int64)
    has = counts > 0
    # a random priority decides every remaining tie between units, reproducibly for the seed
    priority = rng.permutation(n_units)
    left = np.ones(n_units, dtype=bool)
    while left.any():
        remaining = has[left].sum(axis=0)                               # units left per label
        if not remaining.any():
            break
        candidates = np.flatnonzero(remaining == remaining[remaining > 0].min())
        label = int(candidates[rng.integers(len(candidates))]) if len(candidates) > 1 \
            else int(candidates[0])
        units = np.flatnonzero(left & has[:, label])
        # the biggest groups first (as in bin packing) so small ones can even out the folds
        units = units[np.lexsort((priority[units], -counts[units, label]))]
        for u in units:
            j = _choose(want_label[:, label], want_rows, rng)
            fold[u] = j
            want_label[j] -= counts[u]
            want_rows[j] -= sizes[u]
        left[units] = False
    # units with no label at all go wherever the most rows are still wanted
    for u in np.flatnonzero(left)[np.argsort(priority[left])]:
        j = _choose(want_rows, want_rows, rng)
        fold[u] = j
        want_rows[j] -= sizes[u]
    return fold


def _repair_missing_classes(fold: np.ndarray, has: np.ndarray, sizes: np.ndarray,
                            n_folds: int) -> np.ndarray:
    """Swap units so that every class held by >= n_folds units appears in every fold.

    The greedy loop above almost always achieves this; on small, dense label sets a class can
    end up missing from a fold. A swap takes a unit with the class from a fold that has it twice
    or more, for a unit of the empty fold of the closest size, and is made only when it empties no
    other fold of such a class. has: (n_units, n_classes) bool; sizes: (n_units,).
    """
    fold = fold.copy()
    eligible = has.sum(axis=0) >= n_folds
    for _ in range(4 * has.shape[1] * n_folds):
        per_fold = np.stack([has[fold == j].sum(axis=0) for j in range(n_folds)])  # (k, classes)
        gaps = np.argwhere((per_fold == 0) & eligible)
        swap = None
        for j, c in gaps:
            swap = _best_swap(fold, has, sizes, per_fold, eligible, int(j), int(c))
            if swap is not None:
                break
        if swap is None:
            return fold
        u, v = swap
        fold[u], fold[v] = fold[v], fold[u]
    return fold


def _best_swap(fold, has, sizes, per_fold, eligible, j: int, c: int):
    """(u, v): u holds class c in a fold with >= 2 such units, v is in fold j; or None."""
    in_j = np.flatnonzero(fold == j)
    best, best_cost = None, np.inf
    for u in np.flatnonzero(has[:, c] & (per_fold[fold, c] >= 2)):
        other = fold[u]
        after_other = per_fold[other] - has[u] + has[in_j]          # (len(in_j), classes)
        after_j = per_fold[j] + has[u] - has[in_j]
        keeps = ~((after_other == 0) & (per_fold[other] > 0) & eligible).any(axis=1) & \
            ~((after_j == 0) & (per_fold[j] > 0) & eligible).any(axis=1)
        if not keeps.any():
            continue
        cost = np.abs(sizes[in_j] - sizes[u]) + np.where(keeps, 0, np.inf)
        i = int(np.argmin(cost))
        if cost[i] < best_cost:
            best, best_cost = (int(u), int(in_j[i])), cost[i]
    return best


def _choose(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> int:
    """The fold with the largest ``first``; ties by the largest ``second``, then at random."""
    best = np.flatnonzero(np.isclose(first, first.max()))
    if len(best) > 1:
        best = best[np.isclose(second[best], second[best].max())]
    return int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])


# ---------------------------------------------------------------- labels CSV


@dataclass(frozen=True)
class LabelTable:
    """Rows of a labels CSV. ids: (n_rows,) str; labels: a tuple of class names per row;
    groups: (n_rows,) str or None; classes: sorted class names."""

    id_column: str
    ids: np.ndarray
    labels: tuple[tuple[str, ...], ...]
    groups: np.ndarray | None
    classes: tuple[str, ...]
    path: Path

    @property
    def y(self) -> np.ndarray:
        """(n_rows, n_classes) uint8 indicator matrix in ``classes`` order."""
        return layout.labels_to_matrix(self.labels, self.classes)


def read_label_table(path: Path | str, *, label_column: str = "labels",
                     id_column: str | None = None, group_column: str | None = None) -> LabelTable:
    """Read a labels CSV: FAT2019 ``fname,labels`` (comma-joined labels in one quoted field) or any
    CSV with an id column (default: the first), a label column and optionally a group column."""
    path = Path(path)
    frame = layout.read_csv_table(path, what="labels file")
    id_column = id_column or frame.columns[0]
    for option, column in (("`id_column`", id_column), ("`label_column`", label_column),
                           ("`group_column`", group_column)):
        if column is not None and column not in frame.columns:
            raise OptionError(f"{path}: no column '{column}' for {option}; the columns are "
                              f"{', '.join(frame.columns)}")
    ids = frame[id_column].to_numpy(dtype=str)
    blank = np.flatnonzero(frame[id_column].isna().to_numpy() | (np.char.strip(ids) == ""))
    if len(blank):
        raise LayoutError(f"row {blank[0] + 2}: the id in column '{id_column}' is empty; every "
                          "row needs an id", path=path)
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        dup = unique[counts > 1][0]
        rows = np.flatnonzero(ids == dup)[:2] + 2
        raise LayoutError(f"id '{dup}' appears {counts.max()} times (rows {rows[0]} and "
                          f"{rows[1]}); each row id must appear once", path=path)
    labels = tuple(layout.split_labels(v) for v in frame[label_column].tolist())
    groups = None
    if group_column is not None:
        missing = np.flatnonzero(frame[group_column].isna().to_numpy())
        if len(missing):
            raise LayoutError(f"row {missing[0] + 2}: column '{group_column}' is empty; every row "
                              "needs a group", path=path)
        groups = frame[group_column].astype(str).to_numpy()
    classes = tuple(sorted({name for row in labels for name in row}))
    if not classes:
        raise LayoutError(f"column '{label_column}' holds no label at all; check `label_column`",
                          path=path)
    return LabelTable(id_column=id_column, ids=ids, labels=labels, groups=groups,
                      classes=classes, path=path)


# ---------------------------------------------------------------- writing folds.csv


def experiments_using_folds(root: Path | str) -> list[str]:
    """Experiments under ``root`` made on the current folds.csv (or that cannot tell: no hash)."""
    root = Path(root)
    if not (root / layout.FOLDS_FILE).exists():
        return []
    try:
        current = layout.read_folds(root).hash
    except LayoutError:
        current = None       # an unreadable folds.csv: any experiment may depend on it
    users = []
    for name in layout.list_experiments(root):
        if provenance.made_on_folds(layout.read_meta(root, name), current):
            users.append(name)
    return users


def fold_label_counts(y: np.ndarray, fold: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """A (n_classes + 1, n_folds + 2) table: rows of each class per fold, the total, and a last
    row with the number of rows per fold."""
    numbers = np.unique(fold)
    table = pd.DataFrame({"class": list(classes)})
    for k in numbers:
        table[f"fold {k}"] = y[fold == k].sum(axis=0).astype(int)
    table["total"] = y.sum(axis=0).astype(int)
    rows = {"class": "(rows)", **{f"fold {k}": int((fold == k).sum()) for k in numbers},
            "total": len(fold)}
    return pd.concat([table, pd.DataFrame([rows])], ignore_index=True)


@dataclass(frozen=True)
class MadeFolds:
    """What :func:`make_folds` wrote: the folds.csv path, the fold of every row (n_rows,), the
    per-fold label counts, and the experiments that the new folds invalidate (only under force)."""

    path: Path
    table: LabelTable
    fold: np.ndarray
    counts: pd.DataFrame
    invalidated: tuple[str, ...]


def class_order(classes: Sequence[str], template: Path | str | None = None) -> tuple[str, ...]:
    """The order of classes.txt: the template's class columns (every column after its id column)
    when a template is given, else natural order. LayoutError when a label is not a template column."""
    if template is None:
        return tuple(sorted(classes, key=natural_key))
    columns = [str(c).strip() for c in layout.read_csv_table(template, what="template").columns[1:]]
    unknown = [c for c in classes if c not in set(columns)]
    if unknown:
        raise LayoutError(f"label '{unknown[0]}' is not a class column of the template "
                          f"({len(unknown)} such labels); give the template of this competition, "
                          "or leave `template` out", path=template)
    return tuple(columns)


def make_folds(labels_path: Path | str, root: Path | str, *, n_folds: int = 5,
               group_column: str | None = None, label_column: str = "labels",
               id_column: str | None = None, seed: int = 0, force: bool = False,
               template: Path | str | None = None) -> MadeFolds:
    """Read a labels CSV, stratify it into ``n_folds`` folds and write ``<root>/folds.csv`` and
    ``classes.txt`` (in the class order of ``template``, a submission template, when given; else
    in natural order: ``label_2`` before ``label_10``). An existing folds.csv that experiments use
    is replaced only with ``force`` (and only when the new folds differ); the experiments it
    invalidates are returned."""
    root = Path(root)
    table = read_label_table(labels_path, label_column=label_column, id_column=id_column,
                             group_column=group_column)
    # a classes.txt of the user's (their submission's class order, classes no row has yet) is
    # an input: it is kept, never rewritten, and every label must be in it
    kept_classes = layout.read_classes_file(root)
    ordered = class_order(table.classes, template)
    if kept_classes is not None and template is not None and tuple(kept_classes) != ordered:
        raise LayoutError(f"the class order of {layout.CLASSES_FILE} differs from the template's "
                          f"({template}); remove one of them, or make them agree",
                          path=root / layout.CLASSES_FILE)
    if kept_classes is not None:
        unknown = [c for c in table.classes if c not in set(kept_classes)]
        if unknown:
            raise LayoutError(f"label '{unknown[0]}' of {table.path} is not in {layout.CLASSES_FILE}"
                              f" ({len(unknown)} such labels); add it there (the file keeps your "
                              "class order) or remove the file", path=root / layout.CLASSES_FILE)
    fold = iterative_stratification(table.y, n_folds, groups=table.groups, seed=seed)
    invalidated: tuple[str, ...] = ()
    path = root / layout.FOLDS_FILE
    if path.exists() and layout.fold_hash(table.ids, fold) != _current_hash(root):
        users = experiments_using_folds(root)
        if not force:
            used = (f" and is used by {len(users)} experiment(s) ({_names(users)}), which new "
                    "folds would invalidate" if users else "")
            raise OutputExistsError(
                f"{path} exists{used}; new folds would replace it. Use another `root`, or pass "
                "`force` to replace it" + (" and retrain them" if users else ""))
        invalidated = tuple(users)
    layout.write_folds(root, table.ids, table.labels, fold, id_column=table.id_column,
                       classes=None if kept_classes is not None else ordered)
    return MadeFolds(path=path, table=table, fold=fold,
                     counts=fold_label_counts(table.y, fold, table.classes),
                     invalidated=invalidated)


def _current_hash(root: Path) -> str | None:
    try:
        return layout.read_folds(root).hash
    except LayoutError:
        return None


def _names(names: Sequence[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
