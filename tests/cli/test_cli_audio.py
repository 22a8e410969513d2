"""`stack first-level audio` and `stack first-level audio-features` end to end on tiny WAVs, and
the bad inputs they must stop on (or skip)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from typer.testing import CliRunner

from first_level.audio.features import file_log_mel, get_preset, logmel_statistics
from stacker import layout
from stacker.cli.app import app

TONES = {"low": 300.0, "mid": 1100.0, "high": 2600.0}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_clip(path: Path, freq: float, rng: np.random.Generator, rate: int = 8000) -> None:
    """A tone with two harmonics and a little noise; length 0.4-0.8 s."""
    t = np.arange(int(rate * rng.uniform(0.4, 0.8))) / rate
    wave = sum(np.sin(2 * np.pi * freq * h * t) / h for h in (1, 2, 3))
    wave = 0.3 * wave + 0.01 * rng.normal(size=len(t))
    soundfile.write(str(path), wave.astype(np.float32), rate, subtype="PCM_16")


@pytest.fixture
def project(tmp_path):
    """train/ (18 clips, 3 classes), test/ (4 clips), meta.csv, and 3 folds under root/."""
    rng = np.random.default_rng(0)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    rows = []
    for label, freq in TONES.items():
        for i in range(6):
            name = f"{label}_{i}.wav"
            write_clip(tmp_path / "train" / name, freq, rng)
            rows.append((name, label))
    for i, freq in enumerate([300.0, 1100.0, 2600.0, 1100.0]):
        write_clip(tmp_path / "test" / f"t{i}.wav", freq, rng)
    pd.DataFrame(rows, columns=["fname", "label"]).to_csv(tmp_path / "meta.csv", index=False)
    made = invoke("make-folds", tmp_path / "meta.csv", "--label-column", "label", "--n-folds", 3,
                  "--root", tmp_path / "root")
    assert made.exit_code == 0, made.output
    return tmp_path


def audio_args(p: Path, *extra, name="cnn"):
    return ["first-level", "audio", "--meta", p / "meta.csv", "--audio-dir", p / "train",
            "--test-dir", p / "test", "--name", name, "--root", p / "root", "--epochs", 1, *extra]


def test_audio_writes_a_layout_that_collect_accepts_and_resumes(project):
    result = invoke(*audio_args(project))
    assert result.exit_code == 0, result.output
    root = project / "root"
    folds = layout.read_folds(root)
    for k in folds.fold_numbers:
        val = layout.read_probs(layout.probs_path(root, "cnn", k, "val"))
        test = layout.read_probs(layout.probs_path(root, "cnn", k, "test"))
        assert sorted(val.ids) == sorted(folds.ids[folds.rows_of_fold(k)])
        assert sorted(test.ids) == ["t0.wav", "t1.wav", "t2.wav", "t3.wav"]
        assert val.columns == ("high", "low", "mid")
        for probs, split in ((val, "val"), (test, "test")):
            windows = layout.read_windows(root, "cnn", k, split, probs.ids)
            assert all(w.ndim == 2 and w.shape[1] == 3 for w in windows)
            assert np.allclose(np.stack([w.mean(axis=0) for w in windows]), probs.values,
                               atol=1e-6)
    meta = json.loads((root / "cnn" / "meta.json").read_text())
    assert meta["model"] == "audio-cnn:fast" and meta["params"]["features"]["n_mels"] == 40
    assert meta["params"]["network"]["epochs"] == 1 and "accuracy" in meta["cv"]
    assert (root / ".stack" / "spectrograms").is_dir()

    collected = invoke("collect", "--root", root, "--strict")
    assert collected.exit_code == 0, collected.output
    assert "cnn" in collected.output

    again = invoke(*audio_args(project))
    assert again.exit_code == 0, again.output
    assert "kept" in again.output and "trained" not in again.output
    changed = invoke(*audio_args(project)[:-1], 2)          # --epochs 2: another set-up
    assert changed.exit_code == 1 and "--force" in changed.output


def test_audio_progress_in_a_pipe_follows_each_fold_epoch_by_epoch(project, monkeypatch):
    monkeypatch.setenv("STACK_PROGRESS", "lines")
    monkeypatch.setenv("STACK_PROGRESS_SECONDS", "0.001")     # every update gets its line
    result = invoke(*audio_args(project)[:-1], 2)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("cnn: folds: ")]
    for k in range(3):
        assert any(line.endswith(f"fold {k}: epoch 1/2") for line in lines), lines
        assert any(f"fold {k}: refit epoch 1/" in line for line in lines), lines
    assert lines[-1].startswith("cnn: folds: done 3/3 in ")


def test_audio_test_set_from_a_test_meta(project):
    pd.DataFrame({"fname": ["t1.wav", "t3.wav"]}).to_csv(project / "test.csv", index=False)
    args = audio_args(project)
    args[args.index("--test-dir") + 1] = project / "test"
    result = invoke(*args, "--test-meta", project / "test.csv")
    assert result.exit_code == 0, result.output
    test = layout.read_probs(layout.probs_path(project / "root", "cnn", 0, "test"))
    assert sorted(test.ids) == ["t1.wav", "t3.wav"]


def _garbage(p):
    (p / "train" / "low_2.wav").write_bytes(b"RIFF" + b"\x00garbage" * 20)


def _empty(p):
    soundfile.write(str(p / "train" / "low_2.wav"), np.zeros(0, np.float32), 8000)


def _missing(p):
    (p / "train" / "low_2.wav").unlink()


def _unknown_label(p):
    meta = pd.read_csv(p / "meta.csv", dtype=str)
    meta.loc[meta.fname == "low_2.wav", "label"] = "zzz"
    meta.to_csv(p / "meta.csv", index=False)


def _extra_row(p):
    with open(p / "meta.csv", "a") as handle:
        handle.write("low_2_copy.wav,low\n")


@pytest.mark.parametrize("damage, message", [
    (_garbage, "low_2.wav: unreadable audio"),
    (_empty, "low_2.wav: audio file has no samples"),
    (_missing, "low_2.wav: file of training row 'low_2.wav' is missing"),
    (_unknown_label, "label 'zzz' is not a class of folds.csv"),
    (_extra_row, "('low_2_copy.wav') is not in folds.csv"),
])
def test_bad_training_input_stops_before_training_naming_the_file(project, damage, message):
    damage(project)
    result = invoke(*audio_args(project))
    assert result.exit_code == 1
    assert message in result.output and "--skip-bad-files" in result.output
    assert len(result.output.strip().splitlines()) <= 2 and "Traceback" not in result.output
    assert not (project / "root" / "cnn" / "fold_0").exists()


def test_skip_bad_files_keeps_the_row_with_the_class_frequencies(project):
    _garbage(project)
    (project / "test" / "t9.wav").write_bytes(b"not audio")
    result = invoke(*audio_args(project, "--skip-bad-files"))
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "low_2.wav" in result.output
    root = project / "root"
    folds = layout.read_folds(root)
    k = int(folds.fold[list(folds.ids).index("low_2.wav")])
    val = layout.read_probs(layout.probs_path(root, "cnn", k, "val"))
    train_rows = folds.fold != k
    prior = folds.y[train_rows & (folds.ids != "low_2.wav")].mean(axis=0)
    row = list(val.ids).index("low_2.wav")
    assert np.allclose(val.values[row], prior, atol=1e-6)
    test = layout.read_probs(layout.probs_path(root, "cnn", k, "test"))
    assert "t9.wav" not in test.ids and len(test.ids) == 4
    meta = json.loads((root / "cnn" / "meta.json").read_text())
    assert meta["audio"]["skipped_training_rows"] == ["low_2.wav"]


@pytest.mark.parametrize("change, message", [
    (lambda a, p: a[:a.index("--test-dir")] + a[a.index("--test-dir") + 2:], "no test set"),
    (lambda a, p: [p / "train" if x == p / "test" else x for x in a], "also a training row"),
    (lambda a, p: [p / "elsewhere" if x == p / "root" else x for x in a], "stack make-folds"),
    (lambda a, p: [p / "nope" if x == p / "train" else x for x in a], "is not a folder"),
    (lambda a, p: a + ["--label-column", "speaker"], "no label column 'speaker'"),
    (lambda a, p: [("bad/name" if x == "cnn" else x) for x in a], "plain folder name"),
])
def test_bad_options(project, change, message):
    result = invoke(*change(audio_args(project), project))
    assert result.exit_code == 1, result.output
    assert message in result.output


# ---------------------------------------------------------------- audio-features


def test_audio_features_feed_the_sklearn_command(project):
    out, out_test = project / "train_features.csv", project / "test_features.csv"
    made = invoke("first-level", "audio-features", "--meta", project / "meta.csv",
                  "--audio-dir", project / "train", "--out", out, "--root", project / "root")
    assert made.exit_code == 0, made.output
    frame = pd.read_csv(out)
    assert frame.columns[0] == "fname" and frame.shape == (18, 1 + 40 * 6)
    first = file_log_mel(project / "train" / frame.fname[0], get_preset("fast"))
    expected = logmel_statistics(first.astype(np.float16))
    assert np.allclose(frame.iloc[0, 1:].to_numpy(dtype=float), expected, rtol=1e-4, atol=1e-3)

    refused = invoke("first-level", "audio-features", "--audio-dir", project / "test",
                     "--out", out)
    assert refused.exit_code == 1 and "--force" in refused.output
    made_test = invoke("first-level", "audio-features", "--audio-dir", project / "test",
                       "--out", out_test, "--no-cache")
    assert made_test.exit_code == 0, made_test.output
    assert pd.read_csv(out_test).fname.tolist() == ["t0.wav", "t1.wav", "t2.wav", "t3.wav"]

    trained = invoke("first-level", "sklearn", "--train", out, "--test", out_test,
                     "--estimator", "logreg", "--name", "logreg", "--root", project / "root",
                     "--threads", 1)
    assert trained.exit_code == 0, trained.output


def test_audio_features_bad_file(project):
    _garbage(project)
    args = ["first-level", "audio-features", "--meta", project / "meta.csv", "--audio-dir",
            project / "train", "--out", project / "f.csv", "--no-cache"]
    stopped = invoke(*args)
    assert stopped.exit_code == 1 and "low_2.wav: unreadable audio" in stopped.output
    assert not (project / "f.csv").exists()
    skipped = invoke(*args, "--skip-bad-files")
    assert skipped.exit_code == 0, skipped.output
    assert "low_2.wav" not in pd.read_csv(project / "f.csv").fname.tolist()
