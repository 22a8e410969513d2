"""Optuna tuning: resume from sqlite, shared study across processes, held-out fold, pruning."""

import json
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import replace

import numpy as np
import optuna
import pandas as pd
import pytest

from stacker import layout
from stacker.errors import OptionError
from stacker.layout.collect import collect
from stacker.level2 import fit as train
from stacker.level2 import inputs as level2_inputs
from stacker.level2 import params as level2_params
from stacker.level2 import tune
from stacker.metrics import get_metric
from stacker.simulate import write_simulated_layout

TINY = level2_params.MLPParams(max_epochs=2)


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_layout(root, n_rows=60, n_folds=3, seed=0):
    rng = np.random.default_rng(seed)
    classes = [f"class_{j}" for j in range(4)]
    labels = [tuple(sorted({classes[i % 4]} | ({classes[int(rng.integers(4))]}
                                                if rng.random() < 0.3 else set())))
              for i in range(n_rows)]
    fold = rng.permutation(np.arange(n_rows) % n_folds)
    write_simulated_layout(root, [f"id_{i}" for i in range(n_rows)], labels, fold, n_experiments=3,
                           n_test=10, classes=classes, seed=seed)
    return root


def test_study_resumes_from_the_default_sqlite_storage(tmp_path):
    root = make_layout(tmp_path / "l")
    col = collect(root)
    first = tune.tune(col, col.names, n_trials=2, base_params=TINY, seed=3)
    assert (root / ".stack" / "tune.db").exists()
    assert first.n_complete == 2 and first.n_this_run == 2
    # a new call (as after an interruption) opens the same study and adds to it
    second = tune.tune(collect(root), col.names, n_trials=2, base_params=TINY, seed=3)
    assert second.study_name == first.study_name
    assert second.n_complete == 4 and second.n_this_run == 2
    study = optuna.load_study(study_name=first.study_name, storage=tune.default_storage(root))
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4          # the resumed run did not replay the first run's trials
    assert list(second.trials.columns[:4]) == ["trial", "state", "cv", "folds_done"]
    assert second.trials["cv"].iloc[0] == max(t.value for t in study.trials)


def test_parallel_threads_in_one_process(tmp_path):
    col = collect(make_layout(tmp_path / "l"))
    result = tune.tune(col, col.names, n_trials=2, n_jobs=2, base_params=replace(TINY, max_epochs=1),
                       storage=f"sqlite:///{tmp_path / 'j.db'}")
    assert result.n_complete == 2 and result.n_this_run == 2


