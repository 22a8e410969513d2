"""first_level.audio.features: STFT and mel filterbank against naive twins, framing, cache,
log-mel statistics, and the FAT2019 preset on the real clip."""

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from first_level.audio import features
from first_level.audio.features import (
    PRESETS,
    MelSettings,
    cache_path,
    cached_log_mel,
    get_preset,
    hz_to_mel,
    load_spectrograms,
    log_mel,
    logmel_statistics,
    mel_filterbank,
    mel_to_hz,
    power_to_db,
    statistics_names,
    stft_power,
)
from first_level.audio.io import AudioError
from stacker.errors import OptionError

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
FAT_CLIP = SHARED_DATA / "fat2019" / "audio" / "00c4e82c.wav"
TINY = MelSettings(sample_rate=8000, n_mels=16, n_fft=256, hop_length=128, fmin=20.0)


# ---------------------------------------------------------------- naive twins


def naive_hz_to_mel(hz: float) -> float:
    """Slaney's Auditory Toolbox mel scale, one number at a time."""
    if hz < 1000.0:
        return 3.0 * hz / 200.0
    return 15.0 + 27.0 * math.log(hz / 1000.0) / math.log(6.4)


def naive_mel_to_hz(mel: float) -> float:
    if mel < 15.0:
        return 200.0 * mel / 3.0
    return 1000.0 * 6.4 ** ((mel - 15.0) / 27.0)


