"""The K-fold runner: one model per fold of folds.csv -> ``fold_<k>/{val,test}`` + ``meta.json``.

For every fold k the model made by ``make_model(k)`` is fitted on the rows of the *other* folds
(the fold-k rows are also passed as ``X_val``/``y_val``, which a model may use to report a score
but never to steer training: early stopping on them would make the fold-k predictions depend on
fold k's labels; the audio CNN ignores them and early-stops on an inner hold-out of its training
rows), then predicts the fold-k rows (out-of-fold) and the whole test set. Predictions are written with
:func:`stacker.layout.write_fold_predictions`; ``meta.json`` records the model, its parameters,
the seed, the fold hash, the classes and the CV scores.

``format='parquet'`` writes ``probs.parquet`` instead of ``probs.csv``.

``side``: rows outside folds.csv (FAT2019's noisy clips) that every fold model also predicts, each
fold's predictions written to ``<side.out_dir>/fold_<k>.csv`` (beside the layout, never in it), so
that a later run can choose among those rows with fold k's model alone.

Resume: a fold whose ``val`` and ``test`` probs.csv both exist is skipped (its validation
predictions are read back for the overall CV) unless ``force``. An experiment made on other folds,
other classes, or with another model/params/seed is refused unless ``force``, because mixing fold
models of two set-ups would give out-of-fold predictions no single model made.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from stacker import layout
from stacker.errors import LayoutError, ModelOutputError, OutputExistsError
from stacker.layout import provenance
from stacker.metrics import get_metric
from stacker.parallel import map_units

# Probabilities a hair outside [0, 1] (float rounding in a softmax) are clipped; more is a bug.
_TOLERANCE = 1e-5


@runtime_checkable
class FoldModel(Protocol):
    """What the runner needs from a model. ``y_*``: (n, n_classes) uint8 in folds.csv class order;
    ``X_*``: whatever the model takes (rows of the caller's X, in the caller's container type).

    Optional: ``predict_windows(X) -> list[np.ndarray]``, one (n_windows, n_classes) array per
    row; when present the runner writes ``<id>.npy`` per row and ``probs.csv`` holds the mean over
    windows (``predict_proba`` is then not called). With it, optionally,
    ``window_widths(X) -> list[np.ndarray]`` (each window's width, int (n_windows,)) and
    ``pool_windows(probs, widths) -> (n_classes,)``: the widths are written to ``windows.csv``
    and ``probs.csv`` holds the pooled rows.
    """

    def fit(self, X_train, y_train, X_val, y_val) -> "FoldModel": ...

    def predict_proba(self, X) -> np.ndarray: ...


@dataclass
class RunResult:
    """name; cv: {metric name: overall out-of-fold score}; fold_scores: {fold: score of the main
    metric}; trained_folds / skipped_folds: fold numbers trained now / found on disk."""

    name: str
    cv: dict[str, float]
    fold_scores: dict[int, float]
    trained_folds: list[int] = field(default_factory=list)
    skipped_folds: list[int] = field(default_factory=list)


def take_rows(X, positions: np.ndarray):
    """Rows ``positions`` of X: a numpy array (fancy indexing), a pandas object (``iloc``) or any
    sequence (a list of its items). Never a view the model could write through into the caller's X."""
    positions = np.asarray(positions, dtype=np.int64)
    if isinstance(X, np.ndarray):
        return X[positions]
    if hasattr(X, "iloc"):
        return X.iloc[positions]
    return [X[int(i)] for i in positions]


@dataclass(frozen=True)
class SideSet:
    """Rows every fold model predicts besides the test set: X (any container the model takes),
    their ``ids``, and ``out_dir``, where fold k's predictions go as ``fold_<k>.csv``."""

    X: Any
    ids: Sequence[str]
    out_dir: Path


def side_path(out_dir: Path | str, fold: int) -> Path:
    """Fold ``fold``'s predictions of a :class:`SideSet`."""
    return Path(out_dir) / f"fold_{fold}.csv"


@dataclass(frozen=True)
class KFoldSettings:
    """How :func:`run_kfold` trains and records one experiment: every keyword of run_kfold.

    model: the model's name in meta.json. params, seed: recorded there; with ``model`` they must
    match on a resumed run. force: retrain every fold, replacing what is on disk.
    metric: the main CV score. on_progress: ``on_progress(done, n_folds)``.
    extra_meta: more keys for meta.json (e.g. the feature files), recorded but not compared.
    scheduler: a dask.distributed scheduler address: each fold is one task on its workers, which
    write the fold's files themselves (the root must be on a filesystem they all see, at the same
    path); None trains the folds here, one after another.
    format: 'csv' or 'parquet', the file format of the predictions (probs.csv / probs.parquet).
    side: a :class:`SideSet` every fold model also predicts (None: none).
    """

    model: str
    params: Mapping
    seed: int
    force: bool = False
    metric: str = "lwlrap"
    on_progress: Callable[[int, int], None] | None = None
    extra_meta: Mapping | None = None
    scheduler: str | None = None
    format: str = "csv"
    side: SideSet | None = None


@dataclass(frozen=True)
class FoldData:
    """What every fold model reads: folds.csv, the caller's X with ``position`` (X's row
    ``position[i]`` holds ``folds.ids[i]``), X_test and its ``test_ids`` (n_test,) str; side:
    the :class:`SideSet` or None."""

    folds: layout.Folds
    X: Any
    position: np.ndarray
    X_test: Any
    test_ids: np.ndarray
    side: SideSet | None = None


@dataclass(frozen=True)
class FoldTarget:
    """Where and how each fold's predictions are written: experiment ``name`` under ``root``,
    in ``format``; ``model`` names the model in errors; ``force`` retrains a finished fold."""

    root: Path
    name: str
    model: str
    format: str = "csv"
    force: bool = False


def run_kfold(root: Path | str, name: str, make_model: Callable[[int], FoldModel], X,
              ids: Sequence[str], X_test, test_ids: Sequence[str], *,
              settings: KFoldSettings | None = None, **options) -> RunResult:
    """Train one model per fold of ``<root>/folds.csv`` and write the experiment ``name``.

    X: array of shape (n_rows, ...) or a sequence of n_rows items, row i having id ``ids[i]``;
    ``ids`` must be exactly folds.csv's ids as a set (any order). X_test: (n_test, ...) likewise,
    with ``test_ids``. make_model(fold) returns a fresh, seeded, unfitted model.
    options: the fields of :class:`KFoldSettings` as keywords (``model``, ``params`` and ``seed``
    are required): ``run_kfold(..., model="my-model", params={}, seed=0, force=True)``; or pass
    ``settings`` (options then override its fields).
    """
    settings = KFoldSettings(**options) if settings is None else replace(settings, **options)
    root = Path(root)
    scorer = get_metric(settings.metric)
    folds = layout.read_folds(root)
    ids = np.asarray([str(i) for i in ids])
    test_ids = np.asarray([str(i) for i in test_ids])
    position = _align(folds, ids, len(X), what="training")
    _check_test(test_ids, len(X_test))
    params = _json_normalised(settings.params)
    layout.probs_file_name(settings.format)   # ValueError for an unknown format, before any work
    data_hash = input_data_hash(X, folds.ids, position, X_test, test_ids)
    meta = {"model": settings.model, "params": params, "seed": settings.seed, "level": 1,
            "fold_hash": folds.hash, "data_hash": data_hash, "classes": list(folds.classes),
            "n_train": int(len(ids)), "n_test": int(len(test_ids)), **(settings.extra_meta or {})}
    _prepare(root, name, folds, settings, expected={
        "fold_hash": folds.hash, "classes": list(folds.classes), "data_hash": data_hash,
        "model": settings.model, "params": params, "seed": settings.seed})
    layout.write_meta(root, name, provenance.stamped(meta))   # claims the name for resume

    if settings.scheduler:   # workers find the files by absolute path (a shared filesystem)
        root = root.resolve()
    target = FoldTarget(root=root, name=name, model=settings.model, format=settings.format,
                        force=settings.force)
    side = settings.side
    if side is not None and settings.scheduler:
        side = replace(side, out_dir=Path(side.out_dir).resolve())
    data = FoldData(folds=folds, X=X, position=position, X_test=X_test, test_ids=test_ids,
                    side=side)
    outcomes = map_units(_fold_unit, folds.fold_numbers, scheduler=settings.scheduler,
                         on_progress=settings.on_progress,
                         shared=dict(make_model=make_model, data=data, target=target))
    oof = np.zeros((len(folds.ids), len(folds.classes)), dtype=np.float32)
    trained, skipped = [], []
    for k, (val_probs, trained_now) in zip(folds.fold_numbers, outcomes):
        oof[folds.rows_of_fold(k)] = val_probs
        (trained if trained_now else skipped).append(k)

    cv, fold_cv = _scores(folds, oof, scorer)
    layout.write_meta(root, name, provenance.stamped(
        {**meta, "cv": cv, "fold_cv": fold_cv, "metric": scorer.name}))
    return RunResult(name=name, cv=cv,
                     fold_scores={k: fold_cv[str(k)][scorer.name] for k in folds.fold_numbers},
                     trained_folds=trained, skipped_folds=skipped)


def _prepare(root: Path, name: str, folds: layout.Folds, settings: KFoldSettings, *,
             expected: Mapping) -> None:
    """Before any training: refuse to resume into an experiment made otherwise than ``expected``
    says (unless force); under force, drop the folds that folds.csv no longer has."""
    if settings.force:
        provenance.check_not_linked(root, name)
        _remove_stale_folds(root, name, folds)
        return
    _check_existing(root, name, expected)
    _check_format(root, name, settings.format)


# ---------------------------------------------------------------- checks before training


def _align(folds: layout.Folds, ids: np.ndarray, n_rows: int, *, what: str) -> np.ndarray:
    """position[i] = the row of X holding folds.ids[i]; LayoutError when the id sets differ."""
    if len(ids) != n_rows:
        raise ValueError(f"{what} X has {n_rows} rows but {len(ids)} ids were given")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise LayoutError(f"{what} id '{unique[counts > 1][0]}' appears {counts.max()} times; "
                          "each row id must appear once")
    row_of = {row_id: i for i, row_id in enumerate(ids)}
    missing = [i for i in folds.ids if i not in row_of]
    if missing:
        raise LayoutError(f"id '{missing[0]}' of folds.csv has no {what} row ({len(missing)} "
                          f"missing in all); the {what} data must hold every row of folds.csv",
                          path=folds.path)
    known = set(folds.ids)
    extra = [i for i in ids if i not in known]
    if extra:
        raise LayoutError(f"{what} id '{extra[0]}' is not in folds.csv ({len(extra)} such ids); "
                          "remove those rows or rebuild folds.csv with `stack make-folds`",
                          path=folds.path)
    return np.array([row_of[i] for i in folds.ids], dtype=np.int64)


def _check_test(test_ids: np.ndarray, n_rows: int) -> None:
    if len(test_ids) != n_rows:
        raise ValueError(f"test X has {n_rows} rows but {len(test_ids)} test ids were given")
    if not len(test_ids):
        raise LayoutError("the test set has no rows; every fold model must predict a test set")
    unique, counts = np.unique(test_ids, return_counts=True)
    if len(unique) != len(test_ids):
        raise LayoutError(f"test id '{unique[counts > 1][0]}' appears {counts.max()} times; "
                          "each test row id must appear once")


def input_data_hash(X, ids: Sequence[str], position: np.ndarray, X_test,
                    test_ids: Sequence[str]) -> str:
    """A short content hash of the training rows (in folds.csv order: ``X[position[i]]`` is row
    ``ids[i]``) and of the test rows (in sorted test-id order), so that a resumed run can tell
    that its input data changed. X, X_test: arrays, pandas objects or sequences of arrays."""
    digest = hashlib.sha1()

    def add(rows, row_ids) -> None:
        digest.update("\n".join(map(str, row_ids)).encode("utf-8"))
        if hasattr(rows, "iloc"):
            import pandas as pd
            digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
            return
        if isinstance(rows, np.ndarray):
            rows = np.ascontiguousarray(rows)
            digest.update(f"{rows.dtype}{rows.shape}".encode())
            digest.update(rows.tobytes())
            return
        for item in rows:
            array = None if item is None else np.ascontiguousarray(np.asarray(item))
            if array is None or array.dtype == object:
                digest.update(repr(item).encode("utf-8"))
            else:
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(array.tobytes())

    add(take_rows(X, position), ids)
    order = np.argsort(np.asarray(test_ids, dtype=str), kind="stable")
    add(take_rows(X_test, order), np.asarray(test_ids, dtype=str)[order])
    return digest.hexdigest()[:16]


def _check_existing(root: Path, name: str, expected: Mapping) -> None:
    """Refuse to resume into an experiment made otherwise than ``expected`` (fold_hash, classes,
    data_hash, model, params, seed of this run); the rule is
    :func:`stacker.layout.provenance.check_resumable`."""
    out = layout.experiment_dir(root, name)
    if not out.exists():
        return
    # only finished folds would be kept and mixed with new ones; without any, start afresh
    if not any(_fold_written(root, name, k) for k in layout.list_fold_numbers(root, name)):
        return
    provenance.check_resumable(layout.read_meta(root, name), expected,
                               where=out / layout.META_FILE, name=name)


def _check_format(root: Path, name: str, format: str) -> None:
    """Refuse to resume an experiment whose finished folds are in the other file format (an
    experiment keeps one format)."""
    if not layout.experiment_dir(root, name).exists():
        return
    wanted = layout.probs_file_name(format)
    for k in layout.list_fold_numbers(root, name):
        if _fold_written(root, name, k):
            found = layout.probs_path(root, name, k, "val").name
            if found != wanted:
                raise OutputExistsError(
                    f"{layout.experiment_dir(root, name)}: experiment '{name}' was written as "
                    f"{found}; pass that format to resume it or --force to rewrite every fold "
                    f"as {wanted}")


def _remove_stale_folds(root: Path, name: str, folds: layout.Folds) -> None:
    """Under force: drop fold_<k> folders that folds.csv no longer has (collect would reject them)."""
    out = layout.experiment_dir(root, name)
    if not out.exists():
        return
    for k in layout.list_fold_numbers(root, name):
        if k not in folds.fold_numbers:
            _remove_tree(out / f"fold_{k}")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path)


