"""Other people's prediction files -> one experiment of the layout (``stack import``).

A notebook's out-of-fold predictions and its test predictions become ``<root>/<name>/fold_<k>/
{val,test}/probs.csv`` (or ``.parquet``) and ``meta.json``, validated against ``<root>/folds.csv``:

- ``.npy`` / ``.npz`` arrays. OOF: (n_rows, n_classes) in folds.csv row order, or in the order of
  the first column of an ``ids`` CSV. Test: (n_test, n_classes), one fold-averaged prediction used
  for every fold, or (n_folds, n_test, n_classes), one per fold in fold-number order. Columns are
  the classes in folds.csv's order (classes.txt, else sorted), or in the order ``classes`` names.
- CSV or Parquet tables: the row id first, then one column per class, matched by name.
- Binary tasks (folds.csv has one class): a 1-D array or a table with one value column is that class.

Values must be probabilities; values outside [0, 1] are refused as probable logits unless
``from_logits`` says which link to undo ('sigmoid' or 'softmax'). Every problem raises one
:class:`~stacker.errors.StackError` naming the file and the fix before anything is written; the
experiment is written into a staging folder and renamed into place, so it appears whole or not at all.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stacker.errors import LayoutError, OptionError
from stacker.layout import memory
from stacker.layout.atomic import install_experiment
from stacker.layout.column_order import (
    check_column_order,
    plausible_orders,
    resolve_column_order,
    template_classes,
)
from stacker.layout.folds import Folds, read_folds
from stacker.layout.meta import write_meta
from stacker.layout.paths import (
    CLASSES_FILE,
    check_experiment_name,
    experiment_dir,
    find_probs,
    list_experiments,
    probs_file_name,
)
from stacker.layout.provenance import check_new_experiment, stamped
from stacker.layout.reading import first_line
from stacker.layout.tables import read_csv_table, read_parquet_table, read_probs, write_fold_predictions
from stacker.layout.workspace import staging_dir

ARRAY_SUFFIXES = (".npy", ".npz")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
LINKS = ("sigmoid", "softmax")
ROUNDING = 1e-6   # how far outside [0, 1] a probability may be by rounding alone (clipped)


@dataclass(frozen=True)
class Source:
    """One input file: values (n_rows, n_columns), or (n_rows,) / (n_folds, n_rows, n_columns) for
    arrays; ids (n_rows,) str and columns for tables, None for arrays."""

    path: Path | str          # the file, or how an in-memory input is named (memory.describe)
    values: np.ndarray
    ids: np.ndarray | None = None
    columns: tuple[str, ...] | None = None

    @property
    def is_table(self) -> bool:
        return self.ids is not None


@dataclass(frozen=True)
class Imported:
    """What :func:`import_experiment` wrote. oof: (n_rows, n_classes) in folds.csv order;
    test: (n_folds, n_test, n_classes)."""

    name: str
    path: Path
    oof: np.ndarray
    test_ids: np.ndarray
    test: np.ndarray
    meta: dict
    warnings: tuple[str, ...] = ()


def import_experiment(root: Path | str, name: str, *, oof, test, ids=None, test_ids=None,
                      classes: Sequence[str] | None = None, from_logits: str | None = None,
                      format: str = "csv", force: bool = False) -> Imported:
    """Validate ``oof`` and ``test`` against ``<root>/folds.csv`` and write experiment ``name``.

    oof, test: file paths, or the same content in memory (numpy arrays, pandas DataFrames: see
    :mod:`stacker.layout.memory`). ids / test_ids: CSV files whose first column holds the id of
    each array row, or those ids in memory (arrays only; without ``test_ids`` the test rows are
    numbered 0, 1, ...). classes: the class of each array column, in order. from_logits:
    'sigmoid' or 'softmax' to turn scores into probabilities. format: 'csv' or 'parquet'.
    force: replace an existing experiment ``name``.
    """
    root = Path(root)
    folds = read_folds(root)
    check_name(root, name, force=force)
    probs_file_name(format)
    if from_logits is not None and from_logits not in LINKS:
        raise OptionError(f"--from-logits '{from_logits}' is unknown; use sigmoid (multi-label or "
                          "binary) or softmax (single-label)")
    if from_logits == "softmax" and len(folds.classes) < 2:
        raise OptionError("--from-logits softmax needs two or more classes; a binary task's "
                          "single score takes --from-logits sigmoid")
    oof_source, test_source = read_source(oof, role="oof"), read_source(test, role="test")
    for option, value, source in (("--ids", ids, oof_source), ("--test-ids", test_ids, test_source)):
        if value is not None and source.is_table:
            raise OptionError(f"{option} is for .npy/.npz arrays; {source.path} is a table whose "
                              "first column already holds the ids")
    if classes is not None and oof_source.is_table and test_source.is_table:
        raise OptionError("--classes is for .npy/.npz arrays; tables name their class columns")
    template = template_classes(test_ids, folds.classes) if len(folds.classes) > 1 else None
    columns, columns_from = resolve_column_order(classes, template, folds.classes)
    order = _class_order(columns if columns_from != "classes.txt" else None, folds.classes)

    oof_values = _oof_in_folds_order(oof_source, folds, order, ids)
    test_row_ids, test_values, per_fold = _test_predictions(test_source, folds, order, test_ids)
    check_same_test_ids(root, name, test_row_ids, numbered=test_ids is None and not test_source.is_table,
                        path=test_source.path, first_fold=folds.fold_numbers[0])
    oof_values = to_probabilities(oof_values, from_logits, path=oof_source.path,
                                  row_ids=folds.ids, classes=folds.classes)
    test_values = to_probabilities(test_values, from_logits, path=test_source.path,
                                   row_ids=test_row_ids, classes=folds.classes)
    if not oof_source.is_table and len(folds.classes) > 1:
        # the array's own column order again (column j is class columns[j]), checked on the labels
        index = {c: j for j, c in enumerate(folds.classes)}
        check_column_order(oof_values[:, [index[c] for c in columns]], folds, columns, columns_from,
                           path=oof_source.path,
                           alternatives=plausible_orders(folds.classes, template))

    meta = stamped({"model": "imported", "level": 1, "fold_hash": folds.hash, "classes": list(folds.classes),
                    "n_train": len(folds.ids), "n_test": len(test_row_ids),
                    "test_predictions": "per-fold" if per_fold else "fold-averaged",
                    "imported": {"oof": memory.describe(oof, "oof"),
                                 "test": memory.describe(test, "test"),
                                 "ids": None if ids is None else memory.describe(ids, "ids"),
                                 "test_ids": (memory.describe(test_ids, "test_ids")
                                              if test_ids is not None else
                                              "the test table's ids" if test_source.is_table else "row numbers"),
                                 "columns": list(classes) if classes is not None else None,
                                 "column_order": None if oof_source.is_table and test_source.is_table
                                 else columns_from,
                                 "from_logits": from_logits, "format": format}})
    test_folds = test_values if per_fold else np.broadcast_to(
        test_values, (folds.n_folds,) + test_values.shape)
    path = _write(root, name, folds, oof_values, test_row_ids, test_folds, meta, format=format,
                  force=force)
    return Imported(name=name, path=path, oof=oof_values, test_ids=test_row_ids,
                    test=np.asarray(test_folds), meta=meta,
                    warnings=leakage_warnings(oof_values, folds))


def check_name(root: Path, name: str, *, force: bool) -> None:
    """OptionError for a name that is not a plain folder name; OutputExistsError when the
    experiment exists and ``force`` is not set."""
    check_experiment_name(name)
    check_new_experiment(root, name, force=force,
                         fix="choose another name or pass --force to replace it")


# ---------------------------------------------------------------- reading the inputs


def read_source(path, *, role: str) -> Source:
    """An .npy/.npz array or a CSV/Parquet table of predictions, or the same in memory (an
    array, a DataFrame); LayoutError names the file."""
    if memory.in_memory(path):
        label, values, row_ids, columns = memory.table_parts(path, role=role)
        return Source(path=label, values=values, ids=row_ids, columns=columns)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES + TABLE_SUFFIXES:
        raise OptionError(f"{path}: unknown file type '{suffix or path.name}'; save the {role} "
                          "predictions as .npy, .npz, .csv or .parquet")
    if not path.exists():
        raise LayoutError(f"{role} file is missing; check the path", path=path)
    what = f"{role} predictions file"
    if suffix == ".csv":
        frame = read_csv_table(path, what=what, float_columns=True)
        return Source(path=path, ids=frame.iloc[:, 0].to_numpy(dtype=str),
                      columns=tuple(map(str, frame.columns[1:])),
                      values=frame.iloc[:, 1:].to_numpy(dtype=np.float64))
    if suffix in (".parquet", ".pq"):
        _, row_ids, columns, values = read_parquet_table(path, what=what)
        return Source(path=path, ids=row_ids, columns=columns, values=values)
    return Source(path=path, values=_read_array(path, role=role))


def _read_array(path: Path, *, role: str) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:
        problem = ("it holds Python objects" if "allow_pickle" in str(error)
                   else first_line(error))
        raise LayoutError(f"not a readable numpy array ({problem}); save a float array with "
                          "numpy.save", path=path) from None
    except OSError as error:
        raise LayoutError(f"not a readable numpy file ({first_line(error)}); save it with "
                          "numpy.save or numpy.savez", path=path) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if len(keys) == 1 or role in keys:
                array = loaded[keys[0] if len(keys) == 1 else role]
            else:
                raise LayoutError(f"holds {len(keys)} arrays ({', '.join(keys[:5])}); keep one, "
                                  f"or name the {role} predictions '{role}'", path=path)
    else:
        array = loaded
    if array.dtype.kind not in "fiub":
        raise LayoutError(f"array has dtype {array.dtype}, not numbers; save the predictions as "
                          "floats", path=path)
    # float64 until the values are checked: a 1e39 would become inf in float32
    return np.asarray(array, dtype=np.float64)


def read_ids_file(path, *, option: str) -> np.ndarray:
    """The first column of a CSV (a header first), as str ids; or ids in memory
    (:func:`stacker.layout.memory.id_values`)."""
    if memory.in_memory(path):
        row_ids, first_row, path = memory.id_values(path, option=option), 0, memory.describe(path, option)
    else:
        path = Path(path)
        if path.suffix.lower() != ".csv":
            raise OptionError(f"{option} {path}: expected a .csv file whose first column holds the ids")
        row_ids, first_row = read_csv_table(path, what="ids file").iloc[:, 0], 2   # 2: after the header
    if row_ids.isna().any() or row_ids.eq("").any():
        bad = int(np.flatnonzero(row_ids.isna() | row_ids.eq(""))[0])
        raise LayoutError(f"row {bad + first_row}: the id is empty; every row needs an id", path=path)
    row_ids = row_ids.to_numpy(dtype=str)
    _check_unique(row_ids, path)
    return row_ids


# ---------------------------------------------------------------- aligning rows and columns


def _class_order(classes: Sequence[str] | None, known: Sequence[str]) -> np.ndarray | None:
    """Indices that reorder array columns named by ``classes`` into folds order (None: as is)."""
    if classes is None:
        return None
    classes = [c.strip() for c in classes]
    unknown = [c for c in classes if c not in set(known)]
    missing = [c for c in known if c not in set(classes)]
    if unknown or missing or len(classes) != len(known):
        detail = (f"'{unknown[0]}' is not a class of folds.csv" if unknown
                  else f"class '{missing[0]}' is not named" if missing else "a class is named twice")
        raise OptionError(f"--classes must name each class of folds.csv once, in the arrays' "
                          f"column order ({detail})")
    position = {c: j for j, c in enumerate(classes)}
    return np.array([position[c] for c in known])


def _columns(source: Source, classes: Sequence[str], order: np.ndarray | None,
             values: np.ndarray) -> np.ndarray:
    """``values`` (..., n_columns) or 1-D -> (..., n_classes) in folds.csv class order."""
    n = len(classes)
    if source.is_table:
        if len(source.columns) == 1 and n == 1:
            return values
        position = {c: j for j, c in enumerate(source.columns)}
        missing = [c for c in classes if c not in position]
        if missing:
            raise LayoutError(f"class column '{missing[0]}' is missing"
                              + (f" ({len(missing)} in all)" if len(missing) > 1 else "")
                              + "; every class of folds.csv needs a column named by the class",
                              path=source.path)
        wanted = set(classes)
        unknown = [c for c in source.columns if c not in wanted]
        if unknown:
            raise LayoutError(f"column '{unknown[0]}' is not a class of folds.csv; rename it or add "
                              f"the class to {CLASSES_FILE}", path=source.path)
        return values[:, [position[c] for c in classes]]
    if values.shape[-1] != n:
        raise LayoutError(f"array has {values.shape[-1]} columns but folds.csv has {n} classes; "
                          "save one column per class (in classes.txt order, or name the order "
                          "with --classes)", path=source.path)
    return values if order is None else values[..., order]


def _oof_in_folds_order(source: Source, folds: Folds, order, ids_file) -> np.ndarray:
    """The OOF predictions, (n_rows, n_classes) float64 in folds.csv row order."""
    values = source.values
    binary = len(folds.classes) == 1
    if not source.is_table:
        if values.ndim == 1 and binary:
            values = values[:, None]
        elif values.ndim == 1:
            raise LayoutError(f"array is 1-D (one score per row) but folds.csv has "
                              f"{len(folds.classes)} classes; a 1-D array fits binary tasks only: "
                              "save shape (rows, classes)", path=source.path)
        elif values.ndim != 2:
            raise LayoutError(f"array has shape {values.shape}; OOF predictions need shape "
                              f"(rows, classes) = ({len(folds.ids)}, {len(folds.classes)})",
                              path=source.path)
    values = _columns(source, folds.classes, order, values)
    if source.is_table:
        row_ids = source.ids
    elif ids_file is not None:
        row_ids = read_ids_file(ids_file, option="--ids")
        if len(row_ids) != len(values):
            raise LayoutError(f"array has {len(values)} rows but --ids {memory.describe(ids_file, 'ids')} names "
                              f"{len(row_ids)}; give one id per array row", path=source.path)
    else:
        if len(values) != len(folds.ids):
            raise LayoutError(f"array has {len(values)} rows but folds.csv has {len(folds.ids)}; "
                              "save one row per folds.csv row in its order, or pass --ids FILE "
                              "naming each row's id", path=source.path)
        return np.ascontiguousarray(values, dtype=np.float64)
    _check_unique(row_ids, source.path)
    position = {row_id: i for i, row_id in enumerate(row_ids)}
    known = set(folds.ids)
    unknown = [i for i in row_ids if i not in known]
    if unknown:
        raise LayoutError(f"id '{unknown[0]}' is not a row of folds.csv ({len(unknown)} such ids); "
                          "OOF predictions must be for the training rows of folds.csv",
                          path=source.path)
    missing = [i for i in folds.ids if i not in position]
    if missing:
        raise LayoutError(f"folds.csv row '{missing[0]}' has no prediction ({len(missing)} missing); "
                          "the OOF predictions must cover every row of folds.csv", path=source.path)
    rows = np.array([position[i] for i in folds.ids])
    return np.ascontiguousarray(values[rows], dtype=np.float64)


def _test_predictions(source: Source, folds: Folds, order, ids_file
                      ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(test ids (n_test,), values, per_fold): values (n_test, n_classes) fold-averaged, or
    (n_folds, n_test, n_classes) per fold when ``per_fold``."""
    values = source.values
    n_classes, n_folds = len(folds.classes), folds.n_folds
    binary = n_classes == 1
    per_fold = False
    if not source.is_table:
        if values.ndim == 1 and binary:
            values = values[:, None]
        elif values.ndim == 2 and binary and values.shape[1] != 1 and len(values) == n_folds:
            values, per_fold = values[:, :, None], True
        elif values.ndim == 3:
            per_fold = True
        elif values.ndim != 2:
            raise LayoutError(f"array has shape {values.shape}; test predictions need shape "
                              f"(test rows, classes) or (folds, test rows, classes) with "
                              f"{n_classes} classes", path=source.path)
        if per_fold and len(values) != n_folds:
            raise LayoutError(f"array holds {len(values)} fold predictions but folds.csv has "
                              f"{n_folds} folds; save (folds, test rows, classes) in fold order, "
                              "or one fold-averaged (test rows, classes) array", path=source.path)
    values = _columns(source, folds.classes, order, values)
    n_test = values.shape[-2]
    if source.is_table:
        row_ids = source.ids
        _check_unique(row_ids, source.path)
    elif ids_file is not None:
        row_ids = read_ids_file(ids_file, option="--test-ids")
        if len(row_ids) != n_test:
            raise LayoutError(f"array has {n_test} test rows but --test-ids "
                              f"{memory.describe(ids_file, 'test_ids')} names "
                              f"{len(row_ids)}; give one id per test row", path=source.path)
    else:
        row_ids = np.array([str(i) for i in range(n_test)])
    if not n_test:
        raise LayoutError("has no test rows; every experiment must predict the test set",
                          path=source.path)
    return row_ids, np.ascontiguousarray(values, dtype=np.float64), per_fold


