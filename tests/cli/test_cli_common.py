"""stacker.cli.common: library messages name parameters; the CLI shows them as the command's flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stacker.cli.common import command_flags, in_cli_words


def command(holdout_fold: Annotated[int, typer.Option(help="a fold")] = 0,
            root: Annotated[Path, typer.Option("--root", "-r")] = Path("."),
            fmt: Annotated[str, typer.Option("--format")] = "csv",
            force: bool = False) -> None:
    """A command with typer's default flag names and declared ones."""


def test_flags_follow_typer_names_and_declarations():
    flags = command_flags(command)
    flags.pop("return", None)
    assert flags == {"holdout_fold": "--holdout-fold", "root": "--root", "fmt": "--format", "force": "--force"}


def test_library_words_become_flags_and_the_rest_is_kept():
    flags = command_flags(command)
    message = "`holdout_fold` 7 is not a fold; pass `force`, or `fmt` csv; run `stack collect` first"
    assert in_cli_words(message, flags) == ("--holdout-fold 7 is not a fold; pass --force, or --format csv; "
                                            "run `stack collect` first")


def test_a_writer_waits_for_the_running_one_under_stack_lock_wait(small_layout, monkeypatch):
    """`stack collect` with STACK_LOCK_WAIT set waits for the other writer instead of refusing."""
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from stacker.cli.app import app

    root = small_layout()
    code = (f"import time\nfrom stacker.layout.lock import root_lock\n"
            f"with root_lock({str(root)!r}, 'stack tune'):\n    print('held', flush=True)\n"
            f"    time.sleep(1.5)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    refused = CliRunner().invoke(app, ["collect", "--root", str(root)])
    assert refused.exit_code == 1 and "`stack tune`" in refused.output
    monkeypatch.setenv("STACK_LOCK_WAIT", "30")
    began = time.monotonic()
    waited = CliRunner().invoke(app, ["collect", "--root", str(root)])
    child.wait()
    assert waited.exit_code == 0, waited.output
    assert time.monotonic() - began > 0.3
