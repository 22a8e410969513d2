"""The audio CNN as a fold model for :func:`first_level.runner.run_kfold`.

Training follows the FAT2019 winners' recipe: random time crops of the log-mel spectrograms,
SpecAugment (time and frequency masks), mixup, BCE for multi-label targets and cross-entropy for
single-label ones, Adam with reduce-on-plateau, early stopping on lwlrap. Inference slides a
window with 50% overlap over each clip, crop-sized by default; with ``infer_windows`` (frames) on
windows of each width, the Rainforest way (train on long crops, predict on several shorter widths).
``predict_windows`` returns one probability row per window, width by width; ``predict_proba``
pools them (``window_pool``: the max or the mean over each width's windows, then the mean over the
widths; the mean over one crop-sized width by default).

Noisy labels (``noisy``, a :class:`first_level.audio.noisy.NoisySet`): every fit also trains on
the noisy rows (mixed into the batches, or first, ``schedule='pretrain'``), with Lsoft on them if
asked; the inner hold-out is drawn from the curated training rows only.

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
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Sequence

import numpy as np
import torch

from first_level.audio.cnn import AudioCNN
from first_level.audio.crops import POOLS, crop, pool_windows, spec_augment, window, window_starts
from first_level.audio.noisy import NoisySet, batch_loss, epoch_order
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
    axis (0 turns it off); infer_windows: the inference window widths in frames (empty: one
    width, crop_frames); window_pool: 'mean' or 'max' over each width's windows; epoch_rows: the
    rows of one training epoch, drawn pass by pass over the training rows (0: every row once), so
    that epochs, patience and the learning-rate schedule mean as many steps whatever the data
    size (a small curated set alone or with a large noisy one). The defaults are the "fast"
    preset's.
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
    infer_windows: Sequence[int] = ()
    window_pool: str = "mean"
    epoch_rows: int = 0

    def __post_init__(self):
        if not 0 < self.inner_fraction <= 0.5:
            raise ValueError(f"inner_fraction must be in (0, 0.5], got {self.inner_fraction}")
        if self.window_pool not in POOLS:
            raise ValueError(f"window_pool must be one of {', '.join(POOLS)}, got "
                             f"{self.window_pool!r}")
        if len(set(self.infer_windows)) != len(tuple(self.infer_windows)) or \
                any(int(w) < 1 for w in self.infer_windows):
            raise ValueError(f"infer_windows must be distinct widths of at least 1 frame, got "
                             f"{list(self.infer_windows)}")
        if int(self.epoch_rows) < 0:
            raise ValueError(f"epoch_rows must be 0 (every row once) or more, got {self.epoch_rows}")
        # numbers from JSON or the command line arrive as any numeric type: store them as declared
        kinds = {"channels": lambda c: tuple(int(w) for w in c), "refit": bool,
                 "infer_windows": lambda ws: tuple(int(w) for w in ws), "window_pool": str}
        for item in fields(self):
            kind = kinds.get(item.name, int if item.type == "int" else float)
            object.__setattr__(self, item.name, kind(getattr(self, item.name)))

    @property
    def widths(self) -> tuple[int, ...]:
        """The inference window widths (frames)."""
        return self.infer_windows or (self.crop_frames,)

    def to_dict(self) -> dict:
        """The settings as meta.json records them (channels as a list). The inference windows
        only when they differ from one crop-sized width pooled by the mean, and epoch_rows only
        when set, so that experiments made before they existed still resume."""
        out = {**asdict(self), "channels": list(self.channels),
               "infer_windows": list(self.infer_windows)}
        if not self.infer_windows and self.window_pool == "mean":
            del out["infer_windows"], out["window_pool"]
        if not self.epoch_rows:
            del out["epoch_rows"]
        return out


@dataclass
class TrainRows:
    """The rows one training stage fits: ``specs`` normalised (n_mels, n_frames) arrays, ``y``
    (n_rows, n_classes); the first ``n_curated`` rows are curated, the rest noisy. fraction: the
    expected share of noisy rows in a batch (None: their share of the rows)."""

    specs: list
    y: np.ndarray
    n_curated: int
    fraction: float | None = None

    @property
    def n_noisy(self) -> int:
        return len(self.specs) - self.n_curated


@dataclass
class _Stage:
    """One early-stopped training stage: its epochs' history, the best epoch and its weights."""

    history: list = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -np.inf
    best_state: dict | None = None


