"""stacker.layout.importing: every input format gives the same experiment; every mismatch is one
line naming the file and the fix, and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stacker import layout
from stacker.errors import LayoutError, OptionError, OutputExistsError, StackError
from stacker.layout.collect import collect
from stacker.layout.importing import import_experiment

CLASSES = ["cat", "dog", "owl"]
N_ROWS, N_TEST, N_FOLDS = 24, 9, 3


@pytest.fixture
def notebook(tmp_path):
    """A root with folds.csv only, plus a notebook's predictions: oof (N_ROWS, 3) in folds.csv
    order and test (N_FOLDS, N_TEST, 3) per fold, as arrays."""
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    ids = [f"clip_{i:02d}" for i in range(N_ROWS)]
    labels = [(CLASSES[i % 3],) if i % 4 else (CLASSES[i % 3], CLASSES[(i + 1) % 3]) for i in range(N_ROWS)]
    layout.write_folds(root, ids, labels, [i % N_FOLDS for i in range(N_ROWS)])
    oof = rng.uniform(0.01, 0.99, (N_ROWS, 3)).astype(np.float32)
    test = rng.uniform(0.01, 0.99, (N_FOLDS, N_TEST, 3)).astype(np.float32)
    test_ids = np.array([f"t{i}" for i in range(N_TEST)])
    pd.DataFrame({"fname": test_ids}).to_csv(tmp_path / "sample_submission.csv", index=False)
    return {"root": root, "dir": tmp_path, "ids": np.array(ids), "oof": oof, "test": test,
            "test_ids": test_ids}


def save_npy(nb, name, array):
    path = nb["dir"] / name
    np.save(path, array)
    return path


def save_table(nb, name, row_ids, values, columns, *, id_column="fname"):
    frame = pd.DataFrame(values, columns=columns)
    frame.insert(0, id_column, row_ids)
    path = nb["dir"] / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, engine="pyarrow", index=False)
    return path


def assert_imported(nb, name, *, oof, test):
    """collect accepts the experiment and returns exactly oof (rows, classes) and test (folds,
    test rows, classes) in the notebook's test-id order."""
    collection = collect(nb["root"], strict=True, use_cache=False, n_jobs=1)
    m = collection.index([name])[0]
    np.testing.assert_allclose(collection.oof[:, m], oof, rtol=1e-6)
    order = np.argsort(collection.test_ids)
    expected_order = np.argsort(nb["test_ids"])
    np.testing.assert_allclose(collection.test[:, order, m], test[:, expected_order], rtol=1e-6)
    return collection


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_npy_oof_and_fold_averaged_test(notebook, fmt):
    nb = notebook
    averaged = nb["test"].mean(axis=0)
    result = import_experiment(nb["root"], "nb", oof=save_npy(nb, "oof_nb.npy", nb["oof"]),
                               test=save_npy(nb, "test_nb.npy", averaged),
                               test_ids=nb["dir"] / "sample_submission.csv", format=fmt)
    assert (result.path / "fold_0" / "val" / f"probs.{fmt}").exists()
    assert_imported(nb, "nb", oof=nb["oof"], test=np.broadcast_to(averaged, nb["test"].shape))
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["test_predictions"] == "fold-averaged" and meta["level"] == 1
    assert meta["fold_hash"] == layout.read_folds(nb["root"]).hash
    assert meta["imported"]["oof"].endswith("oof_nb.npy")


def test_npz_with_per_fold_test_and_default_test_ids(notebook):
    nb = notebook
    path = nb["dir"] / "preds.npz"
    np.savez(path, oof=nb["oof"], test=nb["test"])
    result = import_experiment(nb["root"], "nb", oof=path, test=path)
    assert result.meta["test_predictions"] == "per-fold"
    assert result.meta["imported"]["test_ids"] == "row numbers"
    np.testing.assert_array_equal(result.test_ids, [str(i) for i in range(N_TEST)])
    nb["test_ids"] = result.test_ids
    assert_imported(nb, "nb", oof=nb["oof"], test=nb["test"])


