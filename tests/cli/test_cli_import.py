"""`stack import`: a notebook's oof/test .npy files -> an experiment `stack collect` accepts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stacker import layout
from stacker.cli.app import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def notebook_files(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    ids = [f"clip_{i:02d}.wav" for i in range(30)]
    classes = ["Bark", "Meow", "Purr"]
    labels = [(classes[i % 3],) for i in range(30)]
    layout.write_folds(root, ids, labels, [i % 5 for i in range(30)])
    y = layout.read_folds(root).y
    for model, noise in (("cnn", 0.2), ("gbm", 0.4)):
        oof = np.clip(y * 0.6 + rng.uniform(0, noise, y.shape), 0, 1)
        np.save(tmp_path / f"oof_{model}.npy", oof)
        np.save(tmp_path / f"test_{model}.npy", rng.uniform(size=(8, 3)))
    pd.DataFrame({"fname": [f"t{i}.wav" for i in range(8)], **{c: 0 for c in classes}}).to_csv(
        tmp_path / "sample_submission.csv", index=False)
    return root


def test_import_two_notebook_models_then_collect(tmp_path):
    root = notebook_files(tmp_path)
    for model, fmt in (("cnn", "csv"), ("gbm", "parquet")):
        result = invoke("import", model, "--oof", tmp_path / f"oof_{model}.npy", "--test",
                        tmp_path / f"test_{model}.npy", "--test-ids",
                        tmp_path / "sample_submission.csv", "--root", root, "--format", fmt)
        assert result.exit_code == 0, result.output
        assert f"imported '{model}'" in result.output and "fold-averaged" in result.output
    assert (root / "gbm" / "fold_4" / "test" / "probs.parquet").exists()
    collected = invoke("collect", "--root", root, "--strict")
    assert collected.exit_code == 0, collected.output
    assert "2 experiment(s), 30 rows, 8 test rows, 3 classes, 5 folds" in collected.output


def test_refusal_is_one_line_exit_1_and_writes_nothing(tmp_path):
    root = notebook_files(tmp_path)
    np.save(tmp_path / "logits.npy", np.full((30, 3), 2.5))
    result = invoke("import", "cnn", "--oof", tmp_path / "logits.npy", "--test",
                    tmp_path / "test_cnn.npy", "--root", root)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "logits.npy" in lines[0] and "--from-logits sigmoid" in lines[0]
    assert "Traceback" not in result.output and not (root / "cnn").exists()
    fixed = invoke("import", "cnn", "--oof", tmp_path / "logits.npy", "--test",
                   tmp_path / "test_cnn.npy", "--root", root, "--from-logits", "sigmoid")
    assert fixed.exit_code == 0, fixed.output


def test_the_command_prints_what_stacker_import_predictions_returns(tmp_path, monkeypatch):
    """One path: `stack import` is stacker.import_predictions on the files, its ImportResult's
    summary the line it prints (the same OOF score the notebook API reports)."""
    import stacker.notebook

    root = notebook_files(tmp_path)
    returned = []
    real = stacker.notebook.import_predictions

    def spy(*args, **kwargs):
        returned.append(real(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(stacker.notebook, "import_predictions", spy)
    result = invoke("import", "cnn", "--oof", tmp_path / "oof_cnn.npy", "--test",
                    tmp_path / "test_cnn.npy", "--root", root, "--classes", "Bark,Meow,Purr")
    assert result.exit_code == 0, result.output
    (imported,) = returned
    assert isinstance(imported, stacker.notebook.ImportResult)
    assert result.output.strip().replace("\n", " ") == imported.summary()
    assert imported.summary().endswith(f"5 folds; OOF lwlrap {imported.cv:.4f}")
    from stacker.metrics import lwlrap

    assert imported.cv == pytest.approx(lwlrap(layout.read_folds(root).y,
                                               np.load(tmp_path / "oof_cnn.npy")))
