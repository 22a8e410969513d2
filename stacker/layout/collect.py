"""Validate and align every experiment of a layout into arrays: :func:`collect` -> :class:`Collection`.

Each experiment is checked against folds.csv (every fold present, val ids exactly the fold's rows,
class columns matched by name, test ids identical across folds and experiments, meta.json's fold hash
equal to folds.csv's). A bad experiment is skipped with a one-line reason, or raises with ``strict``.

Cache: under ``<root>/.stack/cache/``, keyed by the size, mtime, inode and ctime of each
experiment's files and of folds.csv: one small index per experiment (its meta, test ids, or the
error that skipped it) and the pool of every experiment's aligned arrays
(:mod:`stacker.layout.pool`), memory-mapped. A cold collect writes the arrays once, straight into
the pool; a second run with nothing changed stats the files, maps the pool and copies nothing; a
changed experiment is re-read alone and the pool rewritten from the previous pool's blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import stacker.layout.pool as pool
import stacker.layout.windows as windows
import stacker.layout.workspace as workspace
from stacker.errors import LayoutError
from stacker.layout.atomic import atomic_write_text, json_default
from stacker.layout.folds import Folds, read_folds
from stacker.layout.folds_cache import load_folds, save_folds
from stacker.layout.meta import read_meta
from stacker.layout.paths import (
    CLASSES_FILE,
    DEFAULT_ROOT,
    FOLDS_FILE,
    META_FILE,
    PARQUET_PROBS_FILE,
    PROBS_FILES,
    SPLITS,
    experiment_dir,
    find_probs,
    list_experiments,
    list_fold_numbers,
    probs_path,
)
from stacker.layout.tables import Probs, read_probs
from stacker.runtime import ProgressCallback

CACHE_VERSION = 4


@dataclass(frozen=True)
class Collection:
    """Every valid experiment of a layout, aligned to folds.csv rows and one test-id order.

    oof: array of shape (n_rows, n_models, n_classes), float32, rows in folds.csv order.
    test: array of shape (n_folds, n_test, n_models, n_classes), float32; ``test[i]`` comes from the
        models of fold ``fold_numbers[i]``.
    """

    root: Path
    folds: Folds
    names: tuple[str, ...]
    oof: np.ndarray
    test_ids: np.ndarray
    test: np.ndarray
    meta: dict = field(default_factory=dict)
    windows: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.folds.classes

    @property
    def ids(self) -> np.ndarray:
        return self.folds.ids

    @property
    def y(self) -> np.ndarray:
        """Labels, shape (n_rows, n_classes), uint8."""
        return self.folds.y

    @property
    def fold(self) -> np.ndarray:
        return self.folds.fold

    @property
    def fold_numbers(self) -> list[int]:
        return self.folds.fold_numbers

    @property
    def n_models(self) -> int:
        return len(self.names)

    def level(self, name: str) -> int:
        return int(self.meta.get(name, {}).get("level", 1))

    def index(self, names: Sequence[str]) -> list[int]:
        """Positions of ``names`` along the models axis; LayoutError names an unknown one."""
        position = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in position]
        if missing:
            raise LayoutError(f"no experiment named '{missing[0]}' under {self.root}; "
                              f"known: {', '.join(self.names)}")
        return [position[n] for n in names]

    def select(self, names: Sequence[str]) -> "Collection":
        """A collection of only ``names``, in that order (new arrays; ``self`` itself when
        ``names`` are all of its experiments in its order, so the pool is never copied whole)."""
        idx = self.index(names)
        if tuple(names) == self.names:
            return self
        return replace(self, names=tuple(names), oof=self.oof[:, idx], test=self.test[:, :, idx],
                       meta={n: self.meta.get(n, {}) for n in names},
                       windows=tuple(n for n in self.windows if n in names))

    def with_experiment(self, name: str, oof: np.ndarray, test: np.ndarray,
                        meta: dict) -> "Collection":
        """This collection with experiment ``name`` added last (one of that name is replaced), as
        a command that has just made it holds it: oof (n_rows, n_classes) in folds.csv order,
        test (n_folds, n_test, n_classes) in ``test_ids`` order, both the values its files store
        (:func:`stacker.layout.tables.as_stored`), and its meta.json record. New arrays."""
        keep = [n for n in self.names if n != name]
        base = self.select(keep) if len(keep) < len(self.names) else self
        oof = np.asarray(oof, dtype=np.float32)
        test = np.asarray(test, dtype=np.float32)
        if oof.shape != base.oof[:, 0].shape or test.shape != base.test[:, :, 0].shape:
            raise ValueError(f"experiment '{name}': arrays of shape {oof.shape} and {test.shape}, "
                             f"expected {base.oof[:, 0].shape} and {base.test[:, :, 0].shape}")
        return replace(base, names=(*base.names, name),
                       oof=np.concatenate([base.oof, oof[:, None]], axis=1),
                       test=np.concatenate([base.test, test[:, :, None]], axis=2),
                       meta={**base.meta, name: json.loads(json.dumps(meta, sort_keys=True,
                                                                default=json_default))})

    def with_layout_experiment(self, name: str) -> "Collection":
        """This collection with experiment ``name`` read from the layout (validated as
        :func:`collect` does, its test rows put in ``test_ids`` order); LayoutError when it is
        not valid or predicts other test rows."""
        found = load_experiment(self.root, name, self.folds)
        reference = _Experiment(name=self.names[0], oof=None, test_ids=self.test_ids, test=None,
                                meta={}, has_windows=False)
        found = _check_same_test_ids(self.root, self.fold_numbers[0], reference, found)
        if isinstance(found, LayoutError):
            raise found
        oof, test = found.arrays()
        return self.with_experiment(name, oof, test, found.meta)


@dataclass(frozen=True)
class _Experiment:
    """One validated experiment. Its arrays are held (``oof``, ``test``) or, for one read from the
    cache, read on demand from ``source`` by :meth:`arrays` (so that assembling the pool never
    holds every experiment at once). ``test_order``: indices that put the test rows in the order
    of ``test_ids`` (set when another experiment fixed the order)."""

    name: str
    oof: np.ndarray | None   # (n_rows, n_classes)
    test_ids: np.ndarray     # (n_test,)
    test: np.ndarray | None  # (n_folds, n_test, n_classes)
    meta: dict
    has_windows: bool
    # without arrays: where they are (a block of the previous pool, or of the pool being staged)
    stored: Callable | None = field(default=None, compare=False)
    test_order: np.ndarray | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(oof (n_rows, n_classes), test (n_folds, n_test, n_classes)) in test_ids order."""
        if self.oof is not None:
            oof, test = self.oof, self.test
        else:
            oof, test = self.stored()
        if self.test_order is not None:
            test = test[:, self.test_order]
        return oof, test