def check_same_test_ids(root: Path, name: str, row_ids: np.ndarray, *, numbered: bool, path: Path,
                        first_fold: int) -> None:
    """LayoutError when the layout's experiments predict other test rows than ``row_ids``:
    `stack collect` would skip the imported experiment. The first other experiment whose test
    probs can be read is the reference; none (a new layout, or only unreadable ones): no check.
    numbered: the ids are row numbers because no --test-ids was given (the likely mistake)."""
    for other in list_experiments(root):
        if other == name:
            continue
        try:
            theirs = read_probs(find_probs(root, other, first_fold, "test"), experiment=other).ids
        except (LayoutError, OSError):
            continue
        if set(map(str, theirs)) == set(map(str, row_ids)):
            return
        if numbered:
            raise OptionError(f"{path}: the test rows are numbered 0..{len(row_ids) - 1} (no "
                              f"--test-ids) but experiment '{other}' predicts test ids like "
                              f"'{theirs[0]}'; pass --test-ids FILE (e.g. sample_submission.csv) "
                              "naming each test row's id")
        missing = sorted(set(map(str, theirs)) - set(map(str, row_ids)))
        extra = sorted(set(map(str, row_ids)) - set(map(str, theirs)))
        what = f"'{missing[0]}' missing" if missing else f"'{extra[0]}' is not one of them"
        raise LayoutError(f"test ids differ from experiment '{other}''s ({what}); every "
                          "experiment must predict the same test rows, or collect skips it",
                          path=path)
    return