def naive_filterbank(sr, n_fft, n_mels, fmin, fmax):
    """Triangles with peak 1 at each centre, then scaled to unit area (2 / bandwidth), bin by bin."""
    low, high = naive_hz_to_mel(fmin), naive_hz_to_mel(fmax)
    edges = [naive_mel_to_hz(low + (high - low) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for b in range(n_fft // 2 + 1):
            f = b * sr / n_fft
            if left <= f <= centre:
                w = (f - left) / (centre - left)
            elif centre < f <= right:
                w = (right - f) / (right - centre)
            else:
                w = 0.0
            out[m, b] = w * 2.0 / (right - left)
    return out


def naive_stft_power(signal, n_fft, hop):
    """A direct DFT of every centred, zero-padded, Hann-windowed frame."""
    padded = np.concatenate([np.zeros(n_fft // 2), signal, np.zeros(n_fft // 2)])
    window = [0.5 - 0.5 * math.cos(2 * math.pi * n / n_fft) for n in range(n_fft)]   # periodic
    n_frames = 1 + len(signal) // hop
    out = np.zeros((n_fft // 2 + 1, n_frames))
    for t in range(n_frames):
        frame = [padded[t * hop + n] * window[n] for n in range(n_fft)]
        for k in range(n_fft // 2 + 1):
            re = sum(x * math.cos(2 * math.pi * k * n / n_fft) for n, x in enumerate(frame))
            im = -sum(x * math.sin(2 * math.pi * k * n / n_fft) for n, x in enumerate(frame))
            out[k, t] = re * re + im * im
    return out


# ---------------------------------------------------------------- mel scale and STFT


def test_mel_scale_matches_the_naive_scale_and_round_trips():
    hz = np.array([0.0, 20.0, 500.0, 999.0, 1000.0, 4000.0, 22050.0])
    assert np.allclose(hz_to_mel(hz), [naive_hz_to_mel(h) for h in hz])
    assert hz_to_mel(1000.0) == pytest.approx(15.0)
    assert np.allclose(mel_to_hz(hz_to_mel(hz)), hz)


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    (8000, 256, 16, 20.0, None), (16000, 512, 40, 20.0, 8000.0), (44100, 2560, 128, 20.0, None),
    (16000, 64, 10, 300.0, 3000.0)])
def test_mel_filterbank_matches_the_naive_one(sr, n_fft, n_mels, fmin, fmax):
    fast = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    naive = naive_filterbank(sr, n_fft, n_mels, fmin, sr / 2 if fmax is None else fmax)
    assert fast.shape == (n_mels, n_fft // 2 + 1)
    assert np.allclose(fast, naive, rtol=1e-9, atol=1e-12)


def test_mel_filterbank_rejects_a_bad_range():
    with pytest.raises(OptionError, match="fmin"):
        mel_filterbank(8000, 256, 16, 20.0, 6000.0)


def test_stft_power_matches_a_direct_dft():
    rng = np.random.default_rng(0)
    for length in (100, 64, 33):   # longer than, equal to and shorter than n_fft
        signal = rng.normal(size=length)
        fast = stft_power(signal, 64, 16)
        naive = naive_stft_power(signal, 64, 16)
        assert fast.shape == naive.shape == (33, 1 + length // 16)
        assert np.allclose(fast, naive, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("n_samples", [1, 127, 128, 129, 4000, 4001])
def test_frame_count_is_one_plus_length_over_hop(n_samples):
    spec = log_mel(np.random.default_rng(0).normal(size=n_samples).astype(np.float32), TINY)
    assert spec.shape == (16, 1 + n_samples // 128) == (16, TINY.n_frames(n_samples))
    assert spec.dtype == np.float32


def test_a_tone_lights_the_mel_band_that_holds_its_frequency():
    t = np.arange(8000) / 8000
    spec = log_mel(np.sin(2 * np.pi * 1000 * t), TINY)
    bank = mel_filterbank(8000, 256, 16, 20.0)
    bin_1k = 1000 * 256 // 8000
    assert np.argmax(spec.mean(axis=1)) == np.argmax(bank[:, bin_1k])


def test_power_to_db_floors_and_clips():
    power = np.array([1.0, 1e-3, 0.0, 1e-20])
    assert np.allclose(power_to_db(power, None), [0.0, -30.0, -100.0, -100.0])
    assert np.allclose(power_to_db(power, 20.0), [0.0, -20.0, -20.0, -20.0])


def test_presets():
    fat = get_preset("fat2019")
    assert (fat.sample_rate, fat.n_mels, fat.n_fft, fat.hop_length, fat.fmin, fat.fmax_hz) == \
        (44100, 128, 2560, 690, 20.0, 22050.0)
    assert PRESETS["fast"].sample_rate in range(8000, 16001)
    assert fat.key() != PRESETS["fast"].key()
    with pytest.raises(OptionError, match="unknown preset 'huge'; choose one of fat2019, fast"):
        get_preset("huge")


def test_fat2019_clip_has_the_expected_spectrogram_shape():
    if not FAT_CLIP.exists():
        pytest.skip("shared FAT2019 clip not available")
    spec = features.file_log_mel(FAT_CLIP, get_preset("fat2019"))
    # 534,696 samples at 44.1 kHz, centred frames every 690 samples: 1 + 534696 // 690 = 775
    assert spec.shape == (128, 775)
    assert np.isfinite(spec).all() and spec.max() - spec.min() <= 80.0 + 1e-3


# ---------------------------------------------------------------- cache


def _tone_file(path, freq=440.0, seconds=0.3):
    t = np.arange(int(8000 * seconds)) / 8000
    soundfile.write(str(path), 0.5 * np.sin(2 * np.pi * freq * t), 8000, subtype="PCM_16")
    return path


def test_cache_returns_the_same_spectrogram_and_is_keyed_by_settings_and_file(tmp_path,
                                                                               monkeypatch):
    clip = _tone_file(tmp_path / "a.wav")
    cache = tmp_path / "cache"
    first = cached_log_mel(clip, TINY, cache)
    where = cache_path(cache, clip, TINY)
    assert where.exists() and where.parent.name == TINY.key()
    assert np.array_equal(first, features.file_log_mel(clip, TINY).astype(np.float16))

    calls = []
    monkeypatch.setattr(features, "file_log_mel",
                        lambda *a: calls.append(a) or np.zeros((16, 3), np.float32))
    assert np.array_equal(cached_log_mel(clip, TINY, cache), first)   # read back, not recomputed
    assert calls == []
    other = MelSettings(sample_rate=8000, n_mels=8, n_fft=256, hop_length=128)
    cached_log_mel(clip, other, cache)                                 # other settings: computed
    assert len(calls) == 1 and cache_path(cache, clip, other).parent.name == other.key()
    _tone_file(clip, freq=880.0, seconds=0.4)                          # the file changed
    assert cache_path(cache, clip, TINY) != where


def test_a_damaged_cache_entry_is_recomputed(tmp_path):
    clip = _tone_file(tmp_path / "a.wav")
    cache = tmp_path / "cache"
    first = cached_log_mel(clip, TINY, cache)
    cache_path(cache, clip, TINY).write_bytes(b"broken")
    assert np.array_equal(cached_log_mel(clip, TINY, cache), first)


def test_load_spectrograms_raises_or_skips_bad_files(tmp_path):
    good = _tone_file(tmp_path / "good.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    with pytest.raises(AudioError, match="bad.wav"):
        load_spectrograms([good, bad], TINY, cache_dir=tmp_path / "cache")
    seen = []
    specs, errors = load_spectrograms([good, bad, tmp_path / "gone.wav"], TINY, skip_bad=True,
                                      cache_dir=tmp_path / "cache",
                                      on_progress=lambda d, t: seen.append((d, t)))
    assert specs[0].shape == (16, 1 + 2400 // 128) and specs[1] is None and specs[2] is None
    assert sorted(errors) == [1, 2] and "gone.wav" in str(errors[2])
    assert seen[-1] == (3, 3)


# ---------------------------------------------------------------- statistics


def test_logmel_statistics_match_naive_loops():
    spec = np.random.default_rng(1).normal(size=(5, 9)).astype(np.float32)
    stats = logmel_statistics(spec)
    names = statistics_names(5)
    assert stats.shape == (30,) and len(names) == 30 and len(set(names)) == 30
    for j in range(5):
        row = [float(v) for v in spec[j]]
        delta = [b - a for a, b in zip(row[:-1], row[1:])]
        mean = sum(row) / len(row)
        dmean = sum(delta) / len(delta)
        expected = {
            "mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in row) / len(row)),
            "min": min(row), "max": max(row), "dabs": sum(abs(d) for d in delta) / len(delta),
            "dstd": math.sqrt(sum((d - dmean) ** 2 for d in delta) / len(delta))}
        for stat, value in expected.items():
            assert stats[names.index(f"mel{j:03d}_{stat}")] == pytest.approx(value, abs=1e-5)


def test_logmel_statistics_of_a_single_frame():
    stats = logmel_statistics(np.ones((3, 1), dtype=np.float16))
    assert stats.dtype == np.float32 and np.isfinite(stats).all()
    assert stats[12:].tolist() == [0.0] * 6   # no deltas from one frame