class AudioCNNModel:
    """A seeded, self-describing fold model; ``params()`` is what meta.json records.

    settings: the network and its training (:class:`CNNSettings`); ``overrides`` are its fields
    by keyword (``AudioCNNModel(**MODEL_PRESETS["fat2019"], seed=1)``), applied over ``settings``.
    seed: the weights, crops, augmentation and hold-out; device: torch's (None: CUDA when there
    is one); num_threads: torch's CPU threads (None: half the cores, at most 8). noisy: a noisy
    set every fit also trains on (its settings say how); the caller records it in meta.json.
    on_epoch: ``on_epoch(phase, epoch, epochs)`` after each training epoch, phase "epoch" (the
    hold-out run, at most ``epochs``), "pretrain epoch" (the noisy stage of ``pretrain``) or
    "refit epoch" (the refit): a fold takes minutes, so progress follows its epochs. Not a
    parameter: it changes nothing.
    """

    def __init__(self, settings: CNNSettings | None = None, *, seed: int = 0,
                 device: str | None = None, num_threads: int | None = None,
                 noisy: NoisySet | None = None,
                 on_epoch: Callable[[str, int, int], None] | None = None, **overrides):
        self.settings = replace(settings or CNNSettings(), **overrides)
        self.seed = int(seed)
        self.device = device
        self.num_threads = num_threads
        self.noisy = noisy
        self.on_epoch = on_epoch

    def params(self) -> dict:
        """The settings that change the predictions (not device or threads, nor the noisy set:
        its caller records its hash and settings)."""
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
        # the hold-out comes from the curated rows only: noisy rows never decide when to stop
        stop = self.inner_holdout(y_all)
        self.n_stop_rows_ = int(stop.sum())
        # hold-out rows stay raw: predict_proba normalises its inputs itself
        held = [train[i] for i in np.flatnonzero(stop)]
        y_held = y_all[stop]
        fit_rows = [self._normalise(train[i]) for i in np.flatnonzero(~stop)]
        y_fit = y_all[~stop]
        noisy, y_noisy = self._noisy_rows()

        self.device_ = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        rng = np.random.default_rng(self.seed)
        with _threads(self.num_threads, self.device_):
            torch.manual_seed(self.seed)
            self._fresh_net()
            self.pretrain_history_, self.pretrain_epoch_ = [], 0
            if self._pretrains:
                first = self._stage(TrainRows(noisy, y_noisy, 0), held, y_held, rng,
                                    phase="pretrain epoch")
                self.pretrain_history_, self.pretrain_epoch_ = first.history, first.best_epoch
                self.net_.load_state_dict(first.best_state)
                stage = self._stage(TrainRows(fit_rows, y_fit, len(fit_rows)), held, y_held, rng)
            else:
                stage = self._stage(TrainRows(fit_rows + noisy, np.concatenate([y_fit, y_noisy]),
                                              len(fit_rows), self._fraction), held, y_held, rng)
            self.history_, self.best_epoch_ = stage.history, stage.best_epoch
            self.best_score_ = stage.best_score
            if self.settings.refit and held:
                self._refit(fit_rows + [self._normalise(x) for x in held],
                            np.concatenate([y_fit, y_held]), noisy, y_noisy)
            else:
                self.net_.load_state_dict(stage.best_state)
        return self

    @property
    def _pretrains(self) -> bool:
        return (self.noisy is not None and self.noisy.settings.schedule == "pretrain"
                and len(self.noisy.specs) > 0)

    @property
    def _fraction(self) -> float | None:
        return None if self.noisy is None else self.noisy.settings.fraction

    def _noisy_rows(self) -> tuple[list[np.ndarray], np.ndarray]:
        """The noisy set's spectrograms (normalised with the curated statistics) and labels."""
        if self.noisy is None:
            return [], np.zeros((0, self.n_classes_), dtype=np.float32)
        y = np.asarray(self.noisy.y, dtype=np.float32).reshape(len(self.noisy.specs), -1)
        if y.shape[1] != self.n_classes_:
            raise ValueError(f"the noisy labels have {y.shape[1]} classes, the training labels "
                             f"{self.n_classes_}")
        return [self._normalise(x) for x in self.noisy.specs], y

    def _stage(self, rows: TrainRows, held: list[np.ndarray], y_held: np.ndarray,
               rng: np.random.Generator, phase: str = "epoch") -> _Stage:
        """Train ``net_`` on ``rows`` with a fresh optimiser until the hold-out (or, without one,
        the training loss) stops improving for ``patience`` epochs."""
        optimiser = self._optimiser()
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, mode="max", factor=self.settings.plateau_factor,
            patience=self.settings.plateau_patience)
        stage, best, since_best = _Stage(), (-np.inf, -np.inf), 0
        for epoch in range(self.settings.epochs):
            lr = optimiser.param_groups[0]["lr"]
            loss = self._train_epoch(rows, optimiser, rng)
            if held:
                probs = self.predict_proba(held)
                score, stop_loss = lwlrap(y_held, probs), self._loss_of(y_held, probs)
            else:            # no hold-out rows: the training loss decides
                score, stop_loss = -loss, loss
            stage.history.append({"epoch": epoch + 1, "loss": loss, "stop_lwlrap": score,
                                  "stop_loss": stop_loss, "lr": lr})
            self._epoch_done(phase, epoch + 1, self.settings.epochs)
            scheduler.step(score)
            # a small hold-out often ties on lwlrap: the lower hold-out loss breaks the tie
            if (score, -stop_loss) > best:
                best, since_best, stage.best_epoch = (score, -stop_loss), 0, epoch + 1
                stage.best_state = copy.deepcopy(self.net_.state_dict())
            else:
                since_best += 1
                if since_best >= self.settings.patience:
                    break
        stage.best_score = float(best[0])
        return stage

    def _refit(self, curated: list[np.ndarray], y: np.ndarray, noisy: list[np.ndarray],
               y_noisy: np.ndarray) -> None:
        """Train a fresh net on every training row (and the noisy rows) for the best epoch counts,
        each epoch at the learning rate the hold-out run used (the schedule replayed)."""
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._fresh_net()
        if self._pretrains:
            self._replay(TrainRows(noisy, y_noisy, 0),
                         self.pretrain_history_[:self.pretrain_epoch_], rng)
            self._replay(TrainRows(curated, y, len(curated)), self.history_[:self.best_epoch_], rng)
        else:
            self._replay(TrainRows(curated + noisy, np.concatenate([y, y_noisy]), len(curated),
                                   self._fraction), self.history_[:self.best_epoch_], rng)

    def _replay(self, rows: TrainRows, history: list[dict], rng: np.random.Generator) -> None:
        optimiser = self._optimiser()
        for epoch, entry in enumerate(history, start=1):
            for group in optimiser.param_groups:
                group["lr"] = entry["lr"]
            self._train_epoch(rows, optimiser, rng)
            self._epoch_done("refit epoch", epoch, len(history))

    def _epoch_done(self, phase: str, epoch: int, epochs: int) -> None:
        if self.on_epoch is not None:
            self.on_epoch(phase, epoch, epochs)

    def _fresh_net(self) -> None:
        """A new net, ``net_``, initialised from torch's seeded generator."""
        self.net_ = AudioCNN(self.n_classes_, self.settings.channels, self.settings.dropout).to(self.device_)

    def _optimiser(self) -> torch.optim.Adam:
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

    def _train_epoch(self, rows: TrainRows, optimiser, rng: np.random.Generator) -> float:
        settings = self.settings
        noisy_settings = self.noisy.settings if self.noisy is not None else None
        self.net_.train()
        order = epoch_order(rows.n_curated, rows.n_noisy, rows.fraction, rng,
                            size=settings.epoch_rows or None)
        total, seen = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            picked = order[start:start + settings.batch_size]
            if len(picked) < 2 and len(order) >= 2:
                continue   # a batch of one breaks batch norm; its row comes again next epoch
            batch = np.stack([crop(rows.specs[i], settings.crop_frames, rng) for i in picked])
            target = rows.y[picked].copy()
            is_noisy = picked >= rows.n_curated
            spec_augment(batch, settings.freq_mask, settings.time_mask, rng)
            if settings.mixup_alpha > 0:
                alpha = settings.mixup_alpha
                lam = rng.beta(alpha, alpha, size=len(picked)).astype(np.float32)
                partner = _partners(is_noisy, rng)
                batch = lam[:, None, None] * batch + (1 - lam[:, None, None]) * batch[partner]
                target = lam[:, None] * target + (1 - lam[:, None]) * target[partner]
            inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device_)
            targets = torch.from_numpy(target).to(self.device_)
            logits = self.net_(inputs)
            loss = batch_loss(logits, targets, torch.from_numpy(is_noisy).to(self.device_),
                              multi_label=self.multi_label_,
                              loss=noisy_settings.loss if noisy_settings else "plain",
                              beta=noisy_settings.lsoft_beta if noisy_settings else 1.0)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(picked)
            seen += len(picked)
        return total / max(seen, 1)

    # ------------------------------------------------------------ predict

    def predict_windows(self, X) -> list[np.ndarray]:
        """One (n_windows, n_classes) float32 array of probabilities per row of X: the windows of
        each width of ``settings.widths``, width by width (:meth:`window_widths` names each
        window's width). A row that is None gets the class frequencies, once per width."""
        widths = self.settings.widths
        counts_of, by_width = [], {w: [] for w in widths}
        for spec in X:
            if spec is None:
                counts_of.append(None)
                continue
            spec = self._normalise(spec)
            counts = []
            for width in widths:
                starts = window_starts(spec.shape[1], width)
                by_width[width].extend(window(spec, s, width) for s in starts)
                counts.append(len(starts))
            counts_of.append(counts)
        probs = {w: self._forward(windows) if windows else None for w, windows in by_width.items()}
        out, at = [], dict.fromkeys(widths, 0)
        for counts in counts_of:
            if counts is None:
                out.append(np.repeat(self.prior_[None, :].astype(np.float32), len(widths), axis=0))
                continue
            parts = []
            for width, count in zip(widths, counts):
                parts.append(probs[width][at[width]:at[width] + count])
                at[width] += count
            out.append(np.concatenate(parts))
        return out

    def window_widths(self, X) -> list[np.ndarray]:
        """Each row's window widths in frames, int (n_windows,), in :meth:`predict_windows`
        order."""
        widths = self.settings.widths
        return [np.asarray(widths, dtype=np.int64) if spec is None else
                np.repeat(np.asarray(widths, dtype=np.int64),
                          [len(window_starts(np.shape(spec)[1], w)) for w in widths])
                for spec in X]

    def pool_windows(self, probs: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """One row's (n_classes,) prediction from its windows (see :func:`crops.pool_windows`)."""
        return pool_windows(probs, widths, self.settings.window_pool)

    def predict_proba(self, X) -> np.ndarray:
        """(n_rows, n_classes): each row's windows pooled by :meth:`pool_windows`."""
        if not len(X):
            return np.zeros((0, self.n_classes_), dtype=np.float32)
        return np.stack([self.pool_windows(p, w) for p, w in
                         zip(self.predict_windows(X), self.window_widths(X))])

    def _forward(self, windows: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Probabilities (n_windows, n_classes) of windows that all have one width."""
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


def _partners(is_noisy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mixup partners: a shuffle of the batch within each set (curated rows mix with curated rows,
    noisy with noisy), so every mixed row stays curated or noisy for the loss."""
    if is_noisy.all() or not is_noisy.any():
        return rng.permutation(len(is_noisy))
    partner = np.arange(len(is_noisy))
    for group in (np.flatnonzero(~is_noisy), np.flatnonzero(is_noisy)):
        partner[group] = group[rng.permutation(len(group))]
    return partner


def _threads(num_threads: int | None, device: torch.device):
    """The thread limit of a fit on ``device``: on the CPU ``num_threads``, by default half the cores
    (at most 8); elsewhere torch's own setting."""
    if device.type != "cpu":
        return torch_threads(None)
    return torch_threads(num_threads or max(1, min((os.cpu_count() or 1) // 2, 8)))
