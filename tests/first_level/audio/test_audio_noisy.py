"""Noisy labels in the audio CNN (Lsoft, sampling, pretrain, the hold-out) and inference windows of
several widths, each against a naive reference."""

import numpy as np
import pytest
import torch
from test_audio_model import TINY_NET, fold_permutation_runs, tone_spectrograms

from first_level.audio.crops import pool_windows, window, window_starts
from first_level.audio.model import AudioCNNModel
from first_level.audio.noisy import NoisySet, NoisySettings, batch_loss, epoch_order, lsoft_targets
from first_level.audio.noisy_filter import row_lwlrap
from stacker.errors import OptionError


def naive_loss(logits, targets, noisy, *, multi_label, loss, beta):
    """The batch loss written out row by row, class by class."""
    total = 0.0
    for i in range(len(logits)):
        z = logits[i].astype(np.float64)
        if multi_label:
            p = 1 / (1 + np.exp(-z))
        else:
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        t = targets[i].astype(np.float64)
        if loss == "lsoft" and noisy[i]:
            t = beta * t + (1 - beta) * p
        if multi_label:
            total += sum(-(t[j] * np.log(p[j]) + (1 - t[j]) * np.log(1 - p[j]))
                         for j in range(len(z))) / len(z)
        else:
            total += -sum(t[j] * np.log(p[j]) for j in range(len(z)))
    return total / len(logits)


@pytest.mark.parametrize("multi_label", [True, False])
@pytest.mark.parametrize("loss", ["plain", "lsoft"])
def test_batch_loss_matches_the_formula_row_by_row(multi_label, loss):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4)).astype(np.float32)
    if multi_label:
        targets = (rng.random((7, 4)) < 0.4).astype(np.float32)
    else:
        targets = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 7)]
    noisy = np.array([0, 1, 1, 0, 1, 0, 0], dtype=bool)
    got = batch_loss(torch.from_numpy(logits), torch.from_numpy(targets), torch.from_numpy(noisy),
                     multi_label=multi_label, loss=loss, beta=0.7)
    want = naive_loss(logits, targets, noisy, multi_label=multi_label, loss=loss, beta=0.7)
    assert float(got) == pytest.approx(want, rel=1e-5)
    if loss == "lsoft":   # it differs from the plain loss exactly through the noisy rows
        plain = naive_loss(logits, targets, noisy, multi_label=multi_label, loss="plain", beta=0.7)
        assert abs(want - plain) > 1e-4
        curated_only = batch_loss(torch.from_numpy(logits), torch.from_numpy(targets),
                                  torch.zeros(7, dtype=torch.bool), multi_label=multi_label,
                                  loss=loss, beta=0.7)
        assert float(curated_only) == pytest.approx(plain, rel=1e-5)


def test_lsoft_targets_do_not_pass_gradients_through_the_prediction():
    probs = torch.tensor([[0.2, 0.9]], requires_grad=True)
    target = lsoft_targets(torch.tensor([[1.0, 0.0]]), probs, 0.7)
    assert torch.allclose(target, torch.tensor([[0.7 + 0.3 * 0.2, 0.3 * 0.9]]))
    assert not target.requires_grad


