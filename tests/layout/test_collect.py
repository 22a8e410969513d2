"""stacker.layout.collect: alignment, the cache, and a table of bad layouts with their one-line errors."""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil

import numpy as np
import pytest

from stacker import layout
from stacker.errors import LayoutError
from stacker.layout import atomic
from stacker.layout.collect import Collection, collect

# the module, not the function that the package re-exports under the same name
collect_module = importlib.import_module("stacker.layout.collect")
pool_module = importlib.import_module("stacker.layout.pool")
EXPERIMENTS = ("sim_000", "sim_001", "sim_002")


# ---------------------------------------------------------------- helpers that damage a layout


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def write_rows(path, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def read_parquet_rows(path):
    """A probs.parquet as text rows (header first), like read_rows of a CSV."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = [table.column(j).to_pylist() for j in range(table.num_columns)]
    return [list(table.column_names)] + [[str(c[r]) for c in columns] for r in range(table.num_rows)]


def write_parquet_rows(path, rows):
    """Text rows (header first) -> a probs.parquet: a column whose every value parses as a
    number is stored as float64, any other as text (the id column always as text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    header, body = rows[0], rows[1:]
    arrays = []
    for j in range(len(header)):
        values = [r[j] for r in body]
        try:
            arrays.append(pa.array(values, type=pa.string()) if j == 0
                          else pa.array([float(v) for v in values], type=pa.float64()))
        except ValueError:
            arrays.append(pa.array(values, type=pa.string()))
    pq.write_table(pa.Table.from_arrays(arrays, names=header), path)


def edit_probs(root, name, fold, split, edit):
    """Apply ``edit(rows) -> rows`` to the rows (header first) of one probs.csv or probs.parquet."""
    path = layout.probs_path(root, name, fold, split)
    if path.suffix == ".parquet":
        write_parquet_rows(path, edit(read_parquet_rows(path)))
    else:
        write_rows(path, edit(read_rows(path)))


def convert_layout(root, fmt):
    """Rewrite every probs.csv of the layout as probs.parquet (fmt 'parquet'); 'csv' keeps it."""
    if fmt == "csv":
        return
    for name in layout.list_experiments(root):
        for k in layout.list_fold_numbers(root, name):
            for split in layout.SPLITS:
                probs = layout.read_probs(layout.probs_path(root, name, k, split))
                layout.write_fold_predictions(root, name, k, split, probs.ids, probs.values,
                                              probs.columns, id_column=probs.id_column,
                                              format=fmt)


def set_value(value, row=1, col=2):
    def edit(rows):
        rows[row][col] = value
        return rows
    return edit


def drop_column(name):
    def edit(rows):
        j = rows[0].index(name)
        return [r[:j] + r[j + 1:] for r in rows]
    return edit


def rename_test_id(old, new):
    def edit(rows):
        return [[new if i == 0 and v == old else v for i, v in enumerate(r)] for r in rows]
    return edit


def shuffle_rows_and_columns(seed):
    def edit(rows):
        rng = np.random.default_rng(seed)
        cols = [0] + list(1 + rng.permutation(len(rows[0]) - 1))
        body = [rows[1:][i] for i in rng.permutation(len(rows) - 1)]
        return [[r[j] for j in cols] for r in [rows[0]] + body]
    return edit


def _missing_fold(root):
    shutil.rmtree(root / "sim_001" / "fold_2")


def _extra_fold(root):
    shutil.copytree(root / "sim_001" / "fold_2", root / "sim_001" / "fold_3")


def _val_row_missing(root):
    edit_probs(root, "sim_001", 1, "val", lambda rows: rows[:-1])


def _val_row_from_other_fold(root):
    edit_probs(root, "sim_001", 1, "val", set_value("row_000.wav", col=0))


def _val_row_unknown(root):
    edit_probs(root, "sim_001", 1, "val", lambda rows: rows + [["ghost.wav"] + rows[1][1:]])


def _duplicate_id(root):
    edit_probs(root, "sim_001", 1, "val", lambda rows: rows + [rows[1]])


def _unknown_class(root):
    edit_probs(root, "sim_001", 0, "val", lambda rows: [r + [v] for r, v in
                                                        zip(rows, ["class_z"] + ["0.5"] * len(rows))])


def _missing_class(root):
    edit_probs(root, "sim_001", 0, "test", drop_column("class_b"))


def _id_header(root):
    edit_probs(root, "sim_001", 0, "val", set_value("clip", row=0, col=0))


def _nan(root):
    edit_probs(root, "sim_001", 1, "val", set_value("nan"))


def _inf(root):
    edit_probs(root, "sim_001", 1, "test", set_value("inf"))


def _outside(root):
    edit_probs(root, "sim_001", 1, "val", set_value("1.5"))


def _negative(root):
    edit_probs(root, "sim_001", 1, "val", set_value("-0.25"))


def _test_ids_between_folds(root):
    edit_probs(root, "sim_001", 1, "test", rename_test_id("test_00003", "test_99999"))


def _test_ids_between_experiments(root):
    for k in (0, 1, 2):
        edit_probs(root, "sim_001", k, "test", rename_test_id("test_00003", "test_99999"))


def _empty_file(root):
    layout.probs_path(root, "sim_001", 2, "val").write_text("")


def _header_only(root):
    edit_probs(root, "sim_001", 2, "val", lambda rows: rows[:1])


def _ragged_row(root):
    edit_probs(root, "sim_001", 2, "val", lambda rows: rows[:3] + [rows[3] + ["0.5"]] + rows[4:])


def _short_row(root):
    edit_probs(root, "sim_001", 2, "val", lambda rows: rows[:3] + [rows[3][:-1]] + rows[4:])


def _non_numeric(root):
    edit_probs(root, "sim_001", 2, "val", set_value("high", row=4))


def _missing_test_file(root):
    layout.probs_path(root, "sim_001", 0, "test").unlink()


def _fold_hash(root):
    path = root / "sim_001" / "meta.json"
    meta = json.loads(path.read_text())
    meta["fold_hash"] = "0123456789abcdef"
    path.write_text(json.dumps(meta))


def _bad_meta(root):
    (root / "sim_001" / "meta.json").write_text('{"model": ')


# (id, damage, message regex, the file the message must name)
BAD_EXPERIMENTS = [
    ("missing fold", _missing_fold, r"fold_2 is missing; folds.csv has folds 0-2", "fold_2"),
    ("extra fold", _extra_fold, r"fold_3 is not a fold of folds.csv", "fold_3"),
    ("val row missing", _val_row_missing,
     r"ids are not exactly the fold-1 rows of folds.csv \(1 fold-1 row\(s\) missing, e\.g\. 'row_",
     "fold_1/val/probs.csv"),
    ("val row of another fold", _val_row_from_other_fold,
     r"ids are not exactly the fold-1 rows .*1 id\(s\) not in fold 1 of folds.csv, e\.g\. "
     r"'row_000\.wav'", "fold_1/val/probs.csv"),
    ("val row unknown", _val_row_unknown, r"1 id\(s\) not in fold 1 of folds.csv, e\.g\. 'ghost\.wav'",
     "fold_1/val/probs.csv"),
    ("duplicate id", _duplicate_id, r"id 'row_001\.wav' appears 2 times; each row id must appear once",
     "fold_1/val/probs.csv"),
    ("unknown class column", _unknown_class, r"column 'class_z' is not a class of folds.csv",
     "fold_0/val/probs.csv"),
    ("missing class column", _missing_class,
     r"class column 'class_b' is missing; every class of folds.csv needs a column",
     "fold_0/test/probs.csv"),
    ("id header differs", _id_header, r"first column is 'clip' but folds.csv calls the id 'fname'",
     "fold_0/val/probs.csv"),
    ("NaN", _nan, r"row 'row_\d+\.wav', column 'class_b': value is NaN, infinite",
     "fold_1/val/probs.csv"),
    ("inf", _inf, r"row 'test_00000', column 'class_b': value is NaN, infinite",
     "fold_1/test/probs.csv"),
    ("above 1", _outside, r"value is 1\.5, outside \[0, 1\]; predictions must be probabilities",
     "fold_1/val/probs.csv"),
    ("below 0", _negative, r"value is -0\.25, outside \[0, 1\]", "fold_1/val/probs.csv"),
    ("test ids differ between folds", _test_ids_between_folds,
     r"test ids differ from fold_0's \(e\.g\. 'test_00003'\)", "fold_1/test/probs.csv"),
    ("test ids differ between experiments", _test_ids_between_experiments,
     r"test ids differ from experiment 'sim_000' \('test_00003' missing\)", "fold_0/test/probs.csv"),
    ("empty file", _empty_file, r"predictions file is empty", "fold_2/val/probs.csv"),
    ("header only", _header_only, r"predictions file has a header but no rows", "fold_2/val/probs.csv"),
    ("ragged row", _ragged_row, r"malformed CSV .*every row needs 5 fields like the header",
     "fold_2/val/probs.csv"),
    ("short row", _short_row, r"malformed CSV \(line 4 has 4 fields\)", "fold_2/val/probs.csv"),
    ("non-numeric value", _non_numeric, r"malformed CSV: a value is not a number",
     "fold_2/val/probs.csv"),
    ("missing test file", _missing_test_file, r"predictions file is missing", "fold_0/test/probs.csv"),
    ("fold hash", _fold_hash, r"made on other folds \(fold_hash 0123456789abcdef, folds.csv has "
                              r"[0-9a-f]{16}\); retrain it", "meta.json"),
    ("meta not JSON", _bad_meta, r"not valid JSON \(line 1\)", "meta.json"),
]


# the same damage in a Parquet file: a table has no ragged rows, and says some things differently
PARQUET_MESSAGES = {"header only": r"predictions file has columns but no rows",
                    "non-numeric value": r"column 'class_b' has type string, not numbers"}
CSV_ONLY = {"ragged row", "short row"}


def _both_formats(root):
    probs = layout.read_probs(layout.probs_path(root, "sim_001", 1, "val"))
    layout.write_probs(layout.probs_path(root, "sim_001", 1, "val", format="csv"), probs.ids,
                       probs.values, probs.columns)


def _mixed_formats(root):
    for split in layout.SPLITS:
        probs = layout.read_probs(layout.probs_path(root, "sim_001", 2, split))
        layout.write_fold_predictions(root, "sim_001", 2, split, probs.ids, probs.values,
                                      probs.columns, format="csv")


def _not_parquet(root):
    layout.probs_path(root, "sim_001", 2, "val").write_bytes(b"fname,class_a\nrow_002.wav,0.5\n")


PARQUET_ONLY = [
    ("csv and parquet in one folder", _both_formats,
     r"holds both probs.csv and probs.parquet; an experiment keeps one format", "fold_1/val"),
    ("csv in one fold, parquet in others", _mixed_formats,
     r"mixes probs.csv and probs.parquet across its folds", "sim_001"),
    ("not a parquet file", _not_parquet, r"not a readable Parquet file", "fold_2/val/probs.parquet"),
]

BAD_CASES = (
    [pytest.param("csv", *case[1:], id=f"csv-{case[0]}") for case in BAD_EXPERIMENTS]
    + [pytest.param("parquet", case[1], PARQUET_MESSAGES.get(case[0], case[2]),
                    case[3].replace("probs.csv", "probs.parquet"), id=f"parquet-{case[0]}")
       for case in BAD_EXPERIMENTS if case[0] not in CSV_ONLY]
    + [pytest.param("parquet", *case[1:], id=f"parquet-{case[0]}") for case in PARQUET_ONLY])


@pytest.mark.parametrize("fmt, damage, message, where", BAD_CASES)
def test_bad_experiment_is_skipped_or_raises_in_strict_mode(small_layout, fmt, damage, message, where):
    root = small_layout()
    convert_layout(root, fmt)
    clean = collect(root, use_cache=False, n_jobs=1)
    damage(root)

    with pytest.raises(LayoutError, match=message) as error:
        collect(root, strict=True, n_jobs=1)
    text = str(error.value)
    assert text.startswith("experiment 'sim_001': ") and where in text and "\n" not in text

    for attempt in ("cold", "cached"):          # a cached failure reads the same as a fresh one
        result = collect(root, n_jobs=1)
        assert result.names == ("sim_000", "sim_002"), attempt
        assert len(result.skipped) == 1 and result.skipped[0] == text, attempt
        np.testing.assert_array_equal(result.oof, clean.oof[:, [0, 2]])
        np.testing.assert_array_equal(result.test, clean.test[:, :, [0, 2]])


@pytest.mark.parametrize("folds_text, message", [
    ("fname,labels,fold\nrow_000.wav,class_a,0\nrow_001.wav,class_b,2\n",
     r"fold numbers \[0, 2\] are not consecutive from 0 \(or 1\): fold 1 has no rows"),
    ("", r"folds file is empty"),
    ("fname,labels,fold\nrow_000.wav,class_a,0\nrow_000.wav,class_b,1\n", r"id 'row_000\.wav' appears 2"),
])
def test_bad_folds_file_stops_both_modes(small_layout, folds_text, message):
    root = small_layout()
    (root / "folds.csv").write_text(folds_text)
    for strict in (False, True):
        with pytest.raises(LayoutError, match=message) as error:
            collect(root, strict=strict, n_jobs=1)
        assert "folds.csv" in str(error.value) and "\n" not in str(error.value)


def test_every_experiment_bad_is_an_error_listing_each(small_layout):
    root = small_layout()
    for name in EXPERIMENTS:
        shutil.rmtree(root / name / "fold_1")
    with pytest.raises(LayoutError, match="no valid experiment under") as error:
        collect(root, n_jobs=1)
    assert str(error.value).count("fold_1 is missing") == 3


def test_no_experiments_is_an_error(tmp_path):
    layout.write_folds(tmp_path, ["a", "b"], [("x",), ("y",)], [0, 1])
    with pytest.raises(LayoutError, match="no experiments under"):
        collect(tmp_path)


def test_odd_test_ids_in_the_first_experiment_skip_only_it(small_layout):
    root = small_layout()
    for k in (0, 1, 2):
        edit_probs(root, "sim_000", k, "test", rename_test_id("test_00003", "test_99999"))
    result = collect(root, n_jobs=1)
    assert result.names == ("sim_001", "sim_002")
    assert len(result.skipped) == 1 and result.skipped[0].startswith("experiment 'sim_000'")


# ---------------------------------------------------------------- alignment


def test_collection_shapes_and_values(small_layout):
    root = small_layout()
    result = collect(root, n_jobs=1)
    folds = layout.read_folds(root)
    assert isinstance(result, Collection) and result.names == EXPERIMENTS
    assert result.oof.shape == (60, 3, 4) and result.oof.dtype == np.float32
    assert result.test.shape == (3, 20, 3, 4) and result.test.dtype == np.float32
    assert result.classes == ("class_a", "class_b", "class_c", "class_d")
    np.testing.assert_array_equal(result.ids, folds.ids)
    np.testing.assert_array_equal(result.y, folds.y)
    assert result.fold_numbers == [0, 1, 2] and result.skipped == () and result.windows == ()
    assert result.test_ids.tolist() == [f"test_{i:05d}" for i in range(20)]
    assert result.level("sim_001") == 1 and result.meta["sim_001"]["model"] == "simulated"
    # every value is the one in the file, at the row of its id
    for m, name in enumerate(EXPERIMENTS):
        for k in result.fold_numbers:
            val = layout.read_probs(layout.probs_path(root, name, k, "val"))
            rows = [int(np.flatnonzero(folds.ids == i)[0]) for i in val.ids]
            np.testing.assert_array_equal(result.oof[rows, m], val.values)
            test = layout.read_probs(layout.probs_path(root, name, k, "test"))
            np.testing.assert_array_equal(result.test[k, :, m], test.values)


def test_folds_numbered_from_one(small_layout):
    result = collect(small_layout(first_fold=1), n_jobs=1)
    assert result.fold_numbers == [1, 2, 3] and result.test.shape[0] == 3


def test_classes_matched_by_name_and_rows_by_id(small_layout):
    root = small_layout()
    before = collect(root, use_cache=False, n_jobs=1)
    for k in (0, 1, 2):
        for split in ("val", "test"):
            edit_probs(root, "sim_001", k, split, shuffle_rows_and_columns(seed=k))
    header = read_rows(layout.probs_path(root, "sim_001", 0, "val"))[0]
    assert header[1:] != list(before.classes)            # the columns really moved
    after = collect(root, use_cache=False, n_jobs=1)
    np.testing.assert_array_equal(after.oof, before.oof)
    np.testing.assert_array_equal(after.test, before.test)
    np.testing.assert_array_equal(after.test_ids, before.test_ids)


def test_test_rows_reordered_across_experiments(small_layout):
    root = small_layout()
    before = collect(root, use_cache=False, n_jobs=1)
    reverse = lambda rows: rows[:1] + rows[:0:-1]  # noqa: E731
    for k in (0, 1, 2):
        edit_probs(root, "sim_002", k, "test", reverse)
    after = collect(root, use_cache=False, n_jobs=1)
    np.testing.assert_array_equal(after.test_ids, before.test_ids)
    np.testing.assert_array_equal(after.test, before.test)


def test_processes_give_the_same_arrays(small_layout):
    root = small_layout()
    one = collect(root, use_cache=False, n_jobs=1)
    two = collect(root, use_cache=False, n_jobs=2)
    np.testing.assert_array_equal(one.oof, two.oof)
    np.testing.assert_array_equal(one.test, two.test)


def test_select_and_index(small_layout):
    result = collect(small_layout(), n_jobs=1)
    picked = result.select(["sim_002", "sim_000"])
    assert picked.names == ("sim_002", "sim_000") and set(picked.meta) == {"sim_002", "sim_000"}
    np.testing.assert_array_equal(picked.oof, result.oof[:, [2, 0]])
    np.testing.assert_array_equal(picked.test, result.test[:, :, [2, 0]])
    with pytest.raises(LayoutError, match="no experiment named 'nope'"):
        result.index(["nope"])


def test_windows_are_noticed(small_layout):
    root = small_layout()
    assert collect(root, n_jobs=1).windows == ()        # cached without windows, then one appears
    layout.atomic_save_npy(layout.windows_path(root, "sim_002", 0, "val", "row_000.wav"),
                           np.zeros((3, 4), np.float32))
    assert collect(root, n_jobs=1).windows == ("sim_002",)


def test_progress_is_reported(small_layout):
    root = small_layout()
    calls = []
    collect(root, n_jobs=1, on_progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    calls.clear()
    collect(root, n_jobs=1, on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 3)]                              # all from the cache


# ---------------------------------------------------------------- the cache


def _count_loads(monkeypatch):
    loaded = []
    real = collect_module.load_experiment

    def counting(root, name, folds):
        loaded.append(name)
        return real(root, name, folds)

    monkeypatch.setattr(collect_module, "load_experiment", counting)
    return loaded


def test_second_collect_reads_the_cache(small_layout, monkeypatch):
    root = small_layout()
    loaded = _count_loads(monkeypatch)
    first = collect(root, n_jobs=1)
    assert loaded == list(EXPERIMENTS)
    # the arrays are written once, into the pool; each experiment keeps a small index
    assert sorted(os.listdir(root / ".stack" / "cache")) == sorted(
        [f"{n}.json" for n in EXPERIMENTS]
        + ["_folds.json", "_pool.json", "_pool.oof.npy", "_pool.test.npy"])
    second = collect(root, n_jobs=1)
    assert loaded == list(EXPERIMENTS)                    # nothing parsed again
    for attr in ("oof", "test", "test_ids", "ids", "y"):
        np.testing.assert_array_equal(getattr(second, attr), getattr(first, attr))
    assert second.meta == first.meta and second.names == first.names


def test_touching_a_file_invalidates_its_experiment(small_layout, monkeypatch):
    root = small_layout()
    collect(root, n_jobs=1)
    loaded = _count_loads(monkeypatch)
    path = layout.probs_path(root, "sim_001", 1, "test")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    collect(root, n_jobs=1)
    assert loaded == ["sim_001"]


def test_changed_values_are_read_again(small_layout):
    root = small_layout()
    collect(root, n_jobs=1)
    edit_probs(root, "sim_001", 1, "val", set_value("0.125", row=1, col=1))
    row_id = read_rows(layout.probs_path(root, "sim_001", 1, "val"))[1][0]
    result = collect(root, n_jobs=1)
    row = int(np.flatnonzero(result.ids == row_id)[0])
    assert result.oof[row, 1, 0] == np.float32(0.125)


def test_an_edit_that_keeps_size_and_mtime_is_still_read_again(small_layout):
    """Issue 20 (low): the cache is not trusted on size + mtime alone; an edit of the same length
    whose mtime is put back (os.utime, touch -d, cp -p) changes the ctime."""
    root = small_layout()
    collect(root, n_jobs=1)
    path = layout.probs_path(root, "sim_001", 1, "val")
    stat = path.stat()
    text = path.read_text()
    rows = text.splitlines()
    cells = rows[1].split(",")
    old = cells[1]
    cells[1] = ("0.125" + "0" * 20)[:len(old)] if len(old) >= 5 else "0.1"[:len(old)]
    rows[1] = ",".join(cells)
    path.write_text("\n".join(rows) + ("\n" if text.endswith("\n") else ""))
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = collect(root, n_jobs=1)
    row = int(np.flatnonzero(result.ids == cells[0])[0])
    assert result.oof[row, 1, 0] == np.float32(float(cells[1]))


def test_changed_folds_file_invalidates_everything(small_layout, monkeypatch):
    root = small_layout()
    collect(root, n_jobs=1)
    loaded = _count_loads(monkeypatch)
    path = root / "folds.csv"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    collect(root, n_jobs=1)
    assert loaded == list(EXPERIMENTS)


def test_new_experiment_and_corrupt_cache(small_layout, monkeypatch):
    root = small_layout(n_experiments=4)
    first = collect(root, n_jobs=1)
    shutil.rmtree(root / "sim_003")
    shutil.copytree(root / "sim_002", root / "sim_003")
    cache = root / ".stack" / "cache"
    (cache / "sim_000.json").write_text("{not json")
    loaded = _count_loads(monkeypatch)
    result = collect(root, n_jobs=1)
    # the others' arrays come from their blocks of the previous pool
    assert sorted(loaded) == ["sim_000", "sim_003"]
    np.testing.assert_array_equal(result.oof[:, :3], first.oof[:, :3])
    np.testing.assert_array_equal(result.test[:, :, :3], first.test[:, :, :3])
    assert result.names == EXPERIMENTS + ("sim_003",)
    np.testing.assert_array_equal(result.oof[:, 3], result.oof[:, 2])
    assert collect(root, n_jobs=1).names == result.names and len(loaded) == 2   # repaired
    expected_oof, expected_test = np.array(result.oof), np.array(result.test)  # (maps the pool)
    pool_file = cache / "_pool.test.npy"                    # a broken pool: every one read again
    pool_file.write_bytes(b"\0" * pool_file.stat().st_size)
    (cache / "sim_001.json").write_text("{not json")
    again = collect(root, n_jobs=1)
    assert sorted(loaded[2:]) == ["sim_000", "sim_001", "sim_002", "sim_003"]
    np.testing.assert_array_equal(again.oof, expected_oof)
    np.testing.assert_array_equal(again.test, expected_test)


def test_no_cache_writes_nothing(small_layout):
    root = small_layout()
    collect(root, use_cache=False, n_jobs=1)
    assert not (root / ".stack").exists()


def test_unwritable_cache_only_costs_speed(small_layout, monkeypatch):
    root = small_layout()
    expected = collect(root, use_cache=False, n_jobs=1)

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(atomic, "atomic_write_bytes", refuse)  # the cache writes through atomic
    result = collect(root, n_jobs=1)
    np.testing.assert_array_equal(result.oof, expected.oof)
    assert not (root / ".stack" / "cache").exists() or not os.listdir(root / ".stack" / "cache")


# ---------------------------------------------------------------- the memory-mapped pool


def _is_mapped(array) -> bool:
    """True when ``array`` is a view of a memory-mapped file (no copy of its own)."""
    import mmap

    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def test_warm_collect_maps_the_pool_and_copies_nothing(small_layout, monkeypatch):
    root = small_layout()
    reference = collect(root, use_cache=False, n_jobs=1)
    cold = collect(root, n_jobs=1)
    assert _is_mapped(cold.oof) and _is_mapped(cold.test)

    def no_assembly(*args, **kwargs):
        raise AssertionError("a warm collect must not assemble the pool again")

    monkeypatch.setattr(collect_module, "_assemble", no_assembly)
    warm = collect(root, n_jobs=1)
    for result in (cold, warm):
        assert _is_mapped(result.oof) and _is_mapped(result.test)
        assert not result.oof.flags.writeable
        assert result.oof.shape == reference.oof.shape and result.test.shape == reference.test.shape
        for attr in ("oof", "test", "test_ids"):
            np.testing.assert_array_equal(getattr(result, attr), getattr(reference, attr))
        assert result.names == reference.names and result.meta == reference.meta


def test_pool_follows_a_removed_experiment_and_strict_mode(small_layout):
    root = small_layout()
    collect(root, n_jobs=1)
    shutil.rmtree(root / "sim_002")
    assert collect(root, n_jobs=1).names == ("sim_000", "sim_001")
    _nan(root)
    assert collect(root, n_jobs=1).names == ("sim_000",)
    with pytest.raises(LayoutError, match="value is NaN"):      # the pooled skip still raises
        collect(root, strict=True, n_jobs=1)


def test_half_written_pool_is_not_read(small_layout):
    root = small_layout()
    expected = collect(root, use_cache=False, n_jobs=1)
    collect(root, n_jobs=1)
    pool_file = root / ".stack" / "cache" / "_pool.oof.npy"
    pool_file.write_bytes(pool_file.read_bytes()[:-8])          # a crash mid-write
    result = collect(root, n_jobs=1)
    np.testing.assert_array_equal(result.oof, expected.oof)


@pytest.mark.parametrize("name", ["sim_002", "sim_000"])   # sim_000: the first one staged
def test_pool_with_reordered_test_rows_matches_memory(small_layout, name):
    root = small_layout()
    edit_probs(root, name, 0, "test", shuffle_rows_and_columns(1))
    for k in (1, 2):       # every fold of the experiment in the shuffled order: its rows reorder
        edit_probs(root, name, k, "test", shuffle_rows_and_columns(1))
    expected = collect(root, use_cache=False, n_jobs=1)
    for _ in ("cold", "warm"):
        result = collect(root, n_jobs=2)
        np.testing.assert_array_equal(result.test, expected.test)
        np.testing.assert_array_equal(result.test_ids, expected.test_ids)


# ---------------------------------------------------------------- the pool written once


def _count_pool_writes(monkeypatch):
    """The experiments each write_pool call was given (a rewrite of the pool)."""
    rewrites = []
    real = pool_module.write_pool

    def counting(cache_dir, **kwargs):
        rewrites.append([e.name for e in kwargs["experiments"]])
        return real(cache_dir, **kwargs)

    monkeypatch.setattr(pool_module, "write_pool", counting)
    return rewrites


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_cold_collect_writes_the_arrays_once_into_the_pool(small_layout, monkeypatch, n_jobs):
    root = small_layout(n_experiments=4)
    expected = collect(root, use_cache=False, n_jobs=1)
    rewrites = _count_pool_writes(monkeypatch)
    cold = collect(root, n_jobs=n_jobs)
    assert rewrites == []                       # the staged files became the pool
    assert _is_mapped(cold.oof) and _is_mapped(cold.test)
    for attr in ("oof", "test", "test_ids"):
        np.testing.assert_array_equal(getattr(cold, attr), getattr(expected, attr))
    assert not [p for p in (root / ".stack" / "cache").iterdir() if p.name.endswith(".tmp")]


def test_a_skipped_experiment_is_not_staged_and_a_changed_one_reuses_the_others(
        small_layout, monkeypatch):
    root = small_layout()
    _nan(root)
    expected = collect(root, use_cache=False, n_jobs=1)
    rewrites = _count_pool_writes(monkeypatch)
    cold = collect(root, n_jobs=1)
    assert rewrites == [] and cold.names == expected.names == ("sim_000", "sim_002")
    np.testing.assert_array_equal(cold.oof, expected.oof)
    loaded = _count_loads(monkeypatch)
    edit_probs(root, "sim_002", 0, "val", set_value("0.25"))
    changed = collect(root, n_jobs=1)
    assert loaded == ["sim_002"]                # sim_000 from the previous pool, sim_001's error
    assert changed.names == expected.names and rewrites == []
    np.testing.assert_array_equal(changed.oof[:, 0], expected.oof[:, 0])
    assert not np.array_equal(changed.oof[:, 1], expected.oof[:, 1])


def test_a_disk_that_fills_while_staging_falls_back_to_memory(small_layout, monkeypatch):
    root = small_layout()
    expected = collect(root, use_cache=False, n_jobs=1)
    real = pool_module.PoolStage.add

    def fill(self, experiment, oof, test):
        if self.names:
            raise OSError(28, "No space left on device")
        return real(self, experiment, oof, test)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pool_module.PoolStage, "add", fill)
    monkeypatch.setattr(pool_module, "write_pool", full)
    result = collect(root, n_jobs=1)
    assert not _is_mapped(result.oof)
    for attr in ("oof", "test"):
        np.testing.assert_array_equal(getattr(result, attr), getattr(expected, attr))
    cache = root / ".stack" / "cache"
    assert not [p.name for p in cache.iterdir() if p.name.startswith("_pool") or
                p.name.endswith(".tmp")]


def test_an_experiment_s_cache_key_signs_the_files_pathlib_names(small_layout):
    """The key signs, as before, the experiment's folder, meta file, fold folders, split folders
    and every probs file name (built as plain strings now, joined as pathlib joins them)."""
    import hashlib
    from pathlib import Path

    module = importlib.import_module("stacker.layout.collect")
    from stacker.layout.paths import META_FILE, PROBS_FILES, SPLITS

    root = Path(small_layout())
    name = sorted(p.name for p in root.iterdir() if (p / META_FILE).exists())[0]
    folder = root / name
    paths = [folder, folder / META_FILE]
    for entry in sorted(p.name for p in folder.iterdir() if p.name.startswith("fold_")):
        paths.append(folder / entry)
        for split in SPLITS:
            paths += [folder / entry / split]
            paths += [folder / entry / split / file for file in PROBS_FILES.values()]
    text = json.dumps([module.CACHE_VERSION, "folds", module._signature(paths)])
    assert module._experiment_key(root, name, "folds") == hashlib.sha1(text.encode()).hexdigest()
    assert module._experiment_key(str(root) + "/", name, "folds") == hashlib.sha1(
        text.encode()).hexdigest()
