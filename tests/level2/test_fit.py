"""Fold-consistent level-2 training: learning, no fold leakage, window augmentation, write/reload."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from stacker import layout
from stacker.errors import LayoutError, OptionError, OutputExistsError
from stacker.layout.collect import collect
from stacker.level2 import fit as train
from stacker.level2 import inner as level2_inner
from stacker.level2 import inputs as level2_inputs
from stacker.level2 import params as level2_params
from stacker.level2 import store as level2_io
from stacker.level2.net import StackMLP
from stacker.metrics import lwlrap
from stacker.simulate import simulated_probs, write_simulated_layout

FAST = level2_params.MLPParams(hidden=32, bottleneck=8, max_epochs=15, batch_size=32, lr=5e-3)


def labels_for(n_rows, classes, rng, *, single_label=False):
    out = []
    for i in range(n_rows):
        chosen = {classes[i % len(classes)]}
        if not single_label and rng.random() < 0.3:
            chosen.add(classes[int(rng.integers(len(classes)))])
        out.append(tuple(sorted(chosen)))
    return out


def make_layout(root, *, n_rows=120, n_classes=5, n_folds=3, n_experiments=3, n_test=15, seed=0,
                single_label=False, first_fold=0, skills=None):
    rng = np.random.default_rng(seed)
    classes = [f"class_{j}" for j in range(n_classes)]
    ids = [f"clip_{i:04d}" for i in range(n_rows)]
    # folds are shuffled so that they are not confounded with the class pattern of labels_for
    fold = first_fold + rng.permutation(np.arange(n_rows) % n_folds)
    labels = labels_for(n_rows, classes, rng, single_label=single_label)
    write_simulated_layout(root, ids, labels, fold, n_experiments=n_experiments, n_test=n_test,
                           classes=classes, seed=seed, skills=skills)
    return root


def add_windowed_experiment(root, name="win_000", seed=1, format="csv"):
    """An experiment with per-window val predictions whose probs.csv is the windows' mean; its
    columns are written in reversed class order (the reader must reorder windows too)."""
    rng = np.random.default_rng(seed)
    folds = layout.read_folds(root)
    classes = list(folds.classes)[::-1]
    y = folds.y[:, ::-1]
    test_ids = [f"test_{i:05d}" for i in range(15)]
    for k in folds.fold_numbers:
        rows = folds.rows_of_fold(k)
        windows, means = {}, []
        for r in rows:
            n_windows = int(rng.integers(1, 6))
            w = np.stack([simulated_probs(y[r:r + 1], skill=1.5, rng=rng)[0] for _ in range(n_windows)])
            windows[folds.ids[r]] = w
            means.append(w.mean(0))
        layout.write_fold_predictions(root, name, k, "val", folds.ids[rows], np.array(means),
                                      classes, id_column=folds.id_column, windows=windows,
                                      format=format)
        test = rng.random((len(test_ids), len(classes))).astype(np.float32)
        layout.write_fold_predictions(root, name, k, "test", test_ids, test, classes,
                                      id_column=folds.id_column, format=format)
    layout.write_meta(root, name, {"level": 1, "fold_hash": folds.hash})
    return name


# ---------------------------------------------------------------- params


@pytest.mark.parametrize("values, match", [
    ({"hiden": 3}, "unknown parameter 'hiden'"),
    ({"hidden": 0}, "'hidden' must be >= 1"),
    ({"dropout": 1.0}, r"'dropout' must be in \[0, 1\)"),
    ({"lr": -1}, "'lr' must be > 0"),
    ({"plateau_factor": 1.5}, "'plateau_factor' must be in"),
    ({"batch_size": 2.5}, "'batch_size' must be a number"),
    ({"patience": "ten"}, "'patience' must be a number"),
    ({"max_epochs": True}, "'max_epochs' must be a number"),
])
def test_bad_params_are_refused_with_the_key(values, match):
    with pytest.raises(OptionError, match=match):
        level2_params.MLPParams.from_dict(values, source="p.json")


def test_read_params_flat_nested_and_best(tmp_path):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"hidden": 64, "lr": 0.01}))
    params, doc = level2_params.read_params(str(flat), tmp_path)
    assert (params.hidden, params.lr, params.dropout) == (64, 0.01, level2_params.MLPParams().dropout)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"params": {"batch_size": 16}, "cv": 0.9}))
    params, doc = level2_params.read_params(str(nested), tmp_path)
    assert params.batch_size == 16 and doc["cv"] == 0.9
    assert level2_params.read_params(None, tmp_path) == (level2_params.MLPParams(), {})
    with pytest.raises(OptionError, match="run `stack tune` first"):
        level2_params.read_params("best", tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(OptionError, match="not valid JSON"):
        level2_params.read_params(str(tmp_path / "bad.json"), tmp_path)


# ---------------------------------------------------------------- learning


def test_level2_learns_and_beats_its_inputs(tmp_path):
    # three equally good, partly independent inputs: combining them must help
    root = make_layout(tmp_path / "l", n_rows=240, n_classes=6, skills=(0.8, 0.8, 0.8))
    col = collect(root)
    result = train.train_level2(col, col.names, params=replace(FAST, max_epochs=40))
    cv, per_fold = result.scores()
    inputs = [lwlrap(col.y, col.oof[:, m]) for m in range(col.n_models)]
    chance = np.mean([lwlrap(col.y, np.random.default_rng(i).random(col.y.shape)) for i in range(10)])
    assert cv > chance + 0.3
    assert cv > max(inputs), (cv, inputs)
    assert set(per_fold) == {0, 1, 2}
    assert result.oof.shape == (1, 240, 6) and result.test.shape == (1, 3, 15, 6)
    assert np.all((result.test >= 0) & (result.test <= 1))


@pytest.mark.parametrize("early_stopping,refit", [("inner-holdout", 1), ("inner-holdout", 0),
                                                   ("fold", 1)])
def test_fold_k_model_never_trains_on_fold_k_rows(tmp_path, monkeypatch, early_stopping, refit):
    """Spy on the network itself: every input row seen in training mode is recorded per model
    instance. Each net trains on rows of every fold but one (k) and never on a row of fold k;
    the other-fold rows it evaluates are early-stopping rows, never trained on; together they
    are all the other folds' rows. With refit the early-stopped net never evaluates fold k, and a
    second net trains on every other-fold row and predicts fold k."""
    root = make_layout(tmp_path / "l", n_rows=90, n_folds=3)
    col = collect(root)
    seen, alive = {}, []          # keep the models alive so that no id() is reused
    original = StackMLP.forward

    def spy(self, x, skip=None):
        if id(self) not in seen:
            alive.append(self)
        record = seen.setdefault(id(self), {"train": [], "eval": []})
        record["train" if self.training else "eval"].append(x.detach().clone())
        return original(self, x, skip)

    monkeypatch.setattr(StackMLP, "forward", spy)
    train.train_level2(col, col.names, params=replace(FAST, max_epochs=3, refit=refit), seeds=[0, 1],
                       early_stopping=early_stopping)
    flat = col.oof.reshape(len(col.oof), -1)
    row_of = {tuple(np.round(r, 6)): i for i, r in enumerate(flat)}
    kinds = []
    for record in seen.values():
        if not record["train"]:
            continue   # models rebuilt for prediction only
        evaluated = {row_of.get(tuple(np.round(r, 6))) for x in record["eval"] for r in x.numpy()}
        evaluated.discard(None)                          # test rows
        trained = {row_of[tuple(np.round(r, 6))] for x in record["train"] for r in x.numpy()}
        missing = set(col.fold_numbers) - {int(col.fold[i]) for i in trained}
        assert len(missing) == 1                         # trained on every fold but one
        k = missing.pop()
        stop = {i for i in evaluated if col.fold[i] != k}
        assert not stop & trained                        # early-stopping rows never train
        assert trained | stop == set(np.flatnonzero(col.fold != k))
        predicts_k = any(col.fold[i] == k for i in evaluated)
        if early_stopping == "fold":
            assert not stop and predicts_k
        elif refit:
            assert bool(stop) != predicts_k              # the stopped net, or the refit net
        else:
            assert stop and predicts_k
        kinds.append((k, bool(stop), predicts_k))
    per_fold = 2 * (2 if refit and early_stopping == "inner-holdout" else 1)
    assert sorted(k for k, _, _ in kinds) == sorted([0, 1, 2] * per_fold)


def _shuffled_layout(root, n_rows, seed=0):
    make_layout(root, n_rows=n_rows, n_classes=8, n_experiments=3)
    folds = layout.read_folds(root)
    perm = np.random.default_rng(seed).permutation(n_rows)
    true = collect(root, use_cache=False)
    layout.write_folds(root, folds.ids, [folds.labels[j] for j in perm], folds.fold,
                       id_column=folds.id_column)
    return true, collect(root, use_cache=False)


def _chance(col):
    """The best a model without information can do: random scores or the training folds' class
    frequencies (a level-2 net may learn the prior honestly)."""
    y = col.y
    rng = np.random.default_rng(1)
    random = np.mean([lwlrap(y, rng.random(y.shape)) for _ in range(30)])
    prior = np.zeros(y.shape)
    for k in col.fold_numbers:
        prior[col.fold == k] = y[col.fold != k].mean(0) + 1e-9 * rng.random(y.shape[1])
    return max(random, lwlrap(y, prior))


LEAK_PARAMS = replace(FAST, hidden=128, bottleneck=32, max_epochs=30, batch_size=64)


def test_leakage_shuffled_labels_fall_to_chance(tmp_path):
    true, shuffled = _shuffled_layout(tmp_path / "l", 900)
    cv_true = train.train_level2(true, true.names, params=LEAK_PARAMS).scores()[0]
    cv_shuffled = train.train_level2(shuffled, shuffled.names, params=LEAK_PARAMS).scores()[0]
    chance = _chance(shuffled)
    assert cv_true > 0.9
    assert cv_shuffled < chance + 0.03, (cv_shuffled, chance)
    assert cv_shuffled < cv_true - 0.4


def test_leakage_test_catches_a_leaky_trainer(tmp_path):
    """The same measurement on a deliberately leaky trainer (fold k's rows also in its training
    set) lands above the margin: the leakage test can fail."""
    _, shuffled = _shuffled_layout(tmp_path / "l", 900)
    data = level2_inputs.level2_data(shuffled, shuffled.names)
    oof = np.zeros(data.y.shape, dtype=np.float32)
    for k in data.fold_numbers:
        mine = data.fold == k
        leaky = replace(data, x=np.concatenate([data.x, data.x[mine]]),
                        y=np.concatenate([data.y, data.y[mine]]),
                        fold=np.concatenate([data.fold, np.full(mine.sum(), -1)]))
        oof[mine] = train.fit_fold(leaky, k, params=LEAK_PARAMS, with_test=False,
                                   early_stopping="fold").val_probs
    assert lwlrap(data.y, oof) > _chance(shuffled) + 0.03


def _permute_fold_labels(root, k, seed=0):
    """Shuffle the labels among fold k's rows of folds.csv (every other row keeps its labels)."""
    folds = layout.read_folds(root)
    labels = list(folds.labels)
    rows = folds.rows_of_fold(k)
    for row, source in zip(rows, np.random.default_rng(seed).permutation(rows)):
        labels[row] = folds.labels[source]
    layout.write_folds(root, folds.ids, labels, folds.fold, id_column=folds.id_column)
    return collect(root, use_cache=False)