def test_two_worker_processes_share_one_study(tmp_path):
    root = make_layout(tmp_path / "l")
    command = [sys.executable, "-c", "from stacker.cli.app import main; main()", "tune",
               "--root", str(root), "--trials", "2", "--max-epochs", "1", "--study", "shared",
               "--device", "cpu"]
    workers = [subprocess.Popen(command + ["--seed", str(seed)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=tune.default_storage(root))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    saved = json.loads((root / ".stack" / "best_params.json").read_text())
    assert saved["study"] == "shared" and saved["cv"] == pytest.approx(study.best_value)


def test_workers_creating_one_sqlite_study_at_once_take_turns(tmp_path):
    """The race behind the two-process test, made likely: four workers open one new database at
    the same moment with no retry, so only the lock keeps them from colliding."""
    pytest.importorskip("fcntl")
    storage = f"sqlite:///{tmp_path / 'race.db'}"
    start, errors = threading.Barrier(4), []

    def worker(seed):
        start.wait()
        try:
            study = tune.open_study(storage, "race", direction="maximize", seed=seed,
                                    attrs={"inputs": ["a"]}, retries=1)
            study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
        except Exception as error:   # collected: an exception in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    study = optuna.load_study(study_name="race", storage=storage)
    assert len(study.trials) == 8 and study.user_attrs["setup"] == {"inputs": ["a"]}


def test_parallel_saves_keep_the_latest_view_of_the_study(tmp_path, monkeypatch):
    """Workers finishing together: each saves its view of the study; the file must end with the
    view that saw the most trials, whatever the order. The writes are slowed so that, without
    the lock, every worker reads the file before any writes and the oldest view is written last
    (the race the lock closes)."""
    pytest.importorskip("fcntl")
    write = tune.layout.atomic_write_json

    def slow_write(path, document):
        time.sleep(0.05 * (7 - document["n_complete"]))
        return write(path, document)

    monkeypatch.setattr(tune.layout, "atomic_write_json", slow_write)
    views = [tune.TuneResult(study_name="s", storage="sqlite:///x.db", metric="lwlrap", inputs=("a",),
                             best_params=TINY, best_value=n / 10, trials=pd.DataFrame(), n_complete=n,
                             n_pruned=0, n_this_run=1, holdout_fold=None, holdout_score=None,
                             holdout_default_score=None) for n in (6, 3, 5, 1, 4, 2)]
    start = threading.Barrier(len(views))

    def worker(view):
        start.wait()
        tune.save_best_params(tmp_path, view, fold_hash="h")

    threads = [threading.Thread(target=worker, args=(view,)) for view in views]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    saved = json.loads(level2_params.best_params_path(tmp_path).read_text())
    assert (saved["n_complete"], saved["cv"]) == (6, 0.6)


def test_holdout_fold_takes_no_part_in_tuning(tmp_path, monkeypatch):
    root = make_layout(tmp_path / "l", n_folds=4)
    col = collect(root)
    folds_seen = []
    original = tune.fit_fold

    def spy(data, k, **kwargs):
        folds_seen.append(set(np.unique(data.fold).tolist()))
        return original(data, k, **kwargs)

    monkeypatch.setattr(tune, "fit_fold", spy)
    result = tune.tune(col, col.names, n_trials=2, base_params=TINY, holdout_fold=2,
                       storage=f"sqlite:///{tmp_path / 'h.db'}")
    assert folds_seen and all(2 not in seen for seen in folds_seen)
    # 2 trials x 3 inner folds, then 3 inner models for the tuned and 3 for the default params
    assert len(folds_seen) == 2 * 3 + 3 + 3
    assert 0 <= result.holdout_score <= 1 and 0 <= result.holdout_default_score <= 1
    path = tune.save_best_params(root, result, fold_hash=col.folds.hash)
    params, document = level2_params.read_params("best", root)
    assert params == result.best_params and document["holdout_fold"] == 2
    assert "optimistic" in document["note"] and path.name == "best_params.json"


def test_holdout_fold_labels_do_not_change_the_tuning(tmp_path):
    """Permute the labels of the held-out fold only: every trial (params and CV) and the best
    params are the same as before; the held-out score, made on those labels, moves."""
    root = make_layout(tmp_path / "l", n_rows=80, n_folds=4)
    results = []
    for run in range(2):
        if run:
            folds = layout.read_folds(root)
            labels, rows = list(folds.labels), folds.rows_of_fold(2)
            for row, source in zip(rows, np.random.default_rng(0).permutation(rows)):
                labels[row] = folds.labels[source]
            layout.write_folds(root, folds.ids, labels, folds.fold, id_column=folds.id_column)
        col = collect(root, use_cache=False)
        results.append(tune.tune(col, col.names, n_trials=3, base_params=TINY, holdout_fold=2,
                                 seed=5, storage=f"sqlite:///{tmp_path / f'run{run}.db'}"))
    before, after = results
    assert before.best_params == after.best_params
    pd.testing.assert_frame_equal(before.trials, after.trials)
    assert before.holdout_score != after.holdout_score


def test_holdout_score_is_the_geometric_mean_of_inner_models(tmp_path):
    col = collect(make_layout(tmp_path / "l", n_folds=3))
    data = level2_inputs.level2_data(col, col.names)
    metric = get_metric("lwlrap")
    score = tune.holdout_score(data, 0, TINY, metric=metric, seed=0, device="cpu")
    inner = data.rows(data.fold != 0)
    held = data.x[data.fold == 0]
    preds = [train.fit_fold(inner, j, params=TINY, seed=0, with_test=False)
             .predict(held, single_label=False) for j in (1, 2)]
    naive = np.sqrt(np.clip(preds[0], 1e-7, 1).astype(np.float64) * np.clip(preds[1], 1e-7, 1))
    assert score == pytest.approx(metric(data.y[data.fold == 0], naive))


def test_objective_matches_stack_train_cv(tmp_path):
    col = collect(make_layout(tmp_path / "l"))
    params = replace(TINY, hidden=24, batch_size=16)
    cv = tune.cv_objective(level2_inputs.level2_data(col, col.names), params,
                           metric=get_metric("lwlrap"), seed=4, device="cpu")
    assert cv == train.train_level2(col, col.names, params=params, seeds=[4]).scores()[0]


class StubTrial:
    """Records reports; asks to prune after ``prune_after`` reports."""

    def __init__(self, prune_after):
        self.reports, self.prune_after, self.attrs = [], prune_after, {}

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= self.prune_after

    def set_user_attr(self, key, value):
        self.attrs[key] = value


def test_objective_reports_each_fold_and_prunes(tmp_path):
    col = collect(make_layout(tmp_path / "l"))
    data = level2_inputs.level2_data(col, col.names)
    metric = get_metric("lwlrap")
    full = StubTrial(prune_after=99)
    tune.cv_objective(data, TINY, metric=metric, seed=0, device="cpu", trial=full)
    assert [step for step, _ in full.reports] == [0, 1, 2]
    assert full.reports[-1][1] == pytest.approx(np.mean(full.attrs["fold_scores"]))
    early = StubTrial(prune_after=1)
    with pytest.raises(optuna.TrialPruned):
        tune.cv_objective(data, TINY, metric=metric, seed=0, device="cpu", trial=early)
    assert len(early.reports) == 1


def test_suggested_params_are_valid_and_keep_the_base_settings():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        params = tune.suggest_params(trial, replace(TINY, window_keep=0.5))
        assert params == level2_params.MLPParams.from_dict(params.to_dict())
        assert params.max_epochs == 2 and params.window_keep == 0.5
        study.tell(trial, 0.0)


def test_a_study_name_reused_for_other_inputs_is_refused(tmp_path):
    root = make_layout(tmp_path / "l")
    col = collect(root)
    tune.tune(col, col.names, n_trials=1, base_params=TINY, study_name="s")
    with pytest.raises(OptionError, match="was run with another inputs"):
        tune.tune(col, col.names[:2], n_trials=1, base_params=TINY, study_name="s")


def test_bad_options(tmp_path):
    col = collect(make_layout(tmp_path / "l"))
    with pytest.raises(OptionError, match="`holdout_fold` 7 is not a fold"):
        tune.tune(col, col.names, n_trials=1, holdout_fold=7)
    with pytest.raises(OptionError, match="`n_jobs`"):
        tune.tune(col, col.names, n_trials=1, n_jobs=0)
    with pytest.raises(OptionError, match="cannot be opened"):
        tune.tune(col, col.names, n_trials=1, storage="nosuchdb://x")


def test_redact_hides_passwords():
    assert "secret" not in tune.redact("postgresql://user:secret@host/db")
    assert tune.redact("sqlite:///a/b.db") == "sqlite:///a/b.db"
    assert "secret" not in tune.redact("sqlite:///a/b.db?password=secret")
    assert "secret" not in tune.redact("host=h password=secret dbname=d")


def test_a_refused_storage_raises_no_password(tmp_path):
    """The library's own exception (not only the CLI's line) is redacted: libpq keyword form."""
    col = collect(make_layout(tmp_path / "l", n_folds=3))
    with pytest.raises(OptionError) as refused:
        tune.tune(col, col.names, n_trials=1, storage="host=h password=s3cretPW dbname=d")
    assert "s3cretPW" not in str(refused.value) and "***" in str(refused.value)


def test_a_tune_config_and_prebuilt_inputs_give_the_keyword_calls_result(tmp_path, monkeypatch):
    col = collect(make_layout(tmp_path / "l", n_folds=3))
    options = dict(n_trials=2, base_params=TINY, seed=2, holdout_fold=0, enqueue_base=True)
    by_keyword = tune.tune(col, col.names, storage=f"sqlite:///{tmp_path / 'a.db'}", **options)
    config = tune.TuneConfig(storage=f"sqlite:///{tmp_path / 'b.db'}", **options)
    data = level2_inputs.level2_data(col, col.names)
    reads, original = [], level2_inputs.level2_data
    monkeypatch.setattr(level2_inputs, "level2_data", lambda *a, **k: reads.append(a) or original(*a, **k))
    by_config = tune.tune(col, col.names, config, data=data)
    more = tune.tune(col, col.names, config, data=data, n_trials=1)   # options over config
    assert not reads                                   # the given inputs were used, not re-read
    pd.testing.assert_frame_equal(by_keyword.trials, by_config.trials)
    assert by_keyword.holdout_score == by_config.holdout_score
    assert more.n_this_run == 1 and more.n_complete == 3
    with pytest.raises(OptionError, match="the given level-2 inputs hold"):
        tune.tune(col, col.names[:2], config, data=data)


def test_an_enqueued_base_outside_the_space_runs_without_warnings(tmp_path):
    # hidden=16 and batch_size=16 lie outside SPACE (32..512; 32..256): the enqueued first trial
    # must still be the base itself, and optuna must not warn that it is out of range
    col = collect(make_layout(tmp_path / "l"))
    base = replace(TINY, max_epochs=1, hidden=16, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = tune.tune(col, col.names, n_trials=2, base_params=base, enqueue_base=True,
                           storage=f"sqlite:///{tmp_path / 'w.db'}")
    assert result.n_complete + result.n_pruned == 2
    study = optuna.load_study(study_name=result.study_name, storage=f"sqlite:///{tmp_path / 'w.db'}")
    first = study.trials[0].params
    assert first["hidden"] == 16 and first["batch_size"] == 16
