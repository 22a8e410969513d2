"""The notebook scenario of stack import: unnamed array columns are never assigned silently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stacker.cli.app import app
from stacker.layout import read_folds
from stacker.layout.column_order import class_aucs, natural_key

CLASSES = [f"label_{i}" for i in range(12)]          # the template's (competition's) order
TEXT_ORDER = sorted(CLASSES)                         # label_0, label_1, label_10, label_11, label_2


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def notebook(tmp_path, classes_txt):
    """folds.csv + classes.txt (in ``classes_txt`` order), a template, and a notebook's arrays whose
    columns follow the template; returns (root, paths)."""
    rng = np.random.default_rng(0)
    n, n_test = 240, 40
    y = (rng.random((n, 12)) < 0.15).astype(int)
    y[np.arange(n), rng.integers(0, 12, n)] = 1
    ids = [f"clip_{i:03d}" for i in range(n)]
    pd.DataFrame({"fname": ids, "labels": [",".join(c for c, v in zip(CLASSES, row) if v) for row in y]}
                 ).to_csv(tmp_path / "train.csv", index=False)
    root = tmp_path / "p"
    (root).mkdir()
    if classes_txt is not None:
        (root / "classes.txt").write_text("\n".join(classes_txt) + "\n")
    assert invoke("make-folds", tmp_path / "train.csv", "--root", root).exit_code == 0
    oof = np.clip(0.6 * y + rng.normal(0.2, 0.2, y.shape), 0.01, 0.99)   # columns: template order
    np.save(tmp_path / "oof.npy", oof)
    np.save(tmp_path / "test.npy", rng.random((n_test, 12)))
    test_ids = [f"t{i}" for i in range(n_test)]
    pd.DataFrame({"fname": test_ids, **{c: 0.5 for c in CLASSES}}).to_csv(
        tmp_path / "sample_submission.csv", index=False)
    return root, y


def _imported_auc(root, name, y):
    folds = read_folds(root)
    frame = pd.concat([pd.read_csv(root / name / f"fold_{k}" / "val" / "probs.csv") for k in range(5)])
    frame = frame.set_index("fname").loc[folds.ids]
    position = {c: j for j, c in enumerate(CLASSES)}
    truth = y[:, [position[c] for c in folds.classes]]
    return float(np.nanmean(class_aucs(truth, frame[list(folds.classes)].to_numpy())))


def test_arrays_in_template_order_import_right_with_test_ids(tmp_path):
    root, y = notebook(tmp_path, TEXT_ORDER)        # classes.txt in text order, as before this round
    result = invoke("import", "m", "--oof", tmp_path / "oof.npy", "--test", tmp_path / "test.npy",
                    "--ids", tmp_path / "train.csv", "--test-ids", tmp_path / "sample_submission.csv",
                    "--root", root)
    assert result.exit_code == 0, result.output
    assert _imported_auc(root, "m", y) > 0.9


def test_without_test_ids_a_wrong_classes_txt_order_is_refused_naming_classes(tmp_path):
    root, _ = notebook(tmp_path, TEXT_ORDER)
    result = invoke("import", "m", "--oof", tmp_path / "oof.npy", "--test", tmp_path / "test.npy",
                    "--ids", tmp_path / "train.csv", "--root", root)
    assert result.exit_code == 1
    assert "--classes" in result.output and "natural order" in result.output
    assert "Traceback" not in result.output and not (root / "m").exists()
    fixed = invoke("import", "m", "--oof", tmp_path / "oof.npy", "--test", tmp_path / "test.npy",
                   "--ids", tmp_path / "train.csv", "--root", root, "--classes", ",".join(CLASSES))
    assert fixed.exit_code == 0, fixed.output


def test_classes_txt_from_make_folds_is_already_right(tmp_path):
    root, y = notebook(tmp_path, None)               # classes.txt written by make-folds
    for extra in ([], ["--test-ids", tmp_path / "sample_submission.csv"]):
        name = f"m{len(extra)}"
        result = invoke("import", name, "--oof", tmp_path / "oof.npy", "--test", tmp_path / "test.npy",
                        "--ids", tmp_path / "train.csv", "--root", root, *extra)
        assert result.exit_code == 0, result.output
        assert _imported_auc(root, name, y) > 0.9
        # its test rows are numbered 0.. (no --test-ids): the next import, with the template's
        # ids, would be refused beside it (they predict other test rows)
        __import__("shutil").rmtree(root / name)


def test_classes_that_disagree_with_the_template_are_refused(tmp_path):
    root, _ = notebook(tmp_path, TEXT_ORDER)
    result = invoke("import", "m", "--oof", tmp_path / "oof.npy", "--test", tmp_path / "test.npy",
                    "--ids", tmp_path / "train.csv", "--test-ids", tmp_path / "sample_submission.csv",
                    "--classes", ",".join(TEXT_ORDER), "--root", root)
    assert result.exit_code == 1 and "--classes" in result.output
    assert not (root / "m").exists()


def test_class_aucs_equal_a_naive_pairwise_count():
    rng = np.random.default_rng(1)
    y = (rng.random((50, 4)) < 0.3).astype(int)
    scores = np.round(rng.random((50, 4)), 1)        # ties
    for j in range(4):
        pos, neg = scores[y[:, j] == 1, j], scores[y[:, j] == 0, j]
        naive = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
        assert class_aucs(y, scores)[j] == pytest.approx(naive)


def test_natural_key_orders_numbers_as_numbers():
    assert sorted(["label_10", "label_2", "label_1", "Label_3"], key=natural_key) == [
        "label_1", "label_2", "Label_3", "label_10"]