def _json_normalised(params: dict) -> dict:
    """params as they will read back from meta.json (tuples -> lists, numpy scalars -> numbers)."""
    return json.loads(json.dumps(dict(params or {}), sort_keys=True, default=layout.json_default))


# ---------------------------------------------------------------- one fold


def _fold_written(root: Path, name: str, k: int) -> bool:
    return all(layout.probs_path(root, name, k, split).exists() for split in layout.SPLITS)


def _read_back(root: Path, name: str, k: int, folds: layout.Folds, val_rows: np.ndarray,
               test_ids: np.ndarray) -> np.ndarray:
    """The saved fold-k validation predictions, (len(val_rows), n_classes) in folds order."""
    val = layout.read_probs(layout.probs_path(root, name, k, "val"), experiment=name)
    test = layout.read_probs(layout.probs_path(root, name, k, "test"), experiment=name)
    if set(test.ids) != set(test_ids) or len(test.ids) != len(test_ids):
        raise OutputExistsError(
            f"{test.path}: fold {k} predicted another test set; pass `force` to retrain every fold")
    column = {c: j for j, c in enumerate(val.columns)}
    row = {r: i for i, r in enumerate(val.ids)}
    wanted = folds.ids[val_rows]
    if set(val.ids) != set(wanted) or any(c not in column for c in folds.classes):
        raise OutputExistsError(f"{val.path}: fold {k} does not hold exactly the fold-{k} rows and "
                                "classes of folds.csv; pass `force` to retrain every fold")
    return val.values[np.array([row[i] for i in wanted])][:, [column[c] for c in folds.classes]]


