"""The tuning's progress: how many trials completed, were pruned, and how much budget is left,
in the library's callback and in a piped `stack tune` (plain lines)."""

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from test_tune import make_layout

from stacker.layout.collect import collect
from stacker.level2 import params as level2_params
from stacker.level2 import tune

REPO = Path(__file__).resolve().parents[2]
TALLY = re.compile(r"(\d+) complete, (\d+) pruned")


def seconds_left(note: str) -> float:
    """The budget left that a note states ('9 min 58 s budget left' -> 598)."""
    match = re.search(r", (?:(\d+) min )?([\d.]+) s budget left$", note)
    return 60 * int(match.group(1) or 0) + float(match.group(2))


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_note_counts_trials_and_the_budget_left_only_with_a_timeout():
    assert tune.trial_note(12, 31) == "12 complete, 31 pruned"
    assert tune.trial_note(12, 31, 140) == "12 complete, 31 pruned, 2 min 20 s budget left"
    assert tune.trial_note(0, 0, 42.4) == "0 complete, 0 pruned, 42 s budget left"
    assert tune.trial_note(1, 2, -3.0) == "1 complete, 2 pruned, 0.0 s budget left"


def test_each_trial_updates_the_tally_of_this_run(tmp_path, monkeypatch):
    """Eight trials, every third one pruned at its first fold: the notes count up one trial at a
    time and end with the study's own count of complete and pruned trials; with a timeout, the
    budget left shrinks."""
    objective = tune.cv_objective

    def pruning_objective(data, params, *, trial, **options):
        if trial.number % 3 == 1:
            trial.report(0.0, 0)
            raise optuna.TrialPruned()
        return objective(data, params, trial=trial, **options)

    monkeypatch.setattr(tune, "cv_objective", pruning_objective)
    col = collect(make_layout(tmp_path / "l"))
    seen = []
    result = tune.tune(col, col.names, n_trials=8, timeout=600, seed=3,
                       base_params=level2_params.MLPParams(max_epochs=1),
                       on_progress=lambda done, total, note=None: seen.append((done, total, note)))
    assert [(done, total) for done, total, _ in seen] == [(k, 8) for k in range(9)]
    tallies = [tuple(map(int, TALLY.match(note).groups())) for _, _, note in seen]
    assert tallies[0] == (0, 0) and all(sum(t) == k for k, t in enumerate(tallies))
    assert tallies[-1] == (result.n_complete, result.n_pruned) and result.n_pruned == 3
    left = [seconds_left(note) for _, _, note in seen]
    assert left == sorted(left, reverse=True) and 590 < left[0] <= 600
    quiet = []
    tune.tune(col, col.names, n_trials=1, seed=3, storage=f"sqlite:///{tmp_path / 'q.db'}",
              base_params=level2_params.MLPParams(max_epochs=1),
              on_progress=lambda done, total, note=None: quiet.append(note))
    assert quiet == ["0 complete, 0 pruned", "1 complete, 0 pruned"]   # no timeout: no budget


def test_a_piped_stack_tune_prints_the_tally_in_plain_lines(tmp_path):
    root = make_layout(tmp_path / "l")
    env = {**os.environ, "PYTHONPATH": str(REPO), "STACK_PROGRESS_SECONDS": "0.2",
           "STACK_PROGRESS": ""}
    command = [sys.executable, "-m", "stacker.cli.entry", "tune", "--root", str(root),
               "--trials", "3", "--timeout", "600", "--max-epochs", "1", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines()
                if line.startswith("tuning on 3 inputs") and ": working, " not in line]
    assert progress and "\x1b[" not in done.stderr
    assert progress[0].startswith("tuning on 3 inputs: 0/3 (0%), ")
    assert re.search(r", 0 complete, 0 pruned, (10 min 00|9 min 5\d) s budget left$", progress[0])
    assert all(" budget left" in line for line in progress)
    last = re.match(r"tuning on 3 inputs: done 3/3 in [^,]+, (\d+) complete, (\d+) pruned, ",
                    progress[-1])
    assert last, done.stderr
    summary = re.search(r": (\d+) complete, (\d+) pruned \(3 finished in this run\)",
                        " ".join(done.stdout.split()))   # the summary may wrap at 80 columns
    assert summary and last.groups() == summary.groups()


def test_stack_autos_tuning_stage_gets_the_tally(small_layout):
    """`stack auto`'s tuning stage passes the note on: its last update counts the trials the run
    recorded as complete and pruned."""
    import stacker

    updates: dict[str, list] = {}

    @contextmanager
    def recording_stage(description):
        seen = updates.setdefault(description, [])
        yield lambda done=None, total=None, note=None: seen.append((done, total, note))

    result = stacker.auto(small_layout(), time_budget=60, n_trials=2, n_level2=1, max_seeds=1,
                          out=None, report=None, progress=recording_stage)
    [tuning] = [seen for description, seen in updates.items() if description.startswith("tune ")]
    assert tuning[0] == (0, 2, "0 complete, 0 pruned")
    complete, pruned = map(int, TALLY.match(tuning[-1][2]).groups())
    assert (tuning[-1][0], complete + pruned) == (2, 2)
    assert (complete, pruned) == (result.tuning["n_complete"], result.tuning["n_pruned"])