def _check_unique(row_ids: np.ndarray, path: Path) -> None:
    unique, counts = np.unique(row_ids, return_counts=True)
    if len(unique) != len(row_ids):
        raise LayoutError(f"id '{unique[counts > 1][0]}' appears {counts[counts > 1][0]} times; "
                          "each row id must appear once", path=path)


# ---------------------------------------------------------------- values


def to_probabilities(values: np.ndarray, link: str | None, *, path: Path, row_ids: np.ndarray,
                     classes: Sequence[str]) -> np.ndarray:
    """``values`` (..., n_rows, n_classes) checked (finite) and, with ``link``, mapped to
    probabilities (sigmoid per value, softmax per row), as float32; without it, a value outside
    [0, 1] raises LayoutError suggesting --from-logits, except rounding noise (at most
    :data:`ROUNDING` outside, e.g. -1e-9), which is clipped: probs.csv keeps 7 digits anyway."""
    finite = np.isfinite(values)
    if not finite.all():
        where = np.argwhere(~finite)[0]
        raise LayoutError(f"row '{row_ids[where[-2]]}', column '{classes[where[-1]]}': value is NaN "
                          "or infinite; every prediction must be a number", path=path)
    if link == "sigmoid":
        with np.errstate(over="ignore"):     # exp(-(-1e39)) = inf: sigmoid 0, as it should be
            return (1.0 / (1.0 + np.exp(-values.astype(np.float64)))).astype(np.float32)
    if link == "softmax":
        shifted = values.astype(np.float64) - values.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    values = np.where((values < 0) & (values >= -ROUNDING), 0.0, values)
    values = np.where((values > 1) & (values <= 1 + ROUNDING), 1.0, values)
    outside = (values < 0) | (values > 1)
    if outside.any():
        where = np.argwhere(outside)[0]
        raise LayoutError(
            f"row '{row_ids[where[-2]]}', column '{classes[where[-1]]}': value "
            f"{float(values[tuple(where)]):g} is outside [0, 1], so these look like logits; pass "
            "--from-logits sigmoid (multi-label or binary) or --from-logits softmax "
            "(single-label) to convert them", path=path)
    return values.astype(np.float32)


