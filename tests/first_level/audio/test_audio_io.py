"""first_level.audio.io (read, resample, trim/pad) and first_level.audio.metadata (readers)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.signal import resample as fft_resample

from first_level.audio.io import AudioError, list_audio_files, pad_or_trim, random_crop, read_audio, resample
from first_level.audio.metadata import MetadataError, read_metadata

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
FAT_CLIP = SHARED_DATA / "fat2019" / "audio" / "00c4e82c.wav"


def write_tone(path: Path, freq: float, *, rate: int = 8000, seconds: float = 0.5,
               channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    signal = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = signal if channels == 1 else np.stack([signal] * channels, axis=1)
    soundfile.write(str(path), data, rate, subtype="PCM_16")
    return signal


def test_read_audio_mono_float32(tmp_path):
    expected = write_tone(tmp_path / "a.wav", 440.0)
    signal = read_audio(tmp_path / "a.wav", 8000)
    assert signal.dtype == np.float32 and signal.shape == (4000,)
    assert np.allclose(signal, expected, atol=1e-4)   # 16-bit quantisation


def test_read_audio_averages_channels(tmp_path):
    t = np.arange(800) / 8000
    left, right = np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 700 * t)
    soundfile.write(str(tmp_path / "s.wav"), np.stack([left, right], axis=1) * 0.5, 8000,
                    subtype="FLOAT")
    assert np.allclose(read_audio(tmp_path / "s.wav", 8000), (left + right) / 4, atol=1e-6)


def test_read_audio_resamples_and_keeps_the_pitch(tmp_path):
    write_tone(tmp_path / "a.wav", 1000.0, rate=8000, seconds=1.0)
    signal = read_audio(tmp_path / "a.wav", 16000)
    assert signal.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(signal))
    assert np.argmax(spectrum) == 1000   # 1 Hz bins over one second


def test_resample_matches_fft_resampling_on_a_band_limited_signal():
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    # whole cycles over the window, so the FFT method's periodic assumption holds
    signal = sum(rng.normal() * np.sin(2 * np.pi * f * t) for f in (250, 500, 1250))
    fast = resample(signal, 8000, 16000)
    naive = fft_resample(signal, 8000)
    assert fast.shape == naive.shape
    # compare away from the edges, where the polyphase filter has its start-up transient
    assert np.max(np.abs(fast[200:-200] - naive[200:-200])) < 1e-2 * np.max(np.abs(naive))


def test_resample_same_rate_is_a_copy():
    signal = np.arange(5, dtype=np.float32)
    out = resample(signal, 8000, 8000)
    out[0] = 99
    assert signal[0] == 0


@pytest.mark.parametrize("length, offset, mode, expected", [
    (3, 0, "constant", [1, 2, 3]),
    (3, 2, "constant", [3, 4, 5]),
    (7, 0, "constant", [1, 2, 3, 4, 5, 0, 0]),
    (7, 0, "wrap", [1, 2, 3, 4, 5, 1, 2]),
    (5, 0, "constant", [1, 2, 3, 4, 5]),
    (0, 0, "constant", []),
])
def test_pad_or_trim(length, offset, mode, expected):
    signal = np.array([1, 2, 3, 4, 5], dtype=np.float32)
    out = pad_or_trim(signal, length, offset=offset, mode=mode)
    assert out.tolist() == expected
    assert signal.tolist() == [1, 2, 3, 4, 5]   # the caller's array is untouched


@pytest.mark.parametrize("kwargs, match", [
    (dict(length=3, offset=3), "offset"), (dict(length=-1), "length"),
    (dict(length=9, mode="reflect"), "mode")])
def test_pad_or_trim_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pad_or_trim(np.arange(5), **kwargs)


def test_random_crop_is_a_window_of_the_signal_and_seeded():
    signal = np.arange(100, dtype=np.float32)
    crops = [random_crop(signal, 10, np.random.default_rng(3)) for _ in range(2)]
    assert np.array_equal(crops[0], crops[1])
    start = int(crops[0][0])
    assert np.array_equal(crops[0], signal[start:start + 10])
    assert random_crop(signal[:4], 6, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 0, 0]


def test_bad_audio_files_name_the_file(tmp_path):
    (tmp_path / "garbage.wav").write_bytes(b"this is not a wav file at all" * 10)
    soundfile.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), 8000)
    for name, match in (("garbage.wav", "unreadable audio"), ("empty.wav", "no samples"),
                        ("missing.wav", "missing")):
        with pytest.raises(AudioError, match=match) as info:
            read_audio(tmp_path / name, 8000)
        assert name in str(info.value) and "\n" not in str(info.value)


def test_list_audio_files(tmp_path):
    for name in ("b.wav", "a.flac", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.wav").mkdir()
    assert list_audio_files(tmp_path) == ["a.flac", "b.wav"]
    with pytest.raises(AudioError, match="does not exist"):
        list_audio_files(tmp_path / "nope")


def test_fat2019_clip_loads_at_44k():
    if not FAT_CLIP.exists():
        pytest.skip("shared FAT2019 clip not available")
    signal = read_audio(FAT_CLIP, 44100)
    assert signal.shape == (534696,) and signal.dtype == np.float32   # 12.125 s
    assert 0 < np.abs(signal).max() <= 1


# ---------------------------------------------------------------- metadata


def test_fat2019_metadata_splits_quoted_labels(tmp_path):
    path = tmp_path / "train_curated.csv"
    path.write_text('fname,labels\na.wav,"Bark,Motorcycle"\nb.wav,Bark\n')
    meta = read_metadata(path)
    assert meta.format == "fat2019"
    assert meta.ids.tolist() == ["a.wav", "b.wav"]
    assert meta.labels == (("Bark", "Motorcycle"), ("Bark",))
    assert meta.classes == ("Bark", "Motorcycle")


def test_esc50_metadata_keeps_its_folds(tmp_path):
    path = tmp_path / "esc50.csv"
    path.write_text("filename,fold,target,category,esc10,src_file,take\n"
                    "1-100032-A-0.wav,1,0,dog,True,100032,A\n"
                    "2-100038-A-14.wav,2,14,chirping_birds,False,100038,A\n")
    meta = read_metadata(path)
    assert meta.format == "esc50"
    assert meta.labels == (("dog",), ("chirping_birds",))
    assert meta.folds.tolist() == [1, 2]


def test_generic_csv_metadata(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text("fname,label,speaker\n0_george_0.wav,0,george\n1_jackson_3.wav,1,jackson\n")
    meta = read_metadata(path)
    assert meta.format == "csv" and meta.label_column == "label"
    assert meta.labels == (("0",), ("1",))   # digits stay strings
    other = read_metadata(path, label_column="speaker")
    assert other.labels == (("george",), ("jackson",))


def test_test_metadata_may_have_no_labels(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text("clip\nx.wav\ny.wav\n")
    meta = read_metadata(path, require_labels=False)
    assert meta.ids.tolist() == ["x.wav", "y.wav"] and meta.labels == ((), ())


@pytest.mark.parametrize("text, kwargs, match", [
    ("clip,speaker\na.wav,x\n", {}, "no label column"),
    ("fname,label\na.wav,1\n", dict(label_column="tag"), "no label column 'tag'"),
    ("fname,label\na.wav,1\n", dict(file_column="path"), "no file-name column 'path'"),
    ("fname,label\na.wav,1\na.wav,2\n", {}, "'a.wav' appears 2 times"),
    ("fname,label\n,1\n", {}, "row 2: column 'fname' is empty"),
    ("fname,label\n", {}, "header but no rows"),
    ("", {}, "empty"),
    ("fname,label\na.wav,\n", {}, "empty in every row"),
    ("filename,fold,category\na.wav,x,dog\n", {}, "fold 'x' is not an integer"),
    ("fname,label\na.wav,1\n", dict(format="flac"), "unknown metadata format"),
])
def test_bad_metadata(tmp_path, text, kwargs, match):
    path = tmp_path / "meta.csv"
    path.write_text(text)
    with pytest.raises(MetadataError, match=match):
        read_metadata(path, **kwargs)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(MetadataError, match="missing"):
        read_metadata(tmp_path / "nope.csv")
