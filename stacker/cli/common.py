"""What every `stack` command shares: the console, user-error handling and progress."""

from __future__ import annotations

import functools
import inspect
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stacker.errors import StackError
from stacker.layout import DEFAULT_ROOT
from stacker.layout.collect import Collection, collect
from stacker.layout.lock import root_lock
from stacker.progress import show_progress
from stacker.redaction import redact

console = Console()
err_console = Console(stderr=True)

RootOption = Annotated[Path, typer.Option("--root", help="Root folder of the prediction layout.")]


def metric_option(purpose: str):
    """``--metric``: ``purpose`` and the names of :data:`stacker.metrics.METRICS` in its help."""
    from stacker.metrics import METRICS

    return Annotated[str, typer.Option("--metric", help=f"{purpose}: {', '.join(METRICS)}.")]


DEFAULT_ROOT_PATH = DEFAULT_ROOT


def check_metric(name: str | None) -> None:
    """Refuse an unknown ``--metric`` (OptionError naming the choices) before any work starts."""
    if name is not None:
        from stacker.metrics import get_metric

        get_metric(name)


def check_input_file(path: Path | None, flag: str, what: str = "template") -> None:
    """Refuse an input file option (``--template``) that names no file, before any work starts."""
    from stacker.errors import OptionError

    if path is not None and not Path(path).is_file():
        problem = "is a folder, not a file" if Path(path).is_dir() else "file not found"
        raise OptionError(f"{path}: {what} {problem}; pass {flag} the path of an existing CSV file")


def check_budget(seconds: float, flag: str = "--time-budget") -> None:
    """Refuse a time budget that is not a positive, finite number of seconds."""
    from stacker.errors import OptionError

    if not 0 < seconds < float("inf"):   # nan fails both comparisons
        raise OptionError(f"{flag} must be a positive, finite number of seconds, got {seconds:g}")
SchedulerOption = Annotated[Optional[str], typer.Option(
    "--scheduler", envvar="STACK_SCHEDULER", show_envvar=True,
    help="Address of a dask.distributed scheduler (e.g. tcp://10.0.0.5:8786): each fold (and "
         "seed) runs as one task on its workers, which need the root on a shared filesystem at "
         "the same path. Default: run here.")]


_OPTION_NAME = re.compile(r"`([a-z][a-z0-9_]*)`")


def command_flags(func) -> dict[str, str]:
    """{parameter name: its long flag} of a typer command function: the flag its ``typer.Option``
    declares, else typer's default ``--name-with-dashes``."""
    import typing

    flags = {}
    for name, hint in typing.get_type_hints(func, include_extras=True).items():
        # in Annotated[..., typer.Option("--format")] typer keeps the first declaration as `default`
        declared = [d for meta in getattr(hint, "__metadata__", ())
                    for d in (getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ()))
                    if isinstance(d, str) and d.startswith("--")]
        flags[name] = declared[0].split("/")[0] if declared else "--" + name.replace("_", "-")
    return flags


def in_cli_words(message: str, flags: dict[str, str]) -> str:
    """A library message with each option it names (`power`, `holdout_fold`) written as the
    command's flag (--power, --holdout-fold): the library speaks of parameters, the CLI of flags."""
    return _OPTION_NAME.sub(lambda m: flags.get(m.group(1), m.group(0)), message)


class ProbsFormat(str, Enum):
    """The file format of written predictions (``--format``): probs.csv or probs.parquet."""

    csv = "csv"
    parquet = "parquet"


INTERRUPTED = "interrupted; rerun to resume"
EXIT_INTERRUPTED = 130      # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BUG = 2
REPORT_HINT = ("this is a bug in stack, not in your files: rerun with --debug (or STACK_DEBUG=1) "
               "for the traceback and report it with the command you ran")


def debug_enabled() -> bool:
    """True under ``stack --debug`` or ``STACK_DEBUG=1``: unexpected errors keep their traceback."""
    return os.environ.get("STACK_DEBUG", "").strip() not in ("", "0", "false", "no")


