"""Prediction tables: probs.csv / probs.parquet, and the strict CSV and Parquet table readers.

Readers validate what one file can tell on its own (ids unique, values probabilities) and raise
:class:`~stacker.errors.LayoutError` naming the file; cross-file checks live in
:mod:`stacker.layout.collect`. Every writer is atomic. pandas and pyarrow are imported inside the
functions that use them, so that importing the layout stays light.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from stacker.errors import LayoutError
from stacker.layout.atomic import atomic_save_npy, atomic_write_bytes, atomic_write_text
from stacker.layout.paths import PROBS_FILES, probs_path, windows_path
from stacker.layout.reading import first_line, not_utf8, read_bytes, sniff_text

if TYPE_CHECKING:
    import pandas as pd


PROB_FORMAT = "%.7g"


def read_csv_table(path: Path | str, *, what: str = "file", experiment: str | None = None,
                   float_columns: bool = False, data: bytes | None = None) -> pd.DataFrame:
    """Read a CSV whose first column is a string id; raise LayoutError for empty/malformed files.

    With ``float_columns`` every column after the first is parsed as float32. data: the file's
    bytes when the caller has read them (else read here): the file is opened once either way.
    """
    import pandas as pd  # on first use: importing the layout stays light
    path = Path(path)
    if not path.exists() and not path.is_symlink():   # a symlink loop: sniff_text says so
        raise LayoutError(f"{what} is missing", experiment=experiment, path=path)
    if path.is_file() and path.stat().st_size == 0:
        raise LayoutError(f"{what} is empty; rewrite it with a header and rows",
                          experiment=experiment, path=path)
    if data is None:
        data = read_bytes(path, what=what, experiment=experiment)
    fmt = sniff_text(path, what=what, experiment=experiment, head=data)
    header = next(csv.reader(_text(data, fmt.encoding)), [])
    if fmt.trailing_comma:      # Excel's "a,b," on every line: an empty last column, dropped
        header = header[:-1]
    if not header or not header[0].strip():
        raise LayoutError(f"{what} has no header; the first line must name the columns",
                          experiment=experiment, path=path)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise LayoutError(f"column '{dup}' appears twice in the header; keep one",
                          experiment=experiment, path=path)
    dtype = {header[0]: str}
    if float_columns:
        dtype.update({name: np.float32 for name in header[1:]})
    else:
        dtype.update({name: str for name in header[1:] if name != "fold"})
    try:
        # index_col=False: a first data row with one field too many must not silently become
        # the index (pandas' default), shifting every column by one; the warning it gives is
        # turned into the malformed-CSV error below.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.BytesIO(data), dtype=dtype, keep_default_na=False, na_values={
                name: ["", "nan", "NaN", "NA"] for name in header[1:]} if float_columns else None,
                engine="c", index_col=False, encoding=fmt.encoding,
                usecols=list(range(len(header))) if fmt.trailing_comma else None)
            if fmt.trailing_comma:
                frame.columns = header
    except UnicodeDecodeError as error:
        raise not_utf8(path, error, what=what, experiment=experiment) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        problem = ("a row has more fields than the header"
                   if isinstance(error, pd.errors.ParserWarning) else first_line(error))
        raise LayoutError(f"malformed CSV ({problem}); every row needs "
                          f"{len(header)} fields like the header", experiment=experiment,
                          path=path) from None
    except (ValueError, TypeError) as error:
        raise LayoutError(f"malformed CSV: a value is not a number ({first_line(error)})",
                          experiment=experiment, path=path) from None
    except pd.errors.EmptyDataError:
        raise LayoutError(f"{what} is empty", experiment=experiment, path=path) from None
    if frame.empty:
        raise LayoutError(f"{what} has a header but no rows", experiment=experiment, path=path)
    last = frame.iloc[:, -1]
    if len(header) > 1 and (last.isna().any() or (last.dtype.kind not in "fiub"
                                                   and last.eq("").any())):
        # pandas fills a short row with NaN (or "" in text columns); tell that apart from a
        # real NaN or empty value
        _raise_if_short_row(path, data, len(header), experiment=experiment,
                            encoding=fmt.encoding)
    if not float_columns:
        for name in header[1:]:
            if name != "fold":
                frame[name] = frame[name].mask(frame[name].eq(""))   # (no dtype guessed)
    return frame


def _text(data: bytes, encoding: str) -> io.TextIOWrapper:
    """``data`` as a text file opened with ``newline=""`` (what the csv module wants)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="")


