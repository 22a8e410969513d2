"""`stack collect` from the command line, and the issue's acceptance test on real FAT2019 rows."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stacker import layout
from stacker.cli.app import app
from stacker.metrics import lwlrap
from stacker.metrics_reference import reference_lwlrap
from stacker.simulate import write_simulated_layout

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["collect", *map(str, args)])


def test_collect_prints_the_leaderboard_and_writes_it(small_layout):
    root = small_layout()
    result = invoke("--root", root)
    assert result.exit_code == 0, result.output
    assert "Leaderboard (lwlrap, higher is better)" in result.output
    assert "Correlation of OOF predictions" in result.output
    assert "3 experiment(s), 60 rows, 20 test rows, 4 classes, 3 folds" in result.output
    board = pd.read_csv(root / ".stack" / "leaderboard.csv")
    assert list(board.columns[:5]) == ["experiment", "level", "cv", "fold_mean", "fold_std"]
    assert list(board.columns[5:]) == ["fold_0", "fold_1", "fold_2"]
    assert sorted(board.experiment) == ["sim_000", "sim_001", "sim_002"]
    assert board.cv.is_monotonic_decreasing                     # best first
    for name, cv in zip(board.experiment, board.cv):
        assert name in result.output and f"{cv:.4f}" in result.output
    assert sorted(p.name for p in (root / ".stack").iterdir()) == ["cache", "leaderboard.csv", "lock"]


def test_collect_with_a_loss_metric_sorts_lowest_first(small_layout):
    root = small_layout()
    result = invoke("--root", root, "--metric", "log_loss", "--no-cache")
    assert result.exit_code == 0, result.output
    assert "Leaderboard (log_loss, lower is better)" in result.output
    board = pd.read_csv(root / ".stack" / "leaderboard.csv")
    assert board.cv.is_monotonic_increasing


def test_strict_mode_fails_with_one_line(small_layout):
    root = small_layout()
    layout.probs_path(root, "sim_001", 1, "val").write_text("")
    result = invoke("--root", root, "--strict")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1
    assert "experiment 'sim_001'" in errors[0] and "predictions file is empty" in errors[0]
    assert not (root / ".stack" / "leaderboard.csv").exists()


def test_default_mode_warns_and_collects_the_rest(small_layout):
    root = small_layout()
    layout.probs_path(root, "sim_001", 1, "val").write_text("")
    result = invoke("--root", root)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 1 and "experiment 'sim_001'" in warnings[0]
    assert "2 experiment(s)" in result.output
    board = pd.read_csv(root / ".stack" / "leaderboard.csv")
    assert sorted(board.experiment) == ["sim_000", "sim_002"]


@pytest.mark.parametrize("args, message", [
    (["--metric", "f1"], "unknown metric 'f1'; choose one of: lwlrap"),
    (["--root", "{tmp}/nowhere"], "folds file is missing"),
])
def test_user_errors_exit_1_without_traceback(tmp_path, args, message):
    result = invoke(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output


def test_a_missing_folds_file_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("--root", "nowhere")
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "nowhere/folds.csv: folds file is missing" in lines[0]
    assert "stack make-folds train.csv --root nowhere" in lines[0] and "copy" in lines[0]
    assert not (tmp_path / "nowhere").exists()   # nothing was made where the folds were looked for


@pytest.mark.parametrize("mode", ["bars", "lines"])
def test_a_missing_folds_file_is_said_before_any_progress_is_drawn(tmp_path, monkeypatch, mode):
    """In a terminal (bars) as in a pipe (lines): the error line alone, no bar or progress line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STACK_PROGRESS", mode)
    result = invoke("--root", "nowhere")
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.strip()] == [
        line for line in result.output.splitlines() if line.startswith("error:")], result.output
    assert "collecting" not in result.output and "━" not in result.output


# ---------------------------------------------------------------- acceptance: real FAT2019 rows


def _read_val_naively(root, name, fold, classes):
    """{id: float32 row in ``classes`` order} straight from the CSV text."""
    with open(layout.probs_path(root, name, fold, "val"), newline="") as handle:
        rows = list(csv.reader(handle))
    column = {c: j for j, c in enumerate(rows[0])}
    return {r[0]: np.array([np.float32(r[column[c]]) for c in classes]) for r in rows[1:]}


def test_acceptance_real_fat2019_rows_score_like_naive_lwlrap(tmp_path, shared_data):
    source = shared_data / "fat2019" / "train_curated.csv"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    with open(source, newline="") as handle:
        rows = list(csv.DictReader(handle))
    ids = [r["fname"] for r in rows]
    labels = [tuple(r["labels"].split(",")) for r in rows]
    assert len(ids) == 4970
    fold = np.random.default_rng(0).permutation(np.arange(len(ids)) % 5)
    root = tmp_path / "fat2019"
    write_simulated_layout(root, ids, labels, fold, n_experiments=2, n_test=30, seed=1)
    folds = layout.read_folds(root)
    assert len(folds.classes) == 80

    result = invoke("--root", root)
    assert result.exit_code == 0, result.output
    assert "2 experiment(s), 4970 rows, 30 test rows, 80 classes, 5 folds" in result.output
    board = pd.read_csv(root / ".stack" / "leaderboard.csv").set_index("experiment")

    truth = np.zeros((len(ids), 80), dtype=np.uint8)
    for i, row_labels in enumerate(labels):
        for name in row_labels:
            truth[i, folds.classes.index(name)] = 1
    position = {row_id: i for i, row_id in enumerate(ids)}
    for name in ("sim_000", "sim_001"):
        scores = np.zeros((len(ids), 80), dtype=np.float32)
        for k in range(5):
            for row_id, values in _read_val_naively(root, name, k, folds.classes).items():
                scores[position[row_id]] = values
        naive = reference_lwlrap(truth, scores)
        assert board.loc[name, "cv"] == pytest.approx(naive, abs=1e-9)
        assert f"{naive:.4f}" in result.output
        per_fold = [reference_lwlrap(truth[fold == k], scores[fold == k]) for k in range(5)]
        for k in range(5):
            assert board.loc[name, f"fold_{k}"] == pytest.approx(per_fold[k], abs=1e-9)
        assert board.loc[name, "fold_mean"] == pytest.approx(np.mean(per_fold), abs=1e-9)
        assert board.loc[name, "fold_std"] == pytest.approx(np.std(per_fold), abs=1e-9)
        assert lwlrap(truth, scores) == pytest.approx(naive, abs=1e-9)
