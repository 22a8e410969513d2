"""What every `stack` command shares: the console, user-error handling and progress bars."""

from __future__ import annotations

import functools
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stacker.layout.collect import Collection, collect
from stacker.errors import StackError
from stacker.layout import DEFAULT_ROOT

console = Console()
err_console = Console(stderr=True)

RootOption = Annotated[Path, typer.Option("--root", help="Root folder of the prediction layout.")]
DEFAULT_ROOT_PATH = DEFAULT_ROOT


class ProbsFormat(str, Enum):
    """The file format of written predictions (``--format``): probs.csv or probs.parquet."""

    csv = "csv"
    parquet = "parquet"


def user_errors(func):
    """Turn a StackError (a problem with the user's files or options) into one line on stderr and
    exit code 1, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StackError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
        except OSError as error:  # a folder that cannot be written, a full disk: the user's to fix
            where = f" ({error.filename})" if getattr(error, "filename", None) else ""
            err_console.print(f"[bold red]error:[/] {error.strerror or error}{where}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator:
    """A rich progress bar; yields ``update(done, total)`` for library ``on_progress`` callbacks."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console)
    with progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total_now: int | None = None) -> None:
            if total_now is not None:
                progress.update(task, total=total_now)
            progress.update(task, completed=done)

        yield update


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
