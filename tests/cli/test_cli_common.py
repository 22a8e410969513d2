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
