"""The standard prediction layout (``predictions/README.md``): the contract both levels share.

``files`` reads and writes each file of the layout (folds.csv, classes.txt, probs.csv/.parquet, per-window
.npy, meta.json) with atomic writes; ``collect`` validates and aligns every experiment into one
:class:`Collection`.
"""

from stacker.layout.collect import Collection, collect
from stacker.layout.files import (
    CLASSES_FILE,
    DEFAULT_ROOT,
    FOLDS_FILE,
    META_FILE,
    PARQUET_PROBS_FILE,
    PROB_FORMAT,
    PROBS_FILE,
    PROBS_FILES,
    SPLITS,
    STACK_DIR,
    Folds,
    Probs,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_experiment_name,
    check_probabilities,
    experiment_dir,
    find_probs,
    fold_dir,
    fold_hash,
    has_windows,
    install_experiment,
    json_default,
    labels_to_matrix,
    list_experiments,
    list_fold_numbers,
    probs_file_name,
    probs_path,
    read_classes_file,
    read_csv_table,
    read_folds,
    read_meta,
    read_parquet_table,
    read_probs,
    read_windows,
    split_labels,
    stack_dir,
    windows_path,
    write_fold_predictions,
    write_folds,
    write_meta,
    write_parquet_probs,
    write_probs,
)

__all__ = ["CLASSES_FILE", "DEFAULT_ROOT", "FOLDS_FILE", "META_FILE", "PROB_FORMAT", "PROBS_FILE",
           "PARQUET_PROBS_FILE", "PROBS_FILES", "SPLITS",
           "STACK_DIR", "Folds", "Probs", "atomic_save_npy", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "check_probabilities", "experiment_dir", "fold_dir", "fold_hash",
           "has_windows", "install_experiment", "check_experiment_name", "json_default", "labels_to_matrix", "list_experiments", "list_fold_numbers",
           "find_probs", "probs_file_name", "probs_path", "read_parquet_table", "read_classes_file", "read_csv_table", "read_folds", "read_meta", "read_probs",
           "read_windows", "split_labels", "stack_dir", "windows_path", "write_fold_predictions",
           "write_folds", "write_meta", "write_parquet_probs", "write_probs", "Collection", "collect"]
