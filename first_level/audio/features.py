"""Log-mel spectrograms (numpy STFT + Slaney mel filterbank), an on-disk cache, and fixed-length
log-mel statistics for scikit-learn models.

Framing: centred frames (the signal is zero-padded by ``n_fft // 2`` on both sides, as librosa does
with ``center=True``), so a signal of ``n`` samples gives ``1 + n // hop_length`` frames. Values are
``10 * log10(max(power, 1e-10))`` clipped at ``top_db`` below the clip's maximum (librosa's
``power_to_db`` with ``ref=1``), the scale the FAT2019 winners trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.signal import get_window

from first_level.audio.io import AudioError, read_audio
from stacker.errors import OptionError
from stacker.layout import atomic_save_npy

# Bumped whenever the numbers a setting produces change, so old cache entries are never reused.
FEATURE_VERSION = 1
STAT_NAMES = ("mean", "std", "min", "max", "dabs", "dstd")


@dataclass(frozen=True)
class MelSettings:
    """How a file becomes a log-mel spectrogram. fmax None means sample_rate / 2."""

    sample_rate: int
    n_mels: int
    n_fft: int
    hop_length: int
    fmin: float = 20.0
    fmax: float | None = None
    top_db: float | None = 80.0

    @property
    def fmax_hz(self) -> float:
        return self.sample_rate / 2 if self.fmax is None else float(self.fmax)

    def n_frames(self, n_samples: int) -> int:
        """Frames of a signal of ``n_samples`` samples (centred framing)."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """A short hash of the settings and the feature code version (the cache folder name)."""
        text = json.dumps({**self.to_dict(), "version": FEATURE_VERSION}, sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


PRESETS = {
    # The FAT2019 winners' settings (argus-freesound): 44.1 kHz, 128 mels, hop 690, n_fft 2560.
    "fat2019": MelSettings(sample_rate=44100, n_mels=128, n_fft=2560, hop_length=690, fmin=20.0),
    # Small enough for a 2-core CPU: 16 kHz, 40 mels, 32 ms windows, 20 ms hop.
    "fast": MelSettings(sample_rate=16000, n_mels=40, n_fft=512, hop_length=320, fmin=20.0),
}


def get_preset(name: str | MelSettings) -> MelSettings:
    if isinstance(name, MelSettings):
        return name
    if name not in PRESETS:
        raise OptionError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------- mel scale (Slaney, as librosa)

_F_SP = 200.0 / 3           # Hz per mel below 1 kHz (linear part)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz):
    """Slaney mel scale: linear below 1 kHz, logarithmic above (1 kHz = 15 mel)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, shape (n_mels, n_fft // 2 + 1), float64.

    Filter i rises from centre i-1 to centre i and falls to centre i+1 (centres equally spaced in
    mel between fmin and fmax); each is scaled by 2 / bandwidth so all have the same area.
    """
    fmax = sample_rate / 2 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise OptionError(f"mel range fmin={fmin} Hz, fmax={fmax} Hz must satisfy "
                          f"0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2}")
    fft_hz = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    width = np.diff(edges)                                  # (n_mels + 1,)
    offset = edges[:, None] - fft_hz[None, :]               # (n_mels + 2, n_bins)
    rising = -offset[:-2] / width[:-1, None]
    falling = offset[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


# ---------------------------------------------------------------- STFT and log-mel


def stft_power(signal: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT|^2 with a periodic Hann window and centred, zero-padded frames.

    signal: (n_samples,) -> (n_fft // 2 + 1, 1 + n_samples // hop_length), float64.
    """
    signal = np.asarray(signal, dtype=np.float64)
    padded = np.pad(signal, n_fft // 2)
    n_frames = 1 + len(signal) // hop_length
    # frames as a strided view: no copy until the windowed product
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:n_frames]
    window = get_window("hann", n_fft, fftbins=True)
    spectrum = np.fft.rfft(frames * window, n=n_fft, axis=1)
    return (spectrum.real ** 2 + spectrum.imag ** 2).T


def power_to_db(power: np.ndarray, top_db: float | None = 80.0) -> np.ndarray:
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    if top_db is not None:
        db = np.maximum(db, db.max() - top_db)
    return db


_FILTERBANKS: dict[tuple, np.ndarray] = {}


def log_mel(signal: np.ndarray, settings: MelSettings) -> np.ndarray:
    """Log-mel spectrogram of a signal already at ``settings.sample_rate``.

    signal: (n_samples,) -> (n_mels, 1 + n_samples // hop_length), float32, in dB.
    """
    key = (settings.sample_rate, settings.n_fft, settings.n_mels, settings.fmin, settings.fmax_hz)
    if key not in _FILTERBANKS:
        _FILTERBANKS[key] = mel_filterbank(*key)
    mel = _FILTERBANKS[key] @ stft_power(signal, settings.n_fft, settings.hop_length)
    return power_to_db(mel, settings.top_db).astype(np.float32)


def file_log_mel(path: Path | str, settings: MelSettings) -> np.ndarray:
    """Read ``path`` (resampled to the settings' rate) -> (n_mels, n_frames) float32."""
    return log_mel(read_audio(path, settings.sample_rate), settings)


# ---------------------------------------------------------------- cache


def cache_path(cache_dir: Path | str, path: Path | str, settings: MelSettings) -> Path:
    """Where the spectrogram of ``path`` is cached: keyed by the settings and by the file's
    resolved path, size and modification time (an edited file gets a new entry)."""
    path = Path(path).resolve()
    stat = path.stat()
    digest = hashlib.sha1(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode("utf-8"))
    return Path(cache_dir) / settings.key() / f"{digest.hexdigest()[:24]}.npy"


def cached_log_mel(path: Path | str, settings: MelSettings,
                   cache_dir: Path | str | None = None) -> np.ndarray:
    """:func:`file_log_mel` through the cache; returns (n_mels, n_frames) float16.

    float16 keeps 0.06 dB resolution at 100 dB and halves memory, so whole data sets stay in RAM.
    """
    if cache_dir is None:
        return file_log_mel(path, settings).astype(np.float16)
    if not Path(path).is_file():
        read_audio(path, settings.sample_rate)          # raises the "missing file" AudioError
    where = cache_path(cache_dir, path, settings)
    if where.exists():
        try:
            return np.load(where, allow_pickle=False)
        except (OSError, ValueError):  # a damaged entry is recomputed, never trusted
            pass
    spec = file_log_mel(path, settings).astype(np.float16)
    atomic_save_npy(where, spec)
    return spec


def load_spectrograms(paths: Sequence[Path | str], settings: MelSettings, *,
                      cache_dir: Path | str | None = None, skip_bad: bool = False,
                      on_progress: Callable[[int, int], None] | None = None
                      ) -> tuple[list[np.ndarray | None], dict[int, AudioError]]:
    """Log-mel spectrograms of ``paths``: a list of (n_mels, n_frames) float16 arrays.

    A bad file raises its AudioError, or with ``skip_bad`` leaves None at its place and its error
    in the returned {index: error} dict.
    """
    specs: list[np.ndarray | None] = []
    errors: dict[int, AudioError] = {}
    total = len(paths)
    for i, path in enumerate(paths):
        try:
            specs.append(cached_log_mel(path, settings, cache_dir))
        except AudioError as error:
            if not skip_bad:
                raise
            specs.append(None)
            errors[i] = error
        if on_progress is not None and ((i + 1) % 50 == 0 or i + 1 == total):
            on_progress(i + 1, total)
    return specs, errors


# ---------------------------------------------------------------- statistics for sklearn


def logmel_statistics(spec: np.ndarray) -> np.ndarray:
    """A fixed-length summary of a log-mel spectrogram (n_mels, n_frames) -> (n_mels * 6,) float32.

    Per mel band, over time: mean, std, min, max, and of the frame-to-frame difference (delta) the
    mean absolute value and the std; blocks in that order (see :func:`statistics_names`).
    """
    spec = np.asarray(spec, dtype=np.float32)
    delta = np.diff(spec, axis=1) if spec.shape[1] > 1 else np.zeros_like(spec)
    return np.concatenate([spec.mean(axis=1), spec.std(axis=1), spec.min(axis=1),
                           spec.max(axis=1), np.abs(delta).mean(axis=1), delta.std(axis=1)]
                          ).astype(np.float32)


def statistics_names(n_mels: int) -> list[str]:
    """Column names of :func:`logmel_statistics`, e.g. 'mel003_mean'."""
    return [f"mel{j:03d}_{stat}" for stat in STAT_NAMES for j in range(n_mels)]

