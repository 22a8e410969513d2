"""Tables stay readable in a pipe (80 columns): experiment names, recipe names and numbers are never
split inside a word, and the files a command wrote come after its table, one whole path a line."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console

import stacker.cli.common as common
from stacker.cli.auto import auto_table
from stacker.cli.common import print_files
from stacker.cli.demo import result_table

WIDTH = 80
DEEP = Path("/work/a_rather_long_folder_name/demo_run/predictions_of_the_demo_with_a_long_name")
FILES = {"dataset": DEEP.parent / "dataset", "layout": DEEP, "submission": DEEP / "submission.csv",
         "report": DEEP.parent / "report.html"}
NAMES = ["sklearn_logistic_reg", "sklearn_extra_trees", "cnn_logmel_fast", "auto_mlp_3",
         "auto_mlp_12"]


def _render(renderable) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=WIDTH, force_terminal=False, color_system=None).print(renderable)
    return buffer.getvalue()


def _recipe(name, members):
    return SimpleNamespace(name=name, what="ensemble selection with a per-class logit bias",
                           members=tuple(members), weights={m: 1 / len(members) for m in members},
                           cv=0.91234, nested_cv=0.90123, holdout_cv=0.89999)


def _words_whole(text: str, words) -> None:
    lines = text.splitlines()
    assert max(map(len, lines)) <= WIDTH
    for word in words:
        assert any(word in line for line in lines), f"{word!r} is split across lines:\n{text}"


def test_auto_table_keeps_names_whole_at_80_columns():
    recipes = [_recipe("best single", NAMES[:1]), _recipe("geo-mean of all", NAMES),
               _recipe("subset search on level 1 and level 2", NAMES[1:4])]
    result = SimpleNamespace(settings=SimpleNamespace(metric="lwlrap"), tuning={"holdout_fold": 2},
                             recipes=recipes, final=recipes[1], files=FILES)
    text = _render(auto_table(result))
    _words_whole(text, ["best single", "0.9123", "0.9012", "ensemble", "selection", "per-class"])
    assert str(DEEP) not in text and NAMES[-1] not in text   # members and files follow the table


def test_auto_members_follow_the_table_one_recipe_a_line(monkeypatch):
    from stacker.cli.auto import print_members

    recipes = [_recipe("best single", NAMES[:1]), _recipe("geo-mean of all", NAMES)]
    buffer = io.StringIO()
    monkeypatch.setattr("stacker.cli.auto.console", Console(file=buffer, width=WIDTH))
    print_members(SimpleNamespace(recipes=recipes))
    lines = buffer.getvalue().splitlines()
    assert lines[1] == f"  best single: {NAMES[0]}"
    assert lines[2] == "  geo-mean of all: " + " + ".join(NAMES)   # longer than 80: not folded


def test_demo_table_keeps_names_whole_at_80_columns():
    models = pd.DataFrame({"experiment": [*NAMES, "auto_blend"], "level": [1, 1, 1, 2, 2, 3],
                           "cv": [0.9] * 6, "test": [0.8] * 6})
    result = SimpleNamespace(
        models=models, level2_inputs={"auto_mlp_3": NAMES[:3], "auto_mlp_best_trial_17": NAMES[:3]},
        first_level_subset=NAMES[:3], first_level_subset_cv=0.9, first_level_subset_nested_cv=0.89,
        first_level_subset_test=0.88, best_single=NAMES[0], best_single_cv=0.87,
        best_single_test=0.86, final_members=NAMES[1:], final_cv=0.92, final_nested_cv=0.91,
        final_test=0.9, final_recipe="ensemble selection", blend_beats_single=True, files=FILES)
    text = _render(result_table(result))
    _words_whole(text, [*NAMES, "0.9200", "0.8600"])
    assert str(DEEP) not in text


def test_files_follow_the_table_one_whole_path_a_line(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buffer, width=WIDTH, force_terminal=False))
    print_files(FILES)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == len(FILES)
    for (name, path), line in zip(FILES.items(), lines):
        assert line.startswith(f"{name}:") and line.endswith(str(path)), line


@pytest.mark.parametrize("width", [80, 120])
def test_words_whole_widens_a_column_to_its_longest_word(width):
    from rich.table import Table

    table = Table()
    for column in ("experiment", "CV", "members"):
        table.add_column(column, overflow="fold")
    table.add_row(NAMES[0], "0.9123", " + ".join(NAMES))
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False).print(common.words_whole(table))
    for name in NAMES:
        assert any(name in line for line in buffer.getvalue().splitlines()), buffer.getvalue()
