"""Noisy labels in the first level, as the FAT2019 winners (argus-freesound) trained on them.

A *noisy set* is a second, usually larger, set of clips whose labels are less trustworthy (FAT2019's
train_noisy, labelled from metadata). It is never part of folds.csv: every fold model trains on its
curated training rows plus the noisy rows; only curated rows are predicted out-of-fold, scored, or
held out for early stopping.

- ``loss='lsoft'`` (argus's Lsoft, soft bootstrapping): a noisy row's target becomes
  ``beta * y + (1 - beta) * p``, p the network's own (detached) prediction, so a wrong noisy label
  pulls less; curated rows keep the plain target. For single-label data the same mix is the
  cross-entropy target (p the softmax). With p detached, as argus had it, the gradient of either
  loss on a noisy row's logits is ``beta * (p - y)``: ``beta`` times the plain loss's, for a wrong
  label and a right one alike (tested), so Lsoft weights the noisy rows by ``beta`` rather than
  singling out the wrong labels; benchmarks/bench_noisy.py measures what that is worth.
- ``fraction``: the expected share of noisy rows in a batch (None: their share of the data).
- ``schedule='pretrain'``: the noisy rows first, then a fine-tune on the curated rows of the fold.
- An epoch is every row once, or ``epoch_rows`` rows (:class:`~first_level.audio.model.CNNSettings`;
  argus fixed its epoch size), so that an epoch, the patience and the learning-rate schedule mean
  the same amount of training with or without the noisy rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from stacker.errors import OptionError

LOSSES = ("plain", "lsoft")
SCHEDULES = ("mixed", "pretrain")


@dataclass(frozen=True)
class NoisySettings:
    """How a fold model trains on the noisy rows: loss, lsoft_beta, fraction, schedule (see the
    module docstring). Raises OptionError for a value outside its range."""

    loss: str = "lsoft"
    lsoft_beta: float = 0.7
    fraction: float | None = None
    schedule: str = "mixed"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise OptionError(f"`noisy_loss` must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if self.schedule not in SCHEDULES:
            raise OptionError(f"`noisy_schedule` must be one of {', '.join(SCHEDULES)}, got "
                              f"'{self.schedule}'")
        if not 0 <= float(self.lsoft_beta) <= 1:
            raise OptionError(f"`lsoft_beta` must be in [0, 1], got {self.lsoft_beta}")
        if self.fraction is not None:
            if not 0 <= float(self.fraction) < 1:
                raise OptionError(f"`noisy_fraction` must be in [0, 1) (the expected share of noisy "
                                  f"rows in a batch), got {self.fraction}")
            if self.schedule == "pretrain":
                raise OptionError("`noisy_fraction` applies to the mixed `noisy_schedule`; pretrain trains "
                                  "on the noisy rows alone, then on the curated ones")
        object.__setattr__(self, "lsoft_beta", float(self.lsoft_beta))
        if self.fraction is not None:
            object.__setattr__(self, "fraction", float(self.fraction))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NoisySet:
    """specs: the noisy rows' (n_mels, n_frames) spectrograms; y: (n_noisy, n_classes) 0/1 in
    folds.csv class order; settings: how to train on them."""

    specs: Sequence[np.ndarray]
    y: np.ndarray
    settings: NoisySettings

    def subset(self, keep: np.ndarray) -> "NoisySet":
        """The rows where the bool mask ``keep`` (n_noisy,) is true."""
        rows = np.flatnonzero(keep)
        return NoisySet([self.specs[i] for i in rows], self.y[rows], self.settings)


def noisy_hash(ids: Sequence[str], y: np.ndarray, specs: Sequence[np.ndarray]) -> str:
    """A short content hash of a noisy set (ids, labels, spectrograms), so a resume can tell it
    changed."""
    digest = hashlib.sha1()
    digest.update("\n".join(map(str, ids)).encode("utf-8"))
    labels = np.ascontiguousarray(np.asarray(y, dtype=np.uint8))
    digest.update(f"{labels.shape}".encode())
    digest.update(labels.tobytes())
    for spec in specs:
        array = np.ascontiguousarray(spec)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def lsoft_targets(targets: torch.Tensor, probs: torch.Tensor, beta: float) -> torch.Tensor:
    """Lsoft's soft-bootstrapped target ``beta * targets + (1 - beta) * probs`` (probs detached:
    the network's prediction is a target, not a path for gradients). Both (batch, n_classes)."""
    return beta * targets + (1.0 - beta) * probs.detach()


def batch_loss(logits: torch.Tensor, targets: torch.Tensor, noisy: torch.Tensor | None, *,
               multi_label: bool, loss: str = "plain", beta: float = 0.7) -> torch.Tensor:
    """The mean loss of a batch. logits, targets: (batch, n_classes); noisy: bool (batch,), the
    rows that come from the noisy set (None: none). BCE for multi-label, soft-target cross-entropy
    for single-label; with ``loss='lsoft'`` the noisy rows' targets are :func:`lsoft_targets`."""
    if loss == "lsoft" and noisy is not None and bool(noisy.any()):
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
        soft = lsoft_targets(targets, probs, beta)
        targets = torch.where(noisy[:, None], soft, targets)
    if multi_label:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def epoch_order(n_curated: int, n_noisy: int, fraction: float | None,
                rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """One epoch's row order over curated rows ``0..n_curated-1`` then noisy rows
    ``n_curated..n_curated+n_noisy-1``, ``size`` long (None: n_curated + n_noisy).

    fraction None: permutations of every row, one after another (each row once per pass; the noisy
    share of a batch is their share of the data). Otherwise each position is a noisy row with
    probability ``fraction`` (0: never), drawn with replacement from its set (argus sampled the two
    sets with different probabilities, into epochs of a fixed size)."""
    total = n_curated + n_noisy
    if fraction is None or n_noisy == 0:
        return _passes(total, total if size is None else size, rng)
    if fraction <= 0:
        return _passes(n_curated, n_curated if size is None else size, rng)
    length = total if size is None else size
    is_noisy = rng.random(length) < fraction
    if n_curated == 0:
        is_noisy[:] = True
    out = np.empty(length, dtype=np.int64)
    out[~is_noisy] = rng.integers(0, n_curated, size=int((~is_noisy).sum()))
    out[is_noisy] = n_curated + rng.integers(0, n_noisy, size=int(is_noisy.sum()))
    return out


def _passes(n_rows: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` positions: permutations of ``0..n_rows-1`` one after another, the last cut short."""
    n_passes = -(-length // n_rows) if n_rows else 0
    if n_passes <= 1:
        return rng.permutation(n_rows)[:length]
    return np.concatenate([rng.permutation(n_rows) for _ in range(n_passes)])[:length]
