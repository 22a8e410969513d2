"""The embedded synthetic dataset: deterministic, well-formed, FAT2019-shaped, labels match audio."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from first_level.synth import CLASS_NAMES, CLASSES, generate_dataset, make_clip, read_labels
from stacker import layout
from stacker.errors import OptionError, OutputExistsError


def _digest(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synth") / "data", n_train=60, n_test=15, seed=3)


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    a = generate_dataset(tmp_path / "a", n_train=24, n_test=6, seed=7)
    b = generate_dataset(tmp_path / "b", n_train=24, n_test=6, seed=7)
    c = generate_dataset(tmp_path / "c", n_train=24, n_test=6, seed=8)
    assert _digest(a.root) == _digest(b.root)
    assert sf.read(a.train_dir / "train_00000.wav")[0].tolist() != \
        sf.read(c.train_dir / "train_00000.wav")[0].tolist()


def test_a_clip_does_not_depend_on_how_many_were_asked_for(tmp_path):
    small = generate_dataset(tmp_path / "small", n_train=12, n_test=2, seed=5)
    large = generate_dataset(tmp_path / "large", n_train=30, n_test=4, seed=5)
    for name in ("train_00000.wav", "train_00011.wav"):
        assert (small.train_dir / name).read_bytes() == (large.train_dir / name).read_bytes()
    assert (small.test_dir / "test_00001.wav").read_bytes() == (large.test_dir / "test_00001.wav").read_bytes()


def test_labels_one_to_three_distinct_known_classes_all_present(dataset):
    for csv in (dataset.train_csv, dataset.test_labels_csv):
        names, labels = read_labels(csv)
        assert all(1 <= len(row) <= 3 and len(set(row)) == len(row) for row in labels)
        assert all(set(row) <= set(CLASS_NAMES) for row in labels)
    names, labels = read_labels(dataset.train_csv)
    assert {c for row in labels for c in row} == set(CLASS_NAMES)
    counts = np.bincount([len(row) for row in labels], minlength=4)
    assert counts[1] > 0 and counts[2] > 0 and counts[3] > 0
    assert len(CLASS_NAMES) >= 10 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)


def test_files_are_fat2019_shaped(dataset):
    raw = dataset.train_csv.read_text().splitlines()
    assert raw[0] == "fname,labels"
    multi = [line for line in raw[1:] if line.count(",") > 1]
    assert multi and all(line.split(",", 1)[1].startswith('"') for line in multi)   # quoted
    names, labels = read_labels(dataset.train_csv)
    assert sorted(p.name for p in dataset.train_dir.glob("*.wav")) == sorted(names)
    test_names, _ = read_labels(dataset.test_labels_csv)
    template = pd.read_csv(dataset.sample_submission)
    assert list(template.columns) == ["fname", *CLASS_NAMES]
    assert template.fname.tolist() == test_names and (template.iloc[:, 1:] == 0).all().all()
    assert sorted(p.name for p in dataset.test_dir.glob("*.wav")) == sorted(test_names)
    vocabulary = pd.read_csv(dataset.vocabulary, header=None)
    assert vocabulary[1].tolist() == list(CLASS_NAMES)
    meta = json.loads(dataset.meta.read_text())
    assert meta["seed"] == 3 and meta["n_train"] == 60 and meta["classes"] == list(CLASS_NAMES)
    # the layout's own label parser reads it
    frame = layout.read_csv_table(dataset.train_csv)
    assert [layout.split_labels(v) for v in frame.labels] == labels


def test_wavs_are_readable_16k_pcm_clips_without_clipping(dataset):
    for path in sorted(dataset.train_dir.glob("*.wav"))[:10]:
        audio, rate = sf.read(path, dtype="float32")
        info = sf.info(path)
        assert rate == 16000 and info.subtype == "PCM_16" and info.channels == 1
        assert audio.shape == (24000,)
        peak = np.abs(audio).max()
        assert 0.25 < peak < 0.95


def _band_energy(audio, rate, low, high):
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    return spectrum[(freqs >= low) & (freqs < high)].sum() / spectrum.sum()


@pytest.mark.parametrize("name,low,high", [("noise_high", 3000, 7000), ("noise_low", 100, 800),
                                           ("thump", 30, 220)])
def test_labels_match_the_audio(name, low, high):
    """Clips holding a band-limited class put clearly more of their energy in its band."""
    j = CLASS_NAMES.index(name)
    others = [k for k in range(len(CLASSES)) if k != j]
    with_it, without = [], []
    for i in range(40):
        rng = np.random.default_rng([11, i])
        audio, labels = make_clip(rng, sample_rate=16000, clip_seconds=1.5,
                                  first_class=j if i % 2 == 0 else others[i % len(others)])
        (with_it if name in labels else without).append(_band_energy(audio, 16000, low, high))
    assert len(with_it) >= 20 and len(without) >= 5
    assert np.median(with_it) > 1.5 * np.median(without)


def test_refuses_an_existing_dataset_unless_forced(tmp_path):
    generate_dataset(tmp_path / "d", n_train=12, n_test=2, seed=0)
    with pytest.raises(OutputExistsError, match="`force`"):
        generate_dataset(tmp_path / "d", n_train=12, n_test=2, seed=0)
    generate_dataset(tmp_path / "d", n_train=12, n_test=2, seed=1, force=True)
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["seed"] == 1


@pytest.mark.parametrize("options", [dict(n_train=5, n_test=2), dict(n_train=20, n_test=0),
                                     dict(n_train=20, n_test=2, sample_rate=4000),
                                     dict(n_train=20, n_test=2, clip_seconds=0.1)])
def test_bad_options_raise_option_error(tmp_path, options):
    with pytest.raises(OptionError):
        generate_dataset(tmp_path / "x", **options)


def test_progress_reaches_the_total(tmp_path):
    calls = []
    generate_dataset(tmp_path / "p", n_train=60, n_test=10, seed=0,
                     on_progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (70, 70) and all(t == 70 for _, t in calls)


def test_corrupt_labels_replaces_each_label_at_the_given_rate():
    from first_level.synth import corrupt_labels
    rng = np.random.default_rng(0)
    clean = ("bell", "tone")
    rows = [corrupt_labels(clean, 0.3, rng) for _ in range(4000)]
    assert all(len(set(r)) == 2 and r == tuple(sorted(r)) for r in rows)
    wrong = np.mean([len(set(r) - set(clean)) / 2 for r in rows])
    assert abs(wrong - 0.3) < 0.02
    assert corrupt_labels(clean, 0.0, rng) == clean
    assert not set(corrupt_labels(clean, 1.0, rng)) & set(clean)


def test_noisy_set_is_written_beside_an_unchanged_curated_set(tmp_path):
    plain = generate_dataset(tmp_path / "plain", n_train=12, n_test=2, seed=4, clip_seconds=0.5,
                             sample_rate=8000)
    noisy = generate_dataset(tmp_path / "noisy", n_train=12, n_test=2, seed=4, clip_seconds=0.5,
                             sample_rate=8000, n_noisy=40, noisy_rate=0.5)
    assert plain.train_csv.read_bytes() == noisy.train_csv.read_bytes()
    assert not plain.noisy_csv.exists()
    names, labels = read_labels(noisy.noisy_csv)
    truth_names, truth = read_labels(noisy.noisy_truth_csv)
    assert names == truth_names and len(names) == 40
    assert all((noisy.noisy_dir / n).is_file() for n in names)
    assert [len(a) for a in labels] == [len(b) for b in truth]
    wrong = sum(len(set(a) - set(b)) for a, b in zip(labels, truth)) / sum(map(len, truth))
    assert 0.3 < wrong < 0.7
    meta = json.loads(noisy.meta.read_text())
    assert meta["n_noisy"] == 40 and meta["noisy_rate"] == 0.5
    with pytest.raises(OptionError, match="noisy_rate"):
        generate_dataset(tmp_path / "bad", n_train=12, n_test=2, n_noisy=3, noisy_rate=2)
