"""Atomic writes: a temporary file in the same folder, then a rename, so that a reader sees the
old file or the new one, never half of either. An experiment written whole in a staging folder is
renamed into place the same way (:func:`install_experiment`).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from stacker.layout.paths import experiment_dir


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:   # a read-only folder: name the user's file, not the temporary one
        raise type(error)(error.errno, error.strerror or str(error), str(path)) from None
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
