"""first_level.audio.cnn (the network) and first_level.audio.model (the fold model)."""

import numpy as np
import pytest
import torch

from first_level.audio.cnn import AttentionPool, AudioCNN
from first_level.audio.crops import crop as _crop
from first_level.audio.crops import spec_augment as _spec_augment
from first_level.audio.crops import window_starts
from first_level.audio.model import AudioCNNModel

TINY_NET = dict(channels=(8, 16, 32), crop_frames=16, batch_size=6, lr=5e-3, patience=5,
                mixup_alpha=0.2, freq_mask=2, time_mask=2, dropout=0.0, num_threads=1)


def tone_spectrograms(n_per_class: int, n_classes: int = 3, n_mels: int = 12, seed: int = 0):
    """Fake log-mel images over noise, random lengths. The classes differ in shape, not only in
    position (convolutions hardly see where a band is): class 0 one bright band, class 1 two bands,
    class 2 a broad bright region of five bands."""
    rng = np.random.default_rng(seed)
    specs, labels = [], []
    for c in range(n_classes):
        for _ in range(n_per_class):
            frames = int(rng.integers(8, 40))
            spec = rng.normal(-60, 3, size=(n_mels, frames))
            band = int(rng.integers(1, n_mels - 5))
            if c == 0:
                spec[band] += 40
            elif c == 1:
                spec[[band, band + 4]] += 40
            else:
                spec[band:band + 5] += 40
            specs.append(spec.astype(np.float16))
            labels.append(c)
    return specs, np.eye(n_classes, dtype=np.uint8)[labels]


# ---------------------------------------------------------------- network


@pytest.mark.parametrize("frames", [16, 17, 40, 5])
def test_network_output_shape(frames):
    net = AudioCNN(n_classes=7, channels=(4, 8, 16)).eval()
    assert net(torch.zeros(3, 12, frames)).shape == (3, 7)


def test_attention_pool_matches_a_naive_weighted_mean():
    torch.manual_seed(0)
    pool = AttentionPool(channels=4, n_classes=3)
    x = torch.randn(2, 4, 5)
    with torch.no_grad():
        out = pool(x)
    wa, ba = pool.attention.weight.detach(), pool.attention.bias.detach()
    ws, bs = pool.scores.weight.detach(), pool.scores.bias.detach()
    for b in range(2):
        for k in range(3):
            att = [float(ba[k] + sum(wa[k, c, 0] * x[b, c, t] for c in range(4))) for t in range(5)]
            score = [float(bs[k] + sum(ws[k, c, 0] * x[b, c, t] for c in range(4)))
                     for t in range(5)]
            weights = np.exp(att) / np.exp(att).sum()
            assert float(out[b, k]) == pytest.approx(float(np.dot(weights, score)), abs=1e-5)


@pytest.mark.parametrize("n_frames, width, expected", [
    (10, 16, [0]), (16, 16, [0]), (17, 16, [0, 1]), (40, 16, [0, 8, 16, 24]), (41, 16, [0, 8, 16, 24, 25])])
def test_window_starts_cover_every_frame(n_frames, width, expected):
    starts = window_starts(n_frames, width)
    assert starts == expected
    covered = set()
    for s in starts:
        covered |= set(range(s, min(s + width, n_frames)))
    assert covered == set(range(n_frames))


def test_crop_and_spec_augment():
    rng = np.random.default_rng(0)
    spec = np.arange(30, dtype=np.float32).reshape(3, 10)
    crop = _crop(spec, 4, rng)
    start = int(crop[0, 0])
    assert np.array_equal(crop, spec[:, start:start + 4])
    short = _crop(spec, 15, rng)
    assert short.shape == (3, 15) and (short == spec.min()).sum() >= 3 * 5
    batch = np.stack([np.ones((6, 8), np.float32) * i for i in range(4)])
    batch[:, 0, 0] = 100
    before = batch.copy()
    _spec_augment(batch, 3, 3, np.random.default_rng(1))
    assert batch.shape == before.shape and not np.array_equal(batch, before)


# ---------------------------------------------------------------- fold model


