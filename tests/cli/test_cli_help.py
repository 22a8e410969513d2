"""`stack ... --help` reads well at 80 columns: whole-sentence one-line summaries, no line past
the edge, flags without a `<bool>` type or a `--no-no-x` twin, commands in workflow order."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from stacker.cli.app import app
from stacker.cli.help import WORKFLOW, summary

WIDTH = 80


def _context(command):
    """A context of ``command`` of typer's own click (typer carries it: no ``import click``)."""
    return command.context_class(command)


def _commands(command, path=()):
    """(path, click command) of the app and every command and group under it."""
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = _context(command)
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


ALL = list(_commands(typer.main.get_command(app)))


def _help(path) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)},
                                terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", [path for path, _ in ALL], ids=lambda p: " ".join(p) or "stack")
def test_help_fits_80_columns_and_flags_show_no_type(path):
    text = _help(path)
    too_long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not too_long, too_long
    assert "<bool>" not in text
    assert "--no-no-" not in text and "--no-force" not in text
    assert "…" not in text, "a word of the help was cut (rich ellipsis)"


@pytest.mark.parametrize("path,group", [(p, c) for p, c in ALL if hasattr(c, "list_commands")],
                         ids=lambda p: " ".join(p) if isinstance(p, tuple) else "")
def test_every_summary_is_one_whole_sentence_on_one_line(path, group):
    lines = _help(path).splitlines()
    ctx = _context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        text = summary(command.help)
        assert text.endswith("."), f"{name}: summary {text!r} is not a whole sentence"
        assert command.short_help == text
        row = [line for line in lines if line.startswith(f"│ {name} ")]
        assert len(row) == 1 and text in row[0], (name, text, row)


def test_commands_are_listed_in_workflow_order():
    root = typer.main.get_command(app)
    names = root.list_commands(_context(root))
    assert names[:len(WORKFLOW)] == list(WORKFLOW)
    lines = _help(()).splitlines()
    shown = [line.split()[1] for line in lines
             if line.startswith("│ ") and len(line.split()) > 1 and line.split()[1] in names]
    assert shown == names


def test_the_cli_starts_without_a_click_of_its_own():
    """typer carries its own click: a plain install of stack has no ``click`` package (it came
    with dask in the dev extras), so no module of the CLI may import it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['click'] = None\n"      # `import click` now fails
            "from typer.testing import CliRunner\n"
            "from stacker.cli.app import app\n"
            "result = CliRunner().invoke(app, ['blend', '--root', 'nowhere'])\n"
            "assert result.exit_code == 1, result.output\n"
            "assert 'Traceback' not in result.output, result.output\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("args, code, text", [
    (["--help"], 0, "search-subsets"),                  # the whole help, through a pipe
    (["blend", "--root", "nowhere"], 1, "error: "),    # a refusal: one line, exit 1
    (["--no-such-option"], 2, "No such option"),        # a usage error: typer's exit 2
])
def test_the_console_script_keeps_exit_codes_and_output_without_the_teardown(args, code, text):
    """`stack` leaves through os._exit after the exit handlers (stacker.cli.entry.leave): the exit
    code and every line written still reach the caller."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "stacker.cli.entry", *args], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "100"})
    assert done.returncode == code, done.stdout + done.stderr
    assert text in done.stdout + done.stderr


def test_leave_waits_for_threads_runs_the_exit_handlers_and_reports_a_message_as_1(tmp_path):
    import subprocess
    import sys

    marker, late = tmp_path / "handler ran", tmp_path / "thread done"
    code = ("import atexit, pathlib, threading, time; from stacker.cli.entry import leave\n"
            f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
            f"def work(): time.sleep(0.5); pathlib.Path({str(late)!r}).write_text('done')\n"
            "threading.Thread(target=work).start()\n"      # not a daemon: waited for
            "print('last words')\n"
            "leave('a message')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "a message" in done.stderr and "last words" in done.stdout
    assert marker.read_text() == "yes" and late.read_text() == "done"