def _caused_by_interrupt(error: BaseException) -> bool:
    """True when a KeyboardInterrupt is in the chain of ``error``'s causes and contexts."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _error_line(text: str) -> None:
    # every message passes the one redaction: a driver's error may quote the storage URL
    err_console.print(f"[bold red]error:[/] {escape(redact(text))}", highlight=False, soft_wrap=True)


def user_errors(func):
    """The error boundary of a command. A StackError (a problem with the user's files or options)
    or an OSError (a folder that cannot be written, a full disk) becomes one line on stderr and
    exit code 1; Ctrl-C becomes "interrupted; rerun to resume" and exit code 130 (every writer is
    atomic, so nothing is half-written). Anything else is our bug: one line saying how to see its
    traceback (``--debug`` or ``STACK_DEBUG=1``, which re-raise it) and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StackError as error:
            _error_line(in_cli_words(str(error), command_flags(func)))
            raise typer.Exit(code=1) from None
        except OSError as error:  # a folder that cannot be written, a full disk: the user's to fix
            where = f" ({error.filename})" if getattr(error, "filename", None) else ""
            _error_line(f"{error.strerror or error}{where}")
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            err_console.print(INTERRUPTED, highlight=False)
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        # typer's own exits and usage errors (typer carries its own click: no `import click`, which
        # a plain install of stack does not have)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise
        except Exception as error:
            if _caused_by_interrupt(error) and not debug_enabled():
                # a library cleaning up after Ctrl-C (a rolled-back transaction) raised another error
                err_console.print(INTERRUPTED, highlight=False)
                raise typer.Exit(code=EXIT_INTERRUPTED) from None
            if debug_enabled():
                raise
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            _error_line(f"internal error ({type(error).__name__}{': ' + detail if detail else ''});"
                        f" {REPORT_HINT}")
            raise typer.Exit(code=EXIT_BUG) from None

    return wrapper


LOCK_WAIT_ENV = "STACK_LOCK_WAIT"


def _lock_wait() -> float:
    """Seconds a command waits for another writer of its root (``STACK_LOCK_WAIT``; default 0)."""
    from stacker.errors import OptionError

    text = os.environ.get(LOCK_WAIT_ENV, "").strip()
    try:
        wait = float(text) if text else 0.0
    except ValueError:
        wait = float("nan")
    if not wait >= 0 or wait == float("inf"):
        raise OptionError(f"{LOCK_WAIT_ENV} must be a number of seconds (0 or more), got '{text}'")
    return wait


def writes_root(command: str, *, shared: bool = False):
    """Hold the writer's lock of the command's ``--root`` (``<root>/.stack/lock``) while it runs:
    a second writer of the same root refuses at once with one line naming the running command
    and its pid (or waits ``STACK_LOCK_WAIT`` seconds first). ``shared``: instances of this
    command may run together (``stack tune`` workers of one study), never with another writer.
    Put it below :func:`user_errors`."""
    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            bound = signature.bind_partial(*args, **kwargs)
            root = bound.arguments.get("root", signature.parameters["root"].default)
            with root_lock(root, command, wait=_lock_wait(), shared=shared):
                return func(*args, **kwargs)

        return wrapper

    return decorate


def progress_bar(description: str, total: int | None = None):
    """Progress on stderr (:func:`stacker.progress.show_progress`): live bars with ETA in a
    terminal, plain lines in a pipe; yields ``update(done, total=None, note=None)``."""
    return show_progress(description, total, console=err_console)


def load_collection(root: Path, *, strict: bool = False, use_cache: bool = True) -> Collection:
    """Collect with a progress bar, then print one warning line per skipped experiment."""
    with progress_bar("collecting experiments") as update:
        collection = collect(root, strict=strict, use_cache=use_cache, on_progress=update)
    for reason in collection.skipped:
        err_console.print(f"[yellow]warning: skipped[/] {reason}", highlight=False, soft_wrap=True)
    return collection


def frame_table(frame, *, title: str | None = None, float_format: str = "{:.4f}",
                max_rows: int | None = None) -> Table:
    """A pandas DataFrame as a rich Table (floats formatted, index dropped)."""
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column), justify="right" if frame[column].dtype.kind in "fiu" else "left")
    for _, row in (frame if max_rows is None else frame.head(max_rows)).iterrows():
        table.add_row(*[float_format.format(v) if isinstance(v, float) else str(v) for v in row])
    return table


def rows_table(rows: list[dict], columns, *, title: str | None = None,
               float_format: str = "{:.4f}") -> Table:
    """Rows (dicts) as a rich Table, like :func:`frame_table` without pandas: numbers right,
    floats formatted."""
    table = Table(title=title, show_lines=False)
    for column in columns:
        numeric = bool(rows) and all(isinstance(row[column], (int, float)) and
                                     not isinstance(row[column], bool) for row in rows)
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*[float_format.format(row[c]) if isinstance(row[c], float) else str(row[c])
                        for c in columns])
    return table


def words_whole(table: Table) -> Table:
    """``table`` with each column at least as wide as its longest word (markup aside): a narrow
    console or a pipe (80 columns) wraps cells at spaces, never inside an experiment name, a
    number or a path. Call it once every row is added."""
    from rich.text import Text

    for column in table.columns:
        cells = [column.header, *column.cells]
        words = [word for cell in cells if isinstance(cell, str)
                 for word in Text.from_markup(cell).plain.split()]
        column.min_width = max([len(word) for word in words] + [column.min_width or 0])
    return table


def print_files(files: dict, shown=str) -> None:
    """One ``name: path`` line per file, after a table: a path is never folded into a cell;
    a pipe gets it whole on one line (``shown`` writes a path, e.g. relative to the cwd)."""
    width = max((len(name) for name in files), default=0)
    for name, path in files.items():
        console.print(f"{name + ':':<{width + 1}} {shown(path)}", highlight=False, soft_wrap=True,
                      markup=False)
