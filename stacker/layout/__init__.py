"""The standard prediction layout (``predictions/README.md``): the contract both levels share.

One module per job: ``paths`` (where each file lives), ``atomic`` (write, then rename), ``folds``
(folds.csv, classes.txt), ``tables`` (probs.csv / probs.parquet), ``windows`` (per-window .npy),
``meta`` (meta.json), ``provenance`` (who made a file, whether it may be replaced), ``reading``
(the checks before parsing a user's text file); ``collect`` validates and aligns every experiment
into one :class:`Collection`. This package only re-exports their public names; no module of it
imports the package back.
"""

from stacker.layout.atomic import (
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    install_experiment,
    json_default,
)
from stacker.layout.collect import Collection, collect
from stacker.layout.folds import (
    Folds,
    fold_hash,
    labels_to_matrix,
    read_classes_file,
    read_folds,
    split_labels,
    write_folds,
)
from stacker.layout.meta import read_meta, write_meta
from stacker.layout.paths import (
    CLASSES_FILE,
    DEFAULT_ROOT,
    FOLDS_FILE,
    META_FILE,
    PARQUET_PROBS_FILE,
    PROBS_FILE,
    PROBS_FILES,
    SPLITS,
    STACK_DIR,
    check_experiment_name,
    experiment_dir,
    find_probs,
    fold_dir,
    list_experiments,
    list_fold_numbers,
    probs_file_name,
    probs_path,
    stack_dir,
    windows_path,
)
from stacker.layout.tables import (
    PROB_FORMAT,
    Probs,
    as_stored,
    check_probabilities,
    read_csv_table,
    read_parquet_table,
    read_probs,
    write_fold_predictions,
    write_parquet_probs,
    write_probs,
)
from stacker.layout.windows import (
    WIDTHS_FILE,
    check_window_ids,
    has_windows,
    read_window_widths,
    read_windows,
    write_window_widths,
)

__all__ = [
    "atomic_save_npy", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "install_experiment", "json_default",
    "Collection", "collect",
    "Folds", "fold_hash", "labels_to_matrix", "read_classes_file", "read_folds", "split_labels",
    "write_folds",
    "read_meta", "write_meta",
    "CLASSES_FILE", "DEFAULT_ROOT", "FOLDS_FILE", "META_FILE", "PARQUET_PROBS_FILE", "PROBS_FILE",
    "PROBS_FILES", "SPLITS", "STACK_DIR", "check_experiment_name", "experiment_dir", "find_probs",
    "fold_dir", "list_experiments", "list_fold_numbers", "probs_file_name", "probs_path",
    "stack_dir", "windows_path",
    "PROB_FORMAT", "Probs", "as_stored", "check_probabilities", "read_csv_table", "read_parquet_table",
    "read_probs", "write_fold_predictions", "write_parquet_probs", "write_probs",
    "check_window_ids", "has_windows", "read_windows", "read_window_widths", "write_window_widths",
    "WIDTHS_FILE",
]