def _raise_if_short_row(path: Path, data: bytes, n_fields: int, *, experiment: str | None = None,
                        encoding: str = "utf-8") -> None:
    """Raise LayoutError at the first non-blank line of ``data`` (the file at ``path``) with fewer
    fields than the header."""
    with _text(data, encoding) as handle:
        reader = csv.reader(handle)
        for fields in reader:
            if fields and len(fields) < n_fields:
                raise LayoutError(f"malformed CSV (line {reader.line_num} has {len(fields)} "
                                  f"fields); every row needs {n_fields} fields like the header",
                                  experiment=experiment, path=path)


@dataclass(frozen=True)
class Probs:
    """One probs.csv: ids (n_rows,) str, columns (class names), values (n_rows, n_columns) float32."""

    id_column: str
    ids: np.ndarray
    columns: tuple[str, ...]
    values: np.ndarray
    path: Path


def read_probs(path: Path | str, *, experiment: str | None = None) -> Probs:
    """Read one probs.csv or probs.parquet (by its suffix) and check what the file can tell alone: ids unique, values in [0, 1]."""
    path = Path(path)
    if path.suffix == ".parquet":
        id_column, ids, columns, values = read_parquet_table(path, what="predictions file",
                                                             experiment=experiment)
        check_unique_ids(ids, path=path, experiment=experiment)
        check_probabilities(values, path=path, experiment=experiment, ids=ids, columns=list(columns))
        return Probs(id_column=id_column, ids=ids, columns=columns, values=values, path=path)
    try:
        data = path.read_bytes()         # the one open of the file
    except OSError:
        data = None                      # the strict reader names the problem
    fast = _read_probs_fast(path, data) if data is not None else None
    if fast is not None:
        id_column, ids, columns, values = fast
    else:  # something is off: the strict reader names the problem
        frame = read_csv_table(path, what="predictions file", experiment=experiment,
                               float_columns=True, data=data)
        id_column, columns = frame.columns[0], tuple(frame.columns[1:])
        ids = frame[id_column].to_numpy(dtype=str)
        with np.errstate(over="ignore"):  # beyond float32 becomes inf: check_probabilities names it
            values = frame.iloc[:, 1:].to_numpy(dtype=np.float32)
    check_unique_ids(ids, path=path, experiment=experiment)
    check_probabilities(values, path=path, experiment=experiment, ids=ids, columns=list(columns))
    return Probs(id_column=id_column, ids=ids, columns=columns, values=values, path=path)


def _read_probs_fast(path: Path, data: bytes | None = None
                    ) -> tuple[str, np.ndarray, tuple[str, ...], np.ndarray] | None:
    """The common case of :func:`read_probs` at about half the cost: ids as the index, no NA
    matching, float64 columns cast to float32 (tests check that both readers agree). Returns
    (id column, ids, class columns, values (n_rows, n_columns) float32), or None for anything
    unusual (a missing, empty or odd file, a text or empty value, a short or long row), so that
    :func:`read_csv_table` reads it again and raises the precise error."""
    import pandas as pd  # on first use: importing the layout stays light
    try:
        # one open: the header and the table are parsed from the same bytes
        data = path.read_bytes() if data is None else data
        if not data:
            return None
        header = next(csv.reader(_text(data, "utf-8")), [])
        if len(header) < 2 or not header[0].strip() or len(set(header)) != len(header):
            return None
        frame = pd.read_csv(io.BytesIO(data), index_col=0, dtype={header[0]: str},
                            na_filter=False, engine="c", low_memory=False)
    except (OSError, ValueError):
        return None
    # a first row with one field too many makes pandas shift the header: names then differ
    if frame.empty or frame.index.name != header[0] or list(frame.columns) != header[1:]:
        return None
    # "nan", "" or text make a column non-float
    if any(dtype.kind not in "fi" for dtype in frame.dtypes):
        return None
    with np.errstate(over="ignore"):     # a value beyond float32 becomes inf: refused by name below
        values = frame.to_numpy(dtype=np.float32)
    if np.isnan(values).any():
        return None
    return header[0], frame.index.to_numpy(dtype=str), tuple(header[1:]), values


