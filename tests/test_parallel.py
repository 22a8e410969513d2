"""map_units here and on a dask LocalCluster (two worker processes on loopback): the same results,
files and progress as the local run, for the first level (one task per fold) and level 2 (one per
seed x fold); a worker that dies mid-fold is replaced and nothing finished is redone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stacker import layout, parallel
from stacker.cli.app import app
from stacker.errors import ClusterError, OptionError


def square_after(unit, *, delay):
    """Later units finish first on a cluster, so results must be put back in order."""
    time.sleep(delay * (3 - unit))
    return unit * unit


def fail_on_two(unit, *, log):
    if unit == 2:
        with open(log, "a") as handle:
            handle.write("tried\n")
        raise OptionError("unit 2 is bad")
    return unit


def fail_once_on_two(unit, *, log):
    """A transient failure (not a StackError): fails the first time only."""
    if unit == 2 and not Path(log).exists():
        Path(log).touch()
        raise OSError("a network filesystem hiccup")
    return unit


def test_local_map_keeps_order_and_reports_progress():
    seen = []
    out = parallel.map_units(square_after, [0, 1, 2, 3], shared={"delay": 0.0},
                             on_progress=lambda done, total: seen.append((done, total)))
    assert out == [0, 1, 4, 9]
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_local_run_never_imports_dask():
    code = ("import sys; from stacker.parallel import map_units; import first_level.runner; "
            "assert map_units(abs, [-1, 2]) == [1, 2]; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- on a LocalCluster


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes x 1 thread on loopback; yields its address."""
    distributed = pytest.importorskip("distributed")
    import cloudpickle

    # the test module's functions and models travel to the workers by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  # the scheduler's HTTP server (health routes) on a free port:
                                  # 8787, its default, may be taken by another cluster here
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  silence_logs=40) as local:
        yield local.scheduler_address
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_cluster_map_keeps_order_and_reports_progress(cluster):
    seen = []
    out = parallel.map_units(square_after, [0, 1, 2, 3], shared={"delay": 0.2}, scheduler=cluster,
                             on_progress=lambda done, total: seen.append((done, total)))
    assert out == [0, 1, 4, 9]
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_cluster_map_raises_the_units_own_error_without_retrying_it(cluster, tmp_path):
    log = tmp_path / "tries.log"
    with pytest.raises(OptionError, match="unit 2 is bad"):
        parallel.map_units(fail_on_two, [0, 1, 2, 3], shared={"log": log}, scheduler=cluster)
    assert log.read_text() == "tried\n"   # a user error fails the same way again: not retried


def test_cluster_map_retries_other_failures(cluster, tmp_path):
    out = parallel.map_units(fail_once_on_two, [0, 1, 2, 3], shared={"log": tmp_path / "failed"},
                             scheduler=cluster)
    assert out == [0, 1, 2, 3] and (tmp_path / "failed").exists()


def die(unit):
    os._exit(1)


@pytest.mark.slow   # four worker deaths and restarts: ~10-20 s
def test_a_task_that_keeps_killing_workers_is_one_clear_error(cluster):
    with pytest.raises(ClusterError, match="unit 7 killed every worker that ran it"):
        parallel.map_units(die, [7], scheduler=cluster)


