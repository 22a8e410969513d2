"""End to end through the CLI: make-folds -> first-level sklearn -> collect; bad feature files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stacker import layout
from stacker.cli.app import app

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_dataset(folder: Path, *, single_label: bool, n_rows=90, n_test=25, n_classes=4,
                  seed=0) -> dict:
    """labels.csv, train.csv and test.csv of a small dataset whose features carry the labels."""
    rng = np.random.default_rng(seed)
    classes = [f"c{j}" for j in range(n_classes)]
    n = n_rows + n_test
    if single_label:
        y = np.eye(n_classes, dtype=np.uint8)[np.arange(n) % n_classes]
    else:
        y = (rng.random((n, n_classes)) < 0.35).astype(np.uint8)
        y[np.arange(n), np.arange(n) % n_classes] = 1
    X = y @ rng.normal(scale=2.0, size=(n_classes, 5)) + rng.normal(size=(n, 5))
    ids = [f"clip_{i:03d}.wav" for i in range(n_rows)]
    test_ids = [f"test_{i:03d}.wav" for i in range(n_test)]
    labels = [",".join(c for c, v in zip(classes, row) if v) for row in y[:n_rows]]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"fname": ids, "labels": labels}).to_csv(folder / "labels.csv", index=False)
    columns = [f"f{j}" for j in range(5)]
    train = pd.DataFrame(X[:n_rows], columns=columns)
    train.insert(0, "fname", ids)
    test = pd.DataFrame(X[n_rows:], columns=columns)
    test.insert(0, "fname", test_ids)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    return {"labels": folder / "labels.csv", "train": folder / "train.csv",
            "test": folder / "test.csv", "root": folder / "root"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def sklearn_args(data, estimator, name, *extra):
    return ["first-level", "sklearn", "--train", data["train"], "--test", data["test"],
            "--estimator", estimator, "--name", name, "--root", data["root"], "--threads", 1,
            *extra]


@pytest.mark.parametrize("single_label", [False, True])
def test_folds_two_models_and_collect(tmp_path, single_label):
    data = write_dataset(tmp_path, single_label=single_label)
    made = invoke("make-folds", data["labels"], "--n-folds", 3, "--root", data["root"])
    assert made.exit_code == 0, made.output
    for estimator, name in (("logreg", "lr"), ("rf", "forest")):
        result = invoke(*sklearn_args(data, estimator, name, "--params",
                                      '{"n_estimators": 40}' if estimator == "rf" else "{}"))
        assert result.exit_code == 0, result.output
        assert "CV lwlrap" in result.output
    meta = json.loads((data["root"] / "lr" / "meta.json").read_text())
    assert meta["model"] == "sklearn:logreg" and meta["level"] == 1
    assert meta["fold_hash"] == layout.read_folds(data["root"]).hash
    assert meta["cv"]["lwlrap"] > 0.8
    assert ("accuracy" in meta["cv"]) == single_label
    if single_label:
        probs = layout.read_probs(layout.probs_path(data["root"], "lr", 0, "val")).values
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    collected = invoke("collect", "--root", data["root"], "--strict", "--no-cache")
    assert collected.exit_code == 0, collected.output
    assert "lr" in collected.output and "forest" in collected.output
    assert "2 experiment(s)" in collected.output


def test_resume_and_force_through_the_cli(tmp_path):
    data = write_dataset(tmp_path, single_label=False)
    invoke("make-folds", data["labels"], "--n-folds", 3, "--root", data["root"])
    assert invoke(*sklearn_args(data, "knn", "k")).exit_code == 0
    again = invoke(*sklearn_args(data, "knn", "k"))
    assert again.exit_code == 0 and again.output.count("kept") == 3
    forced = invoke(*sklearn_args(data, "knn", "k", "--force"))
    assert forced.exit_code == 0 and forced.output.count("trained") == 3
    other = invoke(*sklearn_args(data, "knn", "k", "--params", '{"n_neighbors": 3}'))
    assert other.exit_code == 1 and "pass --force" in other.output


def edit_csv(path: Path, change) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    changed = change(frame)
    (frame if changed is None else changed).to_csv(path, index=False)


def _set(frame, row, column, value):
    frame.loc[row, column] = value


@pytest.mark.parametrize("which, change, expected", [
    ("train", lambda f: _set(f, 4, "f2", "abc"), "row 6 (id 'clip_004.wav'), column 'f2': the value 'abc' is not a number"),
    ("train", lambda f: _set(f, 0, "f1", ""), "row 2 (id 'clip_000.wav'), column 'f1': the value is empty or NaN"),
    ("test", lambda f: _set(f, 3, "f0", "nan"), "row 5 (id 'test_003.wav'), column 'f0'"),
    ("train", lambda f: _set(f, 1, "f0", "inf"), "is infinite"),
    ("train", lambda f: _set(f, 7, "fname", "stranger.wav"), "id 'clip_007.wav' of"),
    ("train", lambda f: f.drop(index=[5]), "id 'clip_005.wav' of"),
    ("train", lambda f: f.rename(columns={"f3": "g3"}), "column 'g3' of"),
    ("test", lambda f: f.rename(columns={"f3": "f4", "f4": "f3"}), "another order"),
    ("train", lambda f: _set(f, 2, "fname", "clip_001.wav"), "row 4: id 'clip_001.wav' appears 2 times"),
])
def test_bad_feature_files_stop_before_training(tmp_path, which, change, expected):
    data = write_dataset(tmp_path, single_label=False)
    invoke("make-folds", data["labels"], "--n-folds", 3, "--root", data["root"])
    edit_csv(data[which], change)
    result = invoke(*sklearn_args(data, "logreg", "bad"))
    assert result.exit_code == 1
    assert expected in result.output, result.output
    assert str(data[which].name) in result.output
    assert "Traceback" not in result.output
    assert not (data["root"] / "bad").exists()      # nothing trained, nothing written


def test_extra_training_id_is_named(tmp_path):
    data = write_dataset(tmp_path, single_label=False)
    invoke("make-folds", data["labels"], "--n-folds", 3, "--root", data["root"])
    with open(data["train"], "a") as handle:
        handle.write("stranger.wav,1,2,3,4,5\n")
    result = invoke(*sklearn_args(data, "logreg", "bad"))
    assert result.exit_code == 1 and "row 92: id 'stranger.wav' is not in" in result.output


@pytest.mark.parametrize("extra, expected", [
    (["--params", "{oops"], "--params is not valid JSON"),
    (["--params", "[1]"], "must be a JSON object"),
    (["--estimator", "boost"], "unknown estimator 'boost'"),
    (["--name", "a/b"], "plain folder name"),
])
def test_bad_options(tmp_path, extra, expected):
    data = write_dataset(tmp_path, single_label=False)
    invoke("make-folds", data["labels"], "--n-folds", 3, "--root", data["root"])
    result = invoke(*sklearn_args(data, "logreg", "x"), *extra)
    assert result.exit_code == 1 and expected in result.output, result.output


def test_missing_folds_csv(tmp_path):
    data = write_dataset(tmp_path, single_label=False)
    result = invoke(*sklearn_args(data, "logreg", "x"))
    assert result.exit_code == 1 and "folds.csv" in result.output


def test_mulan_layout_builds_a_layout_collect_accepts(tmp_path):
    """benchmarks/mulan_layout.py on real MULAN data (two fast estimators, 3 folds)."""
    import importlib.util

    if not (SHARED_DATA / "mulan" / "emotions" / "train.csv").exists():
        pytest.skip("../shared/data/mulan is absent")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mulan_layout.py"
    spec = importlib.util.spec_from_file_location("mulan_layout_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = module.build_mulan_layout("emotions", tmp_path / "emotions", n_folds=3,
                                     estimators=("knn", "logreg"))
    folds = layout.read_folds(root)
    assert folds.ids[0] == "train_00000" and len(folds.ids) == 391 and folds.n_folds == 3
    assert list(folds.classes) == (SHARED_DATA / "mulan" / "emotions" / "labels.txt"
                                   ).read_text().split()
    test_ids, y = module.read_test_labels(root)
    truth = pd.read_csv(SHARED_DATA / "mulan" / "emotions" / "test.csv")[list(folds.classes)]
    np.testing.assert_array_equal(y, truth.to_numpy())
    assert test_ids[0] == "test_00000" and len(test_ids) == 202
    result = invoke("collect", "--root", root, "--strict", "--no-cache")
    assert result.exit_code == 0 and "2 experiment(s)" in result.output, result.output
    meta = json.loads((root / "knn" / "meta.json").read_text())
    assert meta["cv"]["lwlrap"] > 0.7 and meta["dataset"] == "mulan/emotions"


def test_sklearn_format_parquet(tmp_path):
    data = write_dataset(tmp_path, single_label=False)
    invoke("make-folds", data["labels"], "--n-folds", 3, "--root", data["root"])
    result = invoke(*sklearn_args(data, "logreg", "lr", "--format", "parquet"))
    assert result.exit_code == 0, result.output
    assert (data["root"] / "lr" / "fold_0" / "val" / "probs.parquet").exists()
    assert not (data["root"] / "lr" / "fold_0" / "val" / "probs.csv").exists()
    collected = invoke("collect", "--root", data["root"], "--strict")
    assert collected.exit_code == 0 and "1 experiment(s)" in collected.output, collected.output
