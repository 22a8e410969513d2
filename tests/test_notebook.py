"""The notebook API: stacker.import_predictions (arrays and DataFrames in memory, checked as
`stack import` checks files), stacker.auto (the callable package), and results as tables; the
README's "From a notebook" example runs as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stacker
from stacker import layout
from stacker.errors import LayoutError, OptionError, OutputExistsError, StackError
from stacker.layout.collect import collect
from stacker.layout.importing import import_experiment
from stacker.metrics import lwlrap

README = Path(__file__).resolve().parents[1] / "README.md"
CLASSES = ["cat", "dog", "owl"]
N_ROWS, N_TEST, N_FOLDS = 24, 9, 3
TINY = dict(hidden=16, bottleneck=4, max_epochs=4, patience=2, batch_size=32)


@pytest.fixture
def nb(tmp_path):
    """A root with folds.csv only; a notebook's oof (N_ROWS, 3) in folds.csv order, per-fold test
    (N_FOLDS, N_TEST, 3); the OOF made informative so the column-order check has labels to use."""
    rng = np.random.default_rng(0)
    ids = np.array([f"clip_{i:02d}" for i in range(N_ROWS)])
    labels = [(CLASSES[i % 3],) for i in range(N_ROWS)]
    root = tmp_path / "root"
    layout.write_folds(root, ids, labels, [i % N_FOLDS for i in range(N_ROWS)])
    y = layout.labels_to_matrix(labels, CLASSES)
    oof = np.clip(0.6 * y + rng.uniform(0.05, 0.4, y.shape), 0, 1).astype(np.float32)
    test = rng.uniform(0.01, 0.99, (N_FOLDS, N_TEST, 3)).astype(np.float32)
    return {"root": root, "dir": tmp_path, "ids": ids, "oof": oof, "test": test,
            "test_ids": np.array([f"t{i}" for i in range(N_TEST)])}


def collected(root, name):
    collection = collect(root, strict=True, use_cache=False, n_jobs=1)
    m = collection.index([name])[0]
    order = np.argsort(collection.test_ids)
    return collection.oof[:, m], collection.test[:, order, m], collection.test_ids[order]


def test_arrays_in_memory_write_what_the_same_npy_files_write(nb):
    np.save(nb["dir"] / "oof.npy", nb["oof"])
    np.save(nb["dir"] / "test.npy", nb["test"])
    import_experiment(nb["root"], "files", oof=nb["dir"] / "oof.npy", test=nb["dir"] / "test.npy")
    result = stacker.import_predictions("memory", oof=nb["oof"], test=nb["test"], root=nb["root"])
    for a, b in zip(collected(nb["root"], "files"), collected(nb["root"], "memory")):
        np.testing.assert_array_equal(a, b)
    assert result.cv == pytest.approx(lwlrap(layout.read_folds(nb["root"]).y, nb["oof"]))
    meta = layout.read_meta(nb["root"], "memory")
    assert meta["imported"]["oof"] == "oof (numpy array, shape (24, 3))"
    assert meta["test_predictions"] == "per-fold"


def test_dataframes_and_ids_in_memory_are_aligned_by_id_and_class_name(nb):
    shuffle = np.random.default_rng(1).permutation(N_ROWS)
    averaged = nb["test"].mean(axis=0)
    # a table: ids in the first column, class columns in another order, rows shuffled
    oof_frame = pd.DataFrame(nb["oof"][shuffle][:, ::-1], columns=CLASSES[::-1])
    oof_frame.insert(0, "fname", nb["ids"][shuffle])
    # a table with its ids in a named index
    test_frame = pd.DataFrame(averaged, columns=CLASSES, index=pd.Index(nb["test_ids"], name="fname"))
    stacker.import_predictions("tables", oof=oof_frame, test=test_frame, root=nb["root"])
    # arrays with their ids in memory; a template DataFrame names the arrays' column order
    template = pd.DataFrame({"fname": nb["test_ids"], **{c: 0.0 for c in CLASSES[::-1]}})
    stacker.import_predictions("arrays", oof=nb["oof"][shuffle][:, ::-1], test=averaged[:, ::-1],
                               ids=list(nb["ids"][shuffle]), test_ids=template, root=nb["root"])
    for name in ("tables", "arrays"):
        oof, test, test_ids = collected(nb["root"], name)
        np.testing.assert_allclose(oof, nb["oof"], rtol=1e-6)
        np.testing.assert_allclose(test[0], averaged, rtol=1e-6)
        assert list(test_ids) == sorted(nb["test_ids"])


def _refusal_cases(nb):
    short = nb["oof"][1:]
    nan = nb["oof"].copy()
    nan[2, 1] = np.nan
    frame = pd.DataFrame(nb["oof"], columns=CLASSES)           # no id column
    text = pd.DataFrame({"fname": nb["ids"], "cat": "x", "dog": 0.5, "owl": 0.5})
    return [
        (dict(oof=short), LayoutError, r"^oof \(numpy array, shape \(23, 3\)\): array has 23 rows but "
                                       r"folds.csv has 24; save one row per folds.csv row"),
        (dict(oof=nan), LayoutError, r"row 'clip_02', column 'dog': value is NaN"),
        (dict(oof=nb["oof"] * 4 - 2), LayoutError, r"look like logits; pass --from-logits sigmoid"),
        (dict(oof=frame), LayoutError, r"the first column 'cat' holds floats, not row ids"),
        (dict(oof=text), LayoutError, r"column 'cat' is not numeric"),
        (dict(ids=list(nb["ids"][:-1])), LayoutError, r"array has 24 rows but --ids ids \(list, 23 items\)"),
        (dict(ids=[*nb["ids"][:-1], ""]), LayoutError, r"row 23: the id is empty"),
        (dict(ids=3), OptionError, r"--ids: expected a list, array, Series or DataFrame of ids"),
        (dict(classes="cat,dog,emu"), OptionError, r"'emu' is not a class"),
        (dict(oof=np.array([["a"] * 3] * N_ROWS)), LayoutError, r"array has dtype <U1, not numbers"),
    ]


def test_refusals_in_memory_are_stack_imports_messages_and_write_nothing(nb):
    for options, error, message in _refusal_cases(nb):
        arguments = dict(oof=nb["oof"], test=nb["test"], root=nb["root"]) | options
        with pytest.raises(error, match=message) as raised:
            stacker.import_predictions("nb", **arguments)
        assert isinstance(raised.value, StackError) and "\n" not in str(raised.value)
        assert layout.list_experiments(nb["root"]) == []
    stacker.import_predictions("nb", oof=nb["oof"], test=nb["test"], root=nb["root"])
    with pytest.raises(OutputExistsError, match="pass --force"):
        stacker.import_predictions("nb", oof=nb["oof"], test=nb["test"], root=nb["root"])


def test_the_import_result_renders_as_a_table(nb):
    result = stacker.import_predictions("nb", oof=nb["oof"], test=nb["test"], root=nb["root"])
    frame = result.to_frame()
    assert list(frame.columns[:6]) == ["experiment", "oof_rows", "test_rows", "classes", "folds",
                                       "test_predictions"]
    row = frame.iloc[0]
    assert (row.experiment, row.oof_rows, row.test_rows, row.folds) == ("nb", N_ROWS, N_TEST, N_FOLDS)
    assert row.lwlrap == pytest.approx(result.cv)
    assert [row[f"fold_{k}"] for k in range(N_FOLDS)] == list(result.fold_cv.values())
    html = result._repr_html_()
    assert html.count("<table") == 1 and "<b>nb</b>" in html and f"{result.cv:.4f}" in html


def test_stacker_auto_is_the_callable_package_and_checks_its_settings(small_layout, tmp_path):
    import stacker.auto.pipeline  # noqa: F401  (importing a submodule must keep it callable)

    assert callable(stacker.auto) and stacker.auto.run_auto is stacker.run_auto
    root = small_layout()
    with pytest.raises(OptionError, match="unknown setting `n_levl2`; did you mean `n_level2`"):
        stacker.auto(root, n_levl2=1)
    with pytest.raises(OutputExistsError, match="`out` .*folds.csv is folds.csv, an input"):
        stacker.auto(root, out=root / "folds.csv")


def test_the_readme_notebook_example_runs(tmp_path, monkeypatch):
    """The README's code block, as written, on a small simulated notebook, with a tiny budget."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## From a notebook"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    rng = np.random.default_rng(0)
    classes = ["b_2", "a_1", "c_3", "d_4"]                 # the template's order, not sorted
    n_rows, n_test = 60, 15
    ids = [f"clip_{i:02d}.wav" for i in range(n_rows)]
    labels = [classes[i % 4] + ("," + classes[(i + 1) % 4] if i % 5 == 0 else "") for i in range(n_rows)]
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"fname": ids, "labels": labels}).to_csv("train.csv", index=False)
    test_ids = [f"test_{i:02d}.wav" for i in range(n_test)]
    pd.DataFrame({"fname": test_ids, **{c: 0.0 for c in classes}}).to_csv("sample_submission.csv",
                                                                           index=False)
    y = np.array([[c in row.split(",") for c in classes] for row in labels], dtype=float)
    oof = {f"model_{m}": np.clip(0.5 * y + rng.uniform(0, 0.5, y.shape), 0, 1) for m in range(3)}
    test = {name: rng.uniform(0, 1, (n_test, 4)) for name in oof}
    small = dict(time_budget=60, n_trials=2, n_level2=1, max_seeds=1, search_budget=5.0,
                 level2_params=TINY)
    budget = ", ".join(f"{k}={v!r}" for k, v in small.items())
    assert "time_budget=600" in code
    code = code.replace("time_budget=600", budget)
    namespace = {"oof": oof, "test": test, "fold": np.arange(n_rows) % 3}
    exec(compile(code, str(README), "exec"), namespace)
    result = namespace["result"]
    assert [r.name for r in namespace["imported"]] == list(oof)
    frame = result.to_frame()
    assert list(frame.columns) == ["name", "what", "cv", "nested_cv", "holdout_cv", "chosen"]
    assert frame.chosen.sum() == 1 and frame[frame.chosen].name.item() == result.final.name
    assert "<table" in result._repr_html_() and result.final.name in result._repr_html_()
    submission = pd.read_csv("submission.csv")
    assert list(submission.columns) == ["fname", *classes] and len(submission) == n_test
    assert Path("report.html").exists()
    # out=None / report=None: the same run (resumed) writes neither file
    Path("submission.csv").unlink(), Path("report.html").unlink()
    again = stacker.auto(root="predictions", out=None, report=None, **small)
    assert again.final.name == result.final.name and again.files.keys().isdisjoint({"submission", "report"})
    assert not Path("submission.csv").exists() and not Path("report.html").exists()


