"""The K-fold runner: fold isolation, resume, refusals, windows, and that `stack collect` accepts it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from first_level.runner import ModelOutputError, RunResult, run_kfold, take_rows
from stacker import layout
from stacker.errors import LayoutError, OutputExistsError
from stacker.layout.collect import collect
from stacker.metrics import lwlrap

CLASSES = ["a", "b", "c"]


def write_small_folds(root, n_rows=30, n_folds=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"r{i:03d}" for i in range(n_rows)]
    labels = [tuple(sorted({CLASSES[i % 3]} | ({CLASSES[int(rng.integers(3))]}
                                               if rng.random() < 0.3 else set())))
              for i in range(n_rows)]
    fold = [i % n_folds for i in range(n_rows)]
    layout.write_folds(root, ids, labels, fold, id_column="fname", classes=CLASSES)
    return layout.read_folds(root)


class SpyModel:
    """Records the ids it is fitted on (X holds the row ids) and predicts from a lookup table."""

    log: list = []

    def __init__(self, fold, truth):
        self.fold = fold
        self.truth = truth

    def fit(self, X_train, y_train, X_val, y_val):
        SpyModel.log.append((self.fold, list(X_train), list(X_val)))
        # y must line up with X: check the labels the runner passed against folds.csv's
        for row_id, row in zip(X_train, y_train):
            assert np.array_equal(self.truth[row_id], row)
        return self

    def predict_proba(self, X):
        return np.array([self.truth.get(i, np.zeros(3)) * 0.8 + 0.1 for i in X], dtype=float)


def spy_factory(folds):
    truth = dict(zip(folds.ids, folds.y.astype(float)))
    SpyModel.log = []
    return lambda k: SpyModel(k, truth)


def run(root, folds, factory, **options):
    # X in a shuffled order (and as a Python list) to prove the runner aligns by id
    order = np.random.default_rng(1).permutation(len(folds.ids))
    ids = [folds.ids[i] for i in order]
    test_ids = [f"t{i}" for i in range(7)]
    options = {"model": "spy", "params": {"p": 1}, "seed": 0, **options}
    return run_kfold(root, "spy", factory, list(ids), ids, list(test_ids), test_ids, **options)


def test_no_model_sees_its_own_validation_rows(tmp_path):
    folds = write_small_folds(tmp_path)
    result = run(tmp_path, folds, spy_factory(folds))
    assert isinstance(result, RunResult)
    assert sorted(result.trained_folds) == [0, 1, 2] and result.skipped_folds == []
    fold_of = dict(zip(folds.ids, folds.fold))
    assert len(SpyModel.log) == 3
    for k, train_ids, val_ids in SpyModel.log:
        assert train_ids and all(fold_of[i] != k for i in train_ids)
        assert sorted(train_ids) == sorted(i for i in folds.ids if fold_of[i] != k)
        assert sorted(val_ids) == sorted(i for i in folds.ids if fold_of[i] == k)


def test_writes_layout_and_meta_that_collect_accepts(tmp_path):
    folds = write_small_folds(tmp_path)
    result = run(tmp_path, folds, spy_factory(folds))
    meta = json.loads((tmp_path / "spy" / "meta.json").read_text())
    assert meta["model"] == "spy" and meta["params"] == {"p": 1} and meta["level"] == 1
    assert meta["fold_hash"] == folds.hash and meta["classes"] == CLASSES
    assert set(meta["fold_cv"]) == {"0", "1", "2"} and "created" in meta
    collection = collect(tmp_path, strict=True, use_cache=False)
    assert collection.names == ("spy",)
    oof = collection.oof[:, 0]
    # the overall CV recorded equals lwlrap of the OOF predictions collect assembled
    assert meta["cv"]["lwlrap"] == pytest.approx(lwlrap(collection.y, oof), abs=1e-6)
    assert result.cv["lwlrap"] == pytest.approx(meta["cv"]["lwlrap"])
    assert result.cv["lwlrap"] == pytest.approx(1.0)   # the spy predicts the truth


def test_resume_skips_written_folds_and_force_retrains(tmp_path):
    folds = write_small_folds(tmp_path)
    first = run(tmp_path, folds, spy_factory(folds))
    layout.probs_path(tmp_path, "spy", 1, "val").unlink()   # an interrupted fold
    second = run(tmp_path, folds, spy_factory(folds))
    assert second.trained_folds == [1] and second.skipped_folds == [0, 2]
    assert [k for k, _, _ in SpyModel.log] == [1]
    assert second.cv == pytest.approx(first.cv)
    third = run(tmp_path, folds, spy_factory(folds), force=True)
    assert third.trained_folds == [0, 1, 2] and third.skipped_folds == []


def test_a_retrained_fold_removes_the_temporary_files_of_an_interrupted_write(tmp_path):
    folds = write_small_folds(tmp_path)
    run(tmp_path, folds, spy_factory(folds))
    val = layout.probs_path(tmp_path, "spy", 1, "val")
    val.unlink()                                              # killed while writing val/probs.csv:
    half = val.parent / f".{val.name}.k3j2x.tmp"              # what atomic_write_bytes leaves
    half.write_text("fname,a\nr001,0.")
    result = run(tmp_path, folds, spy_factory(folds))
    assert result.trained_folds == [1] and val.exists() and not half.exists()


def test_other_params_are_refused_unless_force(tmp_path):
    folds = write_small_folds(tmp_path)
    run(tmp_path, folds, spy_factory(folds))
    with pytest.raises(OutputExistsError, match="params"):
        run(tmp_path, folds, spy_factory(folds), params={"p": 2})
    assert run(tmp_path, folds, spy_factory(folds), params={"p": 2}, force=True).trained_folds


def test_other_folds_are_refused_unless_force(tmp_path):
    folds = write_small_folds(tmp_path)
    run(tmp_path, folds, spy_factory(folds))
    folds = write_small_folds(tmp_path, n_folds=2)
    with pytest.raises(OutputExistsError, match="other folds"):
        run(tmp_path, folds, spy_factory(folds))
    result = run(tmp_path, folds, spy_factory(folds), force=True)
    assert result.trained_folds == [0, 1]
    assert not (tmp_path / "spy" / "fold_2").exists()   # the stale fold is gone
    collect(tmp_path, strict=True, use_cache=False)


@pytest.mark.parametrize("change, match", [
    (lambda ids: ids[:-1], "has no training row"),
    (lambda ids: ids + ["stranger"], "'stranger' is not in folds.csv"),
    (lambda ids: ids[:-1] + [ids[0]], "appears 2 times"),
])
def test_ids_must_match_folds(tmp_path, change, match):
    folds = write_small_folds(tmp_path)
    ids = change(list(folds.ids))
    with pytest.raises(LayoutError, match=match):
        run_kfold(tmp_path, "x", spy_factory(folds), ids, ids, ["t"], ["t"], model="m",
                  params={}, seed=0)
    assert not (tmp_path / "x").exists()   # refused before anything was written


class WindowModel:
    def fit(self, X_train, y_train, X_val, y_val):
        return self

    def predict_proba(self, X):
        raise AssertionError("predict_proba must not be called when predict_windows exists")

    def predict_windows(self, X):
        return [np.tile(np.linspace(0.1, 0.9, 3), (2 + len(x) % 3, 1)) * (0.5 + 0.5 * (j % 2))
                for j, x in enumerate(X)]


def test_windows_are_saved_and_probs_are_their_mean(tmp_path):
    folds = write_small_folds(tmp_path)
    ids = list(folds.ids)
    X = [np.zeros(i % 5) for i in range(len(ids))]
    run_kfold(tmp_path, "win", lambda k: WindowModel(), X, ids, X[:4], ["t0", "t1", "t2", "t3"],
              model="w", params={}, seed=0)
    val = layout.read_probs(layout.probs_path(tmp_path, "win", 0, "val"))
    arrays = layout.read_windows(tmp_path, "win", 0, "val", val.ids)
    np.testing.assert_allclose(val.values, np.stack([a.mean(axis=0) for a in arrays]), atol=1e-6)
    assert layout.has_windows(tmp_path, "win", 2, "test")


@pytest.mark.parametrize("bad_id, why", [("../../escape", "holds '/'"), ("a\\b", "holds '\\'"),
                                         ("nul\0id", "NUL character"), ("..", "not a file name")])
def test_a_test_id_that_is_not_a_file_name_writes_no_window_file(tmp_path, bad_id, why):
    """Row ids become per-window file names: '../' (or '\\', NUL, '..') would write outside the
    layout. Refused naming the id and the folder, before any .npy of that split is written."""
    folds = write_small_folds(tmp_path / "root")
    ids = list(folds.ids)
    X = [np.zeros(i % 5) for i in range(len(ids))]
    with pytest.raises(LayoutError) as refused:
        run_kfold(tmp_path / "root", "win", lambda k: WindowModel(), X, ids, X[:2], ["t0", bad_id],
                  model="w", params={}, seed=0)
    message = str(refused.value)
    assert "cannot name a per-window file in" in message and why in message
    assert repr(bad_id) in str(refused.value)
    assert not list(tmp_path.glob("*.npy")) and not list((tmp_path / "root").rglob("*.npy"))


def test_reading_windows_of_an_unsafe_id_is_refused(tmp_path):
    with pytest.raises(LayoutError, match="row id '../x' cannot name a per-window file"):
        layout.read_windows(tmp_path, "e", 0, "val", ["../x"])


class BadModel:
    def __init__(self, output):
        self.output = output

    def fit(self, *args):
        return self

    def predict_proba(self, X):
        return self.output(len(X))


@pytest.mark.parametrize("output, match", [
    (lambda n: np.full((n, 2), 0.5), "shape"),
    (lambda n: np.full((n, 3), 1.5), "not a probability"),
    (lambda n: np.full((n, 3), np.nan), "not a probability"),
])
def test_bad_model_output_is_named(tmp_path, output, match):
    folds = write_small_folds(tmp_path)
    ids = list(folds.ids)
    with pytest.raises(ModelOutputError, match=match):
        run_kfold(tmp_path, "bad", lambda k: BadModel(output), np.zeros((len(ids), 2)), ids,
                  np.zeros((2, 2)), ["t0", "t1"], model="bad", params={}, seed=0)


def test_progress_and_take_rows(tmp_path):
    folds = write_small_folds(tmp_path)
    calls = []
    run(tmp_path, folds, spy_factory(folds), on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    X = np.arange(10).reshape(5, 2)
    taken = take_rows(X, np.array([3, 1]))
    taken[:] = -1
    assert X.min() == 0   # a copy, not a view into the caller's array
    assert take_rows(["a", "b", "c"], np.array([2, 0])) == ["c", "a"]


def test_a_run_that_failed_before_any_fold_can_be_restarted_differently(tmp_path):
    folds = write_small_folds(tmp_path)
    ids = list(folds.ids)
    with pytest.raises(ModelOutputError):
        run_kfold(tmp_path, "spy", lambda k: BadModel(lambda n: np.full((n, 2), 0.5)),
                  np.zeros((len(ids), 2)), ids, np.zeros((2, 2)), ["t0", "t1"], model="bad",
                  params={}, seed=0)
    assert run(tmp_path, folds, spy_factory(folds)).trained_folds == [0, 1, 2]


def test_experiment_without_meta_is_not_resumed(tmp_path):
    folds = write_small_folds(tmp_path)
    run(tmp_path, folds, spy_factory(folds))
    (tmp_path / "spy" / "meta.json").unlink()
    with pytest.raises(OutputExistsError, match="without meta.json"):
        run(tmp_path, folds, spy_factory(folds))


def test_parquet_format_writes_probs_parquet_that_collect_reads_like_csv(tmp_path):
    as_csv, as_parquet = tmp_path / "csv", tmp_path / "parquet"
    for root, fmt in ((as_csv, "csv"), (as_parquet, "parquet")):
        folds = write_small_folds(root)
        run(root, folds, spy_factory(folds), format=fmt)
    for k in (0, 1, 2):
        for split in layout.SPLITS:
            folder = layout.fold_dir(as_parquet, "spy", k, split)
            assert sorted(p.name for p in folder.iterdir()) == ["probs.parquet"]
    a, b = collect(as_csv, strict=True, use_cache=False), collect(as_parquet, strict=True, use_cache=False)
    np.testing.assert_allclose(a.oof, b.oof, rtol=1e-6)
    np.testing.assert_allclose(a.test, b.test, rtol=1e-6)
    again = run(as_parquet, layout.read_folds(as_parquet), spy_factory(folds), format="parquet")
    assert again.skipped_folds == [0, 1, 2]                     # resumes from the Parquet files


def test_resume_in_the_other_format_is_refused_unless_forced(tmp_path):
    folds = write_small_folds(tmp_path)
    run(tmp_path, folds, spy_factory(folds))
    with pytest.raises(OutputExistsError, match="was written as probs.csv; pass that format"):
        run(tmp_path, folds, spy_factory(folds), format="parquet")
    run(tmp_path, folds, spy_factory(folds), format="parquet", force=True)
    folder = layout.fold_dir(tmp_path, "spy", 0, "val")
    assert sorted(p.name for p in folder.iterdir()) == ["probs.parquet"]   # the csv is replaced
    collect(tmp_path, strict=True, use_cache=False)


def test_settings_can_travel_as_one_value_and_keywords_override_them(tmp_path):
    from first_level.runner import KFoldSettings

    folds = write_small_folds(tmp_path)
    settings = KFoldSettings(model="spy", params={"p": 1}, seed=0, metric="lwlrap")
    ids = list(folds.ids)
    test_ids = [f"t{i}" for i in range(7)]
    first = run_kfold(tmp_path, "spy", spy_factory(folds), ids, ids, test_ids, test_ids,
                      settings=settings)
    assert first.trained_folds == [0, 1, 2]
    again = run_kfold(tmp_path, "spy", spy_factory(folds), ids, ids, test_ids, test_ids,
                      settings=settings, force=True)
    assert again.trained_folds == [0, 1, 2] and again.cv == pytest.approx(first.cv)
    with pytest.raises(OutputExistsError, match="seed"):
        run_kfold(tmp_path, "spy", spy_factory(folds), ids, ids, test_ids, test_ids,
                  settings=settings, seed=1)