def collect(root: Path | str = DEFAULT_ROOT, *, strict: bool = False,
            use_cache: bool = True, n_jobs: int = 2,
            on_progress: ProgressCallback | None = None) -> Collection:
    """Read, validate and align every experiment under ``root``.

    strict: raise the first experiment's LayoutError instead of skipping it.
    n_jobs: worker processes for experiments not in the cache (parsing CSV is the cold cost).
    on_progress: called as ``on_progress(done, total)`` after each experiment.
    """
    root = Path(root)
    folds_key = _signature([root / FOLDS_FILE, root / CLASSES_FILE])
    cache_dir = workspace.cache_dir(root)
    folds = load_folds(cache_dir, root, folds_key) if use_cache else None
    if folds is None:
        folds = read_folds(root)
        if use_cache:
            save_folds(cache_dir, folds_key, folds)
    names = list_experiments(root)
    if not names:
        raise LayoutError(f"no experiments under {root}: expected <root>/<name>/fold_<k>/val/probs.csv "
                          "(see predictions/README.md)")
    keys = {name: _experiment_key(root, name, folds_key) for name in names}
    if use_cache:
        pooled = _pooled_collection(cache_dir, root, folds, keys)
        if pooled is not None:
            if on_progress:
                on_progress(len(names), len(names))
            if strict and pooled.skipped:
                raise LayoutError(pooled.skipped[0])
            return pooled
    results: dict[str, _Experiment | LayoutError] = {}
    previous = pool.previous_pool(cache_dir) if use_cache else None
    cold = []
    for name in names:
        cached = _load_cached(cache_dir, name, keys[name], previous) if use_cache else None
        if cached is not None:
            results[name] = cached
        else:
            cold.append((name, keys[name]))
    if cold:
        _ = folds.hash  # computed once here; the workers receive it with ``folds``
    done = len(results)
    if on_progress:
        on_progress(done, len(names))
    stage = _open_stage(cache_dir, folds) if use_cache else None
    loaded = _load_cold(root, folds, cold, n_jobs, cache_dir if use_cache else None)
    try:
        # every experiment in the pool's order: the cached ones from the previous pool, the others
        # as the workers finish them, each appended to the staged pool as it comes
        for name in names:
            if name not in results:
                _, results[name] = next(loaded)
                done += 1
                if on_progress:
                    on_progress(done, len(names))
            if stage is not None:
                stage = _stage(stage, name, results)
        return _assemble(root, folds, names, results, strict,
                         pool_keys=keys if use_cache else None, cache_dir=cache_dir, stage=stage)
    finally:
        loaded.close()
        if stage is not None:
            stage.discard()