def test_fit_predicts_probabilities_and_learns_the_tones():
    specs, y = tone_spectrograms(12)
    # 12 epochs: an inner hold-out of the 18 training clips picks the epoch count, then all 18 fit
    model = AudioCNNModel(**TINY_NET, epochs=12, seed=0).fit(specs[::2], y[::2], specs[1::2], y[1::2])
    windows = model.predict_windows(specs[1::2])
    assert [w.shape for w in windows] == [(len(window_starts(s.shape[1], 16)), 3)
                                          for s in specs[1::2]]
    probs = model.predict_proba(specs[1::2])
    assert probs.shape == (18, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)       # softmax: single-label data
    assert np.allclose(probs, np.stack([w.mean(axis=0) for w in windows]))
    assert (probs.argmax(axis=1) == y[1::2].argmax(axis=1)).mean() >= 0.8
    assert not model.multi_label_ and 1 <= len(model.history_) <= 12


def test_same_seed_same_predictions_other_seed_differs():
    specs, y = tone_spectrograms(4)
    runs = [AudioCNNModel(**TINY_NET, epochs=1, seed=s).fit(specs, y, specs, y).predict_proba(specs)
            for s in (3, 3, 4)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_multi_label_targets_use_independent_sigmoids():
    specs, y = tone_spectrograms(4)
    y = y.copy()
    y[0, 1] = 1                       # one row with two labels makes it multi-label
    model = AudioCNNModel(**TINY_NET, epochs=1).fit(specs, y, specs, y)
    probs = model.predict_proba(specs)
    assert model.multi_label_ and ((probs >= 0) & (probs <= 1)).all()
    assert not np.allclose(probs.sum(axis=1), 1.0)


def test_skipped_files_are_not_fitted_and_get_the_class_frequencies():
    specs, y = tone_spectrograms(4)
    specs = list(specs)
    specs[0] = None
    model = AudioCNNModel(**TINY_NET, epochs=1).fit(specs, y, specs, y)
    windows = model.predict_windows([None, specs[1]])
    assert np.allclose(windows[0], y[1:].mean(axis=0)[None, :])
    assert windows[1].shape[1] == 3


def test_fit_does_not_change_the_callers_arrays():
    specs, y = tone_spectrograms(3)
    copies = [s.copy() for s in specs]
    AudioCNNModel(**TINY_NET, epochs=1).fit(specs, y, specs, y)
    assert all(np.array_equal(a, b) for a, b in zip(specs, copies))


def test_params_describe_the_model():
    params = AudioCNNModel(**TINY_NET).params()
    assert params["channels"] == [8, 16, 32] and params["crop_frames"] == 16
    assert "num_threads" not in params and "device" not in params


# ---------------------------------------------------------------- honest early stopping


def test_inner_holdout_is_seeded_stratified_and_empty_on_tiny_data():
    _, y = tone_spectrograms(20)
    model = AudioCNNModel(**TINY_NET, seed=1)
    held = model.inner_holdout(y)
    assert np.array_equal(held, AudioCNNModel(**TINY_NET, seed=1).inner_holdout(y))
    assert 12 <= held.sum() <= 18                             # about 25% of 60 rows
    assert all(3 <= held[y[:, c] == 1].sum() <= 7 for c in range(3))   # about 25% of each class
    assert not model.inner_holdout(y[:6]).any()               # too few rows: no hold-out
    with pytest.raises(ValueError, match="inner_fraction"):
        AudioCNNModel(inner_fraction=0.9)
    assert model.params()["early_stopping"] == "inner-holdout"


def test_validation_labels_never_steer_the_fit():
    specs, y = tone_spectrograms(10)
    shuffled = y[np.random.default_rng(0).permutation(len(y))]
    fits = [AudioCNNModel(**{**TINY_NET, "patience": 1}, epochs=4, seed=2).fit(specs[::2], y[::2],
                                                                        specs[1::2], y_val)
            for y_val in (y[1::2], shuffled[1::2])]
    assert np.array_equal(fits[0].predict_proba(specs), fits[1].predict_proba(specs))
    assert [h["epoch"] for h in fits[0].history_] == [h["epoch"] for h in fits[1].history_]
    assert fits[0].n_stop_rows_ > 0


def fold_permutation_runs(tmp_path, n_per_class: int, *, epochs: int, **model_options) -> list[dict]:
    """Two K-fold runs of the tiny CNN (3 folds, the same seeds), the second with fold 1's labels
    permuted among its rows: [{(fold, "val"|"test"): probabilities}] of each run."""
    from first_level.runner import run_kfold
    from stacker import layout
    from stacker.runtime import fold_seed

    specs, y = tone_spectrograms(n_per_class)
    classes = ["c0", "c1", "c2"]
    ids = [f"clip_{i:02d}" for i in range(len(specs))]
    fold = np.random.default_rng(0).permutation(np.arange(len(specs)) % 3)
    labels = [(classes[int(row.argmax())],) for row in y]
    runs = []
    for run in range(2):
        if run:
            rows = np.flatnonzero(fold == 1)
            for row, source in zip(rows, np.random.default_rng(1).permutation(rows)):
                labels[row] = (classes[int(y[source].argmax())],)
        layout.write_folds(tmp_path, ids, labels, fold, classes=classes)
        run_kfold(tmp_path, f"cnn{run}", lambda k: AudioCNNModel(
            **{**TINY_NET, "patience": 1}, epochs=epochs, seed=fold_seed(0, k), **model_options),
            specs, ids, specs[:4], ["t0", "t1", "t2", "t3"], model="audio-cnn", params={}, seed=0)
        runs.append({(k, split): layout.read_probs(layout.probs_path(tmp_path, f"cnn{run}", k, split)
                                                  ).values for k in (0, 1, 2) for split in ("val", "test")})
    return runs


def test_fold_k_predictions_ignore_fold_k_labels(tmp_path):
    """The fold-k label-permutation test through the K-fold runner: permuting the labels of fold
    1 only and retraining with the same seed leaves fold 1's val and test predictions unchanged;
    the other folds, which train on fold 1's rows, change."""
    runs = fold_permutation_runs(tmp_path, 10, epochs=4)
    for split in ("val", "test"):
        np.testing.assert_allclose(runs[0][(1, split)], runs[1][(1, split)], atol=1e-6)
    assert max(np.abs(runs[0][(k, "val")] - runs[1][(k, "val")]).max() for k in (0, 2)) > 1e-4


def test_refit_trains_every_training_row_for_the_best_epoch_count(monkeypatch):
    specs, y = tone_spectrograms(10)
    calls, original = [], AudioCNNModel._train_epoch

    def spy(self, rows, optimiser, rng):
        calls.append((len(rows.specs), optimiser.param_groups[0]["lr"]))
        return original(self, rows, optimiser, rng)

    monkeypatch.setattr(AudioCNNModel, "_train_epoch", spy)
    model = AudioCNNModel(**{**TINY_NET, "patience": 2}, plateau_patience=0, epochs=5,
                          seed=0).fit(specs, y)
    n_epochs, held = len(model.history_), model.n_stop_rows_
    assert held > 0 and 1 <= model.best_epoch_ <= n_epochs
    assert [n for n, _ in calls[:n_epochs]] == [len(specs) - held] * n_epochs
    replay = calls[n_epochs:]
    assert [n for n, _ in replay] == [len(specs)] * model.best_epoch_
    assert [lr for _, lr in replay] == [h["lr"] for h in model.history_[:model.best_epoch_]]
    calls.clear()
    kept = AudioCNNModel(**TINY_NET, epochs=3, refit=False, seed=0).fit(specs, y)
    assert len(calls) == len(kept.history_) and kept.params()["refit"] is False


def test_on_epoch_follows_every_epoch_of_the_holdout_run_and_the_refit():
    specs, y = tone_spectrograms(6)
    calls = []
    model = AudioCNNModel(**TINY_NET, epochs=3, seed=0,
                          on_epoch=lambda *call: calls.append(call)).fit(specs, y)
    n, best = len(model.history_), model.best_epoch_
    assert calls == [("epoch", e, 3) for e in range(1, n + 1)] + [
        ("refit epoch", e, best) for e in range(1, best + 1)]
    assert "on_epoch" not in model.params()
    quiet = AudioCNNModel(**TINY_NET, epochs=3, seed=0).fit(specs, y)
    np.testing.assert_array_equal(quiet.predict_proba(specs), model.predict_proba(specs))


def test_settings_and_keyword_overrides_make_the_same_model():
    from first_level.audio.model import MODEL_PRESETS, CNNSettings
    by_keyword = AudioCNNModel(**{**MODEL_PRESETS["fast"], "epochs": 3}, seed=2)
    settings = CNNSettings(**{**MODEL_PRESETS["fast"], "epochs": 3})
    assert AudioCNNModel(settings, seed=2).params() == by_keyword.params()
    assert AudioCNNModel(settings, epochs=5).settings.epochs == 5 and settings.epochs == 3
    assert AudioCNNModel().params() == {**CNNSettings().to_dict(), "early_stopping": "inner-holdout"}
    numbers = CNNSettings(channels=[8.0, 16], epochs=3.0, lr=1, refit=0)
    assert numbers.channels == (8, 16) and type(numbers.epochs) is int
    assert type(numbers.lr) is float and numbers.refit is False
    with pytest.raises(TypeError):
        AudioCNNModel(no_such_setting=1)
