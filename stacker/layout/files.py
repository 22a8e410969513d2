"""The standard prediction layout on disk: paths, readers and atomic writers.

::

    <root>/folds.csv                             <id>,labels,fold
    <root>/classes.txt                           optional: the class vocabulary, one name a line
    <root>/<experiment>/meta.json                optional: model, params, seed, level, cv, fold_hash
    <root>/<experiment>/fold_<k>/val/probs.csv   <id>,<class 1>,...  exactly the fold-k rows
    <root>/<experiment>/fold_<k>/test/probs.csv  <id>,<class 1>,...  the fold-k model on the test set
    <root>/<experiment>/fold_<k>/{val,test}/<id>.npy  optional per-window predictions

``probs.parquet`` (same columns, the id column first) may stand wherever ``probs.csv`` does; an
experiment holds one format only. pyarrow is imported inside the Parquet functions.

``predictions/README.md`` is the specification. Readers validate what one file can tell on its own
and raise :class:`~stacker.errors.LayoutError` naming the file; cross-file checks live in
:mod:`stacker.layout.collect`. Every writer is atomic: a temporary file in the same folder, then a rename.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from stacker.errors import LayoutError, OptionError
from stacker.layout import reading

if TYPE_CHECKING:
    import pandas as pd

FOLDS_FILE = "folds.csv"
CLASSES_FILE = "classes.txt"
META_FILE = "meta.json"
PROBS_FILE = "probs.csv"
PARQUET_PROBS_FILE = "probs.parquet"
PROBS_FILES = {"csv": PROBS_FILE, "parquet": PARQUET_PROBS_FILE}   # format -> file name
STACK_DIR = ".stack"
SPLITS = ("val", "test")
DEFAULT_ROOT = Path("predictions")
PROB_FORMAT = "%.7g"


# ---------------------------------------------------------------- paths


def experiment_dir(root: Path | str, name: str) -> Path:
    return Path(root) / name


def fold_dir(root: Path | str, name: str, fold: int, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(root) / name / f"fold_{fold}" / split


def probs_path(root: Path | str, name: str, fold: int, split: str, *,
               format: str | None = None) -> Path:
    """The predictions file of a fold and split. ``format`` 'csv' or 'parquet' names that file;
    None: the one on disk (``probs.parquet`` when only it exists, else ``probs.csv``)."""
    folder = fold_dir(root, name, fold, split)
    if format is None:
        parquet = folder / PARQUET_PROBS_FILE
        if parquet.exists() and not (folder / PROBS_FILE).exists():
            return parquet
        return folder / PROBS_FILE
    return folder / probs_file_name(format)


def probs_file_name(format: str) -> str:
    """'csv' -> probs.csv, 'parquet' -> probs.parquet; ValueError for anything else."""
    if format not in PROBS_FILES:
        raise ValueError(f"format must be one of {tuple(PROBS_FILES)}, got {format!r}")
    return PROBS_FILES[format]


def find_probs(root: Path | str, name: str, fold: int, split: str) -> Path:
    """The one predictions file of a fold and split; LayoutError when the folder holds both a
    probs.csv and a probs.parquet (the path returned may not exist: the reader says so)."""
    folder = fold_dir(root, name, fold, split)
    if (folder / PROBS_FILE).exists() and (folder / PARQUET_PROBS_FILE).exists():
        raise LayoutError(f"holds both {PROBS_FILE} and {PARQUET_PROBS_FILE}; an experiment keeps "
                          "one format: delete one of them", experiment=name, path=folder)
    return probs_path(root, name, fold, split)


def windows_path(root: Path | str, name: str, fold: int, split: str, row_id: str) -> Path:
    return fold_dir(root, name, fold, split) / f"{row_id}.npy"


def stack_dir(root: Path | str) -> Path:
    """``<root>/.stack``: caches and the outputs of stacker commands (created on demand)."""
    path = Path(root) / STACK_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_experiment_name(name: str) -> str:
    """``name`` if it can be an experiment folder under the root; OptionError otherwise.

    One rule for every writer (first-level runners, level 2, import): a plain folder name, not
    hidden or private (``.``/``_`` prefixes are skipped by :func:`list_experiments`), no separator.
    """
    if not name or not name.strip() or name != name.strip() or name.startswith((".", "_")) \
            or "/" in name or "\\" in name or name in (".", ".."):
        raise OptionError(f"experiment name '{name}' must be a plain folder name: letters, digits, "
                          "'-', '_' and '.', not starting with '.' or '_', no '/' or '\\'")
    return name


def install_experiment(staging: Path | str, root: Path | str, name: str) -> Path:
    """Rename experiment ``name``, written whole under the staging root ``staging``, into ``root``.
    An existing one is renamed aside first and deleted after, so a reader never sees half of
    either. The caller decides beforehand whether replacing is allowed."""
    import shutil

    target = experiment_dir(root, name)
    if target.exists():
        trash = Path(staging).with_name(Path(staging).name + "-replaced")
        target.rename(trash)
        experiment_dir(staging, name).rename(target)
        shutil.rmtree(trash)
    else:
        experiment_dir(staging, name).rename(target)
    return target


def list_experiments(root: Path | str) -> list[str]:
    """Names of the folders under ``root`` that hold at least one ``fold_<k>`` folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"root folder {root} does not exist; pass `root` DIR pointing at a layout")
    names = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith((".", "_")):
            if any(sub.name.startswith("fold_") for sub in os.scandir(entry.path) if sub.is_dir()):
                names.append(entry.name)
    return names


