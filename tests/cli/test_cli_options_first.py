"""Options are checked before any work: a misspelt --metric, a missing --template or a budget
that is no number of seconds fail at once, in one line, before a progress bar is drawn."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stacker.cli.app import app
from stacker.simulate import write_simulated_layout

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("options") / "predictions"
    classes = [f"class_{j}" for j in range(4)]
    labels = [(classes[i % 4],) for i in range(48)]
    write_simulated_layout(root, [f"clip_{i:03d}.wav" for i in range(48)], labels,
                           [i % 3 for i in range(48)], n_experiments=3, n_test=12,
                           classes=classes, seed=0)
    return root


CASES = {
    "search metric": ["search-subsets", "--metric", "lwlrapp"],
    "search budget": ["search-subsets", "--time-budget", "0"],
    "search size": ["search-subsets", "--max-size", "0"],
    "blend metric": ["blend", "--geo-mean", "--metric", "lwlrapp"],
    "blend template": ["blend", "--geo-mean", "--template", "no_such_template.csv"],
    "auto metric": ["auto", "--metric", "lwlrapp"],
    "auto template": ["auto", "--template", "no_such_template.csv"],
    "auto budget": ["auto", "--time-budget", "nan"],
    "collect metric": ["collect", "--metric", "lwlrapp"],
    "report metric": ["report", "--metric", "lwlrapp"],
    "train metric": ["train", "--name", "l2", "--metric", "lwlrapp"],
    "tune metric": ["tune", "--trials", "1", "--metric", "lwlrapp"],
}


@pytest.mark.parametrize("args", CASES.values(), ids=CASES.keys())
def test_a_bad_option_fails_at_once_in_one_line(root, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*args, "--root", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code in (1, 2), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    assert "━" not in result.output and "collecting" not in result.output
    bad = args[-1]
    assert bad in lines[0] or args[-2] in lines[0]
    assert not (tmp_path / "submission.csv").exists() and not (tmp_path / "report.html").exists()


def test_a_misspelt_metric_lists_the_choices(root):
    result = runner.invoke(app, ["search-subsets", "--metric", "lwlrapp", "--root", str(root)])
    assert "unknown metric 'lwlrapp'" in result.output and "lwlrap, lrap" in result.output
