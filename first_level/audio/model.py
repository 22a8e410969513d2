"""The audio CNN as a fold model for :func:`first_level.runner.run_kfold`.

Training follows the FAT2019 winners' recipe: random time crops of the log-mel spectrograms,
SpecAugment (time and frequency masks), mixup, BCE for multi-label targets and cross-entropy for
single-label ones, Adam with reduce-on-plateau, early stopping on lwlrap. Inference slides a
crop-sized window with 50% overlap over each clip; ``predict_windows`` returns one probability row
per window, ``predict_proba`` their mean.

Honest out-of-fold predictions: early stopping, the learning-rate schedule and the best epoch are
decided on an *inner hold-out* of the training rows (a seeded, label-stratified ``inner_fraction``
of them, made with :func:`first_level.folds.iterative_stratification`), never on the validation
fold the runner passes: ``fit`` ignores ``X_val`` and ``y_val``, so the fold-k predictions do not
depend on fold k's labels. With ``refit`` (the default) a fresh net then trains on *every*
training row for the best epoch count, replaying the hold-out run's learning rates (up to twice
the training time; on the quick demo's data it scored better on held-out test labels than keeping
the hold-out run's best weights: ``benchmarks/bench_cnn_honest.py``). With too few training rows
for a hold-out (fewer than ``2 / inner_fraction``) the training loss decides instead. The
hold-out ignores groups (speakers): folds.csv does not record them.

X is a sequence of log-mel spectrograms, each (n_mels, n_frames), any float dtype; ``None`` marks a
file that could not be read (``--skip-bad-files``): it is left out of fitting and scoring and
predicted as the training-set class frequencies.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from first_level.audio.cnn import AudioCNN
from first_level.folds import iterative_stratification
from stacker.metrics import lwlrap
from stacker.runtime import torch_threads

# Per-preset defaults of the network and its training; any of them can be overridden by keyword.
MODEL_PRESETS = {
    # tuned on FSDD to train 5 folds in minutes on 2 CPU cores: 0.8 s crops, 4 narrow blocks
    "fast": dict(channels=(8, 16, 32, 64), crop_frames=40, batch_size=32, epochs=12, lr=2e-3,
                 patience=4, mixup_alpha=0.1, freq_mask=6, time_mask=5, dropout=0.1),
    "fat2019": dict(channels=(64, 128, 256, 512), crop_frames=256, batch_size=64, epochs=150,
                    lr=1e-3, patience=15, mixup_alpha=0.4, freq_mask=16, time_mask=32,
                    dropout=0.3),
}


@dataclass(frozen=True)
class CNNSettings:
    """The network and its training: everything that changes a fold model's predictions.

    channels: conv block widths; crop_frames: training crop and inference window (frames);
    epochs: the most epochs; patience: epochs without a better lwlrap on the inner hold-out before
    stopping; plateau_patience / plateau_factor: ReduceLROnPlateau's; inner_fraction: the share of
    the training rows held out for early stopping (0 < f <= 0.5); refit: retrain on every training
    row for the best epoch count (else keep the best weights); mixup_alpha: Beta(alpha, alpha)
    mixing weights (0 turns mixup off); freq_mask / time_mask: the widest SpecAugment mask on each
    axis (0 turns it off). The defaults are the "fast" preset's.
    """

    channels: Sequence[int] = (8, 16, 32, 64)
    crop_frames: int = 40
    batch_size: int = 32
    epochs: int = 12
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 4
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    mixup_alpha: float = 0.1
    freq_mask: int = 6
    time_mask: int = 5
    dropout: float = 0.1
    inner_fraction: float = 0.25
    refit: bool = True

    def __post_init__(self):
        if not 0 < self.inner_fraction <= 0.5:
            raise ValueError(f"inner_fraction must be in (0, 0.5], got {self.inner_fraction}")
        # numbers from JSON or the command line arrive as any numeric type: store them as declared
        kinds = {"channels": lambda c: tuple(int(w) for w in c), "refit": bool}
        for item in fields(self):
            kind = kinds.get(item.name, int if item.type == "int" else float)
            object.__setattr__(self, item.name, kind(getattr(self, item.name)))

    def to_dict(self) -> dict:
        """The settings as meta.json records them (channels as a list)."""
        return {**asdict(self), "channels": list(self.channels)}


class AudioCNNModel:
    """A seeded, self-describing fold model; ``params()`` is what meta.json records.

    settings: the network and its training (:class:`CNNSettings`); ``overrides`` are its fields
    by keyword (``AudioCNNModel(**MODEL_PRESETS["fat2019"], seed=1)``), applied over ``settings``.
    seed: the weights, crops, augmentation and hold-out; device: torch's (None: CUDA when there
    is one); num_threads: torch's CPU threads (None: half the cores, at most 8).
    on_epoch: ``on_epoch(phase, epoch, epochs)`` after each training epoch, phase "epoch" (the
    hold-out run, at most ``epochs``) or "refit epoch" (the refit, ``best_epoch_`` of them): a
    fold takes minutes, so progress follows its epochs. Not a parameter: it changes nothing.
    """

    def __init__(self, settings: CNNSettings | None = None, *, seed: int = 0,
                 device: str | None = None, num_threads: int | None = None,
                 on_epoch: Callable[[str, int, int], None] | None = None, **overrides):
        self.settings = replace(settings or CNNSettings(), **overrides)
        self.seed = int(seed)
        self.device = device
        self.num_threads = num_threads
        self.on_epoch = on_epoch

    def params(self) -> dict:
        """The settings that change the predictions (not device or threads)."""
        return {**self.settings.to_dict(), "early_stopping": "inner-holdout"}

    # ------------------------------------------------------------ fit

    def fit(self, X_train, y_train, X_val=None, y_val=None) -> "AudioCNNModel":
        """X_train: a sequence of (n_mels, n_frames) arrays (or None); y_train: (n, n_classes) 0/1.
        X_val, y_val: accepted for the runner's protocol and ignored (see the module docstring)."""
        y_train = np.asarray(y_train, dtype=np.float32)
        keep = [i for i, x in enumerate(X_train) if x is not None]
        if not keep:
            raise ValueError("no training spectrogram to fit on")
        train = [np.asarray(X_train[i], dtype=np.float32) for i in keep]
        y_all = y_train[keep]
        self.n_classes_ = y_train.shape[1]
        self.n_mels_ = train[0].shape[0]
        self.multi_label_ = not bool(np.all(y_all.sum(axis=1) == 1))
        self.prior_ = y_all.mean(axis=0)
        frames = np.concatenate([x.reshape(-1) for x in train])
        self.mean_, self.std_ = float(frames.mean()), float(frames.std() + 1e-6)
        stop = self.inner_holdout(y_all)
        self.n_stop_rows_ = int(stop.sum())
        # hold-out rows stay raw: predict_proba normalises its inputs itself
        held = [train[i] for i in np.flatnonzero(stop)]
        y_held = y_all[stop]
        train = [self._normalise(train[i]) for i in np.flatnonzero(~stop)]
        y_fit = y_all[~stop]

        self.device_ = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        rng = np.random.default_rng(self.seed)
        with _threads(self.num_threads, self.device_):
            torch.manual_seed(self.seed)
            optimiser = self._fresh_net()
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimiser, mode="max", factor=self.settings.plateau_factor,
                patience=self.settings.plateau_patience)
            best, best_state, since_best, best_epoch = (-np.inf, -np.inf), None, 0, 0
            self.history_ = []
            for epoch in range(self.settings.epochs):
                lr = optimiser.param_groups[0]["lr"]
                loss = self._train_epoch(train, y_fit, optimiser, rng)
                if held:
                    probs = self.predict_proba(held)
                    score, stop_loss = lwlrap(y_held, probs), self._loss_of(y_held, probs)
                else:            # no hold-out rows: the training loss decides
                    score, stop_loss = -loss, loss
                self.history_.append({"epoch": epoch + 1, "loss": loss, "stop_lwlrap": score,
                                      "stop_loss": stop_loss, "lr": lr})
                self._epoch_done("epoch", epoch + 1, self.settings.epochs)
                scheduler.step(score)
                # a small hold-out often ties on lwlrap: the lower hold-out loss breaks the tie
                if (score, -stop_loss) > best:
                    best, since_best, best_epoch = (score, -stop_loss), 0, epoch + 1
                    best_state = copy.deepcopy(self.net_.state_dict())
                else:
                    since_best += 1
                    if since_best >= self.settings.patience:
                        break
            self.best_score_, self.best_epoch_ = float(best[0]), best_epoch
            if self.settings.refit and held:
                self._refit(train + [self._normalise(x) for x in held],
                            np.concatenate([y_fit, y_held]))
            else:
                self.net_.load_state_dict(best_state)
        return self

    def _refit(self, train: list[np.ndarray], y: np.ndarray) -> None:
        """Train a fresh net on every training row for the best epoch count, each epoch at the
        learning rate the hold-out run used (the schedule replayed)."""
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        optimiser = self._fresh_net()
        for epoch, entry in enumerate(self.history_[:self.best_epoch_], start=1):
            for group in optimiser.param_groups:
                group["lr"] = entry["lr"]
            self._train_epoch(train, y, optimiser, rng)
            self._epoch_done("refit epoch", epoch, self.best_epoch_)

    def _epoch_done(self, phase: str, epoch: int, epochs: int) -> None:
        if self.on_epoch is not None:
            self.on_epoch(phase, epoch, epochs)

    def _fresh_net(self) -> torch.optim.Adam:
        """A new net (``net_``, initialised from torch's seeded generator) and its optimiser."""
        self.net_ = AudioCNN(self.n_classes_, self.settings.channels, self.settings.dropout).to(self.device_)
        return torch.optim.Adam(self.net_.parameters(), lr=self.settings.lr,
                                weight_decay=self.settings.weight_decay)

    def _loss_of(self, y: np.ndarray, probs: np.ndarray) -> float:
        """The training loss (BCE, or cross-entropy for single-label data) of probabilities."""
        p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
        if self.multi_label_:
            return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
        return float(-(y * np.log(p)).sum(axis=1).mean())

    def inner_holdout(self, y: np.ndarray) -> np.ndarray:
        """Bool (n_rows,): the training rows held out to early-stop on; about
        ``inner_fraction`` of each class, seeded; none when there are too few rows."""
        n_parts = max(2, round(1 / self.settings.inner_fraction))
        if len(y) < 2 * n_parts:
            return np.zeros(len(y), dtype=bool)
        return iterative_stratification(y, n_parts, seed=self.seed) == 0

    def _normalise(self, spec: np.ndarray) -> np.ndarray:
        return (np.asarray(spec, dtype=np.float32) - self.mean_) / self.std_

    def _train_epoch(self, train: list[np.ndarray], y: np.ndarray, optimiser,
                     rng: np.random.Generator) -> float:
        settings = self.settings
        self.net_.train()
        order = rng.permutation(len(train))
        total, seen = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            if len(rows) < 2 and len(order) >= 2:
                continue   # a batch of one breaks batch norm; its row comes again next epoch
            batch = np.stack([_crop(train[i], settings.crop_frames, rng) for i in rows])
            target = y[rows].copy()
            _spec_augment(batch, settings.freq_mask, settings.time_mask, rng)
            if settings.mixup_alpha > 0:
                alpha = settings.mixup_alpha
                lam = rng.beta(alpha, alpha, size=len(rows)).astype(np.float32)
                partner = rng.permutation(len(rows))
                batch = lam[:, None, None] * batch + (1 - lam[:, None, None]) * batch[partner]
                target = lam[:, None] * target + (1 - lam[:, None]) * target[partner]
            inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device_)
            targets = torch.from_numpy(target).to(self.device_)
            logits = self.net_(inputs)
            if self.multi_label_:
                loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
            else:   # soft-target cross-entropy (mixup makes the targets soft)
                loss = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        return total / max(seen, 1)

    # ------------------------------------------------------------ predict

    def predict_windows(self, X) -> list[np.ndarray]:
        """One (n_windows, n_classes) float32 array of probabilities per row of X."""
        starts_of, windows = [], []
        for spec in X:
            if spec is None:
                starts_of.append(None)
                continue
            spec = self._normalise(spec)
            starts = window_starts(spec.shape[1], self.settings.crop_frames)
            starts_of.append(len(starts))
            windows.extend(_window(spec, s, self.settings.crop_frames) for s in starts)
        probs = self._forward(windows) if windows else np.zeros((0, self.n_classes_), np.float32)
        out, at = [], 0
        for count in starts_of:
            if count is None:
                out.append(self.prior_[None, :].astype(np.float32))
            else:
                out.append(probs[at:at + count])
                at += count
        return out

    def predict_proba(self, X) -> np.ndarray:
        """(n_rows, n_classes): the mean of each row's window probabilities."""
        return np.stack([w.mean(axis=0) for w in self.predict_windows(X)]) if len(X) else \
            np.zeros((0, self.n_classes_), dtype=np.float32)

    def _forward(self, windows: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
        self.net_.eval()
        out = []
        with _threads(self.num_threads, self.device_), torch.no_grad():
            for start in range(0, len(windows), batch_size):
                batch = torch.from_numpy(np.stack(windows[start:start + batch_size])).to(self.device_)
                logits = self.net_(batch)
                probs = torch.sigmoid(logits) if self.multi_label_ else torch.softmax(logits, dim=1)
                out.append(probs.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def epoch_notes(update: Callable[..., None], fold: int) -> Callable[[str, int, int], None]:
    """An ``on_epoch`` that shows each epoch of fold ``fold`` as the note of a progress
    ``update(done, total, note=...)`` ("fold 2: epoch 7/12"), the fold count unchanged."""
    return lambda phase, epoch, epochs: update(None, None, note=f"fold {fold}: {phase} {epoch}/{epochs}")


# ---------------------------------------------------------------- crops, windows, augmentation


def window_starts(n_frames: int, width: int) -> list[int]:
    """Starts of the inference windows: every width // 2 frames, the last one flush with the end
    (so every frame is covered); one window at 0 for a clip no longer than ``width``."""
    if n_frames <= width:
        return [0]
    hop = max(width // 2, 1)
    starts = list(range(0, n_frames - width + 1, hop))
    if starts[-1] != n_frames - width:
        starts.append(n_frames - width)
    return starts


def _window(spec: np.ndarray, start: int, width: int, offset: int = 0) -> np.ndarray:
    """spec[:, start:start + width]; a shorter clip is placed at ``offset`` in a window filled
    with its own minimum (its silence level)."""
    if spec.shape[1] >= width:
        return spec[:, start:start + width]
    out = np.full((spec.shape[0], width), spec.min(), dtype=np.float32)
    out[:, offset:offset + spec.shape[1]] = spec
    return out


def _crop(spec: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``width``-frame crop; a shorter clip lands at a random place in the window."""
    slack = abs(spec.shape[1] - width)
    shift = int(rng.integers(0, slack + 1))
    if spec.shape[1] >= width:
        return _window(spec, shift, width)
    return _window(spec, 0, width, offset=shift)


def _spec_augment(batch: np.ndarray, freq_mask: int, time_mask: int,
                  rng: np.random.Generator) -> None:
    """One frequency band and one time span per crop, each up to the given width, set to the
    crop's mean (in place; ``batch`` is a fresh array of crops). batch: (B, n_mels, n_frames)."""
    n, n_mels, n_frames = batch.shape
    for axis, widest, size in ((1, freq_mask, n_mels), (2, time_mask, n_frames)):
        if widest <= 0:
            continue
        widths = rng.integers(0, min(widest, size) + 1, size=n)
        starts = rng.integers(0, size - widths + 1)
        for i in range(n):
            if widths[i]:
                if axis == 1:
                    batch[i, starts[i]:starts[i] + widths[i], :] = batch[i].mean()
                else:
                    batch[i, :, starts[i]:starts[i] + widths[i]] = batch[i].mean()


def _threads(num_threads: int | None, device: torch.device):
    """The thread limit of a fit on ``device``: on the CPU ``num_threads``, by default half the cores
    (at most 8); elsewhere torch's own setting."""
    if device.type != "cpu":
        return torch_threads(None)
    return torch_threads(num_threads or max(1, min((os.cpu_count() or 1) // 2, 8)))
