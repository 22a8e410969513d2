"""An Optuna study over the level-2 MLP's hyper-parameters (TPE, seeded; median pruning per fold).

Objective: the CV metric of the level-2 OOF over the tuning folds (each fold model trained as in
``stack train``, early-stopped on an inner hold-out of its training rows, so each trial's OOF is
out of fold). After each fold the running mean fold score is reported, and the MedianPruner stops
trials that trail the median of earlier trials at the same fold.

Storage: ``sqlite:///<root>/.stack/tune.db`` by default, so an interrupted study resumes where it
stopped (finished trials are kept; run the same command again). Any Optuna storage URL works; many
workers on many machines share one study by pointing at one database, e.g.
``stack tune --storage postgresql://user@host/db --study fat2019 --trials 50 --seed 1`` on one machine
and ``... --seed 2`` on another (distinct seeds keep their first random trials apart). Trials add up.

Honesty: the best value is the CV that chose the params, so it is optimistic. ``holdout_fold=K``
tunes on the other folds only (fold K's rows and labels never reach a trial); afterwards the best
(and the default) params are scored on fold K, which took no part in tuning or early stopping: the
fold-K prediction is the geometric mean of the inner fold models (the same way test predictions
are made). ``TuneResult.holdout_fold`` records which fold was held out.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import optuna
import pandas as pd
import sqlalchemy.exc

from stacker import layout, redaction
from stacker.errors import OptionError, OutputExistsError
from stacker.layout import provenance, workspace
from stacker.layout.collect import Collection
from stacker.level2.fit import fit_fold, geometric_mean
from stacker.level2.inner import INNER_HOLDOUT
from stacker.level2.inputs import Level2Data, shared_or_built
from stacker.level2.params import MLPParams, best_params_path
from stacker.level2.space import TUNED_PARAMS, suggest
from stacker.level2.storage import storage_url
from stacker.metrics import Metric, check_defined, get_metric
from stacker.progress import duration

HONESTY_NOTE = ("the tuned CV chose these params on the same folds, so it is optimistic; "
                "a held-out fold (`holdout_fold` K) gives an untouched estimate")


def suggest_params(trial: optuna.Trial, base: MLPParams) -> MLPParams:
    """``base`` with the tuned parameters of :data:`~stacker.level2.space.SPACE` drawn for
    ``trial``; everything else (max_epochs, window settings) comes from ``base``."""
    return replace(base, **suggest(trial, around=base))  # space widened to base's values: enqueue_base's trial in range


def default_storage(root: Path | str) -> str:
    path = workspace.tune_db_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def redact(url: str) -> str:
    """A storage URL without its passwords (safe to print and to save): the user part, the query
    string (``?password=``) and libpq's keyword form (``host=h password=PW``), by the one
    redaction of :mod:`stacker.redaction`."""
    try:
        text = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        text = url
    return redaction.redact(text)


def default_study_name(attrs: dict) -> str:
    digest = hashlib.sha1(json.dumps(attrs, sort_keys=True).encode()).hexdigest()[:8]
    return f"mlp-{attrs['metric']}-{digest}"


@contextmanager
def process_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) against every other
    process and thread that takes it; released when the block ends or its process dies.
    No-op when ``path`` is None, the file cannot be opened, or the platform has no ``fcntl``."""
    try:
        import fcntl
    except ImportError:   # Windows: the retries and checks of the callers still apply
        fcntl = None
    try:
        handle = open(path, "a") if path is not None and fcntl is not None else None
    except OSError:       # e.g. a read-only folder: the storage reports its own error
        handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_lock_path(storage: str) -> Path | None:
    """``<database>.lock`` beside a sqlite storage's file; None for other storages."""
    try:
        url = sqlalchemy.engine.make_url(storage)
    except sqlalchemy.exc.ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database + ".lock")


SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_file(database: Path, storage: str) -> None:
    """Refuse a sqlite storage whose file is something else (``sqlite:///p/folds.csv``) before
    anything is written beside it (its ``.lock``). A new or empty file is fine."""
    what = None
    if database.is_dir():
        what = "a folder"
    else:
        try:
            with open(database, "rb") as handle:
                head = handle.read(len(SQLITE_HEADER))
        except OSError:       # absent (a new study) or unreadable (the storage says so itself)
            head = b""
        if head and head != SQLITE_HEADER:
            what = "not an SQLite database"
    if what is not None:
        raise OptionError(f"`storage` '{redact(storage)}': {database} is {what}; pass a "
                          "sqlite:/// path to a new file (e.g. <root>/.stack/tune.db)")


def _check_storage_place(storage: str, root) -> None:
    """A sqlite storage never goes into the layout's own files (an experiment folder, folds.csv,
    classes.txt; provenance.check_replaceable) nor onto a file that is not an SQLite database,
    before anything is written beside it; tune's workspace ``<root>/.stack/`` is its own (not
    even read here: nothing a run wrote is read back)."""
    lock = sqlite_lock_path(storage)
    if lock is None or root is None:
        return
    database = Path(str(lock)[:-len(".lock")])
    try:
        database.resolve().relative_to((Path(root) / layout.STACK_DIR).resolve())
        return
    except (ValueError, OSError):
        pass
    try:
        provenance.check_replaceable(database, root, what="`storage`")
    except OutputExistsError as error:
        raise OutputExistsError(redaction.redact(str(error))) from None
    _check_sqlite_file(database, storage)


def open_study(storage: str, study_name: str, *, direction: str, seed: int, attrs: dict,
               retries: int = 5) -> optuna.Study:
    """Create or load the study; the sampler's seed also mixes in the number of trials already
    there, so a resumed run does not repeat the first run's random trials.

    Several workers may open one study at once. On a local sqlite file they take turns (a file
    lock): optuna creates the tables, schema stamp and study row in separate commits, so two
    workers creating one database collide, and under load they collide again after any fixed
    number of retries. Other storages (and sqlite where no lock can be taken) retry those
    collisions up to ``retries`` times."""
    lock = sqlite_lock_path(storage)
    if lock is not None and not lock.parent.is_dir():
        raise OptionError(f"`storage` '{redact(storage)}': folder {lock.parent} does not exist; "
                          "create it or pass a sqlite:/// path in an existing folder")
    try:
        with process_lock(lock):
            return _open_study(storage, study_name, direction=direction, seed=seed, attrs=attrs,
                               retries=retries)
    except OptionError as error:    # a driver's reason may quote the connection string
        raise OptionError(redaction.redact(str(error))) from None


def _open_study(storage: str, study_name: str, *, direction: str, seed: int, attrs: dict,
                retries: int) -> optuna.Study:
    kwargs = {}
    if storage.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(retries):
        try:
            rdb = optuna.storages.RDBStorage(storage, **kwargs)
            pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
            probe = optuna.create_study(storage=rdb, study_name=study_name, direction=direction,
                                        load_if_exists=True, pruner=pruner)
            existing = len(probe.trials)
            sampler_seed = int(np.random.SeedSequence([int(seed), existing]).generate_state(1)[0])
            study = optuna.load_study(study_name=study_name, storage=rdb, pruner=pruner,
                                      sampler=optuna.samplers.TPESampler(seed=sampler_seed))
            break
        except (sqlalchemy.exc.DBAPIError, optuna.exceptions.DuplicatedStudyError) as error:
            # two workers creating one database: tables, alembic stamp or study row collide
            if attempt == retries - 1:
                if (isinstance(error, sqlalchemy.exc.OperationalError)
                        and not storage.startswith("sqlite")):   # a server that cannot be reached
                    reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
                    raise OptionError(f"`storage` '{redact(storage)}' cannot be reached "
                                      f"({reason}); check the host, port, user, password and "
                                      "database") from None
                raise OptionError(f"`storage` '{redact(storage)}' cannot be opened "
                                  f"({str(error.orig if hasattr(error, 'orig') else error).splitlines()[0]}); "
                                  "check the URL, the database and its permissions") from None
            time.sleep(0.5 * (attempt + 1))
        except (sqlalchemy.exc.ArgumentError, ImportError, ModuleNotFoundError) as error:
            raise OptionError(f"`storage` '{redact(storage)}' cannot be opened "
                              f"({type(error).__name__}: {error}); pass an Optuna storage URL "
                              "such as sqlite:///path/tune.db") from None
    if study.direction.name.lower() != direction:
        raise OptionError(f"study '{study_name}' maximises/minimises the other way; pass another `study`")
    recorded = study.user_attrs.get("setup")
    if recorded is None:
        study.set_user_attr("setup", attrs)
    elif recorded != json.loads(json.dumps(attrs)):
        changed = sorted(k for k in set(recorded) | set(attrs) if recorded.get(k) != attrs.get(k))
        raise OptionError(f"study '{study_name}' in {redact(storage)} was run with another "
                          f"{', '.join(changed)}; pass a new `study` name (or the original options)")
    return study