@pytest.mark.parametrize("single_label", [False, True])
def test_fold_k_predictions_ignore_fold_k_labels(tmp_path, single_label):
    """Honest level-2 OOF: permuting the labels of fold 1 only and retraining with the same seed
    leaves every fold-1 prediction (OOF and test) unchanged; the other folds, which train on
    fold 1's rows, do change (so the comparison can fail)."""
    root = make_layout(tmp_path / "l", n_rows=150, single_label=single_label)
    before = collect(root, use_cache=False)
    after = _permute_fold_labels(root, 1)
    assert not np.array_equal(before.y[before.fold == 1], after.y[after.fold == 1])
    runs = [train.train_level2(col, col.names, params=FAST, seeds=[0, 1]) for col in (before, after)]
    mine = before.fold == 1
    np.testing.assert_allclose(runs[0].oof[:, mine], runs[1].oof[:, mine], atol=1e-6)
    np.testing.assert_allclose(runs[0].test[:, 1], runs[1].test[:, 1], atol=1e-6)
    assert np.abs(runs[0].oof[:, ~mine] - runs[1].oof[:, ~mine]).max() > 1e-3
    assert runs[0].early_stopping == "inner-holdout"


def test_fold_k_permutation_catches_early_stopping_on_fold_k(tmp_path):
    """The same permutation moves the fold-1 predictions of the old, optimistic trainer
    (fold k early-stops its own model): the test above can fail."""
    root = make_layout(tmp_path / "l", n_rows=150)
    before = collect(root, use_cache=False)
    after = _permute_fold_labels(root, 1)
    data = [level2_inputs.level2_data(col, col.names) for col in (before, after)]
    fits = [train.fit_fold(d, 1, params=FAST, early_stopping="fold") for d in data]
    assert np.abs(fits[0].val_probs - fits[1].val_probs).max() > 1e-3


