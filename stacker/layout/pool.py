"""The memory-mapped pool: every collected experiment's aligned arrays in two files of the cache.

::

    <root>/.stack/cache/_pool.oof.npy    (n_models, n_rows, n_classes) float32, folds.csv row order
    <root>/.stack/cache/_pool.test.npy   (n_models, n_folds, n_test, n_classes) float32
    <root>/.stack/cache/_pool.json       the experiments' cache keys, names, test ids, meta, skips

Each model's block is contiguous on disk, so the pool is written by appending one experiment at a
time (never more than one experiment in memory) and a single model's predictions are one read.
A cold collect writes it once: :class:`PoolStage` appends each experiment to the two files as it
is loaded, in the pool's order, and renames them into place when every staged experiment is kept
(a skipped one or reordered test rows, both rare, cost one rewrite by :func:`write_pool`). The
pool is also the cache of each experiment's arrays: :func:`previous_pool` hands an unchanged
experiment's block to the next pool.
:func:`load_pool` maps both files read-only and returns them as views with the axes
:class:`~stacker.layout.collect.Collection` documents, (n_rows, n_models, n_classes) and
(n_folds, n_test, n_models, n_classes): nothing is copied. The index is written last and records
the arrays' size and modification time, so a pool left half-written by a crash is never read.
(The ``_`` prefix cannot clash with an experiment's cache files: such folders are not experiments.)
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stacker.layout.atomic import atomic_write_text

POOL_VERSION = 2
POOL_PREFIX = "_pool"
_DTYPE = np.dtype("<f4")
HEADER_BYTES = 128         # the .npy header a staged file reserves (its shape is known at the end)


@dataclass(frozen=True)
class MappedPool:
    """oof: (n_rows, n_models, n_classes) and test: (n_folds, n_test, n_models, n_classes), float32
    read-only views of the mapped files; the rest as recorded by :func:`write_pool`."""

    names: tuple[str, ...]
    oof: np.ndarray
    test_ids: np.ndarray
    test: np.ndarray
    meta: dict
    windows: tuple[str, ...]
    skipped: tuple[str, ...]


def pool_paths(cache_dir: Path) -> dict[str, Path]:
    return {"oof": cache_dir / f"{POOL_PREFIX}.oof.npy", "test": cache_dir / f"{POOL_PREFIX}.test.npy",
            "index": cache_dir / f"{POOL_PREFIX}.json"}


def write_pool(cache_dir: Path, *, keys: Mapping[str, str], experiments: Sequence, skipped: Sequence[str],
               n_rows: int, n_folds: int, n_classes: int) -> None:
    """Write the pool of ``experiments`` (collect's validated experiments: ``.name``, ``.meta``,
    ``.test_ids``, ``.has_windows`` and ``.arrays()`` -> (oof (n_rows, n_classes), test (n_folds,
    n_test, n_classes))), one at a time. ``keys``: the cache key of every experiment listed under
    the root, kept or skipped; the pool is current only while they all stay the same.
    Raises OSError when the cache cannot be written (nothing half-written is left behind).
    """
    paths = pool_paths(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    n_test = len(experiments[0].test_ids)
    shapes = {"oof": (len(experiments), n_rows, n_classes),
              "test": (len(experiments), n_folds, n_test, n_classes)}
    handles, temps = {}, {}
    try:
        for part in ("oof", "test"):
            fd, temps[part] = tempfile.mkstemp(prefix=f".{paths[part].name}.", suffix=".tmp",
                                               dir=cache_dir)
            handles[part] = os.fdopen(fd, "wb")
            np.lib.format.write_array_header_1_0(handles[part], {
                "descr": np.lib.format.dtype_to_descr(_DTYPE), "fortran_order": False,
                "shape": shapes[part]})
        for exp in experiments:
            oof, test = exp.arrays()
            for part, array in (("oof", oof), ("test", test)):
                expected = shapes[part][1:]
                if array.shape != expected:
                    raise ValueError(f"experiment '{exp.name}': {part} has shape {array.shape}, "
                                     f"expected {expected}")
                handles[part].write(np.ascontiguousarray(array, dtype=_DTYPE).data)
            del oof, test                      # one experiment in memory at a time
        for handle in handles.values():
            handle.close()
        _install(paths, temps, keys=keys, experiments=experiments, skipped=skipped)
    except BaseException:
        for handle in handles.values():
            handle.close()
        for temp in temps.values():
            _unlink(temp)
        if not _index_matches_arrays(paths):
            for part in ("oof", "test", "index"):
                _unlink(paths[part])
        raise


def _install(paths, temps, *, keys, experiments, skipped) -> None:
    """Rename the written files ``temps`` into the pool and write its index last."""
    recorded = {}
    for part in ("oof", "test"):
        os.replace(temps[part], paths[part])
        temps[part] = paths[part]
        st = os.stat(paths[part])
        recorded[part] = [st.st_size, st.st_mtime_ns]
    index = {"version": POOL_VERSION, "keys": dict(keys), "arrays": recorded,
             "names": [e.name for e in experiments], "skipped": list(skipped),
             "test_ids": experiments[0].test_ids.tolist(),
             "meta": {e.name: e.meta for e in experiments},
             "windows": [e.name for e in experiments if e.has_windows]}
    atomic_write_text(paths["index"], json.dumps(index, default=str))
    temps.clear()           # installed: nothing left to remove


def _header(shape: tuple) -> bytes:
    """A version 1.0 .npy header of exactly HEADER_BYTES for float32 ``shape`` (C order)."""
    text = f"{{'descr': '{_DTYPE.str}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    length = HEADER_BYTES - 10
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", length) + (text.ljust(length - 1) + "\n").encode()


class PoolStage:
    """The pool's files, written while the experiments are loaded: :meth:`add` appends one
    experiment (its oof (n_rows, n_classes) and test (n_folds, n_test, n_classes)) to both files,
    :meth:`commit` writes their headers and renames them into the pool, :meth:`discard` removes
    them. Only experiments with the first one's test ids in the same order are staged
    (:meth:`accepts`); OSError when the cache cannot be written."""

    def __init__(self, cache_dir: Path, *, n_rows: int, n_folds: int, n_classes: int):
        self.paths = pool_paths(cache_dir)
        self.shapes = {"oof": (n_rows, n_classes), "test": None}
        self.n_folds, self.n_classes = n_folds, n_classes
        self.names: list[str] = []
        self.test_ids = None
        self.temps: dict = {}
        self.handles: dict = {}
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            for part in ("oof", "test"):
                fd, self.temps[part] = tempfile.mkstemp(prefix=f".{self.paths[part].name}.",
                                                        suffix=".tmp", dir=cache_dir)
                self.handles[part] = os.fdopen(fd, "wb")
                self.handles[part].write(b"\0" * HEADER_BYTES)
        except BaseException:
            self.discard()
            raise

    def accepts(self, experiment) -> bool:
        return self.test_ids is None or np.array_equal(experiment.test_ids, self.test_ids)

    def add(self, experiment, oof: np.ndarray, test: np.ndarray) -> int:
        """Append ``experiment``'s arrays; returns its slot."""
        if self.test_ids is None:
            self.test_ids = experiment.test_ids
            self.shapes["test"] = (self.n_folds, len(self.test_ids), self.n_classes)
        for part, array in (("oof", oof), ("test", test)):
            if array.shape != self.shapes[part]:
                raise ValueError(f"experiment '{experiment.name}': {part} has shape {array.shape}, "
                                 f"expected {self.shapes[part]}")
            self.handles[part].write(np.ascontiguousarray(array, dtype=_DTYPE).data)
        self.names.append(experiment.name)
        return len(self.names) - 1

    def read(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """The arrays of ``slot`` as written (copies)."""
        out = []
        for part in ("oof", "test"):
            if part in self.handles:
                self.handles[part].flush()
            shape = self.shapes[part]
            count = int(np.prod(shape))
            with open(self.temps[part], "rb") as handle:
                handle.seek(HEADER_BYTES + slot * count * _DTYPE.itemsize)
                out.append(np.fromfile(handle, dtype=_DTYPE, count=count).reshape(shape))
        return out[0], out[1]

    def commit(self, *, keys: Mapping[str, str], experiments: Sequence, skipped: Sequence[str]) -> None:
        """The staged files become the pool of ``experiments`` (exactly the staged ones, in
        order), current for ``keys``."""
        if [e.name for e in experiments] != self.names:
            raise ValueError("the pool's experiments are not the staged ones")
        try:
            for part in ("oof", "test"):
                self.handles[part].flush()
                os.pwrite(self.handles[part].fileno(),
                          _header((len(self.names), *self.shapes[part])), 0)
                self.handles.pop(part).close()
            # the installed files stay this stage's until the index is written: on a failure
            # :meth:`read` still finds the arrays there and :meth:`discard` removes them
            _install(self.paths, self.temps, keys=keys, experiments=experiments, skipped=skipped)
        except BaseException:
            if not _index_matches_arrays(self.paths):
                _unlink(self.paths["index"])
            raise

    def discard(self) -> None:
        for handle in self.handles.values():
            try:
                handle.close()
            except OSError:
                pass
        self.handles = {}
        for temp in self.temps.values():
            _unlink(temp)
        self.temps = {}


@dataclass(frozen=True)
class PreviousPool:
    """The pool a collect found (current or not): each experiment's block, for the next pool.
    oof: (n_models, n_rows, n_classes), test: (n_models, n_folds, n_test, n_classes), mapped."""

    keys: dict
    slots: dict
    oof: np.ndarray
    test: np.ndarray

    def arrays(self, name: str, key: str):
        """(oof, test) views of ``name``'s block when it was pooled under ``key``, else None."""
        slot = self.slots.get(name)
        if slot is None or self.keys.get(name) != key:
            return None
        return self.oof[slot], self.test[slot]


def previous_pool(cache_dir: Path) -> PreviousPool | None:
    """The intact pool of the cache whatever its keys, or None."""
    paths = pool_paths(cache_dir)
    try:
        index = json.loads(paths["index"].read_text(encoding="utf-8"))
        if index.get("version") != POOL_VERSION:
            return None
        mapped = {}
        for part in ("oof", "test"):
            st = os.stat(paths[part])
            if [st.st_size, st.st_mtime_ns] != index["arrays"][part]:
                return None
            mapped[part] = np.load(paths[part], mmap_mode="r", allow_pickle=False)
        names = list(index["names"])
        if len(mapped["oof"]) != len(names) or len(mapped["test"]) != len(names):
            return None
        return PreviousPool(keys=dict(index["keys"]), slots={n: i for i, n in enumerate(names)},
                            oof=mapped["oof"], test=mapped["test"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_pool(cache_dir: Path, *, keys: Mapping[str, str], n_rows: int, n_folds: int,
              n_classes: int) -> MappedPool | None:
    """The mapped pool when it was written for exactly ``keys`` (every experiment unchanged, none
    added or removed) and its files are intact; None otherwise."""
    paths = pool_paths(cache_dir)
    try:
        index = json.loads(paths["index"].read_text(encoding="utf-8"))
        if index.get("version") != POOL_VERSION or index.get("keys") != dict(keys):
            return None
        mapped = {}
        for part in ("oof", "test"):
            st = os.stat(paths[part])
            if [st.st_size, st.st_mtime_ns] != index["arrays"][part]:
                return None
            mapped[part] = np.asarray(np.load(paths[part], mmap_mode="r", allow_pickle=False))
        names = tuple(index["names"])
        test_ids = np.array(index["test_ids"], dtype=str)
        if (mapped["oof"].shape != (len(names), n_rows, n_classes)
                or mapped["test"].shape != (len(names), n_folds, len(test_ids), n_classes)):
            return None
        return MappedPool(names=names, oof=np.moveaxis(mapped["oof"], 0, 1), test_ids=test_ids,
                          test=np.moveaxis(mapped["test"], 0, 2), meta=dict(index["meta"]),
                          windows=tuple(index["windows"]), skipped=tuple(index["skipped"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _index_matches_arrays(paths) -> bool:
    try:
        index = json.loads(paths["index"].read_text(encoding="utf-8"))
        return all([os.stat(paths[p]).st_size, os.stat(paths[p]).st_mtime_ns] == index["arrays"][p]
                   for p in ("oof", "test"))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