@dataclass(frozen=True)
class TuneResult:
    """The state of the study after this run. trials: one row per finished trial, best first."""

    study_name: str
    storage: str
    metric: str
    inputs: tuple[str, ...]
    best_params: MLPParams | None
    best_value: float | None
    trials: pd.DataFrame
    n_complete: int
    n_pruned: int
    n_this_run: int
    holdout_fold: int | None
    holdout_score: float | None
    holdout_default_score: float | None
    seconds: dict = field(default_factory=dict)     # trial number -> wall seconds (not reproducible)


def cv_objective(data: Level2Data, params: MLPParams, *, metric: Metric, seed: int, device: str,
                 trial: optuna.Trial | None = None) -> float:
    """The CV metric of the level-2 OOF over ``data``'s folds; reports and prunes per fold."""
    oof = np.zeros(data.y.shape, dtype=np.float32)
    scores, epochs = [], []
    for step, k in enumerate(data.fold_numbers):
        fit = fit_fold(data, k, params=params, seed=seed, metric=metric, device=device,
                       with_test=False)
        oof[data.fold == k] = fit.val_probs
        scores.append(fit.score)
        epochs.append(fit.best_epoch)
        if trial is not None:
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    if trial is not None:
        trial.set_user_attr("fold_scores", [float(s) for s in scores])
        trial.set_user_attr("best_epochs", epochs)
    return metric(data.y, oof)


def holdout_score(data: Level2Data, k: int, params: MLPParams, *, metric: Metric, seed: int,
                  device: str) -> float:
    """Fold ``k``'s score of ``params`` when fold ``k`` takes no part: the models of the other
    folds' inner CV each predict fold ``k``; their geometric mean is scored."""
    inner = data.rows(data.fold != k)
    held = data.rows(data.fold == k)
    preds = [fit_fold(inner, j, params=params, seed=seed, metric=metric, device=device,
                      with_test=False).predict(held.x, single_label=data.single_label, device=device)
             for j in inner.fold_numbers]
    return metric(held.y, geometric_mean(np.stack(preds), single_label=data.single_label))


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """One :func:`tune` run. n_trials: trials to run now (they add to the study's earlier ones);
    timeout: stop starting trials after this many seconds (None: no limit). storage: an Optuna
    storage URL (None: ``sqlite:///<root>/.stack/tune.db``); study_name: None derives one from the
    inputs, metric and folds; n_jobs: trials in parallel threads; seed: the sampler's and the
    models'. holdout_fold: tune on the other folds only. metric: the CV metric; base_params: every
    parameter the space does not tune; device: torch's. enqueue_base: a new study's first trial is
    ``base_params`` itself, so the best trial is never worse than the defaults on the tuning folds.
    score_holdout: with ``holdout_fold``, also score the best and the default params on the
    held-out fold (2 x (K-1) more fits)."""

    n_trials: int
    timeout: float | None = None
    storage: str | None = None
    study_name: str | None = None
    n_jobs: int = 1
    seed: int = 0
    holdout_fold: int | None = None
    metric: str | Metric = "lwlrap"
    base_params: MLPParams = MLPParams()
    device: str = "cpu"
    enqueue_base: bool = False
    score_holdout: bool = True


