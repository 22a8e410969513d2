"""Crops, inference windows and SpecAugment on log-mel spectrograms (n_mels, n_frames)."""

from __future__ import annotations

import numpy as np


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


def window(spec: np.ndarray, start: int, width: int, offset: int = 0) -> np.ndarray:
    """spec[:, start:start + width]; a shorter clip is placed at ``offset`` in a window filled
    with its own minimum (its silence level)."""
    if spec.shape[1] >= width:
        return spec[:, start:start + width]
    out = np.full((spec.shape[0], width), spec.min(), dtype=np.float32)
    out[:, offset:offset + spec.shape[1]] = spec
    return out


def crop(spec: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``width``-frame crop; a shorter clip lands at a random place in the window."""
    slack = abs(spec.shape[1] - width)
    shift = int(rng.integers(0, slack + 1))
    if spec.shape[1] >= width:
        return window(spec, shift, width)
    return window(spec, 0, width, offset=shift)


def spec_augment(batch: np.ndarray, freq_mask: int, time_mask: int,
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


def pool_windows(probs: np.ndarray, widths: np.ndarray, pool: str) -> np.ndarray:
    """One row's prediction from its windows, the Rainforest way: the max (or mean) over the
    windows of each width, then the mean over the widths. probs: (n_windows, n_classes);
    widths: (n_windows,) int, each window's width in frames. Returns (n_classes,) float32."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    widths = np.asarray(widths)
    per_width = [getattr(probs[widths == w], pool)(axis=0) for w in np.unique(widths)]
    return np.mean(per_width, axis=0).astype(np.float32)


POOLS = ("mean", "max")
