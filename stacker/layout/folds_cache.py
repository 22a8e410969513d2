"""folds.csv parsed once: the validated :class:`Folds` kept in the collect cache.

A warm ``collect`` (every experiment unchanged) then neither parses folds.csv nor imports pandas:
``<root>/.stack/cache/_folds.json`` holds the parsed rows and the key of folds.csv and classes.txt
(size, mtime, inode, ctime) they were read under; any change to either file misses and the file is
read and validated again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stacker.layout.atomic import atomic_write_text
from stacker.layout.folds import Folds, labels_to_matrix
from stacker.layout.paths import FOLDS_FILE

FOLDS_CACHE = "_folds.json"


def load_folds(cache_dir: Path, root: Path, key) -> Folds | None:
    """The cached Folds of ``root`` when they were saved under ``key``; None on any miss."""
    try:
        record = json.loads((cache_dir / FOLDS_CACHE).read_text(encoding="utf-8"))
        if record.get("key") != key:
            return None
        labels = tuple(tuple(row) for row in record["labels"])
        classes = tuple(record["classes"])
        folds = Folds(id_column=record["id_column"], ids=np.array(record["ids"], dtype=str),
                      labels=labels, classes=classes, y=labels_to_matrix(labels, classes),
                      fold=np.array(record["fold"], dtype=np.int64), path=Path(root) / FOLDS_FILE)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    folds.__dict__["hash"] = record.get("hash") or folds.hash      # the cached_property, once
    return folds


def save_folds(cache_dir: Path, key, folds: Folds) -> None:
    """Keep ``folds`` for the next collect (a cache that cannot be written only costs speed)."""
    record = {"key": key, "id_column": folds.id_column, "ids": folds.ids.tolist(),
              "labels": [list(row) for row in folds.labels], "classes": list(folds.classes),
              "fold": folds.fold.tolist(), "hash": folds.hash}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_dir / FOLDS_CACHE, json.dumps(record))
    except OSError:
        pass