def _fold_unit(k: int, *, make_model, data: FoldData, target: FoldTarget) -> tuple[np.ndarray, bool]:
    """Fold k, here or on a cluster worker: (its validation probs (n_fold_k, n_classes), whether
    it was trained now). A fold already written is read back, never retrained (unless force):
    so a task that dask reruns after its worker died does not redo a finished fold."""
    if not target.force and _fold_written(target.root, target.name, k):
        return _read_back(target.root, target.name, k, data.folds, data.folds.rows_of_fold(k),
                          data.test_ids), False
    return _train_fold(k, make_model, data, target), True


def _train_fold(k: int, make_model, data: FoldData, target: FoldTarget) -> np.ndarray:
    """Fit the fold-k model on the other folds, write val and test predictions; returns val probs."""
    folds, root, name = data.folds, target.root, target.name
    val_rows = folds.rows_of_fold(k)
    train_rows = np.flatnonzero(folds.fold != k)
    fitted = make_model(k)
    X_val = take_rows(data.X, data.position[val_rows])
    fitted = fitted.fit(take_rows(data.X, data.position[train_rows]), folds.y[train_rows].copy(),
                        X_val, folds.y[val_rows].copy()) or fitted
    n_classes = len(folds.classes)
    if data.side is not None:
        side_ids = np.asarray([str(i) for i in data.side.ids])
        probs = _predict(fitted, data.side.X, side_ids, n_classes, model=target.model, fold=k,
                         split="side")[0]
        layout.write_probs(side_path(data.side.out_dir, k), side_ids, probs, folds.classes,
                           id_column=folds.id_column)
    # test before val: val/probs.csv is written last, so a fold counts as done only when complete
    for split, rows, split_ids in (("test", data.X_test, data.test_ids),
                                   ("val", X_val, folds.ids[val_rows])):
        folder = layout.fold_dir(root, name, k, split)
        if folder.exists():   # per-window files and temporary files of an interrupted run
            for entry in os.scandir(folder):
                if entry.name.endswith(".npy") or entry.name == layout.WIDTHS_FILE or (
                        entry.name.startswith(".") and entry.name.endswith(".tmp")):
                    os.unlink(entry.path)
        probs, windows, widths = _predict(fitted, rows, split_ids, n_classes, model=target.model,
                                          fold=k, split=split)
        if windows:   # every id a plain file name before the first <id>.npy is written
            layout.check_window_ids(windows, folder)
        if widths:
            layout.write_window_widths(root, name, k, split, widths, id_column=folds.id_column)
        layout.write_fold_predictions(root, name, k, split, split_ids, probs, folds.classes,
                                      id_column=folds.id_column, windows=windows,
                                      format=target.format)
    return probs