@pytest.mark.parametrize("multi_label", [True, False])
def test_lsoft_gradient_is_beta_times_the_plain_gradient_on_noisy_rows(multi_label):
    """With p detached, d loss / d logits = beta * (p - y) on a noisy row (BCE and softmax CE
    alike): the docstring's claim that Lsoft weights the noisy rows by beta."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    if multi_label:
        targets = (rng.random((6, 5)) < 0.4).astype(np.float32)
    else:
        targets = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 6)]
    noisy = np.array([1, 0, 1, 1, 0, 0], dtype=bool)

    def grad(loss):
        z = torch.from_numpy(logits).requires_grad_(True)
        batch_loss(z, torch.from_numpy(targets), torch.from_numpy(noisy), multi_label=multi_label,
                   loss=loss, beta=0.7).backward()
        return z.grad.numpy()

    lsoft, plain = grad("lsoft"), grad("plain")
    np.testing.assert_allclose(lsoft[noisy], 0.7 * plain[noisy], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lsoft[~noisy], plain[~noisy], rtol=1e-6)


def test_epoch_order_default_is_every_row_once_and_a_fraction_sets_the_noisy_share():
    rng = np.random.default_rng(0)
    assert sorted(epoch_order(5, 7, None, rng)) == list(range(12))
    order = epoch_order(100, 900, 0.25, rng)
    assert len(order) == 1000 and order.min() >= 0 and order.max() < 1000
    assert abs((order >= 100).mean() - 0.25) < 0.05
    assert (epoch_order(10, 50, 0.0, rng) < 10).all()


def test_epoch_order_of_a_fixed_size_is_passes_over_the_rows_or_the_noisy_share():
    rng = np.random.default_rng(0)
    order = epoch_order(5, 7, None, rng, size=30)       # 12 rows: two full passes, then 6 rows
    assert len(order) == 30
    assert sorted(order[:12]) == sorted(order[12:24]) == list(range(12))
    assert len(set(order[24:])) == 6 and order[24:].max() < 12
    assert len(set(epoch_order(5, 7, None, rng, size=8))) == 8    # part of one pass: no repeats
    curated = epoch_order(10, 50, 0.0, rng, size=30)     # curated rows only, each three times
    assert np.bincount(curated, minlength=10).tolist() == [3] * 10
    mixed = epoch_order(100, 900, 0.25, rng, size=4000)
    assert len(mixed) == 4000 and abs((mixed >= 100).mean() - 0.25) < 0.03
    alone = epoch_order(90, 0, None, rng, size=1000)     # a curated-only fit: 11 passes and 10 rows
    assert np.bincount(alone).min() == 11 and np.bincount(alone).max() == 12
    # no size: the same draws as before sizes existed (one permutation)
    np.testing.assert_array_equal(epoch_order(5, 7, None, np.random.default_rng(3)),
                                  np.random.default_rng(3).permutation(12))


@pytest.mark.parametrize("with_noisy", [False, True])
def test_epoch_rows_fix_the_rows_of_every_epoch(monkeypatch, with_noisy):
    """Every epoch of the hold-out run and of the refit crops exactly epoch_rows rows, with or
    without the noisy set; without epoch_rows an epoch is every fit row once."""
    import first_level.audio.model as model_module

    specs, y = tone_spectrograms(8)
    crops, original = [], model_module.crop
    monkeypatch.setattr(model_module, "crop", lambda *a: crops.append(1) or original(*a))
    noisy = noisy_set() if with_noisy else None
    model = AudioCNNModel(**TINY_NET, epochs=3, seed=1, epoch_rows=50, noisy=noisy).fit(specs, y)
    assert len(crops) == 50 * (len(model.history_) + model.best_epoch_)
    assert model.params()["epoch_rows"] == 50
    crops.clear()
    plain = AudioCNNModel(**TINY_NET, epochs=3, seed=1, noisy=noisy).fit(specs, y)
    n_noisy = len(noisy.specs) if noisy else 0
    n_fit = len(specs) - plain.n_stop_rows_
    assert len(crops) == (n_fit + n_noisy) * len(plain.history_) + \
        (len(specs) + n_noisy) * plain.best_epoch_
    assert "epoch_rows" not in plain.params()       # experiments made before it still resume
    with pytest.raises(ValueError, match="epoch_rows"):
        AudioCNNModel(epoch_rows=-1)


@pytest.mark.parametrize("change, message", [
    (dict(loss="soft"), "noisy_loss"), (dict(schedule="later"), "noisy_schedule"),
    (dict(lsoft_beta=1.5), "lsoft_beta"), (dict(fraction=1.0), "noisy_fraction"),
    (dict(fraction=0.3, schedule="pretrain"), "the mixed `noisy_schedule`")])
def test_noisy_settings_refuse_values_out_of_range(change, message):
    with pytest.raises(OptionError, match=message):
        NoisySettings(**change)


def noisy_set(n_per_class=6, seed=5, wrong=0.3, **settings):
    """Noisy clips of the tone classes, all 60-80 frames long (the curated ones are shorter), a
    share ``wrong`` of them labelled as another class."""
    specs, y = tone_spectrograms(n_per_class, seed=seed)
    rng = np.random.default_rng(seed)
    specs = [np.concatenate([s, s, s], axis=1)[:, :int(rng.integers(60, 80))] for s in specs]
    y = y.copy()
    for i in np.flatnonzero(rng.random(len(y)) < wrong):
        y[i] = np.roll(y[i], 1)
    return NoisySet(specs, y, NoisySettings(**settings))


@pytest.mark.parametrize("schedule", ["mixed", "pretrain"])
def test_noisy_rows_never_reach_the_inner_holdout(monkeypatch, schedule):
    specs, y = tone_spectrograms(8)
    seen, original = [], AudioCNNModel.predict_proba

    def spy(self, X):
        seen.extend(np.shape(x)[1] for x in X)
        return original(self, X)

    monkeypatch.setattr(AudioCNNModel, "predict_proba", spy)
    model = AudioCNNModel(**TINY_NET, epochs=3, seed=1,
                          noisy=noisy_set(schedule=schedule)).fit(specs, y)
    assert model.n_stop_rows_ == int(model.inner_holdout(y).sum()) > 0
    assert seen and max(seen) < 40    # curated clips are < 40 frames, noisy ones >= 60
    if schedule == "pretrain":
        assert model.pretrain_epoch_ >= 1 and model.pretrain_history_


def test_noisy_rows_are_trained_on(monkeypatch):
    specs, y = tone_spectrograms(8)
    sizes, original = [], AudioCNNModel._train_epoch

    def spy(self, rows, optimiser, rng):
        sizes.append((rows.n_curated, rows.n_noisy))
        return original(self, rows, optimiser, rng)

    monkeypatch.setattr(AudioCNNModel, "_train_epoch", spy)
    noisy = noisy_set()
    model = AudioCNNModel(**TINY_NET, epochs=2, seed=1, noisy=noisy).fit(specs, y)
    n_fit = len(specs) - model.n_stop_rows_
    assert sizes[:len(model.history_)] == [(n_fit, len(noisy.specs))] * len(model.history_)
    assert sizes[len(model.history_):] == [(len(specs), len(noisy.specs))] * model.best_epoch_
    without = AudioCNNModel(**TINY_NET, epochs=2, seed=1).fit(specs, y)
    assert not np.allclose(model.predict_proba(specs), without.predict_proba(specs))


@pytest.mark.parametrize("schedule", ["mixed", "pretrain"])
def test_fold_k_predictions_ignore_fold_k_labels_with_noisy_rows(tmp_path, schedule):
    """The fold-k permutation test with a noisy set: permuting the curated labels of fold 1 only
    leaves fold 1's val and test predictions unchanged (every fold trains on the same noisy rows)
    while the folds that train on fold 1's rows change."""
    runs = fold_permutation_runs(tmp_path, 8, epochs=3, noisy=noisy_set(schedule=schedule))
    for split in ("val", "test"):
        np.testing.assert_allclose(runs[0][(1, split)], runs[1][(1, split)], atol=1e-6)
    assert max(np.abs(runs[0][(k, "val")] - runs[1][(k, "val")]).max() for k in (0, 2)) > 1e-4