def _open_stage(cache_dir: Path, folds: Folds) -> pool.PoolStage | None:
    try:
        return pool.PoolStage(cache_dir, n_rows=len(folds.ids), n_folds=folds.n_folds,
                              n_classes=len(folds.classes))
    except OSError:
        return None          # a read-only or full disk only costs the next run its speed


def _stage(stage: pool.PoolStage, name: str, results: dict) -> pool.PoolStage | None:
    """Append experiment ``name`` to the staged pool (its outcome in ``results`` then reads its
    arrays from there); None when the cache cannot be written (every staged experiment is then
    read back into memory)."""
    outcome = results[name]
    if not isinstance(outcome, _Experiment) or not stage.accepts(outcome):
        return stage
    try:
        slot = stage.add(outcome, *outcome.arrays())
    except OSError:
        for other in stage.names:
            results[other] = replace(results[other], stored=None, **dict(zip(
                ("oof", "test"), stage.read(stage.names.index(other)))))
        stage.discard()
        return None
    results[name] = replace(outcome, oof=None, test=None, stored=lambda: stage.read(slot))
    return stage


def _assemble(root, folds, names, results, strict, *, pool_keys=None, cache_dir=None,
              stage=None) -> Collection:
    """Check the test ids across experiments, then build the pool: memory-mapped from the cache
    when ``pool_keys`` is given (the staged files themselves when every staged experiment is
    kept; falling back to memory if the cache cannot be written), else two arrays in memory."""
    kept: list[_Experiment] = []
    skipped: list[str] = []
    reference = _reference_experiment([results[n] for n in names])
    for name in names:
        outcome = results[name]
        if isinstance(outcome, _Experiment):
            outcome = _check_same_test_ids(root, folds.fold_numbers[0], reference, outcome)
        if isinstance(outcome, LayoutError):
            if strict:
                raise outcome
            skipped.append(str(outcome))
            continue
        kept.append(outcome)
    if not kept:
        raise LayoutError(f"no valid experiment under {root}; every one was skipped:\n  "
                          + "\n  ".join(skipped))
    if pool_keys is not None and any(getattr(o, "transient", False) for o in results.values()):
        pool_keys = None      # an unreadable experiment is read again next time: no pool
    results.clear()          # only ``kept`` refers to the arrays now
    if pool_keys is not None:
        try:
            if (stage is not None and [e.name for e in kept] == stage.names
                    and all(e.test_order is None for e in kept)):
                stage.commit(keys=pool_keys, experiments=kept, skipped=skipped)   # written once
            else:
                pool.write_pool(cache_dir, keys=pool_keys, experiments=kept, skipped=skipped,
                                n_rows=len(folds.ids), n_folds=folds.n_folds,
                                n_classes=len(folds.classes))
            mapped = _pooled_collection(cache_dir, root, folds, pool_keys)
            if mapped is not None:
                return mapped
        except OSError:
            pass             # a read-only or full disk only costs the next run its speed
    n_test = len(kept[0].test_ids)
    oof = np.empty((len(folds.ids), len(kept), len(folds.classes)), dtype=np.float32)
    test = np.empty((folds.n_folds, n_test, len(kept), len(folds.classes)), dtype=np.float32)
    for m, exp in enumerate(kept):
        oof[:, m], test[:, :, m] = exp.arrays()
    return Collection(root=root, folds=folds, names=tuple(e.name for e in kept), oof=oof,
                      test_ids=kept[0].test_ids, test=test, meta={e.name: e.meta for e in kept},
                      windows=tuple(e.name for e in kept if e.has_windows), skipped=tuple(skipped))


