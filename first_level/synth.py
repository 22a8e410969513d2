"""The embedded dataset: procedurally generated multi-label sound events over background noise.

No download: :func:`generate_dataset` writes, from a seed alone, a FAT2019-shaped dataset::

    <out>/train/<fname>.wav          16-bit PCM mono clips
    <out>/train.csv                  fname,labels   (labels comma-joined, quoted when several)
    <out>/test/<fname>.wav
    <out>/test_labels.csv            fname,labels   held-out truth, for scoring the final blend
    <out>/sample_submission.csv      fname,<class 1>,...  the submission template (zeros)
    <out>/vocabulary.csv             <index>,<class>      FAT2019's vocabulary format
    <out>/dataset.json               every parameter, so the set can be made again
    <out>/train_noisy/<fname>.wav    with ``n_noisy``: a noisy set, FAT2019's train_noisy
    <out>/train_noisy.csv            fname,labels   each label wrong with probability noisy_rate
    <out>/train_noisy_truth.csv      fname,labels   the noisy clips' true labels

Each clip holds 1 to 3 events of distinct classes at random times, each at a random SNR over a
coloured-noise background. The classes differ in character (steady tones, sweeps, impulses,
band-limited noise, harmonic and inharmonic notes, modulated tones), and some pairs are deliberately
close (tone / AM tone / FM tone, harmonic note / buzz) so models make different mistakes.

Every clip draws from its own ``SeedSequence([seed, split, index])``: the same seed gives the same
bytes, and clip ``i`` does not depend on how many clips were asked for.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import soundfile as sf

from stacker import layout
from stacker.errors import OptionError, OutputExistsError
from stacker.runtime import ProgressCallback

SNR_DB = (-8.0, 10.0)            # event RMS over background RMS, drawn per event
N_EVENTS_P = (0.5, 0.33, 0.17)   # probability of 1, 2 and 3 events in a clip
_SPLIT_CODE = {"train": 0, "test": 1, "noisy": 2}
_CORRUPTION_CODE = 3             # the seed stream of the noisy labels' corruption


# ---------------------------------------------------------------- event generators
# Each takes (rng, n_samples, sample_rate) and returns float64 of shape (n_samples,), peak ~1.


def _loguniform(rng, low, high):
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _fade(n: int, sr: int, seconds: float = 0.01) -> np.ndarray:
    """A raised-cosine fade in and out, so steady events do not start with a click."""
    k = max(1, min(n // 2, int(seconds * sr)))
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
    env[:k] = ramp
    env[n - k:] = ramp[::-1]
    return env


def _band_noise(rng, n: int, sr: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spectrum[(freqs < low) | (freqs > high)] = 0
    out = np.fft.irfft(spectrum, n)
    return out / (np.max(np.abs(out)) + 1e-12)


def _tone(rng, n, sr):
    t = np.arange(n) / sr
    return np.sin(2 * np.pi * _loguniform(rng, 300, 3000) * t + rng.uniform(0, 2 * np.pi)) * _fade(n, sr)


def _sweep(rng, n, sr, up: bool):
    t = np.arange(n) / sr
    duration = n / sr
    f0 = _loguniform(rng, 200, 700)
    ratio = min(rng.uniform(3.0, 8.0), 0.45 * sr / f0)
    # exponential sweep: f(t) = f0 * ratio ** (t / T), integrated for the phase
    phase = 2 * np.pi * f0 * duration / np.log(ratio) * (ratio ** (t / duration) - 1.0)
    out = np.sin(phase) * _fade(n, sr)
    return out if up else out[::-1]


def _clicks(rng, n, sr):
    out = np.zeros(n)
    period = int(sr / rng.uniform(8, 30))
    length = int(0.004 * sr)
    decay = np.exp(-np.arange(length) / (0.0008 * sr))
    freq = rng.uniform(2000, 5000)
    click = np.sin(2 * np.pi * freq * np.arange(length) / sr) * decay
    for start in range(int(rng.integers(0, period)), n - length, period):
        out[start:start + length] += click * rng.uniform(0.7, 1.0)
    return out


def _noise_low(rng, n, sr):
    return _band_noise(rng, n, sr, 120, rng.uniform(500, 800)) * _fade(n, sr, 0.03)


def _noise_high(rng, n, sr):
    low = rng.uniform(2800, 3500)
    return _band_noise(rng, n, sr, low, min(low * 2, 0.45 * sr)) * _fade(n, sr, 0.03)


def _harmonic(rng, n, sr):
    t = np.arange(n) / sr
    f0 = _loguniform(rng, 110, 440)
    out = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 9) if k * f0 < 0.45 * sr)
    decay = np.exp(-t / rng.uniform(0.15, 0.4))      # plucked: sharp attack, steady decay
    return out * decay * _fade(n, sr, 0.003)


def _buzz(rng, n, sr):
    t = np.arange(n) / sr
    f0 = _loguniform(rng, 60, 180)
    harmonics = [k for k in range(1, 40) if k * f0 < 0.45 * sr]
    out = sum(np.sin(2 * np.pi * k * f0 * t) / k ** 0.7 for k in harmonics)
    return out / np.max(np.abs(out)) * _fade(n, sr)


def _fm(rng, n, sr):
    t = np.arange(n) / sr
    carrier = _loguniform(rng, 500, 2500)
    rate = rng.uniform(3, 10)
    depth = rng.uniform(0.05, 0.2) * carrier
    phase = 2 * np.pi * carrier * t + depth / rate * np.sin(2 * np.pi * rate * t)
    return np.sin(phase) * _fade(n, sr)


def _am(rng, n, sr):
    t = np.arange(n) / sr
    carrier = _loguniform(rng, 300, 3000)
    rate = rng.uniform(6, 20)
    depth = rng.uniform(0.7, 1.0)
    env = 1 - depth * 0.5 * (1 + np.cos(2 * np.pi * rate * t))
    return np.sin(2 * np.pi * carrier * t) * env * _fade(n, sr)


def _bell(rng, n, sr):
    t = np.arange(n) / sr
    f0 = _loguniform(rng, 400, 1400)
    # inharmonic partials of a struck bar, the higher ones dying faster
    out = sum(a * np.sin(2 * np.pi * r * f0 * t) * np.exp(-t * r / rng.uniform(0.6, 1.2))
              for r, a in ((1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)) if r * f0 < 0.45 * sr)
    return out * _fade(n, sr, 0.002)


def _thump(rng, n, sr):
    t = np.arange(n) / sr
    start, end = rng.uniform(120, 200), rng.uniform(40, 60)
    sweep = rng.uniform(0.02, 0.05)
    freq = end + (start - end) * np.exp(-t / sweep)    # a kick drum: pitch falls as it decays
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return np.sin(phase) * np.exp(-t / rng.uniform(0.05, 0.12)) * _fade(n, sr, 0.002)


@dataclass(frozen=True)
class EventClass:
    name: str
    make: Callable
    seconds: tuple[float, float]     # event length range


CLASSES: tuple[EventClass, ...] = (
    EventClass("tone", _tone, (0.2, 0.8)),
    EventClass("chirp_up", lambda rng, n, sr: _sweep(rng, n, sr, True), (0.2, 0.6)),
    EventClass("chirp_down", lambda rng, n, sr: _sweep(rng, n, sr, False), (0.2, 0.6)),
    EventClass("click_train", _clicks, (0.3, 0.9)),
    EventClass("noise_low", _noise_low, (0.2, 0.7)),
    EventClass("noise_high", _noise_high, (0.2, 0.7)),
    EventClass("harmonic_note", _harmonic, (0.3, 0.9)),
    EventClass("buzz", _buzz, (0.2, 0.8)),
    EventClass("fm_tone", _fm, (0.3, 0.9)),
    EventClass("am_tone", _am, (0.3, 0.9)),
    EventClass("bell", _bell, (0.4, 1.0)),
    EventClass("thump", _thump, (0.15, 0.35)),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


# ---------------------------------------------------------------- one clip


def _background(rng, n: int) -> np.ndarray:
    """Coloured noise (spectrum ~ 1/f^alpha, alpha drawn per clip), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    spectrum /= freqs ** (rng.uniform(0.0, 1.5) / 2)
    out = np.fft.irfft(spectrum, n)
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-12)