# ---------------------------------------------------------------- inference windows


def test_pool_windows_matches_a_loop():
    rng = np.random.default_rng(0)
    probs = rng.random((7, 3)).astype(np.float32)
    widths = np.array([8, 8, 8, 16, 16, 32, 32])
    for pool in ("max", "mean"):
        per_width = []
        for w in (8, 16, 32):
            rows = [probs[i] for i in range(7) if widths[i] == w]
            per_width.append([max(r[j] for r in rows) if pool == "max"
                              else sum(r[j] for r in rows) / len(rows) for j in range(3)])
        want = [sum(p[j] for p in per_width) / 3 for j in range(3)]
        np.testing.assert_allclose(pool_windows(probs, widths, pool), want, rtol=1e-6)


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_infer_windows_match_a_naive_loop_over_windows(pool):
    specs, y = tone_spectrograms(5)
    model = AudioCNNModel(**TINY_NET, epochs=1, seed=0, infer_windows=(8, 24),
                          window_pool=pool).fit(specs, y)
    rows = specs[:6] + [None]
    got = model.predict_proba(rows)
    windows, widths = model.predict_windows(rows), model.window_widths(rows)
    for i, spec in enumerate(rows):
        assert len(windows[i]) == len(widths[i])
        if spec is None:
            np.testing.assert_allclose(got[i], model.prior_, rtol=1e-6)
            continue
        normalised = (spec.astype(np.float32) - model.mean_) / model.std_
        per_width = []
        for width in (8, 24):
            one_by_one = [model._forward([window(normalised, s, width)])[0]
                          for s in window_starts(spec.shape[1], width)]
            per_width.append(np.max(one_by_one, axis=0) if pool == "max"
                             else np.mean(one_by_one, axis=0))
            assert (widths[i] == width).sum() == len(one_by_one)
        np.testing.assert_allclose(got[i], np.mean(per_width, axis=0), atol=1e-5)