def as_stored(probs: np.ndarray) -> np.ndarray:
    """The float32 values that a probs.csv written from ``probs`` (any shape, classes last) reads
    back as: :func:`write_probs`' ``PROB_FORMAT`` text parsed the way :func:`read_probs` parses
    it, without a file. A command that writes predictions and keeps using them holds these, so
    that its results equal those of a later command that reads the files."""
    import pandas as pd  # on first use: importing the layout stays light
    values = np.asarray(probs)
    flat = values.reshape(-1, values.shape[-1])
    text = pd.DataFrame(flat).to_csv(index=False, header=False, float_format=PROB_FORMAT)
    back = pd.read_csv(io.StringIO(text), header=None, na_filter=False, engine="c",
                       low_memory=False)
    return back.to_numpy(dtype=np.float32).reshape(values.shape)


def check_probabilities(values: np.ndarray, *, path=None, experiment=None, ids=None, columns=None):
    """Raise LayoutError at the first NaN/inf or value outside [0, 1], naming its row and column."""
    finite = np.isfinite(values)
    in_range = finite & (values >= 0) & (values <= 1)
    if in_range.all():
        return
    row, col = np.argwhere(~in_range)[0]
    where = (f"row '{ids[row]}'" if ids is not None else f"row {row}") + ", column " + (
        f"'{columns[col]}'" if columns is not None else str(col))
    # str() of the stored float: the shortest text that reads back as it (1.0000001, not 1)
    # values are read as float32: a finite 1e39 in the file reads as inf, so say both
    problem = ("is NaN, infinite or too large for float32 (beyond 3.4e38)" if not finite[row, col]
               else f"is {str(values[row, col])}, outside [0, 1]")
    raise LayoutError(f"{where}: value {problem}; predictions must be probabilities in [0, 1]",
                      experiment=experiment, path=path)


def check_unique_ids(ids: np.ndarray, *, path, experiment=None) -> None:
    """Raise LayoutError naming the first id of ``ids`` (n_rows,) that appears more than once."""
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise LayoutError(f"id '{unique[counts > 1][0]}' appears {counts[counts > 1][0]} times; "
                          "each row id must appear once", experiment=experiment, path=path)


def write_probs(path: Path | str, ids: Sequence[str], probs: np.ndarray, classes: Sequence[str],
                *, id_column: str = "fname") -> Path:
    """Write one probs.csv, or probs.parquet when ``path`` ends in .parquet, atomically.
    probs: array of shape (n_rows, n_classes)."""
    import pandas as pd  # on first use: importing the layout stays light
    probs = np.asarray(probs)
    if probs.shape != (len(ids), len(classes)):
        raise ValueError(f"probs has shape {probs.shape}, expected ({len(ids)}, {len(classes)})")
    if Path(path).suffix == ".parquet":
        return write_parquet_probs(path, ids, probs, classes, id_column=id_column)
    frame = pd.DataFrame(probs, columns=list(classes))
    frame.insert(0, id_column, [str(i) for i in ids])
    return atomic_write_text(path, frame.to_csv(index=False, float_format=PROB_FORMAT))