def tune(collection: Collection, names: Sequence[str], config: TuneConfig | None = None, *,
         data: Level2Data | None = None, on_progress: Callable[..., None] | None = None,
         **options) -> TuneResult:
    """Run ``config.n_trials`` more trials (or until its timeout) of the study, then summarise it.

    config: the run (:class:`TuneConfig`); ``options`` are its fields by keyword
    (``tune(col, names, n_trials=20, holdout_fold=0)``), applied over ``config`` if given.
    data: the inputs already in memory (``level2_data(collection, names)``), so that one run that
    tunes and trains reads them once; None reads them here.
    on_progress: ``on_progress(done, n_trials, note=...)`` before the first and after each finished
    trial of this run; the note counts this run's complete and pruned trials and, with a timeout,
    the budget left (:func:`trial_note`). A :data:`~stacker.runtime.Stage`'s update takes it.
    """
    config = TuneConfig(**options) if config is None else replace(config, **options)
    metric = get_metric(config.metric)
    if config.n_trials < 0:
        raise OptionError(f"`trials` must be >= 0, got {config.n_trials}")
    if config.n_jobs < 1:
        raise OptionError(f"`n_jobs` must be >= 1, got {config.n_jobs}")
    if config.seed < 0:
        raise OptionError(f"`seed` must be 0 or more (numpy seeds cannot be negative), got "
                          f"{config.seed}")
    if config.timeout is not None and not 0 < config.timeout < float("inf"):
        raise OptionError(f"`timeout` must be a positive, finite number of seconds, got "
                          f"{config.timeout:g}")
    if not names:
        raise OptionError("no input experiments; pass `subset` NAME,... or add level-1 experiments")
    check_defined(metric, collection.y, collection.fold, collection.fold_numbers)
    full = shared_or_built(collection, names, data)
    holdout_fold = config.holdout_fold
    if holdout_fold is not None and holdout_fold not in full.fold_numbers:
        raise OptionError(f"`holdout_fold` {holdout_fold} is not a fold of folds.csv "
                          f"(folds {full.fold_numbers})")
    tuning = full.rows(full.fold != holdout_fold) if holdout_fold is not None else full
    if len(tuning.fold_numbers) < 2:
        raise OptionError("tuning needs at least 2 folds besides the held-out one")
    attrs = {"inputs": list(names), "metric": metric.name, "fold_hash": collection.folds.hash,
             "holdout_fold": holdout_fold, "base_params": config.base_params.to_dict(),
             "early_stopping": INNER_HOLDOUT}
    redaction.remember_secrets(config.storage)   # masked wherever a driver quotes them later
    storage = storage_url(config.storage) if config.storage else default_storage(collection.root)
    _check_storage_place(storage, collection.root)
    study_name = config.study_name or default_study_name(attrs)
    direction = "maximize" if metric.greater_is_better else "minimize"
    study = open_study(storage, study_name, direction=direction, seed=config.seed, attrs=attrs)
    n_this_run = _optimise(study, tuning, config, metric, on_progress)
    return _summarise(study, config, storage=storage, metric=metric, names=names, full=full,
                      n_this_run=n_this_run)


def trial_note(complete: int, pruned: int, seconds_left: float | None = None) -> str:
    """The tuning's progress note: '12 complete, 31 pruned, 2 min 20 s budget left' (the budget
    only when there is a timeout; :func:`~stacker.progress.duration`'s units)."""
    note = f"{complete} complete, {pruned} pruned"
    return note if seconds_left is None else f"{note}, {duration(seconds_left)} budget left"


