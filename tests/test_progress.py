"""Progress where the user reads it: plain lines in a pipe at a steady pace (a heartbeat while a
unit is slow), live bars with ETA in a terminal, nothing drawn before a stage starts work."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from stacker.errors import OptionError
from stacker.progress import (
    EVERY_S,
    HEARTBEAT_S,
    Lines,
    Ticker,
    duration,
    heartbeat_seconds,
    progress_mode,
    show_progress,
)
from stacker.runtime import quiet_stage

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def recorder(clock: FakeClock):
    """Lines at the fake time they were written: [(time, text)]."""
    lines: list[tuple[float, str]] = []
    return lines, lambda text: lines.append((clock(), text))


def test_nothing_is_written_before_the_first_update_then_one_line_per_slow_unit():
    clock = FakeClock()
    lines, write = recorder(clock)
    stage = Lines("folds", write=write, clock=clock)
    clock.now += 2
    assert stage.tick() == pytest.approx(HEARTBEAT_S - 2) and lines == []
    stage.update(0, 5)
    assert [text for _, text in lines] == ["folds: 0/5 (0%), 2.0 s elapsed"]
    for k in range(1, 6):          # slow units (4 s each): each one gets its line
        clock.now += 4
        stage.update(k)
    assert len(lines) == 5         # the last unit's line is the closing one
    assert lines[2][1] == "folds: 2/5 (40%), 10 s elapsed, about 15 s left"   # 10 s * 3 / 2
    stage.close()
    assert len(lines) == 6 and lines[-1][1] == "folds: done 5/5 in 22 s"


def test_fast_units_are_batched_to_one_line_per_few_seconds():
    clock = FakeClock()
    lines, write = recorder(clock)
    stage = Lines("search", write=write, clock=clock)
    stage.update(0, 1000)
    for k in range(1, 1001):       # 1,000 steps of 10 ms: 10 s of work
        clock.now += 0.01
        stage.update(k)
    stage.close()
    written = [t for t, _ in lines]
    assert 3 <= len(lines) <= 10 / EVERY_S + 3
    assert all(b - a >= EVERY_S - 1e-9 for a, b in zip(written[1:-1], written[2:-1]))


def test_a_slow_unit_gets_a_heartbeat_so_no_gap_exceeds_the_heartbeat():
    """Units of random length (up to a minute), the ticker's thread simulated by tick() calls at
    the times it would wake (the delay tick() returns): the gaps between lines stay within the
    heartbeat."""
    import random

    rng = random.Random(0)
    clock = FakeClock()
    lines, write = recorder(clock)
    stage = Lines("cnn", write=write, clock=clock)
    wake = clock.now + stage.tick()
    stage.update(0, 20)
    for k in range(1, 21):
        finish = clock.now + rng.uniform(0.1, 60)
        while wake <= finish:              # the heartbeat thread runs while the unit works
            clock.now = wake
            wake = clock.now + max(stage.tick(), 0.01)
        clock.now = finish
        stage.update(k, note=f"fold {k}: epoch 3/12")
    stage.close()
    times = [t for t, _ in lines]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) <= HEARTBEAT_S + 1e-6
    assert sum("epoch 3/12" in text for _, text in lines) >= 20
    heartbeats = [text for _, text in lines if "about" in text]
    assert heartbeats, "the slow units had no heartbeat line"


def test_a_note_alone_is_progress_and_unknown_totals_count_what_is_done():
    clock = FakeClock()
    lines, write = recorder(clock)
    stage = Lines("tune", write=write, clock=clock)
    stage.update(0, None)
    clock.now += EVERY_S
    stage.update(None, None, note="fold 0: epoch 1/12")
    clock.now += EVERY_S
    stage.update(212)
    assert [text for _, text in lines] == [
        "tune: 0 done, 0.0 s elapsed",
        "tune: 0 done, 3.0 s elapsed, fold 0: epoch 1/12",
        "tune: 212 done, 6.0 s elapsed, fold 0: epoch 1/12"]
    assert "?" not in "".join(text for _, text in lines)


def test_a_failed_stage_says_where_it_stopped_only_when_it_had_started():
    clock = FakeClock()
    lines, write = recorder(clock)
    Lines("collect", write=write, clock=clock).close(failed=True)
    assert lines == []
    stage = Lines("train", write=write, clock=clock)
    stage.update(3, 5)
    clock.now += 12
    stage.close(failed=True)
    assert lines[-1][1] == "train: stopped at 3/5 after 12 s"


def test_the_closing_line_keeps_the_last_note():
    """A tuning's final tally stays in the log: the last update is not printed (the closing line
    says it), so the closing line carries its note."""
    clock = FakeClock()
    lines, write = recorder(clock)
    stage = Lines("tune", write=write, clock=clock)
    stage.update(0, None, note="0 complete, 0 pruned, 2 min 20 s budget left")
    clock.now += 1
    stage.update(43, note="12 complete, 31 pruned, 0.0 s budget left")   # within EVERY_S: no line
    stage.close()
    assert [text for _, text in lines][-1] == "tune: done 43 in 1.0 s, 12 complete, 31 pruned, 0.0 s budget left"
    failed = Lines("cnn", write=write, clock=clock)
    failed.update(1, 3, note="fold 1: epoch 4/12")
    failed.close(failed=True)
    assert lines[-1][1] == "cnn: stopped at 1/3 after 0.0 s, fold 1: epoch 4/12"


def test_the_ticker_thread_writes_heartbeats_while_the_work_is_silent():
    written = []
    stage = Lines("slow", write=written.append, heartbeat=0.05)
    stage.update(0, 1)
    with Ticker(stage.tick):
        deadline = time.monotonic() + 5
        while len(written) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)              # the "work": no update at all
    assert len(written) >= 4 and all(line.startswith("slow: 0/1 (0%)") for line in written)
    assert not any(t.name == "stack-progress" for t in threading.enumerate())


def test_durations_read_as_a_log_reader_wants():
    assert [duration(s) for s in (0.04, 9.9, 12.4, 125, 3725)] == [
        "0.0 s", "9.9 s", "12 s", "2 min 05 s", "1 h 02 min"]


def test_the_mode_follows_the_console_and_the_environment(monkeypatch):
    monkeypatch.delenv("STACK_PROGRESS", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert progress_mode(Console(file=io.StringIO())) == "lines"
    assert progress_mode(Console(file=io.StringIO(), force_terminal=True)) == "bars"
    monkeypatch.setenv("STACK_PROGRESS", "off")
    assert progress_mode(Console(file=io.StringIO(), force_terminal=True)) == "off"
    monkeypatch.setenv("STACK_PROGRESS", "fancy")
    with pytest.raises(OptionError, match="STACK_PROGRESS must be one of bars, lines, off"):
        progress_mode()
    monkeypatch.setenv("STACK_PROGRESS_SECONDS", "0")
    with pytest.raises(OptionError, match="STACK_PROGRESS_SECONDS must be a positive number"):
        heartbeat_seconds()
    monkeypatch.setenv("STACK_PROGRESS_SECONDS", "2.5")
    assert heartbeat_seconds() == 2.5


def test_plain_lines_carry_no_escape_codes_and_end_with_the_stage():
    out = io.StringIO()
    with show_progress("collect", console=Console(file=out, width=80), mode="lines") as update:
        update(0, 2)
        update(2, 2)
    text = out.getvalue()
    assert not ANSI.search(text)
    assert text.splitlines()[0] == "collect: 0/2 (0%), 0.0 s elapsed"
    assert text.splitlines()[-1].startswith("collect: done 2/2 in ")


@pytest.mark.parametrize("mode", ["bars", "lines"])
def test_a_stage_that_fails_before_its_first_update_draws_nothing(mode):
    out = io.StringIO()
    console = Console(file=out, force_terminal=mode == "bars", width=100)
    with pytest.raises(ValueError):
        with show_progress("collecting experiments", console=console, mode=mode):
            raise ValueError("folds.csv is missing")
    assert out.getvalue() == ""


def test_bars_show_the_count_elapsed_time_eta_and_the_note():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with show_progress("first level: cnn", console=console, mode="bars") as update:
        update(0, 5)
        update(2, 5, note="fold 2: epoch 7/12")
    text = out.getvalue()
    assert "first level: cnn" in text and "2/5" in text and "ETA" in text
    assert "fold 2: epoch 7/12" in text and "0:00:0" in text      # elapsed h:mm:ss


def test_the_quiet_stage_takes_what_show_progress_takes():
    with quiet_stage("x") as update:
        update(1, 2)
        update(None, None, note="fold 0: epoch 1/3")


def test_a_piped_command_prints_plain_lines_at_a_steady_pace(small_layout, tmp_path):
    """`stack train` with stdout and stderr piped, the heartbeat at 0.05 s: plain lines (no
    escape codes, no bar), one per model as the work advances, and no long silence between
    the first progress line and the last (bounded loosely: the machine may be busy). After the
    first unit (torch's start, about 1 s) a unit takes about 0.2 s: a 0.2 s pace folded the
    counts 1/3 and 2/3 into the closing line in about a third of the runs."""
    root = small_layout()
    env = {**os.environ, "PYTHONPATH": str(REPO), "STACK_PROGRESS_SECONDS": "0.05",
           "STACK_PROGRESS": ""}
    command = [sys.executable, "-m", "stacker.cli.entry", "train", "--root", str(root),
               "--name", "mlp", "--max-epochs", "8", "--seeds", "0", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, cwd=tmp_path)
    arrived = [(time.monotonic(), line.rstrip("\n")) for line in process.stdout]
    assert process.wait(timeout=300) == 0, "\n".join(text for _, text in arrived)
    text = "\n".join(line for _, line in arrived)
    assert not ANSI.search(text) and "━" not in text.split("training")[1].split("\n")[0]
    progress = [(t, line) for t, line in arrived if line.startswith("training 3 inputs")]
    counts = [int(m.group(1)) for _, line in progress if (m := re.search(r": (\d)/3 ", line))]
    assert counts[0] == 0 and len(set(counts)) >= 2 and counts == sorted(counts)
    assert progress[-1][1].startswith("training 3 inputs, folds x seeds: done 3/3 in ")
    times = [t for t, _ in progress]
    assert max(b - a for a, b in zip(times, times[1:])) < 5.0