def test_stacker_auto_is_the_same_run_as_the_command(small_layout, tmp_path):
    from typer.testing import CliRunner

    from stacker.cli.app import app

    options = dict(n_trials=1, n_level2=1, max_seeds=1)
    roots = [small_layout("by_command"), small_layout("from_python")]
    done = CliRunner().invoke(app, ["auto", "--root", str(roots[0]), "--time-budget", "60",
                                    "--trials", "1", "--n-level2", "1", "--max-seeds", "1",
                                    "--out", str(tmp_path / "a.csv"), "--report", str(tmp_path / "a.html")])
    assert done.exit_code == 0, done.output
    result = stacker.auto(roots[1], time_budget=60, out=tmp_path / "b.csv", report=tmp_path / "b.html",
                          **options)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    command = json.loads((tmp_path / "a.csv.json").read_text())
    assert command["nested_cv"] == result.final.nested_cv and command["members"] == list(result.final.members)


def test_stacker_auto_shows_plain_progress_lines_by_default_outside_a_terminal(small_layout,
                                                                              tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.delenv("STACK_PROGRESS", raising=False)
    root = small_layout()
    stacker.auto(root, time_budget=30, n_level2=0, out=tmp_path / "a.csv", report=None)
    err = capsys.readouterr().err
    assert "collect: done 3/3 in " in err and "\x1b[" not in err
    assert re.search(r"^best single first-level model: \d/3 \(\d+%\), ", err, re.M), err
    stacker.auto(root, time_budget=30, n_level2=0, out=tmp_path / "a.csv", report=None,
                 progress=False)
    assert capsys.readouterr().err == ""


def test_in_jupyter_progress_is_rich_bars_when_ipywidgets_is_there(monkeypatch):
    import io
    import sys
    import types

    from rich.console import Console

    from stacker.progress import progress_mode

    monkeypatch.delenv("STACK_PROGRESS", raising=False)
    jupyter = Console(file=io.StringIO(), force_jupyter=True)
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    assert progress_mode(jupyter) == "bars"
    monkeypatch.setitem(sys.modules, "ipywidgets", None)       # not installed: rich would warn
    assert progress_mode(jupyter) == "lines"


@pytest.mark.parametrize("case", ["report inside an experiment", "out is the template"])
def test_stacker_auto_refuses_the_outputs_the_command_refuses_with_the_same_words(
        small_layout, tmp_path, case):
    from typer.testing import CliRunner

    from stacker.cli.app import app

    root = small_layout()
    template = tmp_path / "template.csv"
    collection = collect(root, use_cache=False, n_jobs=1)
    pd.DataFrame({"fname": collection.test_ids, **{c: 0.0 for c in collection.classes}}).to_csv(
        template, index=False)
    keywords = ({"report": root / "sim_000" / "report.html"} if case.startswith("report")
                else {"template": template, "out": template})
    with pytest.raises(OutputExistsError) as refused:
        stacker.auto(root, force=True, progress=False, **keywords)
    flags = [arg for key, value in keywords.items() for arg in (f"--{key}", str(value))]
    done = CliRunner().invoke(app, ["auto", "--root", str(root), "--force", *flags])
    assert done.exit_code == 1
    said = " ".join(done.output.split())
    expected = str(refused.value).replace("`report`", "--report").replace("`out`", "--out") \
        .replace("`template`", "--template").replace("`force`", "--force")
    assert said == "error: " + " ".join(expected.split())


def test_a_bad_template_is_refused_after_collect_before_any_other_stage(small_layout, tmp_path):
    from contextlib import contextmanager

    from stacker.errors import TemplateError

    root = small_layout()
    template = tmp_path / "template.csv"
    pd.DataFrame({"fname": ["someone_else"], "class_a": [0.0]}).to_csv(template, index=False)
    stages = []

    @contextmanager
    def recorded(description):
        stages.append(description)
        yield lambda done=None, total=None, note=None: None

    with pytest.raises(TemplateError, match="template"):
        stacker.auto(root, template=template, out=tmp_path / "a.csv", report=None, progress=recorded)
    assert stages == ["collect"]