def _predict(fitted, X, split_ids: np.ndarray, n_classes: int, *, model: str, fold: int,
             split: str) -> tuple[np.ndarray, dict | None, dict | None]:
    """(probs (n_rows, n_classes), {id: windows} or None, {id: window widths} or None)."""
    where = f"model '{model}', fold {fold}, {split} set"
    if not hasattr(fitted, "predict_windows"):
        probs = np.asarray(fitted.predict_proba(X), dtype=np.float32)
        if probs.shape != (len(split_ids), n_classes):
            raise ModelOutputError(f"{where}: predict_proba returned shape {probs.shape}; expected "
                                   f"({len(split_ids)}, {n_classes}), one column per class of "
                                   "folds.csv")
        return _checked(probs, where), None, None
    windows = _windows(fitted.predict_windows(X), split_ids, n_classes, where)
    if not hasattr(fitted, "window_widths"):
        probs = np.stack([w.mean(axis=0) for w in windows.values()]) if windows else \
            np.zeros((0, n_classes), dtype=np.float32)
        return probs, windows, None
    widths = {}
    for row_id, row_widths in zip(split_ids, fitted.window_widths(X)):
        row_widths = np.asarray(row_widths, dtype=np.int64)
        if row_widths.shape != (len(windows[row_id]),):
            raise ModelOutputError(f"{where}: window_widths of row '{row_id}' has shape "
                                   f"{row_widths.shape}; expected one width per window "
                                   f"({len(windows[row_id])},)")
        widths[row_id] = row_widths
    if len(widths) != len(split_ids):
        raise ModelOutputError(f"{where}: window_widths returned {len(widths)} arrays for "
                               f"{len(split_ids)} rows; return one per row")
    pool = getattr(fitted, "pool_windows", lambda probs, _: probs.mean(axis=0))
    probs = np.stack([np.asarray(pool(windows[i], widths[i]), dtype=np.float32)
                      for i in split_ids]) if len(split_ids) else \
        np.zeros((0, n_classes), dtype=np.float32)
    if probs.shape != (len(split_ids), n_classes):
        raise ModelOutputError(f"{where}: pool_windows returned rows of shape {probs.shape[1:]}; "
                               f"expected ({n_classes},)")
    return _checked(probs, where), windows, widths