def make_clip(rng: np.random.Generator, *, sample_rate: int, clip_seconds: float,
              first_class: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """One clip and its sorted labels. Returns (audio of shape (n_samples,) float32 in [-1, 1],
    labels). ``first_class`` is the index of one class the clip must hold."""
    n = int(round(sample_rate * clip_seconds))
    n_events = int(rng.choice(3, p=N_EVENTS_P)) + 1
    others = [j for j in rng.permutation(len(CLASSES)) if j != first_class]
    chosen = [first_class] + [int(j) for j in others[:n_events - 1]]
    mix = _background(rng, n)
    for j in chosen:
        kind = CLASSES[j]
        length = min(n, int(rng.uniform(*kind.seconds) * sample_rate))
        start = int(rng.integers(0, n - length + 1))
        event = kind.make(rng, length, sample_rate)
        rms = np.sqrt(np.mean(event ** 2)) + 1e-12
        snr_db = rng.uniform(*SNR_DB)
        mix[start:start + length] += event / rms * 10 ** (snr_db / 20)
    peak = np.max(np.abs(mix)) + 1e-12
    audio = (mix / peak * rng.uniform(0.3, 0.9)).astype(np.float32)
    return audio, tuple(sorted(CLASS_NAMES[j] for j in chosen))


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of ``audio`` (n_samples,)."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ---------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class SynthDataset:
    """Paths of a generated dataset (see the module docstring)."""

    root: Path
    train_dir: Path
    train_csv: Path
    test_dir: Path
    test_labels_csv: Path
    sample_submission: Path
    vocabulary: Path
    meta: Path
    classes: tuple[str, ...]
    noisy_dir: Path
    noisy_csv: Path
    noisy_truth_csv: Path


def dataset_paths(out_dir: Path | str) -> SynthDataset:
    root = Path(out_dir)
    return SynthDataset(root=root, train_dir=root / "train", train_csv=root / "train.csv",
                        test_dir=root / "test", test_labels_csv=root / "test_labels.csv",
                        sample_submission=root / "sample_submission.csv",
                        vocabulary=root / "vocabulary.csv", meta=root / "dataset.json",
                        classes=CLASS_NAMES, noisy_dir=root / "train_noisy",
                        noisy_csv=root / "train_noisy.csv",
                        noisy_truth_csv=root / "train_noisy_truth.csv")


def corrupt_labels(labels: tuple[str, ...], rate: float, rng: np.random.Generator
                   ) -> tuple[str, ...]:
    """``labels`` with each one replaced, with probability ``rate``, by a class the clip does not
    hold (drawn uniformly); sorted. The number of labels is kept."""
    out = list(labels)
    for j in range(len(out)):
        if rng.random() < rate:
            others = [c for c in CLASS_NAMES if c not in out]
            out[j] = others[int(rng.integers(len(others)))]
    return tuple(sorted(out))


def _labels_csv(names, labels) -> str:
    # pandas quotes a field only when it holds a comma, exactly like FAT2019's train_curated.csv
    return pd.DataFrame({"fname": names, "labels": [",".join(row) for row in labels]}).to_csv(index=False)


def generate_dataset(out_dir: Path | str, *, n_train: int, n_test: int, seed: int = 0,
                     sample_rate: int = 16000, clip_seconds: float = 1.5, n_noisy: int = 0,
                     noisy_rate: float = 0.3, force: bool = False,
                     on_progress: ProgressCallback | None = None) -> SynthDataset:
    """Write the synthetic dataset under ``out_dir`` and return its paths.

    n_noisy: clips of a noisy set (0: none), whose every label is, with probability
    ``noisy_rate``, replaced by a class the clip does not hold (:func:`corrupt_labels`).

    Refuses (OutputExistsError) when ``out_dir`` already holds a dataset, unless ``force``.
    on_progress: called as ``on_progress(done, total)`` every few clips.
    """
    if n_train < len(CLASSES) or n_test < 1:
        raise OptionError(f"n_train must be >= {len(CLASSES)} (one clip per class) and n_test >= 1; "
                          f"got n_train={n_train}, n_test={n_test}")
    if sample_rate < 8000 or not 0.5 <= clip_seconds <= 30:
        raise OptionError(f"sample_rate must be >= 8000 and clip_seconds in [0.5, 30]; got "
                          f"{sample_rate} and {clip_seconds}")
    if n_noisy < 0 or not 0 <= noisy_rate <= 1:
        raise OptionError(f"n_noisy must be >= 0 and noisy_rate in [0, 1]; got n_noisy={n_noisy}, "
                          f"noisy_rate={noisy_rate}")
    paths = dataset_paths(out_dir)
    if paths.train_csv.exists() and not force:
        raise OutputExistsError(f"{paths.train_csv} exists; choose another folder or pass `force`")
    total = n_train + n_test + n_noisy
    done = 0
    # the first class of clip i cycles through a seeded order, so every class appears in a split
    # as soon as it has as many clips as there are classes
    order = np.random.default_rng([seed, 99]).permutation(len(CLASSES))
    written = {}
    for split, count, folder in (("train", n_train, paths.train_dir), ("test", n_test, paths.test_dir),
                                 ("noisy", n_noisy, paths.noisy_dir)):
        names, labels = [], []
        for i in range(count):
            rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split], i]))
            audio, clip_labels = make_clip(rng, sample_rate=sample_rate, clip_seconds=clip_seconds,
                                           first_class=int(order[i % len(CLASSES)]))
            name = f"{split}_{i:05d}.wav"
            layout.atomic_write_bytes(folder / name, wav_bytes(audio, sample_rate))
            names.append(name)
            labels.append(clip_labels)
            done += 1
            if on_progress and (done % 50 == 0 or done == total):
                on_progress(done, total)
        written[split] = (names, labels)
    layout.atomic_write_text(paths.train_csv, _labels_csv(*written["train"]))
    layout.atomic_write_text(paths.test_labels_csv, _labels_csv(*written["test"]))
    if n_noisy:
        names, truth = written["noisy"]
        corrupted = [corrupt_labels(row, noisy_rate, np.random.default_rng(
            np.random.SeedSequence([seed, _CORRUPTION_CODE, i]))) for i, row in enumerate(truth)]
        layout.atomic_write_text(paths.noisy_csv, _labels_csv(names, corrupted))
        layout.atomic_write_text(paths.noisy_truth_csv, _labels_csv(names, truth))
    template = pd.DataFrame(0, index=range(n_test), columns=list(CLASS_NAMES))
    template.insert(0, "fname", written["test"][0])
    layout.atomic_write_text(paths.sample_submission, template.to_csv(index=False))
    layout.atomic_write_text(paths.vocabulary, "".join(f"{j},{c}\n" for j, c in enumerate(CLASS_NAMES)))
    layout.atomic_write_json(paths.meta, {
        "generator": "first_level.synth", "seed": seed, "n_train": n_train, "n_test": n_test,
        "sample_rate": sample_rate, "clip_seconds": clip_seconds, "snr_db": list(SNR_DB),
        "n_events_p": list(N_EVENTS_P), "classes": list(CLASS_NAMES),
        **({"n_noisy": n_noisy, "noisy_rate": noisy_rate} if n_noisy else {})})
    return paths


def read_labels(path: Path | str) -> tuple[list[str], list[tuple[str, ...]]]:
    """(fnames, label tuples) of a ``fname,labels`` CSV such as train.csv or test_labels.csv."""
    frame = layout.read_csv_table(path, what="labels file")
    if "labels" not in frame.columns:
        raise OptionError(f"{path}: missing column 'labels'; the header must be fname,labels")
    return frame.iloc[:, 0].astype(str).tolist(), [layout.split_labels(v) for v in frame["labels"]]
