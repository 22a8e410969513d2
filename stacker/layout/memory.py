"""Predictions held in memory (a notebook's numpy arrays and pandas DataFrames) read as
:mod:`stacker.layout.importing` reads files: the same values, ids and class columns, so every
check after reading is the one ``stack import`` makes.

- A numpy array (or a list, or a pandas Series) is an array file's content: (rows, classes),
  (rows,) for a binary task, or (folds, test rows, classes) for per-fold test predictions.
- A DataFrame is a table file's content: the row ids in its index when the index has a name
  (``frame.set_index("fname")``), else in its first column; then one column per class, matched
  by name.
- ids / test_ids: a sequence of ids (a list, an array, a Series, an Index) or a DataFrame such as
  ``sample_submission.csv`` read with pandas (ids as above; its class columns name the order of
  the arrays' columns, as a ``--test-ids`` template does).

Each input is named in messages by its role, e.g. "oof (numpy array, shape (60, 4))".
"""

from __future__ import annotations

import os

import numpy as np

from stacker.errors import LayoutError, OptionError


def in_memory(value) -> bool:
    """Whether ``value`` is data rather than the path of a file."""
    return value is not None and not isinstance(value, (str, os.PathLike))


def _is_frame(value) -> bool:
    return hasattr(value, "columns") and hasattr(value, "iloc")


def describe(value, role: str) -> str:
    """How messages and meta.json name an input: its path, or "<role> (<kind> <shape>)"."""
    if not in_memory(value):
        return str(value)
    kind = ("DataFrame" if _is_frame(value) else "numpy array" if isinstance(value, np.ndarray)
            else type(value).__name__)
    shape = getattr(value, "shape", None)
    size = f"shape {tuple(shape)}" if shape is not None else f"{len(value)} items" if hasattr(value, "__len__") else ""
    return f"{role} ({kind}, {size})" if size else f"{role} ({kind})"


def _frame_ids_and_body(frame, label: str):
    """(ids as a pandas Series-like, the class columns' frame) of a DataFrame: the ids from a named
    index, else from the first column."""
    if any(name is not None for name in frame.index.names):
        return frame.index.to_series(), frame
    if frame.shape[1] < 1:
        raise LayoutError("has no columns; give an id column, then one column per class",
                          path=label)
    first = frame.iloc[:, 0]
    if first.dtype.kind == "f":
        raise LayoutError(f"the first column '{frame.columns[0]}' holds floats, not row ids; put "
                          "the ids in the first column or in a named index "
                          "(frame.set_index('id')), or pass a numpy array and `ids`", path=label)
    return first, frame.iloc[:, 1:]


def table_parts(value, *, role: str) -> tuple[str, np.ndarray, np.ndarray | None,
                                               tuple[str, ...] | None]:
    """(label, values, ids, columns) of an in-memory input; ids and columns are None for arrays.
    values: float32, (n_rows, n_columns) for a table; as given for an array."""
    label = describe(value, role)
    if _is_frame(value):
        ids, body = _frame_ids_and_body(value, label)
        if not len(value):
            raise LayoutError(f"{role} table has a header but no rows", path=label)
        bad = [c for c in body.columns if body[c].dtype.kind not in "fiub"]
        if bad:
            raise LayoutError(f"column '{bad[0]}' is not numeric (dtype {body[bad[0]].dtype}); "
                              "every column after the ids must hold one class's probabilities",
                              path=label)
        return (label, body.to_numpy(dtype=np.float32), ids.astype(str).to_numpy(dtype=str),
                tuple(map(str, body.columns)))
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise LayoutError(f"not an array of numbers ({error}); pass a float numpy array",
                          path=label) from None
    if array.dtype.kind not in "fiub":
        raise LayoutError(f"array has dtype {array.dtype}, not numbers; pass the predictions as "
                          "floats", path=label)
    return label, np.asarray(array, dtype=np.float32), None, None


def id_values(value, *, option: str):
    """The ids of an in-memory ``ids`` / ``test_ids`` as a pandas Series (positions 0, 1, ...):
    a DataFrame's named index, else its first column; a 1-D sequence as it is."""
    import pandas as pd

    if _is_frame(value):
        named = any(name is not None for name in value.index.names)
        if not named and value.shape[1] < 1:
            raise OptionError(f"{option}: the DataFrame has no columns; put the ids in its first "
                              "column or in a named index")
        ids = value.index.to_series() if named else value.iloc[:, 0]
    elif isinstance(value, (np.ndarray, pd.Series, pd.Index, list, tuple)):
        if np.ndim(value) != 1:
            raise OptionError(f"{option}: expected one id per row (1-D), got shape {np.shape(value)}")
        ids = pd.Series(np.asarray(value, dtype=object))
    else:
        raise OptionError(f"{option}: expected a list, array, Series or DataFrame of ids, or the "
                          f"path of a CSV; got {type(value).__name__}")
    ids = ids.reset_index(drop=True)
    return ids.where(ids.isna(), ids.astype(str))


def header(value) -> list[str] | None:
    """A DataFrame's header as a CSV file of it would start: the id column's name, then the
    others; None for anything else."""
    if not _is_frame(value):
        return None
    columns = [str(c) for c in value.columns]
    named_index = any(name is not None for name in value.index.names)
    return [str(value.index.name), *columns] if named_index else columns


__all__ = ["describe", "header", "id_values", "in_memory", "table_parts"]
