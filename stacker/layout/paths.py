"""Where each file of the standard layout lives: the file names, the folders, the listing.

::

    <root>/folds.csv                             <id>,labels,fold
    <root>/classes.txt                           optional: the class vocabulary, one name a line
    <root>/<experiment>/meta.json                optional: model, params, seed, level, cv, fold_hash
    <root>/<experiment>/fold_<k>/val/probs.csv   <id>,<class 1>,...  exactly the fold-k rows
    <root>/<experiment>/fold_<k>/test/probs.csv  <id>,<class 1>,...  the fold-k model on the test set
    <root>/<experiment>/fold_<k>/{val,test}/<id>.npy  optional per-window predictions

``probs.parquet`` (same columns, the id column first) may stand wherever ``probs.csv`` does; an
experiment holds one format only. ``predictions/README.md`` is the specification.
"""

from __future__ import annotations

import os
from pathlib import Path

from stacker.errors import LayoutError, OptionError

FOLDS_FILE = "folds.csv"
CLASSES_FILE = "classes.txt"
META_FILE = "meta.json"
PROBS_FILE = "probs.csv"
PARQUET_PROBS_FILE = "probs.parquet"
PROBS_FILES = {"csv": PROBS_FILE, "parquet": PARQUET_PROBS_FILE}   # format -> file name
STACK_DIR = ".stack"
SPLITS = ("val", "test")
DEFAULT_ROOT = Path("predictions")


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
    """``fold_<k>/<split>/<row_id>.npy``; LayoutError for an id that is not a plain file name
    (:func:`check_window_id`), which would read or write outside the folder."""
    folder = fold_dir(root, name, fold, split)
    check_window_id(row_id, folder)
    return folder / f"{row_id}.npy"


_UNSAFE_IN_IDS = {"/": "'/'", "\\": "'\\'", "\0": "a NUL character"}


def check_window_id(row_id: str, folder: Path | str, *, source: str | None = None) -> None:
    """LayoutError when ``row_id`` cannot name a per-window file ``<row_id>.npy`` in ``folder``:
    it holds '/', '\\' or NUL, or is empty, '.' or '..' (ids like '../x' would write outside the
    layout). ``source``: the file the ids come from, named in the fix."""
    row_id = str(row_id)
    held = [what for char, what in _UNSAFE_IN_IDS.items() if char in row_id]
    if not held and row_id not in ("", ".", ".."):
        return
    why = f"it holds {held[0]}" if held else "it is not a file name"
    raise LayoutError(f"row id {row_id!r} cannot name a per-window file in {folder} ({why}); "
                      f"ids must be plain file names: rename that row in "
                      f"{source or 'the file its id comes from (folds.csv, the metadata CSV or the test file names)'}")


def stack_dir(root: Path | str) -> Path:
    """``<root>/.stack``: caches and the outputs of stacker commands (created on demand)."""
    path = Path(root) / STACK_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_experiment_name(name: str) -> str:
    """``name`` if it can be an experiment folder under the root; OptionError otherwise.

    One rule for every writer (first-level runners, level 2, import): a plain folder name, not
    hidden or private (``.``/``_`` prefixes are skipped by :func:`list_experiments`), no separator,
    and one that ``--subset NAME,NAME`` can select (no comma, no surrounding spaces: the list is
    split on commas and each name stripped).
    """
    if not name or not name.strip() or name != name.strip() or name.startswith((".", "_")) \
            or any(char in name for char in "/\\,\0") or name in (".", ".."):
        fix = f"; use '{name.strip()}'" if name.strip() and name != name.strip() else ""
        raise OptionError(f"experiment name {name!r} must be a plain folder name that --subset can "
                          "select: letters, digits, '-', '_' and '.', not starting with '.' or '_', "
                          f"no surrounding spaces, no ',', '/' or '\\'{fix}")
    return name


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
