"""How `stack --help` reads: one-line command summaries, flags without a type, workflow order.

Every command's summary (the commands list of `stack --help`) is the first line of its docstring,
a whole sentence; the rest of the docstring is its own `--help`, reflowed to the terminal's width
(a docstring's line breaks are the source's, not the reader's). Boolean flags take no value, so
they show no `<bool>` type. Commands are listed in the order one uses them (:data:`WORKFLOW`).
"""

from __future__ import annotations

import inspect

import typer.core

WORKFLOW = ("make-folds", "first-level", "import", "collect", "search-subsets", "blend", "tune",
            "train", "predict", "auto", "report", "demo")


def summary(help_text: str | None) -> str:
    """The first line of a command's docstring: its one-sentence summary."""
    lines = inspect.cleandoc(help_text or "").splitlines()
    return lines[0].strip() if lines else ""


def reflowed(help_text: str | None) -> str | None:
    """``help_text`` with each paragraph on one line (blank lines still separate paragraphs)."""
    if help_text is None:
        return None
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def _untyped_flags(command, ctx) -> None:
    """Give every flag (an option that takes no value) an empty metavar: no `<bool>` column."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def _help_texts(kwargs: dict) -> dict:
    """A command's or group's keyword arguments with its summary (the docstring's first line,
    unless given) and its help reflowed to the terminal."""
    text = kwargs.get("help")
    if kwargs.get("short_help") is None and text:
        kwargs["short_help"] = summary(text)
    kwargs["help"] = reflowed(text)
    return kwargs


class StackCommand(typer.core.TyperCommand):
    """A `stack` command: its summary is its docstring's first line; flags show no type."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **_help_texts(kwargs))

    def format_help(self, ctx, formatter) -> None:
        _untyped_flags(self, ctx)
        return super().format_help(ctx, formatter)


class StackGroup(typer.core.TyperGroup):
    """A `stack` command group: subcommands in :data:`WORKFLOW` order, others after them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **_help_texts(kwargs))

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(WORKFLOW)}
        return sorted(names, key=lambda name: (rank.get(name, len(WORKFLOW)), names.index(name)))

    def format_help(self, ctx, formatter) -> None:
        _untyped_flags(self, ctx)
        return super().format_help(ctx, formatter)
