"""`stack`: the command-line interface. Thin commands over the library functions.

Each command module defines plain typer command functions; they are registered here.
"""

from __future__ import annotations

import gc

import typer

from stacker.cli.help import StackCommand, StackGroup
from stacker.errors import StackError
from stacker.redaction import redact

app = typer.Typer(name="stack", help="Stacking ensembles from K-fold out-of-fold predictions.",
                  no_args_is_help=True, add_completion=False, cls=StackGroup, pretty_exceptions_enable=False)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected "
                                                           "error (also: STACK_DEBUG=1).")) -> None:
    """Stacking ensembles from K-fold out-of-fold predictions (see README.md)."""
    if debug:
        import os
        os.environ["STACK_DEBUG"] = "1"


# --- command registration: one line per command module (keep this block sorted by command;
# `stack --help` lists them in workflow order, stacker.cli.help.WORKFLOW) ---
from stacker.cli.auto import auto_command  # noqa: E402

app.command("auto", cls=StackCommand)(auto_command)

from stacker.cli.blend import blend_command  # noqa: E402

app.command("blend", cls=StackCommand)(blend_command)

from stacker.cli.collect import collect_command  # noqa: E402

app.command("collect", cls=StackCommand)(collect_command)

from stacker.cli.demo import demo_command  # noqa: E402

app.command("demo", cls=StackCommand)(demo_command)

from stacker.cli.first_level import first_level_app  # noqa: E402

app.add_typer(first_level_app, name="first-level")

from stacker.cli.folds import make_folds_command  # noqa: E402

app.command("make-folds", cls=StackCommand)(make_folds_command)

from stacker.cli.importing import import_command  # noqa: E402

app.command("import", cls=StackCommand)(import_command)

from stacker.cli.report import report_command  # noqa: E402

app.command("report", cls=StackCommand)(report_command)

from stacker.cli.search import search_subsets_command  # noqa: E402

app.command("search-subsets", cls=StackCommand)(search_subsets_command)

from stacker.cli.level2 import predict_command, train_command, tune_command  # noqa: E402

app.command("predict", cls=StackCommand)(predict_command)
app.command("train", cls=StackCommand)(train_command)
app.command("tune", cls=StackCommand)(tune_command)
# --- end of command registration ---


def main() -> None:
    """Console-script entry point."""
    # what the imports made lives as long as the process: moved out of the collector's sight,
    # a full collection no longer walks it (bench_scale's nested greedy: 0.05 s of 0.12 s of
    # collections)
    gc.freeze()
    try:
        app()
    except StackError as error:  # a command that forgot @user_errors still prints one line
        typer.echo(f"error: {redact(str(error))}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:    # Ctrl-C outside a command (parsing options, importing one)
        typer.echo("interrupted; rerun to resume", err=True)
        raise SystemExit(130) from None