def _pooled_collection(cache_dir, root, folds, keys) -> Collection | None:
    """The collection from the memory-mapped pool of the cache, or None when it is not current."""
    found = pool.load_pool(cache_dir, keys=keys, n_rows=len(folds.ids), n_folds=folds.n_folds,
                           n_classes=len(folds.classes))
    if found is None:
        return None
    return Collection(root=root, folds=folds, names=found.names, oof=found.oof,
                      test_ids=found.test_ids, test=found.test, meta=found.meta,
                      windows=found.windows, skipped=found.skipped)


def _reference_experiment(outcomes) -> _Experiment | None:
    """The first valid experiment whose test-id set most experiments share, so that one
    experiment with odd test rows is skipped alone rather than every other one."""
    valid = [o for o in outcomes if isinstance(o, _Experiment)]
    if not valid or all(np.array_equal(valid[0].test_ids, o.test_ids) for o in valid[1:]):
        return valid[0] if valid else None
    keys = [frozenset(o.test_ids.tolist()) for o in valid]
    counts = Counter(keys)
    return valid[max(range(len(valid)), key=lambda i: (counts[keys[i]], -i))]


def _check_same_test_ids(root, fold: int, first: _Experiment, other: _Experiment):
    """Reorder ``other``'s test rows to ``first``'s order, or a LayoutError if the ids differ."""
    if np.array_equal(first.test_ids, other.test_ids):
        return other
    position = {row_id: i for i, row_id in enumerate(other.test_ids)}
    missing = [i for i in first.test_ids if i not in position]
    extra = sorted(set(other.test_ids) - set(first.test_ids))
    if missing or extra:
        example = (f"'{missing[0]}' missing" if missing else f"'{extra[0]}' not in '{first.name}'")
        return LayoutError(
            f"test ids differ from experiment '{first.name}' ({example}); every experiment must "
            "predict the same test rows", experiment=other.name,
            path=probs_path(root, other.name, fold, "test"))
    order = np.array([position[i] for i in first.test_ids])
    return replace(other, test_ids=first.test_ids, test_order=order)


# ---------------------------------------------------------------- one experiment