def test_default_windows_are_one_crop_sized_width_pooled_by_the_mean():
    specs, y = tone_spectrograms(4)
    model = AudioCNNModel(**TINY_NET, epochs=1, seed=0).fit(specs, y)
    windows = model.predict_windows(specs)
    np.testing.assert_allclose(model.predict_proba(specs),
                               np.stack([w.mean(axis=0) for w in windows]), atol=1e-6)
    assert all(set(w) == {TINY_NET["crop_frames"]} for w in model.window_widths(specs))
    assert "infer_windows" not in model.params()
    assert AudioCNNModel(**TINY_NET, infer_windows=(8,)).params()["infer_windows"] == [8]
    with pytest.raises(ValueError, match="distinct"):
        AudioCNNModel(infer_windows=(8, 8))


# ---------------------------------------------------------------- the filter's score


def test_row_lwlrap_matches_a_naive_loop():
    rng = np.random.default_rng(3)
    y = (rng.random((20, 5)) < 0.3).astype(np.uint8)
    y[0] = 0
    scores = rng.random((20, 5))
    got = row_lwlrap(y, scores)
    assert np.isnan(got[0])
    for i in range(1, 20):
        positives = np.flatnonzero(y[i])
        if not len(positives):
            assert np.isnan(got[i])
            continue
        precisions = []
        for c in positives:
            above = [j for j in range(5) if scores[i, j] >= scores[i, c]]
            precisions.append(sum(y[i, j] for j in above) / len(above))
        assert got[i] == pytest.approx(np.mean(precisions))


# ---------------------------------------------------------------- the filter, fold by fold


def _filter_setup(tmp_path):
    from first_level.audio.noisy_data import NoisyData
    from stacker import layout
    from stacker.layout import workspace

    classes = ["a", "b", "c"]
    layout.write_folds(tmp_path, [f"r{i}" for i in range(6)], [("a",), ("b",), ("c",)] * 2,
                       np.array([0, 0, 1, 1, 2, 2]), classes=classes)
    folds = layout.read_folds(tmp_path)
    layout.write_meta(tmp_path, "first", {"fold_hash": folds.hash})
    (tmp_path / "first" / "fold_0").mkdir(parents=True)
    ids = [f"n{i}" for i in range(5)]
    y = np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1]]
    data = NoisyData(ids=ids, specs=[np.zeros((4, 4))] * 5, y=y, hash="h")
    rng = np.random.default_rng(0)
    folder = workspace.noisy_predictions_dir(tmp_path, "first")
    for k in folds.fold_numbers:
        layout.write_probs(folder / f"fold_{k}.csv", ids[::-1], rng.random((5, 3)), classes)
    return folds, data, folder


def test_the_filter_keeps_fold_k_rows_by_fold_k_predictions_alone(tmp_path):
    from first_level.audio.noisy_filter import plan_noisy
    from stacker import layout

    folds, data, folder = _filter_setup(tmp_path)
    plan = plan_noisy(tmp_path, folds, data, NoisySettings(), name="second",
                      noisy_filter="first", noisy_min_score=0.5)
    for k in folds.fold_numbers:
        probs = layout.read_probs(folder / f"fold_{k}.csv")
        scores = dict(zip(probs.ids, probs.values))
        want = [1 / (scores[i] >= scores[i][data.y[n].argmax()]).sum() >= 0.5
                for n, i in enumerate(data.ids)]
        np.testing.assert_array_equal(plan.keep[k], want)
        assert len(plan.for_fold(k).specs) == sum(want)
    # fold 1's choice does not move when another fold's model predicts otherwise
    layout.write_probs(folder / "fold_0.csv", data.ids, 1 - data.y.astype(float),
                       list(folds.classes))
    again = plan_noisy(tmp_path, folds, data, NoisySettings(), name="second",
                       noisy_filter="first", noisy_min_score=0.5)
    np.testing.assert_array_equal(again.keep[1], plan.keep[1])
    assert not again.keep[0].any()
    assert again.record["filter"]["predictions_hash"] != plan.record["filter"]["predictions_hash"]


def test_the_filter_refuses_an_experiment_made_on_other_folds(tmp_path):
    from first_level.audio.noisy_filter import plan_noisy
    from stacker import layout
    from stacker.errors import LayoutError

    folds, data, folder = _filter_setup(tmp_path)
    layout.write_meta(tmp_path, "first", {"fold_hash": "other"})
    with pytest.raises(LayoutError, match="made on other folds"):
        plan_noisy(tmp_path, folds, data, NoisySettings(), name="second",
                   noisy_filter="first", noisy_min_score=0.5)
    layout.write_meta(tmp_path, "first", {"fold_hash": folds.hash})
    (folder / "fold_2.csv").unlink()
    with pytest.raises(LayoutError, match="no predictions of the noisy clips for fold 2"):
        plan_noisy(tmp_path, folds, data, NoisySettings(), name="second",
                   noisy_filter="first", noisy_min_score=0.5)
