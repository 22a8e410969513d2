"""Readers for audio metadata: which file each row is and its labels.

Formats:
  ``fat2019``  Kaggle FAT2019: ``fname,labels`` with the labels comma-joined in one quoted field.
  ``esc50``    ESC-50 ``meta/esc50.csv``: ``filename,fold,target,category,...``; one label
               (``category``) per row, and the data set's own fold column.
  ``csv``      any CSV with a file-name column (default: the first) and a label column (default: the
               first of labels/label/category/class); labels may be comma-joined (multi-label).
  ``auto``     picks one of the above from the header.

Row ids are the file names as the metadata writes them (relative to the audio folder); they are the
ids of folds.csv and of the prediction layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stacker.errors import MetadataError
from stacker.layout import reading, split_labels

FORMATS = ("auto", "fat2019", "esc50", "csv")
LABEL_COLUMN_GUESSES = ("labels", "label", "category", "class")


@dataclass(frozen=True)
class AudioMeta:
    """ids: (n_rows,) str, file names relative to the audio folder (the row ids).
    labels: one tuple of class names per row (all empty when the metadata has no label column).
    folds: (n_rows,) int, the data set's own folds (ESC-50), else None.
    """

    path: Path
    format: str
    file_column: str
    label_column: str | None
    ids: np.ndarray
    labels: tuple[tuple[str, ...], ...]
    folds: np.ndarray | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted({name for row in self.labels for name in row}))


def read_metadata(path: Path | str, *, format: str = "auto", file_column: str | None = None,
                  label_column: str | None = None, require_labels: bool = True) -> AudioMeta:
    """Read one metadata CSV. ``require_labels=False`` accepts a file list without labels (a test
    set). Raises MetadataError naming the file, the row or column, and the fix."""
    path = Path(path)
    if format not in FORMATS:
        raise MetadataError(f"unknown metadata format '{format}'; choose one of {', '.join(FORMATS)}")
    frame = _read_frame(path)
    columns = list(frame.columns)
    if format == "auto":
        format = _detect(columns, file_column, label_column)
    folds = None
    if format == "fat2019":
        file_column = file_column or "fname"
        label_column = label_column or ("labels" if "labels" in columns or require_labels else None)
    elif format == "esc50":
        file_column = file_column or "filename"
        label_column = label_column or "category"
    else:
        file_column = file_column or columns[0]
        if label_column is None:
            label_column = next((c for c in LABEL_COLUMN_GUESSES if c in columns and c != file_column),
                                None)
            if label_column is None and require_labels:
                raise MetadataError(f"{path}: no label column (looked for "
                                    f"{', '.join(LABEL_COLUMN_GUESSES)}; found {', '.join(columns)}); "
                                    "pass `label_column` NAME")
    for role, column in (("file-name", file_column), ("label", label_column)):
        if column is not None and column not in columns:
            raise MetadataError(f"{path}: no {role} column '{column}' (found {', '.join(columns)}); "
                                f"pass --{'file' if role == 'file-name' else 'label'}-column NAME "
                                f"or `format`")
    ids = frame[file_column].fillna("").astype(str).str.strip().to_numpy(dtype=str)
    _check_ids(path, file_column, ids)
    if label_column is None:
        labels = tuple(() for _ in ids)
    elif format == "esc50":
        labels = tuple((v.strip(),) if v.strip() else () for v in frame[label_column].fillna(""))
    else:
        labels = tuple(split_labels(v) for v in frame[label_column].fillna("").tolist())
    if require_labels and label_column is not None and not any(labels):
        raise MetadataError(f"{path}: label column '{label_column}' is empty in every row; "
                            "pass `label_column` NAME")
    if format == "esc50" and "fold" in columns:
        folds = pd.to_numeric(frame["fold"], errors="coerce").to_numpy()
        if np.isnan(folds).any():
            bad = int(np.flatnonzero(np.isnan(folds))[0])
            raise MetadataError(f"{path}: row {bad + 2}: fold '{frame['fold'].iloc[bad]}' is not "
                                "an integer; fix the fold column")
        folds = folds.astype(np.int64)
    return AudioMeta(path=path, format=format, file_column=file_column, label_column=label_column,
                     ids=ids, labels=labels, folds=folds)


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MetadataError(f"{path}: metadata file is missing; pass an existing CSV")
    if path.stat().st_size == 0:
        raise MetadataError(f"{path}: metadata file is empty; it needs a header and rows")
    fmt = reading.sniff_text(path, what="metadata file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=fmt.encoding)
    except UnicodeDecodeError as error:
        raise reading.not_utf8(path, error, what="metadata file") from None
    except pd.errors.EmptyDataError:
        raise MetadataError(f"{path}: metadata file is empty; it needs a header and rows") from None
    except pd.errors.ParserError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MetadataError(f"{path}: malformed CSV ({first}); every row needs the header's "
                            "fields") from None
    if frame.empty:
        raise MetadataError(f"{path}: metadata has a header but no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    if fmt.trailing_comma and frame.columns[-1].startswith("Unnamed:"):
        frame = frame.iloc[:, :-1]      # Excel's trailing comma on every line
    return frame


def _detect(columns: list[str], file_column: str | None, label_column: str | None) -> str:
    if file_column or label_column:
        return "csv"
    if {"filename", "category", "fold"} <= set(columns):
        return "esc50"
    if {"fname", "labels"} <= set(columns):
        return "fat2019"
    return "csv"


def _check_ids(path: Path, column: str, ids: np.ndarray) -> None:
    empty = np.flatnonzero(ids == "")
    if len(empty):
        raise MetadataError(f"{path}: row {int(empty[0]) + 2}: column '{column}' is empty; every "
                            "row needs a file name")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        dup = unique[counts > 1][0]
        raise MetadataError(f"{path}: file '{dup}' appears {counts[counts > 1][0]} times in column "
                            f"'{column}'; keep one row per file")