def _optimise(study: optuna.Study, data: Level2Data, config: TuneConfig, metric: Metric,
              on_progress: Callable[..., None] | None) -> int:
    """Run the config's trials on ``data`` (the tuning folds); how many finished. Progress:
    ``on_progress(done, n_trials, note=trial_note(...))`` before the first and after each trial."""
    base_params, n_trials, timeout = config.base_params, config.n_trials, config.timeout
    if config.enqueue_base and not study.trials:
        study.enqueue_trial({k: getattr(base_params, k) for k in TUNED_PARAMS})
    counts = {"done": 0, "complete": 0, "pruned": 0}
    lock, began = threading.Lock(), time.monotonic()

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, base_params)
        return cv_objective(data, params, metric=metric, seed=config.seed, device=config.device,
                            trial=trial)

    def report() -> None:
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - began))
        note = trial_note(counts["complete"], counts["pruned"], left)
        on_progress(counts["done"], n_trials, note=note)

    def progress(_study, trial: optuna.trial.FrozenTrial) -> None:
        with lock:   # n_jobs threads call back
            counts["done"] += 1
            state = trial.state.name.lower()
            if state in counts:
                counts[state] += 1
            if on_progress:
                report()

    if on_progress:
        report()
    if n_trials:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, n_jobs=config.n_jobs,
                       callbacks=[progress], gc_after_trial=False)
    return counts["done"]


def _summarise(study: optuna.Study, config: TuneConfig, *, storage: str, metric: Metric,
               names: Sequence[str], full: Level2Data, n_this_run: int) -> TuneResult:
    """The study's state as a :class:`TuneResult`; with ``config.score_holdout``, the best and the
    base params scored on the held-out fold of ``full`` (every fold's rows)."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    rows = []
    for t in trials:
        if t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "cv": t.value if t.value is not None else float("nan"),
                     "folds_done": len(t.intermediate_values), **t.params})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(["state", "cv"], ascending=[True, not metric.greater_is_better],
                                  kind="stable").reset_index(drop=True)
    base_params, holdout_fold = config.base_params, config.holdout_fold
    best_params = best_value = held = held_default = None
    if complete:
        best = study.best_trial
        best_params = replace(base_params, **best.params)
        best_value = float(best.value)
        if holdout_fold is not None and config.score_holdout:
            options = dict(metric=metric, seed=config.seed, device=config.device)
            held = holdout_score(full, holdout_fold, best_params, **options)
            held_default = holdout_score(full, holdout_fold, base_params, **options)
    return TuneResult(study_name=study.study_name, storage=redact(storage), metric=metric.name,
                      inputs=tuple(names), best_params=best_params, best_value=best_value,
                      trials=frame, n_complete=len(complete), n_pruned=int(pruned),
                      n_this_run=n_this_run, holdout_fold=holdout_fold, holdout_score=held,
                      holdout_default_score=held_default,
                      seconds={t.number: t.duration.total_seconds() for t in trials if t.duration})


def save_best_params(root: Path | str, result: TuneResult, *, fold_hash: str) -> Path:
    """Write ``<root>/.stack/best_params.json`` for ``stack train --params best``. Parallel
    workers of one study take turns (a file lock), so a worker with an older view of the study
    never overwrites a later one between reading and writing the file."""
    if result.best_params is None:
        raise OptionError("the study has no finished trial yet; run more `trials`")
    path = best_params_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with process_lock(path.with_name(path.name + ".lock")):
        return _save_best_params(path, result, fold_hash=fold_hash)


def _save_best_params(path: Path, result: TuneResult, *, fold_hash: str) -> Path:
    try:
        existing = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except json.JSONDecodeError:
        existing = {}
    if (existing.get("study") == result.study_name and existing.get("storage") == result.storage
            and existing.get("holdout_fold") == result.holdout_fold
            and int(existing.get("n_complete") or 0) > result.n_complete):
        return path   # a parallel worker already saved a later view of the same study
    document = {"params": result.best_params.to_dict(), "cv": result.best_value,
                "metric": result.metric, "inputs": list(result.inputs), "study": result.study_name,
                "storage": result.storage, "n_complete": result.n_complete,
                "n_pruned": result.n_pruned, "holdout_fold": result.holdout_fold,
                "holdout_score": result.holdout_score,
                "holdout_default_score": result.holdout_default_score, "fold_hash": fold_hash,
                "note": HONESTY_NOTE, "created": datetime.now(timezone.utc).isoformat()}
    return layout.atomic_write_json(path, document)