def test_inner_holdout_history_and_scores(tmp_path):
    """Under inner-holdout the history's val_* are the early-stopping rows' (other folds), the
    kept weights are their best epoch's, and ``score`` is fold 1's score of its predictions."""
    col = collect(make_layout(tmp_path / "l", n_rows=90))
    data = level2_inputs.level2_data(col, col.names)
    fit = train.fit_fold(data, 1, params=replace(FAST, max_epochs=6, patience=50))
    assert [h["epoch"] for h in fit.history] == list(range(1, 7))
    assert fit.stop_score == max(h["val_score"] for h in fit.history)
    assert fit.history[fit.best_epoch - 1]["val_score"] == fit.stop_score
    assert len(fit.stop_rows) and not np.any(data.fold[fit.stop_rows] == 1)
    again = fit.predict(data.x[fit.stop_rows], single_label=False)
    assert lwlrap(data.y[fit.stop_rows], again) == pytest.approx(fit.stop_score)
    assert fit.score == pytest.approx(lwlrap(data.y[data.fold == 1], fit.val_probs))


def test_inner_holdout_rows_are_seeded_stratified_and_from_the_training_folds():
    rng = np.random.default_rng(0)
    y = np.zeros((400, 5), dtype=np.uint8)
    y[np.arange(400), rng.integers(0, 4, 400)] = 1
    y[:20, 4] = 1                                      # a rare class, 20 rows
    mask = level2_inner.inner_holdout_mask(y, 0.2, seed=3)
    assert mask.sum() == 80
    assert np.array_equal(mask, level2_inner.inner_holdout_mask(y, 0.2, seed=3))
    assert not np.array_equal(mask, level2_inner.inner_holdout_mask(y, 0.2, seed=4))
    assert mask[:20].sum() == 4                        # the rare class gives exactly a fifth
    for c in range(4):                                 # the others about a fifth
        assert abs(mask[y[:, c] == 1].sum() - 0.2 * y[:, c].sum()) <= 3
    tiny = level2_inner.inner_holdout_mask(y[:3], 0.2, seed=0)
    assert 1 <= tiny.sum() <= 2
    with pytest.raises(OptionError, match="cannot be split"):
        level2_inner.inner_holdout_mask(y[:1], 0.2, seed=0)
    with pytest.raises(OptionError, match="early_stopping must be one of"):
        train.fit_fold(None, 0, params=FAST, early_stopping="bogus")


