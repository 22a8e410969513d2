"""Reading audio: WAV/FLAC/OGG through soundfile -> mono float32 at the wanted rate; trim and pad.

Every reader raises :class:`AudioError` (a :class:`~stacker.errors.StackError`) naming the file, so a
command can stop before training or skip the file.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from stacker.errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def read_audio(path: Path | str, sample_rate: int) -> np.ndarray:
    """The file at ``path`` as a mono float32 signal of shape (n_samples,) at ``sample_rate`` Hz.

    Channels are averaged; other rates are resampled with a polyphase filter (exact up/down ratio).
    Raises AudioError when the file is missing, unreadable, empty or not finite.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file is missing; put it in the audio folder or remove "
                         "its row from the metadata")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AudioError(f"{path}: unreadable audio ({detail}); replace the file or pass "
                         "`skip_bad_files`") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file has no samples; replace the file or pass "
                         "`skip_bad_files`")
    signal = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(signal)):
        raise AudioError(f"{path}: audio holds NaN or infinite samples; replace the file or pass "
                         "`skip_bad_files`")
    if rate != sample_rate:
        signal = resample(signal, rate, sample_rate)
    return np.ascontiguousarray(signal, dtype=np.float32)


def resample(signal: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """signal (n,) at ``from_rate`` -> (ceil(n * to_rate / from_rate),) at ``to_rate``."""
    if from_rate == to_rate:
        return np.asarray(signal, dtype=np.float32).copy()
    common = gcd(int(from_rate), int(to_rate))
    out = resample_poly(np.asarray(signal, dtype=np.float64), int(to_rate) // common,
                        int(from_rate) // common)
    return out.astype(np.float32)


def pad_or_trim(signal: np.ndarray, length: int, *, offset: int = 0, mode: str = "constant"
                ) -> np.ndarray:
    """A copy of ``signal`` (n,) with exactly ``length`` samples.

    Longer signals are cut to ``signal[offset:offset + length]``; shorter ones are padded at the end
    with zeros (``mode="constant"``) or by repeating the signal (``mode="wrap"``).
    """
    signal = np.asarray(signal)
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if len(signal) >= length:
        if not 0 <= offset <= len(signal) - length:
            raise ValueError(f"offset {offset} outside [0, {len(signal) - length}]")
        return signal[offset:offset + length].copy()
    if mode == "constant":
        return np.pad(signal, (0, length - len(signal)))
    if mode == "wrap":
        if not len(signal):
            return np.zeros(length, dtype=signal.dtype)
        return np.resize(signal, length)
    raise ValueError(f"mode must be 'constant' or 'wrap', got {mode!r}")


def random_crop(signal: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample window of ``signal`` (zero-padded when it is shorter)."""
    start = int(rng.integers(0, max(len(signal) - length, 0) + 1))
    return pad_or_trim(signal, length, offset=start if len(signal) >= length else 0)


def list_audio_files(folder: Path | str) -> list[str]:
    """Names of the audio files directly in ``folder`` (by extension), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(f"{folder}: audio folder does not exist; pass an existing folder")
    return sorted(entry.name for entry in folder.iterdir()
                  if entry.is_file() and entry.suffix.lower() in AUDIO_EXTENSIONS)
