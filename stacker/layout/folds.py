"""folds.csv and classes.txt: the rows of the training set, their labels and their fold.

Readers validate what the file can tell on its own and raise :class:`~stacker.errors.LayoutError`
naming the file; writers are atomic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from stacker.errors import LayoutError
from stacker.layout.atomic import atomic_write_text
from stacker.layout.paths import CLASSES_FILE, FOLDS_FILE
from stacker.layout.reading import read_text
from stacker.layout.tables import check_unique_ids, read_csv_table


@dataclass(frozen=True)
class Folds:
    """The rows of the training set, their labels and their fold.

    ids: array of shape (n_rows,), str, in folds.csv order.
    labels: one tuple of class names per row (empty for a row with no label).
    y: array of shape (n_rows, n_classes), uint8, 1 where the row has the class.
    fold: array of shape (n_rows,), int, the fold of each row.
    """

    id_column: str
    ids: np.ndarray
    labels: tuple[tuple[str, ...], ...]
    classes: tuple[str, ...]
    y: np.ndarray
    fold: np.ndarray
    path: Path

    @property
    def fold_numbers(self) -> list[int]:
        return sorted(int(k) for k in np.unique(self.fold))

    @property
    def n_folds(self) -> int:
        return len(self.fold_numbers)

    def rows_of_fold(self, k: int) -> np.ndarray:
        """Indices (into ``ids``) of the rows whose fold is ``k``."""
        return np.flatnonzero(self.fold == k)

    @cached_property
    def hash(self) -> str:
        """fold_hash of this assignment, computed once (it sorts every id)."""
        return fold_hash(self.ids, self.fold)

    @property
    def is_single_label(self) -> bool:
        """True when every row has exactly one label (softmax models and accuracy make sense)."""
        return bool(len(self.y)) and bool(np.all(self.y.sum(axis=1) == 1))


def fold_hash(ids: Sequence[str], fold: Sequence[int]) -> str:
    """A short hash of the (id, fold) assignment, recorded in meta.json so folds are never mixed."""
    pairs = sorted(zip(map(str, ids), map(int, fold)))
    digest = hashlib.sha1("\n".join(f"{i},{k}" for i, k in pairs).encode("utf-8"))
    return digest.hexdigest()[:16]


def split_labels(value) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'); an empty or missing field -> ()."""
    if value is None or value != value:  # None or NaN (a missing field)
        return ()
    parts = [part.strip() for part in str(value).split(",")]
    return tuple(part for part in parts if part)


def read_classes_file(root: Path | str) -> tuple[str, ...] | None:
    path = Path(root) / CLASSES_FILE
    if not path.exists():
        return None
    text = read_text(path, what="classes file")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise LayoutError("a class name appears twice; keep one line per class", path=path)
    return tuple(names)


def read_folds(root: Path | str) -> Folds:
    """Read and validate ``<root>/folds.csv`` (and ``classes.txt`` when present)."""
    import pandas as pd  # on first use: importing the layout stays light
    path = Path(root) / FOLDS_FILE
    if not path.exists() and not path.is_symlink():
        raise LayoutError(f"folds file is missing; make one with `stack make-folds train.csv "
                          f"--root {root}` (your labels CSV), or copy there the folds.csv your "
                          f"predictions were made on", path=path)
    frame = read_csv_table(path, what="folds file")
    id_column = frame.columns[0]
    for needed in ("labels", "fold"):
        if needed not in frame.columns:
            raise LayoutError(
                f"missing column '{needed}'; the header must be <id>,labels,fold "
                f"(found {','.join(frame.columns)})", path=path)
    ids = frame[id_column].to_numpy(dtype=str)
    check_unique_ids(ids, path=path)
    try:
        fold = pd.to_numeric(frame["fold"], errors="raise").to_numpy()
    except (ValueError, TypeError):
        bad = int(np.flatnonzero(pd.to_numeric(frame["fold"], errors="coerce").isna())[0])
        raise LayoutError(
            f"row {bad + 2}: fold '{frame['fold'].iloc[bad]}' is not an integer; "
            "every row needs a fold number", path=path) from None
    if not np.all(np.equal(np.mod(fold, 1), 0)):
        bad = int(np.flatnonzero(np.mod(fold, 1) != 0)[0])
        raise LayoutError(f"row {bad + 2}: fold {fold[bad]} is not an integer", path=path)
    fold = fold.astype(np.int64)
    numbers = np.unique(fold)
    expected = np.arange(numbers[0], numbers[0] + len(numbers))
    if numbers[0] not in (0, 1) or not np.array_equal(numbers, expected):
        missing = sorted(set(range(int(numbers[0]), int(numbers[-1]) + 1)) - set(numbers.tolist()))
        raise LayoutError(
            f"fold numbers {numbers.tolist()} are not consecutive from 0 (or 1)"
            + (f": fold {missing[0]} has no rows" if missing else "")
            + "; renumber the folds", path=path)
    labels = tuple(split_labels(v) for v in frame["labels"].tolist())
    classes = read_classes_file(root)
    if classes is None:
        classes = tuple(sorted({name for row in labels for name in row}))
    else:
        known = set(classes)
        for row_number, row in enumerate(labels):
            unknown = [name for name in row if name not in known]
            if unknown:
                raise LayoutError(
                    f"row {row_number + 2}: label '{unknown[0]}' is not in {CLASSES_FILE}; "
                    f"add it there or fix the label", path=path)
    y = labels_to_matrix(labels, classes)
    return Folds(id_column=id_column, ids=ids, labels=labels, classes=tuple(classes), y=y,
                 fold=fold, path=path)


def labels_to_matrix(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Label lists -> a (n_rows, n_classes) uint8 indicator matrix in ``classes`` order."""
    index = {name: j for j, name in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype=np.uint8)
    for i, row in enumerate(labels):
        for name in row:
            y[i, index[name]] = 1
    return y


def write_folds(root: Path | str, ids: Sequence[str], labels: Sequence[Sequence[str]],
                fold: Sequence[int], *, id_column: str = "fname",
                classes: Sequence[str] | None = None) -> Path:
    """Write ``<root>/folds.csv`` (and ``classes.txt`` when ``classes`` is given), atomically."""
    import pandas as pd  # on first use: importing the layout stays light
    frame = pd.DataFrame({
        id_column: [str(i) for i in ids],
        "labels": [",".join(row) for row in labels],
        "fold": np.asarray(fold, dtype=np.int64),
    })
    root = Path(root)
    if classes is not None:
        atomic_write_text(root / CLASSES_FILE, "".join(f"{c}\n" for c in classes))
    return atomic_write_text(root / FOLDS_FILE, frame.to_csv(index=False))
