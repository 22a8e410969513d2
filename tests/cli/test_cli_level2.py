"""`stack train`, `stack tune`, `stack predict` through typer's CliRunner."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from stacker import layout
from stacker.cli.app import app
from stacker.simulate import write_simulated_layout

runner = CliRunner()


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["bark", "meow", "moo", "tweet"]
    n_rows = 60
    labels = [tuple(sorted({classes[i % 4]} | ({classes[int(rng.integers(4))]}
                                                if rng.random() < 0.3 else set())))
              for i in range(n_rows)]
    fold = rng.permutation(np.arange(n_rows) % 3)
    path = tmp_path / "layout"
    write_simulated_layout(path, [f"{i:03d}.wav" for i in range(n_rows)], labels, fold,
                           n_experiments=3, n_test=12, classes=classes)
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_writes_an_experiment_and_prints_the_cv_table(root):
    result = invoke("train", "--root", root, "--name", "stack_mlp_001", "--max-epochs", 3,
                    "--device", "cpu", "--seeds", "1,2")
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "Level-2 CV" in result.output
    meta = layout.read_meta(root, "stack_mlp_001")
    assert meta["level"] == 2 and meta["seeds"] == [1, 2]
    assert meta["inputs"] == ["sim_000", "sim_001", "sim_002"]
    for k in (0, 1, 2):
        assert (root / "stack_mlp_001" / f"fold_{k}" / "model.pt").exists()
        assert (root / "stack_mlp_001" / f"fold_{k}" / "test" / "probs.csv").exists()
    # the CV in meta is the one printed
    assert f"{meta['cv']:.4f}" in result.output


def test_train_records_honest_early_stopping_and_the_optimistic_option(root):
    honest = invoke("train", "--root", root, "--name", "honest", "--max-epochs", 2, "--device", "cpu")
    assert honest.exit_code == 0, honest.output
    assert "inner hold-out" in honest.output and "out of fold" in honest.output
    meta = layout.read_meta(root, "honest")
    assert meta["early_stopping"] == "inner-holdout" and "cv_note" not in meta
    assert meta["params"]["inner_fraction"] == 0.2
    fold_params = json.loads((root / "honest" / "fold_0" / "params.json").read_text())
    assert fold_params["early_stopping"] == "inner-holdout" and fold_params["n_stop_rows"] > 0
    old = invoke("train", "--root", root, "--name", "old", "--max-epochs", 2, "--device", "cpu",
                 "--subset", "sim_000,sim_001,sim_002", "--early-stop-on-fold")
    assert old.exit_code == 0, old.output
    assert "optimistic" in old.output
    meta = layout.read_meta(root, "old")
    assert meta["early_stopping"] == "fold" and "optimistic" in meta["cv_note"]
    help_text = invoke("train", "--help").output
    assert "--early-stop-on-fold" in help_text and "optimistic" in help_text


def test_train_refuses_an_existing_name_unless_force(root):
    assert invoke("train", "--root", root, "--name", "l2", "--max-epochs", 1).exit_code == 0
    again = invoke("train", "--root", root, "--name", "l2", "--max-epochs", 1)
    assert again.exit_code == 1 and "already exists" in again.output
    assert "Traceback" not in again.output
    assert invoke("train", "--root", root, "--name", "l2", "--max-epochs", 1, "--force").exit_code == 0


def test_per_seed_writes_one_experiment_per_seed_and_level2_is_not_an_input(root):
    result = invoke("train", "--root", root, "--name", "m", "--max-epochs", 1, "--seeds", "4,5",
                    "--per-seed")
    assert result.exit_code == 0, result.output
    assert layout.read_meta(root, "m_seed4")["seeds"] == [4]
    assert layout.read_meta(root, "m_seed5")["seeds"] == [5]
    assert not (root / "m").exists()
    result = invoke("train", "--root", root, "--name", "n", "--max-epochs", 1)
    assert layout.read_meta(root, "n")["inputs"] == ["sim_000", "sim_001", "sim_002"]
    result = invoke("train", "--root", root, "--name", "o", "--max-epochs", 1,
                    "--subset", "m_seed4,sim_002")
    assert result.exit_code == 0, result.output
    assert layout.read_meta(root, "o")["inputs"] == ["m_seed4", "sim_002"]


def test_predict_reproduces_and_detects_a_changed_file(root):
    assert invoke("train", "--root", root, "--name", "l2", "--max-epochs", 2).exit_code == 0
    result = invoke("predict", "--root", root, "--name", "l2")
    assert result.exit_code == 0, result.output
    assert "ok: 3 fold model(s) reproduce" in result.output
    path = layout.probs_path(root, "l2", 1, "test")
    frame = pd.read_csv(path, dtype={"fname": str})
    frame.iloc[0, 1] = min(1.0, frame.iloc[0, 1] + 0.01)
    layout.atomic_write_text(path, frame.to_csv(index=False))
    result = invoke("predict", "--root", root, "--name", "l2")
    assert result.exit_code == 1 and "differ from the saved ones" in result.output
    result = invoke("predict", "--root", root, "--name", "sim_000")
    assert result.exit_code == 1 and "not a level-2 experiment" in result.output


def test_tune_then_train_with_best_params(root):
    result = invoke("tune", "--root", root, "--trials", 2, "--max-epochs", 1, "--holdout-fold", 0,
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "Best trials" in result.output and "optimistic" in result.output
    assert "held-out fold 0" in result.output
    saved = json.loads((root / ".stack" / "best_params.json").read_text())
    result = invoke("train", "--root", root, "--name", "tuned", "--params", "best")
    assert result.exit_code == 0, result.output
    assert "optimistic" in result.output
    meta = layout.read_meta(root, "tuned")
    assert meta["params"] == saved["params"] and meta["params_source"] == "best"


@pytest.mark.parametrize("args, message", [
    (["--seeds", "a,b"], "--seeds must be integers"),
    (["--seeds", "1,1"], "each once"),
    (["--subset", "nope"], "not an experiment"),
    (["--subset", "best"], "no subset search result yet"),
    (["--params", "missing.json"], "does not exist"),
    (["--metric", "f1"], "unknown metric 'f1'"),
    (["--name", "sim_000", "--force"], "is one of the input experiments"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda"),
])
def test_train_bad_options_print_one_line(root, args, message):
    base = ["train", "--root", root, "--max-epochs", 1]
    if "--name" not in args:
        base += ["--name", "x"]
    result = invoke(*base, *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_refused(root):
    result = invoke("train", "--root", root, "--name", "x", "--device", "cuda")
    assert result.exit_code == 1 and "no CUDA device" in result.output


def test_tune_bad_storage_and_fold(root):
    result = invoke("tune", "--root", root, "--trials", 1, "--holdout-fold", 9)
    assert result.exit_code == 1 and "--holdout-fold 9 is not a fold" in result.output
    result = invoke("tune", "--root", root, "--trials", 1, "--storage", "nosuchdb://x")
    assert result.exit_code == 1 and "cannot be opened" in result.output
