"""Feature CSVs for the scikit-learn fold models: the id column first, then numeric features.

Everything a user can get wrong is checked here, before any training, and reported as one line
naming the file, the row and the column: ids that do not match folds.csv, values that are not
numbers, NaN or infinite values, train and test files with different feature columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stacker import layout
from stacker.errors import FeatureError, LayoutError

_MISSING = {"", "nan", "NaN", "NA", "N/A", "null", "None"}


@dataclass(frozen=True)
class Features:
    """One feature CSV. ids: (n_rows,) str; columns: feature names; X: (n_rows, n_features) float32."""

    id_column: str
    ids: np.ndarray
    columns: tuple[str, ...]
    X: np.ndarray
    path: Path


def read_features(path: Path | str) -> Features:
    """Read and validate a feature CSV (id column first, then numeric columns)."""
    path = Path(path)
    frame = layout.read_csv_table(path, what="feature file")   # every column as text: exact values
    id_column = frame.columns[0]
    ids = frame[id_column].to_numpy(dtype=str)
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        dup = unique[counts > 1][0]
        row = int(np.flatnonzero(ids == dup)[1]) + 2
        raise FeatureError(f"{path}: row {row}: id '{dup}' appears {counts.max()} times; each "
                           "row id must appear once")
    columns = tuple(frame.columns[1:])
    if not columns:
        raise FeatureError(f"{path}: no feature columns; the file needs the id column first and "
                           "then one column per feature")
    X = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        text = frame[name]
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raw = text.iloc[i]
            raw = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw)
            if raw.strip() in _MISSING:
                problem = "is empty or NaN"
            elif np.isinf(values[i]):
                problem = f"is infinite ('{raw}')"
            else:
                problem = f"'{raw}' is not a number"
            raise FeatureError(f"{path}: row {i + 2} (id '{ids[i]}'), column '{name}': the value "
                               f"{problem}; every feature must be a finite number (impute or "
                               "drop the column before training)")
        X[:, j] = values
    return Features(id_column=id_column, ids=ids, columns=columns, X=X, path=path)


def check_same_columns(train: Features, test: Features) -> None:
    """Train and test must have the same feature columns in the same order."""
    if train.columns == test.columns:
        return
    only_train = [c for c in train.columns if c not in set(test.columns)]
    only_test = [c for c in test.columns if c not in set(train.columns)]
    if only_train:
        problem = f"column '{only_train[0]}' of {train.path} is missing"
    elif only_test:
        problem = f"column '{only_test[0]}' is not in {train.path}"
    else:
        at = next(j for j, (a, b) in enumerate(zip(train.columns, test.columns)) if a != b)
        problem = (f"columns are in another order (column {at + 2} is '{test.columns[at]}', "
                   f"in {train.path} it is '{train.columns[at]}')")
    raise FeatureError(f"{test.path}: {problem}; train and test features must have the same "
                       "columns in the same order")


def check_matches_folds(features: Features, folds: layout.Folds) -> None:
    """The training features must hold exactly the rows of folds.csv (any order)."""
    have = set(features.ids)
    missing = [i for i in folds.ids if i not in have]
    if missing:
        raise LayoutError(f"id '{missing[0]}' of {folds.path} has no row here ({len(missing)} "
                          "missing in all); the training features must cover every row of "
                          "folds.csv", path=features.path)
    known = set(folds.ids)
    extra = [i for i in features.ids if i not in known]
    if extra:
        row = int(np.flatnonzero(features.ids == extra[0])[0]) + 2
        raise LayoutError(f"row {row}: id '{extra[0]}' is not in {folds.path} ({len(extra)} such "
                          "ids); remove those rows or rebuild folds.csv with `stack make-folds`",
                          path=features.path)