def test_unreachable_scheduler_is_one_clear_error(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(ClusterError, match="cannot reach the dask scheduler at tcp://127.0.0.1:9"):
        parallel.map_units(abs, [1], scheduler="tcp://127.0.0.1:9")


def test_a_refused_connection_fails_at_once_without_a_traceback_at_exit():
    """Nothing listening on the port: one line within the probe's few seconds (not the 30 s connect
    timeout), and no traceback from the half-made client when the interpreter exits."""
    pytest.importorskip("distributed")
    code = ("import time\n"
            "from stacker.parallel import map_units\n"
            "began = time.monotonic()\n"
            "try:\n"
            "    map_units(abs, [1], scheduler='tcp://127.0.0.1:9')\n"
            "except Exception as error:\n"
            "    print(type(error).__name__, round(time.monotonic() - began))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    name, seconds = done.stdout.split()
    assert name == "ClusterError" and int(seconds) < parallel.CONNECT_TIMEOUT_S
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_blank_scheduler_address_runs_here(blank, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)    # importing dask would fail
    assert parallel.map_units(abs, [-1, 2], scheduler=blank) == [1, 2]


def write_features(folder: Path, n_rows=60, n_test=15, n_classes=3, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    classes = [f"c{j}" for j in range(n_classes)]
    y = (rng.random((n_rows + n_test, n_classes)) < 0.3).astype(np.uint8)
    y[np.arange(len(y)), np.arange(len(y)) % n_classes] = 1
    X = y @ rng.normal(scale=2.0, size=(n_classes, 4)) + rng.normal(size=(len(y), 4))
    ids = [f"clip_{i:03d}" for i in range(n_rows)]
    folder.mkdir(parents=True, exist_ok=True)
    labels = [tuple(c for c, v in zip(classes, row) if v) for row in y[:n_rows]]
    layout.write_folds(folder / "root", ids, labels, [i % 3 for i in range(n_rows)],
                       id_column="fname", classes=classes)
    for name, rows, row_ids in (("train", slice(0, n_rows), ids),
                                ("test", slice(n_rows, None), [f"t{i}" for i in range(n_test)])):
        frame = pd.DataFrame(X[rows], columns=[f"f{j}" for j in range(4)])
        frame.insert(0, "fname", row_ids)
        frame.to_csv(folder / f"{name}.csv", index=False)
    return {"train": folder / "train.csv", "test": folder / "test.csv", "root": folder / "root"}


def experiment_files(root: Path, name: str) -> dict[str, object]:
    """Every file of an experiment but meta.json (it holds the time of the run): its bytes, or
    for level-2 weights (whose pickle framing may differ) the weights' bytes and the settings."""
    folder = layout.experiment_dir(root, name)
    return {str(p.relative_to(folder)): weights(p) if p.suffix == ".pt" else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != layout.META_FILE}


def weights(path: Path) -> dict:
    import torch

    saved = torch.load(path, weights_only=True)
    states = saved.pop("state_dicts")
    return {**saved, "state_dicts": [{key: value.numpy().tobytes() for key, value in state.items()}
                                     for state in states]}


def test_first_level_sklearn_on_a_cluster_writes_the_same_files(tmp_path, cluster):
    outputs = {}
    for where, scheduler in (("here", []), ("cluster", ["--scheduler", cluster])):
        data = write_features(tmp_path / where)
        result = CliRunner().invoke(app, [str(a) for a in [
            "first-level", "sklearn", "--train", data["train"], "--test", data["test"],
            "--estimator", "logreg", "--name", "lr", "--root", data["root"], "--threads", 1,
            *scheduler]])
        assert result.exit_code == 0, result.output
        outputs[where] = experiment_files(data["root"], "lr")
    assert outputs["cluster"] == outputs["here"]
    assert sum(name.endswith("probs.csv") for name in outputs["here"]) == 6   # 3 folds x val/test


def test_level2_on_a_cluster_equals_the_local_run(small_layout, cluster):
    from stacker.layout.collect import collect
    from stacker.level2.fit import train_level2
    from stacker.level2.params import MLPParams

    collection = collect(small_layout(), use_cache=False)
    options = dict(params=MLPParams(max_epochs=3), seeds=(1, 2))
    here = train_level2(collection, collection.names, **options)
    seen = []
    there = train_level2(collection, collection.names, scheduler=cluster,
                         on_progress=lambda done, total: seen.append((done, total)), **options)
    np.testing.assert_array_equal(there.oof, here.oof)
    np.testing.assert_array_equal(there.test, here.test)
    assert set(there.fits) == set(here.fits) == {(s, k) for s in (1, 2) for k in (0, 1, 2)}
    assert [there.fits[key].best_epoch for key in sorted(there.fits)] == \
        [here.fits[key].best_epoch for key in sorted(here.fits)]
    assert seen == [(done, 6) for done in range(7)]


def test_train_command_takes_the_scheduler_from_the_environment(small_layout, cluster,
                                                                monkeypatch):
    root = small_layout()
    args = ["train", "--root", str(root), "--max-epochs", "2", "--seeds", "1,2", "--device", "cpu"]
    here = CliRunner().invoke(app, args + ["--name", "here"])
    assert here.exit_code == 0, here.output
    monkeypatch.setenv("STACK_SCHEDULER", cluster)
    there = CliRunner().invoke(app, args + ["--name", "there"])
    assert there.exit_code == 0, there.output
    assert experiment_files(root, "there") == experiment_files(root, "here")


class DyingModel:
    """A fold model that writes a line per fit into ``log`` and, the first time fold 1 predicts its
    validation rows (its test predictions are already written), kills the worker process."""

    def __init__(self, fold, log: Path, marker: Path):
        self.fold, self.log, self.marker = fold, log, marker
        self.calls = 0

    def fit(self, X_train, y_train, X_val, y_val):
        with open(self.log, "a") as handle:
            handle.write(f"{self.fold}\n")
        self.prior = y_train.mean(0).clip(0.05, 0.95)
        return self

    def predict_proba(self, X):
        self.calls += 1   # the runner predicts the test rows first, then the validation rows
        if self.fold == 1 and self.calls == 2 and not self.marker.exists():
            self.marker.touch()
            os._exit(1)   # the worker dies mid-fold, as when its machine goes down
        return np.tile(self.prior, (len(X), 1)) * (1 + 0.1 * np.asarray(X)[:, :1].clip(-1, 1))


def test_a_worker_that_dies_mid_fold_is_replaced_and_finished_folds_are_kept(tmp_path, cluster):
    from first_level.runner import run_kfold

    data = write_features(tmp_path / "d", n_rows=60)
    root = data["root"]
    folds = layout.read_folds(root)
    X = pd.read_csv(data["train"]).set_index("fname").loc[list(folds.ids)].to_numpy()
    X_test = pd.read_csv(data["test"]).iloc[:, 1:].to_numpy()
    test_ids = pd.read_csv(data["test"])["fname"].tolist()
    log, marker = tmp_path / "fits.log", tmp_path / "died"

    def make_model(k):
        return DyingModel(k, log, marker)

    options = dict(model="dying", params={}, seed=0)
    result = run_kfold(root, "m", make_model, X, folds.ids, X_test, test_ids, scheduler=cluster,
                       **options)
    assert marker.exists()                             # a worker did die
    assert sorted(result.trained_folds) == [0, 1, 2]
    fits = sorted(int(line) for line in log.read_text().split())
    assert fits == [0, 1, 1, 2]                        # only the dead worker's fold ran again
    leftovers = [p for p in (root / "m").rglob("*") if p.name.startswith(".")]
    assert leftovers == []                             # no temporary file left behind
    # the same as a local run that was never interrupted
    local = write_features(tmp_path / "l", n_rows=60)["root"]
    run_kfold(local, "m", make_model, X, folds.ids, X_test, test_ids, **options)
    assert experiment_files(root, "m") == experiment_files(local, "m")


def write_audio_project(folder: Path) -> Path:
    """train/ (12 clips of 3 tones), test/ (3 clips), meta.csv and 3 folds under root/."""
    import soundfile

    rng = np.random.default_rng(0)
    rows = []
    for split, count in (("train", 4), ("test", 1)):
        (folder / split).mkdir(parents=True)
        for label, freq in (("low", 300.0), ("mid", 1100.0), ("high", 2600.0)):
            for i in range(count):
                t = np.arange(int(8000 * rng.uniform(0.4, 0.6))) / 8000
                wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=len(t))
                soundfile.write(str(folder / split / f"{split}_{label}_{i}.wav"),
                                wave.astype(np.float32), 8000, subtype="PCM_16")
                if split == "train":
                    rows.append((f"train_{label}_{i}.wav", label))
    pd.DataFrame(rows, columns=["fname", "label"]).to_csv(folder / "meta.csv", index=False)
    made = CliRunner().invoke(app, ["make-folds", str(folder / "meta.csv"), "--label-column",
                                    "label", "--n-folds", "3", "--root", str(folder / "root")])
    assert made.exit_code == 0, made.output
    return folder


@pytest.mark.slow   # torch and the CNN in both worker processes: ~20-60 s on 2 busy cores
def test_first_level_audio_on_a_cluster_writes_the_same_predictions(tmp_path, cluster):
    outputs = {}
    for where, scheduler in (("here", []), ("cluster", ["--scheduler", cluster])):
        p = write_audio_project(tmp_path / where)
        result = CliRunner().invoke(app, [str(a) for a in [
            "first-level", "audio", "--meta", p / "meta.csv", "--audio-dir", p / "train",
            "--test-dir", p / "test", "--name", "cnn", "--root", p / "root", "--epochs", 1,
            "--device", "cpu", "--no-cache", *scheduler]])
        assert result.exit_code == 0, result.output
        outputs[where] = experiment_files(p / "root", "cnn")
    assert outputs["cluster"].keys() == outputs["here"].keys()
    assert outputs["cluster"] == outputs["here"]
