"""Per-window predictions: one ``<id>.npy`` array (n_windows, n_classes) per row beside probs.csv,
and optionally ``windows.csv``, the width of each row's windows (``<id>,width,windows``: for each
row, its windows of one width, in the order of the rows of ``<id>.npy``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from stacker.errors import LayoutError
from stacker.layout.atomic import atomic_write_text
from stacker.layout.paths import check_window_id, fold_dir, windows_path
from stacker.layout.reading import first_line

WIDTHS_FILE = "windows.csv"


def check_window_ids(ids: Iterable[str], folder: Path | str, *, source: str | None = None) -> None:
    """:func:`~stacker.layout.paths.check_window_id` for every id, before any file is written."""
    for row_id in ids:
        check_window_id(row_id, folder, source=source)


def has_windows(root: Path | str, name: str, fold: int, split: str) -> bool:
    folder = fold_dir(root, name, fold, split)
    return folder.is_dir() and any(e.name.endswith(".npy") for e in os.scandir(folder))


def read_windows(root: Path | str, name: str, fold: int, split: str, ids: Iterable[str],
                 column_order: Sequence[int] | None = None) -> list[np.ndarray]:
    """Per-window predictions of ``ids``: a list of (n_windows, n_classes) float32 arrays.

    column_order: indices that reorder the file's columns (its probs.csv order) into the caller's.
    """
    arrays = []
    for row_id in ids:
        path = windows_path(root, name, fold, split, row_id)
        if not path.exists():
            raise LayoutError(f"per-window file for id '{row_id}' is missing; write one .npy per "
                              "row or none at all", experiment=name, path=path)
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise LayoutError(f"per-window file for id '{row_id}' is not a readable .npy array "
                              f"({first_line(error)}); rewrite it with numpy.save",
                              experiment=name, path=path) from None
        if array.ndim != 2:
            raise LayoutError(f"per-window array has shape {array.shape}; expected "
                              "(windows, classes)", experiment=name, path=path)
        if array.dtype.kind not in "fiub":
            raise LayoutError(f"per-window array has dtype {array.dtype}, not numbers; save "
                              "float probabilities", experiment=name, path=path)
        check_window_values(array, path=path, experiment=name)   # before float32: 1e39 stays 1e39
        array = array.astype(np.float32, copy=False)
        arrays.append(array if column_order is None else array[:, column_order])
    return arrays


def check_window_values(array: np.ndarray, *, path=None, experiment=None) -> None:
    """Raise LayoutError at the first NaN/inf or value outside [0, 1] of a per-window array
    (n_windows, n_classes), naming its window and column."""
    in_range = np.isfinite(array) & (array >= 0) & (array <= 1)
    if in_range.all():
        return
    window, col = np.argwhere(~in_range)[0]
    value = array[window, col]
    problem = "is NaN or infinite" if not np.isfinite(value) else f"is {str(value)}, outside [0, 1]"
    raise LayoutError(f"window {window}, column {col}: value {problem}; per-window predictions "
                      "must be probabilities in [0, 1]", experiment=experiment, path=path)


def write_window_widths(root: Path | str, name: str, fold: int, split: str,
                        widths: Mapping[str, np.ndarray], *, id_column: str = "fname") -> Path:
    """``fold_<k>/<split>/windows.csv`` from {row id: int array (n_windows,)}, each window's width
    in frames in ``<id>.npy`` row order; one line per run of equal widths."""
    import pandas as pd  # pandas loads pyarrow when present: only where a table is written

    lines = []
    for row_id, row_widths in widths.items():
        row_widths = np.asarray(row_widths, dtype=np.int64)
        edges = np.flatnonzero(np.diff(row_widths)) + 1
        for run in np.split(row_widths, edges):
            lines.append((str(row_id), int(run[0]), len(run)))
    frame = pd.DataFrame(lines, columns=[id_column, "width", "windows"])
    return atomic_write_text(fold_dir(root, name, fold, split) / WIDTHS_FILE,
                             frame.to_csv(index=False))


def read_window_widths(root: Path | str, name: str, fold: int, split: str
                       ) -> dict[str, np.ndarray] | None:
    """{row id: int array (n_windows,)}, each window's width, from ``windows.csv``; None when the
    folder has none. LayoutError naming the line for a malformed file."""
    import pandas as pd

    path = fold_dir(root, name, fold, split) / WIDTHS_FILE
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns[1:]) != ["width", "windows"]:
        raise LayoutError(f"header is {','.join(frame.columns)}; expected <id>,width,windows",
                          experiment=name, path=path)
    out: dict[str, list[np.ndarray]] = {}
    for line, (row_id, width, count) in enumerate(frame.itertuples(index=False), start=2):
        if not (width.isdigit() and count.isdigit() and int(width) > 0 and int(count) > 0):
            raise LayoutError(f"line {line}: width '{width}' and windows '{count}' must be "
                              "positive whole numbers", experiment=name, path=path)
        out.setdefault(row_id, []).append(np.full(int(count), int(width), dtype=np.int64))
    return {row_id: np.concatenate(runs) for row_id, runs in out.items()}
