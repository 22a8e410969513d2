"""stacker.layout: round trips, atomic writes, labels parsing, and one-file validation."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from stacker import layout
from stacker.errors import LayoutError
from stacker.layout import tables


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- round trips


def test_folds_round_trip(tmp_path):
    ids = ["b.wav", "a.wav", "c.wav", "d.wav"]
    labels = [("Bark",), ("Bark", "Run"), (), ("Run",)]
    layout.write_folds(tmp_path, ids, labels, [1, 0, 1, 0])
    folds = layout.read_folds(tmp_path)
    assert folds.id_column == "fname"
    assert folds.ids.tolist() == ids                        # folds.csv order is kept
    assert folds.labels == (("Bark",), ("Bark", "Run"), (), ("Run",))
    assert folds.classes == ("Bark", "Run")                 # sorted union of labels
    np.testing.assert_array_equal(folds.y, [[1, 0], [1, 1], [0, 0], [0, 1]])
    assert folds.fold.tolist() == [1, 0, 1, 0] and folds.fold_numbers == [0, 1]
    assert folds.rows_of_fold(1).tolist() == [0, 2]
    assert folds.hash == layout.fold_hash(ids, [1, 0, 1, 0])
    assert not folds.is_single_label


def test_fold_hash_ignores_row_order_but_not_assignment():
    assert layout.fold_hash(["a", "b"], [0, 1]) == layout.fold_hash(["b", "a"], [1, 0])
    assert layout.fold_hash(["a", "b"], [0, 1]) != layout.fold_hash(["a", "b"], [1, 0])


def test_classes_file_sets_the_vocabulary_and_order(tmp_path):
    layout.write_folds(tmp_path, ["x", "y"], [("b",), ("a",)], [0, 1], classes=["c", "b", "a"])
    folds = layout.read_folds(tmp_path)
    assert folds.classes == ("c", "b", "a")                 # classes.txt order, unused class kept
    np.testing.assert_array_equal(folds.y, [[0, 1, 0], [0, 0, 1]])
    assert folds.is_single_label


def test_label_missing_from_classes_file_is_an_error(tmp_path):
    layout.write_folds(tmp_path, ["x", "y"], [("b",), ("zz",)], [0, 1], classes=["a", "b"])
    with pytest.raises(LayoutError, match=r"folds.csv: row 3: label 'zz' is not in classes.txt"):
        layout.read_folds(tmp_path)


def test_duplicate_class_in_classes_file_is_an_error(tmp_path):
    layout.write_folds(tmp_path, ["x"], [("a",)], [0], classes=["a", "a"])
    with pytest.raises(LayoutError, match="classes.txt: a class name appears twice"):
        layout.read_folds(tmp_path)


def test_probs_round_trip_keeps_seven_digits(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.random((5, 3)).astype(np.float32)
    probs[0, 0], probs[1, 1] = 0.0, 1.0
    path = layout.write_probs(tmp_path / "probs.csv", ["r1", "r2", "r3", "r4", "r5"], probs,
                              ["z", "y", "x"], id_column="clip")
    read = layout.read_probs(path)
    assert read.id_column == "clip" and read.columns == ("z", "y", "x")
    assert read.ids.tolist() == ["r1", "r2", "r3", "r4", "r5"] and read.values.dtype == np.float32
    np.testing.assert_allclose(read.values, probs, rtol=1e-6, atol=1e-7)


def test_ids_are_read_as_strings(tmp_path):
    # ids that look like numbers must not become 1.0 / 7 / lose their leading zero
    (tmp_path / "probs.csv").write_text("id,a\n007,0.5\n1.0,0.25\nNA,0\n")
    assert layout.read_probs(tmp_path / "probs.csv").ids.tolist() == ["007", "1.0", "NA"]


def test_write_probs_checks_the_shape(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(2, 3\)"):
        layout.write_probs(tmp_path / "p.csv", ["a", "b"], np.zeros((2, 2)), ["x", "y", "z"])


def test_windows_and_meta_round_trip(tmp_path):
    windows = {"a.wav": np.random.default_rng(0).random((4, 2)), "b.wav": np.zeros((1, 2))}
    layout.write_fold_predictions(tmp_path, "exp", 0, "val", ["a.wav", "b.wav"],
                                  np.array([[0.1, 0.9], [0.5, 0.5]]), ["p", "q"], windows=windows)
    assert layout.has_windows(tmp_path, "exp", 0, "val")
    assert not layout.has_windows(tmp_path, "exp", 0, "test")
    assert (tmp_path / "exp/fold_0/val/a.wav.npy").exists()   # <id>.npy, as the FAT2019 code names it
    got = layout.read_windows(tmp_path, "exp", 0, "val", ["a.wav", "b.wav"], column_order=[1, 0])
    np.testing.assert_allclose(got[0], windows["a.wav"][:, [1, 0]], rtol=1e-6)
    assert got[0].dtype == np.float32 and got[1].shape == (1, 2)
    with pytest.raises(LayoutError, match="per-window file for id 'c.wav' is missing"):
        layout.read_windows(tmp_path, "exp", 0, "val", ["c.wav"])

    meta = {"model": "m", "params": {"lr": np.float32(0.5)}, "seed": np.int64(3), "level": 1}
    layout.write_meta(tmp_path, "exp", meta)
    assert layout.read_meta(tmp_path, "exp") == {"model": "m", "params": {"lr": 0.5}, "seed": 3,
                                                 "level": 1}
    assert layout.read_meta(tmp_path, "missing") == {}


def test_bad_meta_json_names_the_file(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "meta.json").write_text("{not json")
    with pytest.raises(LayoutError, match=r"experiment 'exp': .*meta.json: not valid JSON \(line 1\)"):
        layout.read_meta(tmp_path, "exp")
    (tmp_path / "exp" / "meta.json").write_text("[1, 2]")
    with pytest.raises(LayoutError, match="must hold a JSON object"):
        layout.read_meta(tmp_path, "exp")


def test_list_experiments_and_folds(tmp_path):
    for name in ("b_exp/fold_0/val", "a_exp/fold_1/val", "a_exp/fold_0/val", ".stack/fold_0",
                 "_hidden/fold_0", "notes"):
        (tmp_path / name).mkdir(parents=True)
    assert layout.list_experiments(tmp_path) == ["a_exp", "b_exp"]
    assert layout.list_fold_numbers(tmp_path, "a_exp") == [0, 1]
    (tmp_path / "a_exp" / "fold_x").mkdir()
    with pytest.raises(LayoutError, match="folder 'fold_x' is not fold_<number>"):
        layout.list_fold_numbers(tmp_path, "a_exp")
    with pytest.raises(LayoutError, match="does not exist; pass `root`"):
        layout.list_experiments(tmp_path / "nowhere")


# ---------------------------------------------------------------- atomic writes


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    layout.atomic_write_text(tmp_path / "a.txt", "one")
    layout.atomic_write_text(tmp_path / "a.txt", "two")
    layout.atomic_write_json(tmp_path / "sub" / "b.json", {"x": 1})
    layout.atomic_save_npy(tmp_path / "c.npy", np.arange(3))
    layout.write_probs(tmp_path / "p.csv", ["r"], np.array([[0.5]]), ["k"])
    assert _files(tmp_path) == ["a.txt", "b.json", "c.npy", "p.csv"]
    assert (tmp_path / "a.txt").read_text() == "two"
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), [0, 1, 2])


def test_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path):
    layout.atomic_write_text(tmp_path / "a.json", "old")
    with pytest.raises(TypeError):
        layout.atomic_write_json(tmp_path / "a.json", {"x": object()})   # fails while encoding
    with pytest.raises(TypeError):
        layout.atomic_write_bytes(tmp_path / "a.json", "not bytes")      # fails while writing
    assert _files(tmp_path) == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "old"


# ---------------------------------------------------------------- labels quoting


def test_quoted_labels_with_commas_and_empty_labels(tmp_path):
    (tmp_path / "folds.csv").write_text(
        'fname,labels,fold\n'
        'a.wav,"Bark,Run",0\n'
        'b.wav,,1\n'
        'c.wav,Run,1\n'
        'd.wav," Bark , Walk_and_footsteps ",0\n'
        'e.wav,"",0\n')
    folds = layout.read_folds(tmp_path)
    assert folds.labels == (("Bark", "Run"), (), ("Run",), ("Bark", "Walk_and_footsteps"), ())
    assert folds.classes == ("Bark", "Run", "Walk_and_footsteps")
    assert folds.y.sum(axis=1).tolist() == [2, 0, 1, 2, 0]


def test_written_folds_quote_multi_labels(tmp_path):
    layout.write_folds(tmp_path, ["a", "b"], [("x", "y"), ()], [0, 1])
    rows = list(csv.reader(open(tmp_path / "folds.csv", newline="")))
    assert rows == [["fname", "labels", "fold"], ["a", "x,y", "0"], ["b", "", "1"]]
    assert '"x,y"' in (tmp_path / "folds.csv").read_text()


def test_real_train_curated_excerpt_reads_right(tmp_path, shared_data):
    source = shared_data / "fat2019" / "train_curated.csv"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    with open(source, newline="") as handle:
        rows = list(csv.reader(handle))
    header, rows = rows[0], rows[1:]
    assert header == ["fname", "labels"]
    multi = [r for r in rows if "," in r[1]][:20]
    excerpt = rows[:30] + multi                              # single- and multi-label rows
    excerpt = list({r[0]: r for r in excerpt}.values())
    # the 1st-place code's train_folds.csv: Kaggle's columns, then fold, then an extra column
    with open(tmp_path / "folds.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fname", "labels", "fold", "file_path"])
        for i, (fname, labels) in enumerate(excerpt):
            writer.writerow([fname, labels, i % 5, f"data/train_curated/{fname}"])
    text = (tmp_path / "folds.csv").read_text()
    assert '"' in text                                       # multi-label fields are quoted
    folds = layout.read_folds(tmp_path)
    assert folds.ids.tolist() == [r[0] for r in excerpt]
    assert folds.labels == tuple(tuple(r[1].split(",")) for r in excerpt)
    assert folds.y.sum() == sum(len(r[1].split(",")) for r in excerpt)
    assert folds.fold_numbers == [0, 1, 2, 3, 4]
    assert any(len(labels) > 1 for labels in folds.labels)


# ---------------------------------------------------------------- one-file errors


@pytest.mark.parametrize("text, message", [
    ("", r"folds file is empty"),
    ("fname,labels,fold\n", r"folds file has a header but no rows"),
    ("fname,labels\na,x\n", r"missing column 'fold'; the header must be <id>,labels,fold"),
    ("fname,labels,fold\na,x,0\na,y,1\n", r"id 'a' appears 2 times"),
    ("fname,labels,fold\na,x,0\nb,y,two\n", r"row 3: fold 'two' is not an integer"),
    ("fname,labels,fold\na,x,0\nb,y,1.5\n", r"row 3: fold 1.5 is not an integer"),
    ("fname,labels,fold\na,x,0\nb,y,2\n", r"fold numbers \[0, 2\] are not consecutive from 0 \(or 1\): "
                                          r"fold 1 has no rows; renumber the folds"),
    ("fname,labels,fold\na,x,2\nb,y,3\n", r"fold numbers \[2, 3\] are not consecutive from 0 \(or 1\)"),
    ("fname,labels,fold\na,x,0\nb,y,1,extra\n", r"malformed CSV .*every row needs 3 fields"),
    ("fname,labels,fold\na,x,0,extra\nb,y,1\n", r"malformed CSV \(a row has more fields than"),
    ("fname,labels,fold\na,x,0\nb,y\n", r"malformed CSV \(line 3 has 2 fields\)"),
    ("fname,fname,fold\na,x,0\n", r"column 'fname' appears twice"),
])
def test_bad_folds_file(tmp_path, text, message):
    (tmp_path / "folds.csv").write_text(text)
    with pytest.raises(LayoutError, match=message) as error:
        layout.read_folds(tmp_path)
    assert "\n" not in str(error.value) and "folds.csv" in str(error.value)


def test_folds_numbered_from_one_are_accepted(tmp_path):
    (tmp_path / "folds.csv").write_text("fname,labels,fold\na,x,1\nb,y,2\n")
    assert layout.read_folds(tmp_path).fold_numbers == [1, 2]


def test_missing_folds_file(tmp_path):
    with pytest.raises(LayoutError, match="folds.csv: folds file is missing"):
        layout.read_folds(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("", r"predictions file is empty"),
    ("fname,a,b\n", r"predictions file has a header but no rows"),
    (",a,b\nr1,0.1,0.2\n", r"has no header"),
    ("fname,a,b\nr1,0.1,0.2\nr1,0.3,0.4\n", r"id 'r1' appears 2 times"),
    ("fname,a,b\nr1,0.1,nan\n", r"row 'r1', column 'b': value is NaN, infinite"),
    ("fname,a,b\nr1,0.1,\n", r"row 'r1', column 'b': value is NaN, infinite"),
    ("fname,a,b\nr1,inf,0.2\n", r"row 'r1', column 'a': value is NaN, infinite"),
    ("fname,a,b\nr1,1e39,0.2\n", r"row 'r1', column 'a': value is NaN, infinite or too large for float32"),
    ("fname,a,b\nr1,0.1,1.5\n", r"row 'r1', column 'b': value is 1.5, outside \[0, 1\]"),
    ("fname,a,b\nr1,-0.1,0.5\n", r"value is -0.1, outside \[0, 1\]"),
    ("fname,a,b\nr1,0.1,0.2,0.3\n", r"malformed CSV \(a row has more fields than the header\)"),
    ("fname,a,b\nr1,0.1,0.2\nr2,0.1,0.2,0.3\n", r"malformed CSV .*every row needs 3 fields"),
    ("fname,a,b\nr1,0.1,0.2\nr2,0.3\n", r"malformed CSV \(line 3 has 2 fields\)"),
    ("fname,a,b\nr1,0.1,high\n", r"malformed CSV: a value is not a number"),
    ("fname,a,a\nr1,0.1,0.2\n", r"column 'a' appears twice in the header"),
])
def test_bad_probs_file(tmp_path, text, message):
    path = tmp_path / "probs.csv"
    path.write_text(text)
    with pytest.raises(LayoutError, match=message) as error:
        layout.read_probs(path, experiment="exp")
    assert str(error.value).startswith(f"experiment 'exp': {path}: ")
    assert "\n" not in str(error.value)


def test_missing_probs_file(tmp_path):
    with pytest.raises(LayoutError, match="predictions file is missing"):
        layout.read_probs(tmp_path / "probs.csv")


def test_stack_dir_is_created_on_demand(tmp_path):
    assert not (tmp_path / ".stack").exists()
    assert layout.stack_dir(tmp_path) == tmp_path / ".stack"
    assert (tmp_path / ".stack").is_dir()
    assert os.listdir(tmp_path) == [".stack"]
    assert json.loads(layout.atomic_write_json(tmp_path / "x.json", {"p": tmp_path}).read_text()) \
        == {"p": str(tmp_path)}


@pytest.mark.parametrize("text", [
    "fname,a,b\nr1,0.1,0.2\nr2,1,0\n",
    'fname,a,b\n"x,y.wav",1e-3,0.5\n007,0,1\n',
    "fname,a,b\nr1, 0.25 ,\"0.5\"\nr2,1.0000000,0.0\n",
    "fname,a,b\r\nr1,0.1,0.2\r\nr2,0.3,0.4\r\n",
])
def test_fast_probs_reader_equals_the_strict_one(tmp_path, text):
    path = tmp_path / "probs.csv"
    path.write_bytes(text.encode())
    fast = tables._read_probs_fast(path)
    assert fast is not None
    id_column, ids, columns, values = fast
    strict = layout.read_csv_table(path, float_columns=True)
    assert [id_column, *columns] == list(strict.columns)
    np.testing.assert_array_equal(ids, strict.iloc[:, 0].to_numpy(dtype=str))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, strict.iloc[:, 1:].to_numpy(dtype=np.float32))


@pytest.mark.parametrize("text", ["", "fname,a\n", "fname,a\nr1,nan\n", "fname,a\nr1,\n",
                                  "fname,a\nr1,NA\n", "fname,a\nr1,high\n", "fname,a,b\nr1,0.5\n",
                                  "fname,a\nr1,0.5,0.5\n", "fname,a,a\nr1,0.5,0.5\n",
                                  "fname,a,b\nr1,0.5,0.5\nr2,0.5,0.5,0.5\n", "fname,a\nr1\n"])
def test_fast_probs_reader_leaves_anything_odd_to_the_strict_one(tmp_path, text):
    path = tmp_path / "probs.csv"
    path.write_text(text)
    assert tables._read_probs_fast(path) is None
    with pytest.raises(LayoutError):
        layout.read_probs(path)


# ---------------------------------------------------------------- probs.parquet


def test_parquet_probs_round_trip_exact_float32(tmp_path):
    from stacker.layout import tables as layout_files

    values = np.random.default_rng(0).uniform(size=(7, 3)).astype(np.float32)
    path = layout_files.write_probs(tmp_path / "probs.parquet", [f"r{i}" for i in range(7)], values,
                                    ["a", "b", "c"], id_column="clip")
    probs = layout_files.read_probs(path)
    assert probs.id_column == "clip" and probs.columns == ("a", "b", "c")
    np.testing.assert_array_equal(probs.values, values)
    np.testing.assert_array_equal(probs.ids, [f"r{i}" for i in range(7)])


def test_parquet_pandas_index_counts_as_the_id_column(tmp_path):
    import pandas as pd

    from stacker.layout import tables as layout_files

    frame = pd.DataFrame({"a": [0.1, 0.2], "b": [0.9, 0.8]}, index=pd.Index(["x", "y"], name="fname"))
    frame.to_parquet(tmp_path / "probs.parquet")
    probs = layout_files.read_probs(tmp_path / "probs.parquet")
    assert probs.id_column == "fname" and list(probs.ids) == ["x", "y"] and probs.columns == ("a", "b")


@pytest.mark.parametrize("table, message", [
    ({"fname": ["x", None], "a": [0.1, 0.2]}, r"row 1: the id \(column 'fname'\) is missing"),
    ({"fname": [1.5, 2.5], "a": [0.1, 0.2]}, r"first column 'fname' has type double; it must hold"),
    ({"fname": ["x", "y"], "a": ["high", "low"]}, r"column 'a' has type string, not numbers"),
    ({"fname": ["x", "y"], "a": [0.1, None]}, r"row 'y', column 'a': value is NaN"),
])
def test_parquet_refusals_name_the_file(tmp_path, table, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stacker.layout import tables as layout_files

    path = tmp_path / "probs.parquet"
    pq.write_table(pa.table(table), path)
    with pytest.raises(LayoutError, match=message) as error:
        layout_files.read_probs(path)
    assert str(path) in str(error.value)