def _windows(arrays, split_ids: np.ndarray, n_classes: int, where: str) -> dict[str, np.ndarray]:
    """{row id: checked (n_windows, n_classes) float32} from predict_windows' list."""
    arrays = list(arrays)
    if len(arrays) != len(split_ids):
        raise ModelOutputError(f"{where}: predict_windows returned {len(arrays)} arrays for "
                               f"{len(split_ids)} rows; return one (windows, classes) per row")
    windows = {}
    for row_id, array in zip(split_ids, arrays):
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != n_classes or not len(array):
            raise ModelOutputError(f"{where}: windows of row '{row_id}' have shape "
                                   f"{array.shape}; expected (n_windows >= 1, {n_classes})")
        windows[row_id] = _checked(array, where)
    return windows


def _checked(probs: np.ndarray, where: str) -> np.ndarray:
    finite = np.isfinite(probs)
    if not finite.all() or probs.min(initial=0) < -_TOLERANCE or probs.max(initial=0) > 1 + _TOLERANCE:
        row, col = np.argwhere(~finite | (probs < -_TOLERANCE) | (probs > 1 + _TOLERANCE))[0]
        raise ModelOutputError(f"{where}: prediction {float(probs[row, col])} at row {row}, class "
                               f"{col} is not a probability in [0, 1]")
    return np.clip(probs, 0.0, 1.0)


# ---------------------------------------------------------------- scores


def _scores(folds: layout.Folds, oof: np.ndarray, scorer) -> tuple[dict, dict]:
    """Overall and per-fold CV: the chosen metric, lwlrap, and accuracy for single-label data."""
    names = [scorer.name] + [m for m in ("lwlrap",) if m != scorer.name]
    if folds.is_single_label and "accuracy" not in names:
        names.append("accuracy")
    scorers = [get_metric(m) for m in names]
    cv = {s.name: _finite(s(folds.y, oof)) for s in scorers}
    fold_cv = {}
    for k in folds.fold_numbers:
        rows = folds.rows_of_fold(k)
        fold_cv[str(k)] = {s.name: _finite(s(folds.y[rows], oof[rows])) for s in scorers}
    return cv, fold_cv


def _finite(value: float) -> Any:
    """JSON has no NaN: a metric without positives is recorded as null."""
    return None if value is None or not np.isfinite(value) else float(value)