def write_fold_predictions(root: Path | str, name: str, fold: int, split: str, ids: Sequence[str],
                           probs: np.ndarray, classes: Sequence[str], *, id_column: str = "fname",
                           windows: Mapping[str, np.ndarray] | None = None,
                           format: str = "csv") -> Path:
    """Write ``fold_<k>/<split>/probs.csv`` (``format='parquet'``: probs.parquet) and, optionally,
    per-window ``<id>.npy`` arrays. A file of the other format in the same folder, an earlier
    version of these predictions, is removed after the new one is in place.

    windows: {row id: array of shape (n_windows, n_classes)} in ``classes`` column order.
    """
    if windows:
        for row_id, array in windows.items():
            atomic_save_npy(windows_path(root, name, fold, split, row_id),
                            np.asarray(array, dtype=np.float32))
    path = write_probs(probs_path(root, name, fold, split, format=format), ids, probs, classes,
                       id_column=id_column)
    for other in PROBS_FILES.values():
        if other != path.name and (path.parent / other).exists():
            os.unlink(path.parent / other)
    return path


def write_parquet_probs(path: Path | str, ids: Sequence[str], probs: np.ndarray,
                        classes: Sequence[str], *, id_column: str = "fname") -> Path:
    """One probs.parquet, atomically: a string id column, then one float32 column per class.
    probs: array of shape (n_rows, n_classes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = np.asarray(probs, dtype=np.float32)
    columns = [pa.array([str(i) for i in ids], type=pa.string())]
    columns += [pa.array(np.ascontiguousarray(values[:, j])) for j in range(values.shape[1])]
    table = pa.Table.from_arrays(columns, names=[id_column, *map(str, classes)])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_parquet_table(path: Path | str, *, what: str = "file", experiment: str | None = None
                       ) -> tuple[str, np.ndarray, tuple[str, ...], np.ndarray]:
    """A Parquet table whose first column is the row id and every other column a number.

    Returns (id column, ids (n_rows,) str, value columns, values (n_rows, n_columns) float32;
    a missing value becomes NaN). A pandas index saved in the file (``to_parquet`` of a frame
    indexed by id) counts as the first column. LayoutError names the file and the fix.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise LayoutError(f"{what} is missing", experiment=experiment, path=path)
    if path.stat().st_size == 0:
        raise LayoutError(f"{what} is empty; rewrite it with a header and rows",
                          experiment=experiment, path=path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise LayoutError(f"not a readable Parquet file ({first_line(error)}); rewrite it with "
                          "pyarrow or pandas.DataFrame.to_parquet", experiment=experiment,
                          path=path) from None
    names = list(table.column_names)
    index = [c for c in ((table.schema.pandas_metadata or {}).get("index_columns") or [])
             if isinstance(c, str) and c in names]
    if len(index) == 1 and names[0] != index[0]:
        names = [index[0]] + [n for n in names if n != index[0]]
        table = table.select(names)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise LayoutError(f"column '{dup}' appears twice; keep one", experiment=experiment,
                          path=path)
    if not names:
        raise LayoutError(f"{what} has no columns; the first column must be the row id",
                          experiment=experiment, path=path)
    if table.num_rows == 0:
        raise LayoutError(f"{what} has columns but no rows", experiment=experiment, path=path)
    id_array = table.column(0)
    if id_array.null_count:
        bad = int(np.flatnonzero(id_array.is_null().to_numpy(zero_copy_only=False))[0])
        raise LayoutError(f"row {bad}: the id (column '{names[0]}') is missing; every row needs "
                          "an id", experiment=experiment, path=path)
    if not (pa.types.is_string(id_array.type) or pa.types.is_large_string(id_array.type)
            or pa.types.is_integer(id_array.type)):
        raise LayoutError(f"first column '{names[0]}' has type {id_array.type}; it must hold the "
                          "row ids as text", experiment=experiment, path=path)
    ids = np.asarray(id_array.to_numpy(zero_copy_only=False)).astype(str)
    values = np.empty((table.num_rows, len(names) - 1), dtype=np.float32)
    for j, name in enumerate(names[1:]):
        column = table.column(j + 1)
        kind = column.type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise LayoutError(f"column '{name}' has type {kind}, not numbers; every column after "
                              "the id must hold one class's probabilities", experiment=experiment,
                              path=path)
        if column.null_count:
            column = column.cast(pa.float64()).fill_null(float("nan"))
        values[:, j] = column.to_numpy()
    return names[0], ids, tuple(names[1:]), values