def test_single_label_uses_softmax(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=90, single_label=True)
    col = collect(root)
    assert col.folds.is_single_label
    result = train.train_level2(col, col.names, params=FAST)
    oof, test = result.combined()
    np.testing.assert_allclose(oof.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(test.sum(-1), 1.0, atol=1e-5)
    assert result.scores()[0] > 0.6


def test_training_is_reproducible_for_a_seed(tmp_path):
    col = collect(make_layout(tmp_path / "l", n_rows=60))
    a = train.train_level2(col, col.names, params=replace(FAST, max_epochs=4), seeds=[3])
    b = train.train_level2(col, col.names, params=replace(FAST, max_epochs=4), seeds=[3])
    c = train.train_level2(col, col.names, params=replace(FAST, max_epochs=4), seeds=[4])
    assert np.array_equal(a.oof, b.oof) and np.array_equal(a.test, b.test)
    assert not np.array_equal(a.oof, c.oof)


def test_seeds_are_combined_by_geometric_mean(tmp_path):
    col = collect(make_layout(tmp_path / "l", n_rows=60))
    result = train.train_level2(col, col.names, params=replace(FAST, max_epochs=3), seeds=[1, 2])
    oof, test = result.combined()
    naive = np.sqrt(np.clip(result.oof[0], 1e-7, 1).astype(np.float64)
                    * np.clip(result.oof[1], 1e-7, 1))
    np.testing.assert_allclose(oof, naive, rtol=1e-5)
    one, _ = result.combined([2])
    np.testing.assert_allclose(one, np.clip(result.oof[1], 1e-7, 1), rtol=1e-6)


def test_history_has_one_entry_per_epoch(tmp_path):
    """Under early_stopping="fold" (the old behaviour) the history's val_* are fold 1's."""
    col = collect(make_layout(tmp_path / "l", n_rows=60))
    data = level2_inputs.level2_data(col, col.names)
    fit = train.fit_fold(data, 1, params=replace(FAST, max_epochs=5, patience=50),
                         early_stopping="fold")
    assert [h["epoch"] for h in fit.history] == [1, 2, 3, 4, 5]
    assert set(fit.history[0]) == {"epoch", "train_loss", "val_loss", "val_score", "lr"}
    assert fit.score == max(h["val_score"] for h in fit.history)
    assert fit.history[fit.best_epoch - 1]["val_score"] == fit.score
    # the kept weights are the best epoch's: re-predicting fold 1 gives the best score
    again = fit.predict(data.x[data.fold == 1], single_label=False)
    assert lwlrap(data.y[data.fold == 1], again) == pytest.approx(fit.score)


def test_early_stopping_stops_after_patience(tmp_path):
    col = collect(make_layout(tmp_path / "l", n_rows=60))
    data = level2_inputs.level2_data(col, col.names)
    fit = train.fit_fold(data, 0, params=replace(FAST, max_epochs=200, patience=3, lr=0.05))
    assert len(fit.history) == fit.best_epoch + 3 < 200


# ---------------------------------------------------------------- windows


def test_window_means_match_a_naive_loop():
    rng = np.random.default_rng(0)
    values = torch.as_tensor(rng.random((6, 2, 5, 3)), dtype=torch.float32)
    lengths = torch.as_tensor(rng.integers(1, 6, size=(6, 2)))
    out = level2_inputs.window_means(values, lengths, crop=0.5, keep=0.6,
                                     generator=torch.Generator().manual_seed(7))
    # naive twin: draw the same random numbers in the same order, then loop
    g = torch.Generator().manual_seed(7)
    r_span, r_start = torch.rand((6, 2), generator=g), torch.rand((6, 2), generator=g)
    r_subset, r_forced = torch.rand((6, 2, 5), generator=g), torch.rand((6, 2), generator=g)
    r_crop = torch.rand((6, 2), generator=g)
    for b in range(6):
        for m in range(2):
            n = int(lengths[b, m])
            if r_crop[b, m] < 0.5:
                shortest = max(1, int(np.ceil(0.5 * n)))
                span = shortest + int(np.floor(float(r_span[b, m]) * (n - shortest + 1)))
                start = int(np.floor(float(r_start[b, m]) * (n - span + 1)))
                chosen = list(range(start, start + span))
                assert 1 <= span <= n and start + span <= n
            else:
                chosen = [w for w in range(n) if r_subset[b, m, w] < 0.6]
                if not chosen:
                    chosen = [int(np.floor(float(r_forced[b, m]) * n))]
            expected = values[b, m, chosen].mean(0)
            torch.testing.assert_close(out[b, m], expected)


def test_window_means_full_crop_is_the_plain_mean():
    values = torch.rand(4, 1, 6, 2)
    values[:, :, 4:] = 1000.0            # padding must never enter the mean
    lengths = torch.full((4, 1), 4)
    out = level2_inputs.window_means(values, lengths, crop=1.0, keep=1.0, generator=torch.Generator())
    torch.testing.assert_close(out, values[:, :, :4].mean(2))


def test_windows_are_loaded_in_class_order_and_train_with_augmentation(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=60)
    name = add_windowed_experiment(root)
    col = collect(root)
    assert col.windows == (name,)
    data = level2_inputs.level2_data(col, col.names)
    m = col.names.index(name)
    assert list(data.windows.models) == [m]
    for row in range(len(col.ids)):
        n = data.windows.lengths[row, 0]
        np.testing.assert_allclose(data.windows.values[row, 0, :n].mean(0), col.oof[row, m],
                                   rtol=1e-5, atol=1e-6)
        assert not data.windows.values[row, 0, n:].any()
    result = train.train_level2(col, col.names, params=replace(FAST, max_epochs=3))
    assert result.window_augmentation
    plain = train.train_level2(col, col.names, params=replace(FAST, max_epochs=3), use_windows=False)
    assert not plain.window_augmentation
    assert not np.array_equal(result.oof, plain.oof)


def test_windows_of_a_parquet_experiment_follow_its_column_order(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=60)
    name = add_windowed_experiment(root, format="parquet")
    col = collect(root)
    data = level2_inputs.level2_data(col, col.names)
    m = col.names.index(name)
    for row in range(len(col.ids)):
        n = data.windows.lengths[row, 0]
        np.testing.assert_allclose(data.windows.values[row, 0, :n].mean(0), col.oof[row, m],
                                   rtol=1e-5, atol=1e-6)


def test_a_missing_window_file_is_a_layout_error(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=60)
    name = add_windowed_experiment(root)
    folds = layout.read_folds(root)
    layout.windows_path(root, name, 2, "val", folds.ids[folds.rows_of_fold(2)[0]]).unlink()
    col = collect(root)
    with pytest.raises(LayoutError, match="per-window file .* is missing"):
        level2_inputs.level2_data(col, col.names)


# ---------------------------------------------------------------- writing and reloading


def test_write_then_reload_predicts_identically(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=60, first_fold=1)
    col = collect(root)
    result = train.train_level2(col, col.names, params=replace(FAST, max_epochs=4), seeds=[0, 5])
    path = level2_io.write_level2(root, "stack_mlp_001", result, col)
    oof, test = result.combined()
    again = level2_io.predict(root, "stack_mlp_001", col.test)
    assert np.array_equal(again, test)
    meta = layout.read_meta(root, "stack_mlp_001")
    assert meta["level"] == 2 and meta["inputs"] == list(col.names) and meta["seeds"] == [0, 5]
    assert meta["fold_hash"] == col.folds.hash and meta["metric"] == "lwlrap"
    assert meta["cv"] == pytest.approx(lwlrap(col.y, oof))
    assert set(meta["cv_folds"]) == {"1", "2", "3"}
    for k in (1, 2, 3):
        history = json.loads((path / f"fold_{k}" / "history.json").read_text())
        assert {h["seed"] for h in history} == {0, 5}
        saved_params = json.loads((path / f"fold_{k}" / "params.json").read_text())
        assert saved_params["hidden"] == FAST.hidden
    # the experiment is a normal one for collect, at level 2, and reproduces from disk
    col2 = collect(root)
    assert col2.level("stack_mlp_001") == 2
    np.testing.assert_allclose(col2.oof[:, col2.index(["stack_mlp_001"])[0]], oof, atol=1e-6)
    diffs = level2_io.verify_predictions(col2, "stack_mlp_001")
    assert max(diffs.values()) < 1e-6
    assert not (layout.stack_dir(root) / "staging").exists() or not any(
        (layout.stack_dir(root) / "staging").iterdir())


def test_existing_output_is_refused_then_replaced_with_force(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=60)
    col = collect(root)
    result = train.train_level2(col, col.names, params=replace(FAST, max_epochs=2))
    path = level2_io.write_level2(root, "l2", result, col)
    (path / "stale.txt").write_text("from an older run")
    with pytest.raises(OutputExistsError, match="already exists"):
        level2_io.write_level2(root, "l2", result, col)
    level2_io.write_level2(root, "l2", result, col, force=True)
    assert not (path / "stale.txt").exists() and (path / "meta.json").exists()
    with pytest.raises(OptionError, match="is one of the input experiments"):
        level2_io.write_level2(root, col.names[0], result, col, force=True)


def test_default_inputs_skip_level2_experiments(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=60)
    col = collect(root)
    result = train.train_level2(col, col.names, params=replace(FAST, max_epochs=2))
    level2_io.write_level2(root, "l2", result, col)
    col = collect(root)
    assert "l2" in col.names
    assert level2_inputs.choose_inputs(col, None) == ["sim_000", "sim_001", "sim_002"]
    assert level2_inputs.choose_inputs(col, "all") == ["sim_000", "sim_001", "sim_002"]
    assert level2_inputs.choose_inputs(col, "l2,sim_001") == ["l2", "sim_001"]
    with pytest.raises(OptionError, match="not an experiment"):
        level2_inputs.choose_inputs(col, "nope")


def test_predict_refuses_inputs_of_the_wrong_shape(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=60)
    col = collect(root)
    result = train.train_level2(col, col.names, params=replace(FAST, max_epochs=2))
    level2_io.write_level2(root, "l2", result, col)
    with pytest.raises(OptionError, match="expects 15 input features"):
        level2_io.predict(root, "l2", col.test[:, :, :2])
    with pytest.raises(OptionError, match="n_folds=3"):
        level2_io.predict(root, "l2", col.test[:2])


def test_small_data_gets_at_least_min_steps_per_epoch(tmp_path, monkeypatch):
    assert train.effective_batch_size(256, 4000) == 256
    assert train.effective_batch_size(256, 200) == 25
    assert train.effective_batch_size(16, 200) == 16
    assert train.effective_batch_size(64, 3) == 1
    col = collect(make_layout(tmp_path / "l", n_rows=60))
    sizes, original = [], StackMLP.forward

    def spy(self, x, skip=None):
        if self.training:
            sizes.append(len(x))
        return original(self, x, skip)

    monkeypatch.setattr(StackMLP, "forward", spy)
    data = level2_inputs.level2_data(col, col.names)
    train.fit_fold(data, 0, params=replace(FAST, batch_size=256, max_epochs=1, refit=0))
    n_train = len(train.split_rows(data, 0, early_stopping="inner-holdout",
                                   fraction=FAST.inner_fraction, seed=0)[0])
    assert len(sizes) >= train.MIN_STEPS and sum(sizes) == n_train
    assert max(sizes) == train.effective_batch_size(256, n_train)


def test_without_skip_the_head_starts_at_the_class_prior(tmp_path):
    col = collect(make_layout(tmp_path / "l", n_rows=90))
    data = level2_inputs.level2_data(col, col.names)
    fit = train.fit_fold(data, 0, params=replace(FAST, skip=0, max_epochs=30))
    assert fit.config["skip"] == "none" and fit.score > 0.8
    model = StackMLP(15, 5, skip="none")
    y = data.y[data.fold != 0]
    train._init_head_bias(model, y, single_label=False)
    prior = y.mean(0)
    np.testing.assert_allclose(torch.sigmoid(model.head.bias).detach().numpy(), prior, rtol=1e-5)
    skipping = train.fit_fold(data, 0, params=replace(FAST, max_epochs=2))
    assert skipping.config["skip"] == "logit"


def test_refit_trains_a_fresh_net_on_every_training_row_for_the_best_epoch_count(tmp_path, monkeypatch):
    """The refit net makes best_epoch passes over all of fold 0's training rows at the learning
    rates the early-stopped run used, and its predictions are the fold's; refit=0 keeps the
    early-stopped net, which trained on the rows outside the early-stopping part only."""
    col = collect(make_layout(tmp_path / "l", n_rows=90, n_folds=3))
    data = level2_inputs.level2_data(col, col.names)
    rows_seen, original = {}, StackMLP.forward

    def spy(self, x, skip=None):
        if self.training:
            rows_seen.setdefault(id(self), []).append(len(x))
        return original(self, x, skip)

    monkeypatch.setattr(StackMLP, "forward", spy)
    params = replace(FAST, max_epochs=12, patience=4)
    fit = train.fit_fold(data, 0, params=params)
    kept = train.fit_fold(data, 0, params=replace(params, refit=0))
    assert fit.refitted and not kept.refitted
    assert fit.best_epoch == kept.best_epoch and fit.history == kept.history
    n_other = int((data.fold != 0).sum())
    stopped, refit, _ = rows_seen.values()      # the refit run's net, its fresh net, refit=0's net
    n_fit = len(train.split_rows(data, 0, early_stopping="inner-holdout",
                                 fraction=params.inner_fraction, seed=0)[0])
    assert sum(stopped) == n_fit * len(fit.history)
    assert sum(refit) == n_other * fit.best_epoch
    assert not np.allclose(fit.val_probs, kept.val_probs)
    again = fit.predict(data.x[data.fold == 0], single_label=data.single_label)
    np.testing.assert_allclose(again, fit.val_probs, atol=1e-6)


def test_a_train_config_and_prebuilt_inputs_give_the_keyword_calls_result(tmp_path):
    root = make_layout(tmp_path / "l", n_rows=60)
    add_windowed_experiment(root)
    col = collect(root)
    options = dict(params=replace(FAST, max_epochs=3), seeds=[0, 2])
    by_keyword = train.train_level2(col, col.names, **options)
    config = train.TrainConfig(**options)
    data = level2_inputs.level2_data(col, col.names)
    by_config = train.train_level2(col, col.names, config, data=data)
    assert np.array_equal(by_keyword.oof, by_config.oof)
    assert np.array_equal(by_keyword.test, by_config.test)
    # use_windows=False leaves the given inputs' windows out, as if they were read without them
    plain = train.train_level2(col, col.names, config, use_windows=False)
    shared = train.train_level2(col, col.names, config, data=data, use_windows=False)
    assert not shared.window_augmentation and np.array_equal(plain.oof, shared.oof)
    with pytest.raises(OptionError, match="the given level-2 inputs hold"):
        train.train_level2(col, col.names[:2], config, data=data)


def test_train_and_write_checks_every_name_first_then_writes_each_seed_group(tmp_path, monkeypatch):
    root = make_layout(tmp_path / "l", n_rows=60)
    col = collect(root)
    config = train.TrainConfig(params=replace(FAST, max_epochs=2), seeds=[0, 1])
    layout.experiment_dir(root, "b").mkdir(parents=True)
    calls, original = [], train.train_level2
    monkeypatch.setattr(train, "train_level2", lambda *a, **k: calls.append(a) or original(*a, **k))
    with pytest.raises(OutputExistsError, match="experiment 'b' already exists"):
        level2_io.train_and_write(root, col, col.names, {"a": None, "b": [1]}, config)
    assert not calls and not layout.experiment_dir(root, "a").exists()
    result, paths = level2_io.train_and_write(root, col, col.names, {"a": None, "b": [1]},
                                              config, force=True, extra_meta={"note": "x"})
    assert len(calls) == 1 and set(paths) == {"a", "b"}
    again = collect(root, use_cache=False)
    oof_a, _ = result.combined()
    oof_b, _ = result.combined([1])
    for name, oof in (("a", oof_a), ("b", oof_b)):
        assert again.meta[name]["note"] == "x" and paths[name] == layout.experiment_dir(root, name)
        np.testing.assert_allclose(again.oof[:, again.index([name])[0]], oof, atol=1e-6)
    assert again.meta["a"]["seeds"] == [0, 1] and again.meta["b"]["seeds"] == [1]