def test_ids_file_gives_the_array_row_order(notebook):
    nb = notebook
    order = np.random.default_rng(1).permutation(N_ROWS)
    pd.DataFrame({"id": nb["ids"][order], "other": 1}).to_csv(nb["dir"] / "train.csv", index=False)
    import_experiment(nb["root"], "nb", oof=save_npy(nb, "oof.npy", nb["oof"][order]),
                      test=save_npy(nb, "test.npy", nb["test"]), ids=nb["dir"] / "train.csv",
                      test_ids=nb["dir"] / "sample_submission.csv")
    assert_imported(nb, "nb", oof=nb["oof"], test=nb["test"])


def test_classes_option_names_the_array_columns(notebook):
    nb = notebook
    named = ["owl", "cat", "dog"]            # the arrays' column order
    perm = [CLASSES.index(c) for c in named]
    import_experiment(nb["root"], "nb", oof=save_npy(nb, "oof.npy", nb["oof"][:, perm]),
                      test=save_npy(nb, "test.npy", nb["test"][..., perm]), classes=named,
                      test_ids=nb["dir"] / "sample_submission.csv")
    assert_imported(nb, "nb", oof=nb["oof"], test=nb["test"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_match_rows_by_id_and_columns_by_name(notebook, suffix):
    nb = notebook
    rows = np.random.default_rng(2).permutation(N_ROWS)
    columns = ["dog", "owl", "cat"]
    perm = [CLASSES.index(c) for c in columns]
    averaged = nb["test"].mean(axis=0)
    oof = save_table(nb, f"oof{suffix}", nb["ids"][rows], nb["oof"][rows][:, perm], columns, id_column="id")
    test = save_table(nb, f"test{suffix}", nb["test_ids"][::-1], averaged[::-1][:, perm], columns)
    import_experiment(nb["root"], "nb", oof=oof, test=test)
    assert_imported(nb, "nb", oof=nb["oof"], test=np.broadcast_to(averaged, nb["test"].shape))


@pytest.fixture
def binary(tmp_path):
    root = tmp_path / "root"
    ids = [f"r{i}" for i in range(12)]
    layout.write_folds(root, ids, [("spam",) if i % 3 == 0 else () for i in range(12)],
                       [i % 3 for i in range(12)])
    return root, np.array(ids)


def test_binary_one_dimensional_arrays_and_single_column_tables(binary, tmp_path):
    root, ids = binary
    rng = np.random.default_rng(3)
    oof, test = rng.uniform(size=12).astype(np.float32), rng.uniform(size=5).astype(np.float32)
    np.save(tmp_path / "oof.npy", oof)
    np.save(tmp_path / "test.npy", test)
    import_experiment(root, "arrays", oof=tmp_path / "oof.npy", test=tmp_path / "test.npy")
    pd.DataFrame({"id": ids, "score": oof}).to_csv(tmp_path / "oof.csv", index=False)
    pd.DataFrame({"id": [str(i) for i in range(5)], "p": test}).to_parquet(tmp_path / "test.parquet")
    import_experiment(root, "tables", oof=tmp_path / "oof.csv", test=tmp_path / "test.parquet")
    collection = collect(root, strict=True, use_cache=False, n_jobs=1)
    assert collection.classes == ("spam",)
    for m in range(2):
        np.testing.assert_allclose(collection.oof[:, m, 0], oof, rtol=1e-6)
        np.testing.assert_allclose(collection.test[:, :, m, 0], np.tile(test, (3, 1)), rtol=1e-6)


@pytest.mark.parametrize("link", ["sigmoid", "softmax"])
def test_from_logits_converts_explicitly(notebook, link):
    nb = notebook
    logits = np.log(nb["oof"] / (1 - nb["oof"]))
    result = import_experiment(nb["root"], "nb", oof=save_npy(nb, "oof.npy", logits),
                               test=save_npy(nb, "test.npy", np.log(nb["test"] / (1 - nb["test"]))),
                               from_logits=link)
    if link == "sigmoid":
        np.testing.assert_allclose(result.oof, nb["oof"], rtol=1e-5)
    else:
        expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(result.oof, expected, rtol=1e-5)
        np.testing.assert_allclose(result.test.sum(axis=-1), 1.0, rtol=1e-5)
    assert result.meta["imported"]["from_logits"] == link
    collect(nb["root"], strict=True, use_cache=False, n_jobs=1)


def test_force_replaces_and_existing_name_is_refused(notebook):
    nb = notebook
    oof, test = save_npy(nb, "oof.npy", nb["oof"]), save_npy(nb, "test.npy", nb["test"])
    import_experiment(nb["root"], "nb", oof=oof, test=test)
    with pytest.raises(OutputExistsError, match="already exists .* pass --force"):
        import_experiment(nb["root"], "nb", oof=oof, test=test)
    replaced = import_experiment(nb["root"], "nb", oof=oof, test=save_npy(nb, "t2.npy", nb["test"] / 2),
                                 force=True)
    assert list(layout.list_experiments(nb["root"])) == ["nb"]
    np.testing.assert_allclose(layout.read_probs(layout.probs_path(
        nb["root"], "nb", 0, "test")).values, nb["test"][0] / 2, rtol=1e-6)
    assert replaced.path.exists() and not list((nb["root"] / ".stack" / "staging").iterdir())


# ---------------------------------------------------------------- refusals


def _inputs(nb, *, oof=None, test=None, oof_name="oof.npy", test_name="test.npy", **options):
    """(oof path, test path, options) with arrays saved; tables are saved by the cases."""
    oof_path = oof if isinstance(oof, type(nb["dir"])) else save_npy(
        nb, oof_name, nb["oof"] if oof is None else oof)
    test_path = test if isinstance(test, type(nb["dir"])) else save_npy(
        nb, test_name, nb["test"] if test is None else test)
    return oof_path, test_path, options


def _nan_oof(nb):
    oof = nb["oof"].copy()
    oof[5, 1] = np.nan
    return _inputs(nb, oof=oof)


def _logit_test(nb):
    test = nb["test"].copy()
    test[1, 2, 0] = 3.5
    return _inputs(nb, test=test)


def _table_oof(nb, suffix, edit):
    frame = pd.DataFrame(nb["oof"], columns=CLASSES)
    frame.insert(0, "fname", nb["ids"])
    frame = edit(frame)
    path = nb["dir"] / f"oof{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    return _inputs(nb, oof=path)


def _with_table_edit(edit):
    return lambda suffix: (lambda nb: _table_oof(nb, suffix, edit))


def _unknown_id(frame):
    frame.loc[3, "fname"] = "ghost"
    return frame


def _table_nan(frame):
    frame.loc[2, "dog"] = np.nan
    return frame


# (id, build(nb) -> (oof, test, options), error class, message regex, the file it must name)
REFUSALS = [
    ("too few OOF rows", lambda nb: _inputs(nb, oof=nb["oof"][:-1]), LayoutError,
     rf"array has {N_ROWS - 1} rows but folds.csv has {N_ROWS}; .* pass --ids FILE", "oof.npy"),
    ("too many columns", lambda nb: _inputs(nb, oof=np.hstack([nb["oof"], nb["oof"][:, :1]])),
     LayoutError, r"array has 4 columns but folds.csv has 3 classes", "oof.npy"),
    ("1-D array, 3 classes", lambda nb: _inputs(nb, oof=nb["oof"][:, 0]), LayoutError,
     r"1-D .* fits binary tasks only", "oof.npy"),
    ("NaN in OOF", _nan_oof, LayoutError, r"row 'clip_05', column 'dog': value is NaN", "oof.npy"),
    ("logits in test", _logit_test, LayoutError,
     r"value 3\.5 is outside \[0, 1\], so these look like logits; pass --from-logits sigmoid",
     "test.npy"),
    ("wrong number of test folds", lambda nb: _inputs(nb, test=nb["test"][:2]), LayoutError,
     r"holds 2 fold predictions but folds.csv has 3 folds", "test.npy"),
    ("test ids count", lambda nb: _inputs(nb, test=nb["test"][:, :-1],
                                          test_ids=nb["dir"] / "sample_submission.csv"),
     LayoutError, rf"{N_TEST - 1} test rows but --test-ids .* names {N_TEST}", "test.npy"),
    ("npz of several arrays", lambda nb: (np.savez(nb["dir"] / "x.npz", a=nb["oof"], b=nb["oof"]),
                                          _inputs(nb, oof=nb["dir"] / "x.npz"))[1],
     LayoutError, r"holds 2 arrays \(a, b\); keep one, or name the oof predictions 'oof'", "x.npz"),
    ("unknown suffix", lambda nb: _inputs(nb, oof=nb["dir"] / "oof.txt"), OptionError,
     r"unknown file type '\.txt'", "oof.txt"),
    ("missing file", lambda nb: _inputs(nb, oof=nb["dir"] / "absent.npy"), LayoutError,
     r"oof file is missing", "absent.npy"),
    ("bad --classes", lambda nb: _inputs(nb, classes=["cat", "dog", "emu"]), OptionError,
     r"--classes must name each class of folds.csv once,.*'emu' is not a class", ""),
    ("--ids with a table", lambda nb: _table_oof(nb, ".csv", lambda f: f)[:2] + (
        {"ids": nb["dir"] / "sample_submission.csv"},), OptionError,
     r"--ids is for .npy/.npz arrays; .*oof.csv is a table", "oof.csv"),
    ("bad --from-logits", lambda nb: _inputs(nb, from_logits="tanh"), OptionError,
     r"--from-logits 'tanh' is unknown", ""),
]
for _suffix in (".csv", ".parquet"):
    REFUSALS += [
        (f"unknown id ({_suffix})", _with_table_edit(_unknown_id)(_suffix), LayoutError,
         r"id 'ghost' is not a row of folds.csv", f"oof{_suffix}"),
        (f"missing row ({_suffix})", _with_table_edit(lambda f: f.iloc[1:])(_suffix), LayoutError,
         r"folds.csv row 'clip_00' has no prediction \(1 missing\)", f"oof{_suffix}"),
        (f"missing class ({_suffix})", _with_table_edit(lambda f: f.drop(columns="owl"))(_suffix),
         LayoutError, r"class column 'owl' is missing", f"oof{_suffix}"),
        (f"unknown class ({_suffix})", _with_table_edit(lambda f: f.assign(emu=0.5))(_suffix),
         LayoutError, r"column 'emu' is not a class of folds.csv", f"oof{_suffix}"),
        (f"NaN ({_suffix})", _with_table_edit(_table_nan)(_suffix), LayoutError,
         r"row 'clip_02', column 'dog': value is NaN", f"oof{_suffix}"),
        (f"duplicate id ({_suffix})", _with_table_edit(lambda f: pd.concat([f, f.iloc[:1]]))(_suffix),
         LayoutError, r"id 'clip_00' appears 2 times", f"oof{_suffix}"),
    ]


@pytest.mark.parametrize("build, error, message, where", [case[1:] for case in REFUSALS],
                         ids=[case[0] for case in REFUSALS])
def test_refusals_name_the_file_and_write_nothing(notebook, build, error, message, where):
    nb = notebook
    oof, test, options = build(nb)
    with pytest.raises(error, match=message) as raised:
        import_experiment(nb["root"], "nb", oof=oof, test=test, **options)
    assert isinstance(raised.value, StackError)
    text = str(raised.value)
    assert where in text and "\n" not in text
    assert not (nb["root"] / "nb").exists() and layout.list_experiments(nb["root"]) == []
