"""`stack first-level audio` with a noisy set (--noisy-*), the noisy-row filter, and inference
windows of several widths (--infer-windows), end to end on tiny WAVs."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from test_cli_audio import TONES, audio_args, invoke, project, write_clip  # noqa: F401

from first_level.runner import side_path
from stacker import layout
from stacker.layout import workspace


@pytest.fixture
def noisy(project):  # noqa: F811
    """noisy/ (9 clips of the three tones, two of them mislabelled) and noisy.csv."""
    rng = np.random.default_rng(7)
    (project / "noisy").mkdir()
    rows = []
    for i, (label, freq) in enumerate(list(TONES.items()) * 3):
        name = f"n{i}.wav"
        write_clip(project / "noisy" / name, freq, rng)
        rows.append((name, "mid" if i in (0, 4) and label != "mid" else label))
    pd.DataFrame(rows, columns=["fname", "label"]).to_csv(project / "noisy.csv", index=False)
    return project


def noisy_args(p, *extra, name="cnn"):
    return [*audio_args(p, name=name), "--noisy-meta", p / "noisy.csv", "--noisy-audio-dir",
            p / "noisy", *extra]


def test_noisy_rows_train_every_fold_but_are_never_predicted_out_of_fold(noisy):
    folds_before = (noisy / "root" / "folds.csv").read_bytes()
    result = invoke(*noisy_args(noisy))
    assert result.exit_code == 0, result.output
    root = noisy / "root"
    assert (root / "folds.csv").read_bytes() == folds_before
    folds = layout.read_folds(root)
    noisy_ids = {f"n{i}.wav" for i in range(9)}
    for k in folds.fold_numbers:
        val = layout.read_probs(layout.probs_path(root, "cnn", k, "val"))
        assert sorted(val.ids) == sorted(folds.ids[folds.rows_of_fold(k)])
        assert not noisy_ids & set(val.ids)
        side = layout.read_probs(side_path(workspace.noisy_predictions_dir(root, "cnn"), k))
        assert set(side.ids) == noisy_ids and side.columns == ("high", "low", "mid")
    meta = json.loads((root / "cnn" / "meta.json").read_text())
    record = meta["params"]["noisy"]
    assert record["n_rows"] == 9 and len(record["hash"]) == 16
    assert (record["loss"], record["lsoft_beta"], record["fraction"], record["schedule"]) == \
        ("lsoft", 0.7, None, "mixed")
    assert meta["audio"]["noisy_meta"] == str(noisy / "noisy.csv")
    assert set(meta["fold_cv"]) == {str(k) for k in folds.fold_numbers}

    again = invoke(*noisy_args(noisy))
    assert again.exit_code == 0 and "trained" not in again.output, again.output
    other_beta = invoke(*noisy_args(noisy, "--lsoft-beta", 0.5))
    assert other_beta.exit_code == 1 and "--force" in other_beta.output
    frame = pd.read_csv(noisy / "noisy.csv")
    frame.loc[1, "label"] = "high"
    frame.to_csv(noisy / "noisy.csv", index=False)
    other_labels = invoke(*noisy_args(noisy))
    assert other_labels.exit_code == 1 and "--force" in other_labels.output
    plain = invoke(*audio_args(noisy), "--force")     # --force without a noisy set drops them
    assert plain.exit_code == 0, plain.output
    assert not workspace.noisy_predictions_dir(root, "cnn").exists()


def test_pretrain_schedule_and_a_noisy_fraction_run(noisy):
    pretrain = invoke(*noisy_args(noisy, "--noisy-schedule", "pretrain", "--noisy-loss", "plain",
                                  name="pre"))
    assert pretrain.exit_code == 0, pretrain.output
    mixed = invoke(*noisy_args(noisy, "--noisy-fraction", 0.2, "--epoch-rows", 24,
                               "--patience", 7, name="frac"))
    assert mixed.exit_code == 0, mixed.output
    params = json.loads((noisy / "root" / "frac" / "meta.json").read_text())["params"]
    assert params["noisy"]["fraction"] == 0.2 and params["network"]["epoch_rows"] == 24
    assert params["network"]["patience"] == 7


def _curated_in_noisy(p):
    frame = pd.read_csv(p / "noisy.csv")
    frame.loc[2] = ["low_0.wav", "low"]
    (p / "noisy" / "low_0.wav").write_bytes((p / "train" / "low_0.wav").read_bytes())
    frame.to_csv(p / "noisy.csv", index=False)


def _unknown_noisy_label(p):
    frame = pd.read_csv(p / "noisy.csv")
    frame.loc[3, "label"] = "siren"
    frame.to_csv(p / "noisy.csv", index=False)


def _missing_noisy_file(p):
    (p / "noisy" / "n5.wav").unlink()


def _garbage_noisy_file(p):
    (p / "noisy" / "n6.wav").write_bytes(b"not audio at all")


@pytest.mark.parametrize("damage, message", [
    (_curated_in_noisy, "row 4 ('low_0.wav') is also a curated row of folds.csv"),
    (_unknown_noisy_label, "row 5 ('n3.wav'): label 'siren' is not a class"),
    (_missing_noisy_file, "n5.wav: file of noisy row 'n5.wav' is missing"),
    (_garbage_noisy_file, "n6.wav: unreadable audio"),
])
def test_bad_noisy_input_stops_in_one_line_or_is_skipped(noisy, damage, message):
    damage(noisy)
    result = invoke(*noisy_args(noisy))
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
    assert not (noisy / "root" / "cnn").exists()
    skipped = invoke(*noisy_args(noisy), "--skip-bad-files")
    assert skipped.exit_code == 0 and re.search("skipped 1 [a-z ]*noisy", skipped.output), \
        skipped.output
    record = json.loads((noisy / "root" / "cnn" / "meta.json").read_text())
    assert len(record["audio"]["skipped_noisy_rows"]) == 1


@pytest.mark.parametrize("extra, message", [
    (["--noisy-fraction", 0.3], "--noisy-fraction needs --noisy-meta"),
    (["--noisy-filter", "x"], "--noisy-filter needs --noisy-meta"),
    (["--infer-windows", "8,x"], "--infer-windows: 'x' is not a width"),
    (["--infer-windows", "8,8"], "repeats a width"),
    (["--epoch-rows", 1], "--epoch-rows must be at least 2"),
    (["--patience", 0], "--patience must be at least 1 epoch"),
])
def test_bad_noisy_and_window_options(project, extra, message):  # noqa: F811
    result = invoke(*audio_args(project), *extra)
    assert result.exit_code == 1 and message in result.output, result.output


@pytest.mark.parametrize("extra, message", [
    (["--noisy-fraction", 1.0], "--noisy-fraction must be in [0, 1)"),
    (["--noisy-fraction", 0.2, "--noisy-schedule", "pretrain"], "applies to the mixed --noisy-schedule"),
    (["--lsoft-beta", 2], "--lsoft-beta must be in [0, 1]"),
    (["--noisy-min-score", 0.5], "--noisy-min-score needs --noisy-filter"),
    (["--noisy-filter", "nothing", "--noisy-min-score", 0.5], "no experiment 'nothing'"),
    (["--noisy-filter", "cnn", "--noisy-min-score", 0.5], "names the experiment being trained"),
    (["--noisy-filter", "cnn"], "needs --noisy-min-score"),
])
def test_bad_noisy_settings(noisy, extra, message):
    result = invoke(*noisy_args(noisy, *extra))
    assert result.exit_code == 1 and message in result.output, result.output


def test_noisy_filter_keeps_per_fold_the_rows_that_fold_model_agrees_with(noisy):
    assert invoke(*noisy_args(noisy, name="first")).exit_code == 0
    root = noisy / "root"
    plain = invoke(*audio_args(noisy, name="curated_only"))
    assert plain.exit_code == 0
    refused = invoke(*noisy_args(noisy, "--noisy-filter", "curated_only", "--noisy-min-score", 0.5))
    assert refused.exit_code == 1 and "no predictions of the noisy clips" in refused.output

    result = invoke(*noisy_args(noisy, "--noisy-filter", "first", "--noisy-min-score", 0.5,
                                name="second"))
    assert result.exit_code == 0, result.output
    record = json.loads((root / "second" / "meta.json").read_text())["params"]["noisy"]
    labels = pd.read_csv(noisy / "noisy.csv")
    folds = layout.read_folds(root)
    for k in folds.fold_numbers:   # the naive count: fold k's model ranks each row's label
        probs = layout.read_probs(side_path(workspace.noisy_predictions_dir(root, "first"), k))
        frame = pd.DataFrame(probs.values, index=probs.ids, columns=probs.columns)
        kept = 0
        for fname, label in zip(labels["fname"], labels["label"]):
            row = frame.loc[fname]
            rank = int((row >= row[label]).sum())
            kept += 1 / rank >= 0.5
        assert record["filter"]["kept"][str(k)] == kept
    assert record["filter"]["experiment"] == "first" and record["filter"]["min_score"] == 0.5


def test_infer_windows_write_each_windows_width_and_pool_them(project):  # noqa: F811
    result = invoke(*audio_args(project), "--infer-windows", "8,24", "--window-pool", "max")
    assert result.exit_code == 0, result.output
    root = project / "root"
    meta = json.loads((root / "cnn" / "meta.json").read_text())
    assert meta["params"]["network"]["infer_windows"] == [8, 24]
    assert meta["params"]["network"]["window_pool"] == "max"
    for k in layout.read_folds(root).fold_numbers:
        for split in ("val", "test"):
            probs = layout.read_probs(layout.probs_path(root, "cnn", k, split))
            windows = layout.read_windows(root, "cnn", k, split, probs.ids)
            widths = layout.read_window_widths(root, "cnn", k, split)
            assert set(widths) == set(probs.ids)
            for row, row_id in enumerate(probs.ids):
                w, p = widths[row_id], windows[row]
                assert len(w) == len(p) and set(w) == {8, 24}
                pooled = np.mean([p[w == 8].max(axis=0), p[w == 24].max(axis=0)], axis=0)
                np.testing.assert_allclose(probs.values[row], pooled, atol=2e-6)
    collected = invoke("collect", "--root", root, "--strict")
    assert collected.exit_code == 0, collected.output