def leakage_warnings(oof: np.ndarray, folds: Folds) -> tuple[str, ...]:
    """A warning when the OOF predictions are the labels themselves (every value within 1e-6 of
    its 0/1 label): predictions made on the rows they score, or the label matrix saved by mistake.
    Its CV would be perfect and every blend would pick it."""
    if oof.shape == folds.y.shape and np.all(np.abs(oof - folds.y) <= ROUNDING):
        return ("the OOF predictions equal the labels of folds.csv: they were not made out of "
                "fold (a model that saw these rows, or the label matrix saved by mistake); its CV "
                "means nothing and searches will choose it, so check the file before blending",)
    return ()


# ---------------------------------------------------------------- writing


def _write(root: Path, name: str, folds: Folds, oof: np.ndarray, test_ids: np.ndarray,
           test: np.ndarray, meta: dict, *, format: str, force: bool) -> Path:
    """Write the experiment into ``<root>/.stack/staging`` and rename it into place."""
    staging = staging_dir(root) / f"{name}-{uuid.uuid4().hex[:8]}"
    try:
        for i, k in enumerate(folds.fold_numbers):
            rows = folds.rows_of_fold(k)
            write_fold_predictions(staging, name, k, "val", folds.ids[rows], oof[rows],
                                         folds.classes, id_column=folds.id_column, format=format)
            write_fold_predictions(staging, name, k, "test", test_ids, test[i],
                                         folds.classes, id_column=folds.id_column, format=format)
        write_meta(staging, name, meta)
        if experiment_dir(root, name).exists():
            check_name(root, name, force=force)
        target = install_experiment(staging, root, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