def list_fold_numbers(root: Path | str, name: str) -> list[int]:
    """The ``k`` of every ``fold_<k>`` folder of an experiment, sorted."""
    numbers = []
    for entry in os.scandir(experiment_dir(root, name)):
        if entry.is_dir() and entry.name.startswith("fold_"):
            try:
                numbers.append(int(entry.name[len("fold_"):]))
            except ValueError:
                raise LayoutError(
                    f"folder '{entry.name}' is not fold_<number>; rename or remove it",
                    experiment=name, path=entry.path) from None
    return sorted(numbers)


# ---------------------------------------------------------------- atomic writes


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode open() would have given (0666 & ~umask)
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            # name the user's file, not the temporary one (or none: a full disk's write error)
            raise type(error)(error.errno, error.strerror or str(error), str(path)) from None
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def atomic_save_npy(path: Path | str, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------- folds


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
    text = reading.read_text(path, what="classes file")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise LayoutError("a class name appears twice; keep one line per class", path=path)
    return tuple(names)


def read_folds(root: Path | str) -> Folds:
    """Read and validate ``<root>/folds.csv`` (and ``classes.txt`` when present)."""
    import pandas as pd  # on first use: importing the layout stays light
    path = Path(root) / FOLDS_FILE
    frame = read_csv_table(path, what="folds file")
    id_column = frame.columns[0]
    for needed in ("labels", "fold"):
        if needed not in frame.columns:
            raise LayoutError(
                f"missing column '{needed}'; the header must be <id>,labels,fold "
                f"(found {','.join(frame.columns)})", path=path)
    ids = frame[id_column].to_numpy(dtype=str)
    _check_unique_ids(ids, path=path)
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


# ---------------------------------------------------------------- probabilities


def read_csv_table(path: Path | str, *, what: str = "file", experiment: str | None = None,
                   float_columns: bool = False) -> pd.DataFrame:
    """Read a CSV whose first column is a string id; raise LayoutError for empty/malformed files.

    With ``float_columns`` every column after the first is parsed as float32.
    """
    import pandas as pd  # on first use: importing the layout stays light
    path = Path(path)
    if not path.exists() and not path.is_symlink():   # a symlink loop: sniff_text says so
        raise LayoutError(f"{what} is missing", experiment=experiment, path=path)
    if path.is_file() and path.stat().st_size == 0:
        raise LayoutError(f"{what} is empty; rewrite it with a header and rows",
                          experiment=experiment, path=path)
    fmt = reading.sniff_text(path, what=what, experiment=experiment)
    with open(path, newline="", encoding=fmt.encoding) as handle:
        header = next(csv.reader(handle), [])
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
            frame = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values={
                name: ["", "nan", "NaN", "NA"] for name in header[1:]} if float_columns else None,
                engine="c", index_col=False, encoding=fmt.encoding,
                usecols=list(range(len(header))) if fmt.trailing_comma else None)
            if fmt.trailing_comma:
                frame.columns = header
    except UnicodeDecodeError as error:
        raise reading.not_utf8(path, error, what=what, experiment=experiment) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        problem = ("a row has more fields than the header"
                   if isinstance(error, pd.errors.ParserWarning) else _first_line(error))
        raise LayoutError(f"malformed CSV ({problem}); every row needs "
                          f"{len(header)} fields like the header", experiment=experiment,
                          path=path) from None
    except (ValueError, TypeError) as error:
        raise LayoutError(f"malformed CSV: a value is not a number ({_first_line(error)})",
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
        _raise_if_short_row(path, len(header), experiment=experiment, encoding=fmt.encoding)
    if not float_columns:
        for name in header[1:]:
            if name != "fold":
                frame[name] = frame[name].replace("", np.nan)
    return frame


def _raise_if_short_row(path: Path, n_fields: int, *, experiment: str | None = None,
                       encoding: str = "utf-8") -> None:
    """Raise LayoutError at the first non-blank line with fewer fields than the header."""
    with open(path, newline="", encoding=encoding) as handle:
        reader = csv.reader(handle)
        for fields in reader:
            if fields and len(fields) < n_fields:
                raise LayoutError(f"malformed CSV (line {reader.line_num} has {len(fields)} "
                                  f"fields); every row needs {n_fields} fields like the header",
                                  experiment=experiment, path=path)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


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
        _check_unique_ids(ids, path=path, experiment=experiment)
        check_probabilities(values, path=path, experiment=experiment, ids=ids, columns=list(columns))
        return Probs(id_column=id_column, ids=ids, columns=columns, values=values, path=path)
    fast = _read_probs_fast(path)
    if fast is not None:
        id_column, ids, columns, values = fast
    else:  # something is off: the strict reader names the problem
        frame = read_csv_table(path, what="predictions file", experiment=experiment,
                               float_columns=True)
        id_column, columns = frame.columns[0], tuple(frame.columns[1:])
        ids = frame[id_column].to_numpy(dtype=str)
        values = frame.iloc[:, 1:].to_numpy(dtype=np.float32)
    _check_unique_ids(ids, path=path, experiment=experiment)
    check_probabilities(values, path=path, experiment=experiment, ids=ids, columns=list(columns))
    return Probs(id_column=id_column, ids=ids, columns=columns, values=values, path=path)


def _read_probs_fast(path: Path) -> tuple[str, np.ndarray, tuple[str, ...], np.ndarray] | None:
    """The common case of :func:`read_probs` at about half the cost: ids as the index, no NA
    matching, float64 columns cast to float32 (tests check that both readers agree). Returns
    (id column, ids, class columns, values (n_rows, n_columns) float32), or None for anything
    unusual (a missing, empty or odd file, a text or empty value, a short or long row), so that
    :func:`read_csv_table` reads it again and raises the precise error."""
    import pandas as pd  # on first use: importing the layout stays light
    try:
        if path.stat().st_size == 0:
            return None
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        if len(header) < 2 or not header[0].strip() or len(set(header)) != len(header):
            return None
        frame = pd.read_csv(path, index_col=0, dtype={header[0]: str}, na_filter=False,
                            engine="c", low_memory=False)
    except (OSError, ValueError):
        return None
    # a first row with one field too many makes pandas shift the header: names then differ
    if frame.empty or frame.index.name != header[0] or list(frame.columns) != header[1:]:
        return None
    # "nan", "" or text make a column non-float
    if any(dtype.kind not in "fi" for dtype in frame.dtypes):
        return None
    values = frame.to_numpy(dtype=np.float32)
    if np.isnan(values).any():
        return None
    return header[0], frame.index.to_numpy(dtype=str), tuple(header[1:]), values


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
    problem = "is NaN or infinite" if not finite[row, col] else f"is {str(values[row, col])}, outside [0, 1]"
    raise LayoutError(f"{where}: value {problem}; predictions must be probabilities in [0, 1]",
                      experiment=experiment, path=path)


def _check_unique_ids(ids: np.ndarray, *, path, experiment=None):
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


# ---------------------------------------------------------------- Parquet


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
        raise LayoutError(f"not a readable Parquet file ({_first_line(error)}); rewrite it with "
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
            array = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
        except (ValueError, OSError, EOFError) as error:
            raise LayoutError(f"per-window file for id '{row_id}' is not a readable .npy array "
                              f"({_first_line(error)}); rewrite it with numpy.save",
                              experiment=name, path=path) from None
        if array.ndim != 2:
            raise LayoutError(f"per-window array has shape {array.shape}; expected "
                              "(windows, classes)", experiment=name, path=path)
        check_window_values(array, path=path, experiment=name)
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


# ---------------------------------------------------------------- meta.json


def read_meta(root: Path | str, name: str) -> dict:
    """``meta.json`` of an experiment, or ``{}`` when it has none (imported experiments)."""
    path = experiment_dir(root, name) / META_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(reading.read_text(path, what="meta.json", experiment=name))
    except json.JSONDecodeError as error:
        raise LayoutError(f"not valid JSON (line {error.lineno}): {error.msg}; fix or delete it",
                          experiment=name, path=path) from None
    if not isinstance(meta, dict):
        raise LayoutError("must hold a JSON object", experiment=name, path=path)
    level = meta.get("level", 1)
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise LayoutError(f"\"level\" is {json.dumps(level)}; it must be a whole number (1 for "
                          "first-level models, 2 for stacked ones)", experiment=name, path=path)
    return meta


def write_meta(root: Path | str, name: str, meta: Mapping) -> Path:
    return atomic_write_json(experiment_dir(root, name) / META_FILE, dict(meta))