def load_experiment(root: Path | str, name: str, folds: Folds):
    """Validate and align one experiment. Returns an ``_Experiment``; raises LayoutError."""
    root = Path(root)
    meta = read_meta(root, name)
    _check_fold_hash(root, name, meta, folds)
    present = list_fold_numbers(root, name)
    expected = folds.fold_numbers
    missing = [k for k in expected if k not in present]
    if missing:
        raise LayoutError(f"fold_{missing[0]} is missing; folds.csv has folds "
                          f"{expected[0]}-{expected[-1]} and every one needs fold_<k>/val and "
                          "fold_<k>/test", experiment=name,
                          path=experiment_dir(root, name) / f"fold_{missing[0]}")
    extra = [k for k in present if k not in expected]
    if extra:
        raise LayoutError(f"fold_{extra[0]} is not a fold of folds.csv (folds {expected}); these "
                          "predictions were made on other folds: remove the folder or rebuild the "
                          "experiment on folds.csv", experiment=name,
                          path=experiment_dir(root, name) / f"fold_{extra[0]}")
    paths = {(k, split): find_probs(root, name, k, split)
             for k in expected for split in SPLITS}
    formats = sorted({path.suffix for path in paths.values() if path.exists()})
    if len(formats) > 1:
        raise LayoutError("mixes probs.csv and probs.parquet across its folds; an experiment keeps "
                          "one format: rewrite it in one", experiment=name,
                          path=experiment_dir(root, name))
    if formats == [".parquet"]:   # a missing file is named in the format of the others
        paths = {where: path.with_name(PARQUET_PROBS_FILE) for where, path in paths.items()}
    row_of = {row_id: i for i, row_id in enumerate(folds.ids)}
    oof = np.empty((len(folds.ids), len(folds.classes)), dtype=np.float32)
    test_ids = None
    tests = []
    has_windows = False
    for k in expected:
        path = paths[(k, "val")]
        val = read_probs(path, experiment=name)
        order = _class_order(val, folds, name)
        fold_rows = folds.rows_of_fold(k)
        rows = np.array([row_of.get(i, -1) for i in val.ids])
        wrong = val.ids[(rows < 0) | (folds.fold[np.maximum(rows, 0)] != k)]
        if len(wrong) or len(rows) != len(fold_rows):
            absent = sorted(set(folds.ids[fold_rows]) - set(val.ids))
            parts = []
            if absent:
                parts.append(f"{len(absent)} fold-{k} row(s) missing, e.g. '{absent[0]}'")
            if len(wrong):
                parts.append(f"{len(wrong)} id(s) not in fold {k} of folds.csv, e.g. '{wrong[0]}'")
            raise LayoutError(f"ids are not exactly the fold-{k} rows of folds.csv ("
                              + "; ".join(parts) + "); out-of-fold predictions must come from "
                              "the same folds.csv", experiment=name, path=path)
        oof[rows] = val.values[:, order]
        tpath = paths[(k, "test")]
        test = read_probs(tpath, experiment=name)
        torder = _class_order(test, folds, name)
        if test_ids is None:
            test_ids = test.ids
            tests.append(test.values[:, torder])
        else:
            if len(test.ids) != len(test_ids) or set(test.ids) != set(test_ids):
                odd = sorted(set(test.ids) ^ set(test_ids))
                raise LayoutError(f"test ids differ from fold_{expected[0]}'s (e.g. '{odd[0]}'); "
                                  "every fold model must predict the same test rows",
                                  experiment=name, path=tpath)
            position = {row_id: i for i, row_id in enumerate(test.ids)}
            reorder = np.array([position[i] for i in test_ids])
            tests.append(test.values[reorder][:, torder])
        has_windows = has_windows or windows.has_windows(root, name, k, "val")
    return _Experiment(name=name, oof=oof, test_ids=test_ids, test=np.stack(tests), meta=meta,
                       has_windows=has_windows)


def _class_order(probs: Probs, folds: Folds, name: str) -> np.ndarray:
    """Indices that reorder the file's class columns into folds order; checks the id header."""
    if probs.id_column != folds.id_column:
        raise LayoutError(f"first column is '{probs.id_column}' but folds.csv calls the id "
                          f"'{folds.id_column}'; rename the header", experiment=name,
                          path=probs.path)
    position = {c: j for j, c in enumerate(probs.columns)}
    missing = [c for c in folds.classes if c not in position]
    if missing:
        raise LayoutError(f"class column '{missing[0]}' is missing"
                          + (f" ({len(missing)} in all)" if len(missing) > 1 else "")
                          + "; every class of folds.csv needs a column", experiment=name,
                          path=probs.path)
    unknown = [c for c in probs.columns if c not in set(folds.classes)]
    if unknown:
        raise LayoutError(f"column '{unknown[0]}' is not a class of folds.csv; rename it or add "
                          f"the class to {CLASSES_FILE}", experiment=name, path=probs.path)
    return np.array([position[c] for c in folds.classes])


def _check_fold_hash(root, name, meta, folds):
    recorded = meta.get("fold_hash")
    if recorded and recorded != folds.hash:
        raise LayoutError(f"made on other folds (fold_hash {recorded}, folds.csv has {folds.hash}); "
                          "retrain it on the current folds.csv", experiment=name,
                          path=experiment_dir(root, name) / META_FILE)


# ---------------------------------------------------------------- cold loading and cache


def _load_one(args):
    """Load one experiment in a worker; with a cache folder, save its index there (its arrays go
    to the pool, which the parent writes as the experiments come back)."""
    root, folds, name, key, cache_dir = args
    try:
        outcome = load_experiment(root, name, folds)
    except LayoutError as error:
        outcome = error
    except OSError as error:   # a folder where a file should be, permissions, a symlink loop
        unreadable = LayoutError(
            f"cannot be read ({error.strerror or error}); fix or remove that file",
            experiment=name, path=error.filename or experiment_dir(root, name))
        unreadable.transient = True   # fixing permissions changes no mtime: never cache it
        return name, unreadable
    if cache_dir is not None:
        try:
            _save_cached(cache_dir, name, key, outcome)
        except OSError:
            pass                     # a read-only or full disk only costs the next run its speed
    return name, outcome


def _load_cold(root, folds, cold, n_jobs, cache_dir):
    """(name, outcome) of each of ``cold`` in order; the workers run at most two experiments
    ahead of the parent, so that few experiments' arrays wait in memory."""
    jobs = [(root, folds, name, key, cache_dir) for name, key in cold]
    if n_jobs > 1 and len(jobs) > 2:
        with ProcessPoolExecutor(max_workers=n_jobs) as workers:
            ahead = 2 * n_jobs
            futures = [workers.submit(_load_one, job) for job in jobs[:ahead]]
            for i in range(len(jobs)):
                if i + ahead < len(jobs):
                    futures.append(workers.submit(_load_one, jobs[i + ahead]))
                yield futures[i].result()
                futures[i] = None
    else:
        yield from map(_load_one, jobs)


def _signature(paths) -> list:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            # ctime and inode too: an edit that keeps the size and puts the mtime back (os.utime,
            # touch -d, a copy with -p) still changes the ctime, so the cache is not trusted then
            out.append([str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns])
        except OSError:       # missing, or unreadable (a symlink loop): the load reports it
            out.append([str(path), None, None, None, None])
    return out


def _experiment_key(root: Path, name: str, folds_key) -> str:
    """A hash of the size, mtime, inode and ctime of every file collect reads for ``name`` and of the folders
    holding them (a folder's mtime changes when an entry is added, removed or renamed)."""
    # plain strings joined as pathlib writes them (str(folder / entry)): the same key, at a
    # tenth of the cost (pathlib's joins were half a warm collect of 100 experiments)
    folder = str(experiment_dir(root, name))
    join = os.path.join
    paths = [folder, join(folder, META_FILE)]
    for entry in sorted(e.name for e in os.scandir(folder)
                        if e.name.startswith("fold_") and e.is_dir()):
        paths.append(join(folder, entry))
        for split in SPLITS:
            at = join(folder, entry, split)
            paths += [at] + [join(at, file) for file in PROBS_FILES.values()]
    text = json.dumps([CACHE_VERSION, folds_key, _signature(paths)])
    return hashlib.sha1(text.encode()).hexdigest()


def _load_cached(cache_dir: Path, name: str, key: str, previous):
    """The cached outcome of ``name`` when its key matches: an _Experiment whose arrays are its
    block of the previous pool (read when needed), or the LayoutError it raised; None on any
    miss."""
    try:
        index = json.loads((cache_dir / f"{name}.json").read_text(encoding="utf-8"))
        if index.get("key") != key:
            return None
        if index.get("error") is not None:
            return LayoutError(index["error"])
        block = previous.arrays(name, key) if previous is not None else None
        if block is None:
            return None              # its arrays are in no intact pool: read it again
        return _Experiment(name=name, oof=None, test=None, stored=lambda: block,
                           test_ids=np.array(index["test_ids"], dtype=str), meta=index["meta"],
                           has_windows=bool(index["has_windows"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_cached(cache_dir: Path, name: str, key: str, outcome) -> None:
    """``<name>.json``: the key and the experiment's meta and test ids, or the error that skipped
    it (the arrays are in the pool)."""
    index = {"key": key, "error": None}
    if isinstance(outcome, LayoutError):
        index["error"] = str(outcome)
    else:
        index.update(meta=outcome.meta, test_ids=outcome.test_ids.tolist(),
                     has_windows=bool(outcome.has_windows))
    atomic_write_text(cache_dir / f"{name}.json", json.dumps(index, default=str))
