"""`stack make-folds`: stratified (and optionally grouped) folds -> <root>/folds.csv."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from stacker import layout
from stacker.cli.common import RootOption, check_input_file, console, err_console, frame_table, user_errors, writes_root


@user_errors
@writes_root("stack make-folds")
def make_folds_command(
    labels: Annotated[Path, typer.Argument(help="Labels CSV: FAT2019 `fname,labels` (labels "
                                                "comma-joined) or any CSV with an id and a label "
                                                "column.")],
    n_folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    group_column: Annotated[Optional[str], typer.Option(
        help="Column whose rows must share a fold (a speaker, a session).")] = None,
    label_column: Annotated[str, typer.Option(help="Column holding the label(s).")] = "labels",
    id_column: Annotated[Optional[str], typer.Option(
        help="Column holding the row id (default: the first column).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the random tie-breaks.")] = 0,
    template: Annotated[Optional[Path], typer.Option(
        help="Submission template (id column, then one column per class): classes.txt follows "
             "its class order. Without it: natural order (label_2 before label_10).")] = None,
    root: RootOption = layout.DEFAULT_ROOT,
    force: Annotated[bool, typer.Option("--force", help="Replace a folds.csv that experiments already use "
                                             "(they must then be retrained).")] = False,
) -> None:
    """Split labels into stratified folds: ROOT/folds.csv.

    Split LABELS into folds by multi-label iterative stratification and write ROOT/folds.csv."""
    from first_level.folds import make_folds
    check_input_file(template, "--template")
    made = make_folds(labels, root, n_folds=n_folds, group_column=group_column,
                      label_column=label_column, id_column=id_column, seed=seed, force=force,
                      template=template)
    title = f"Rows of each class per fold ({len(made.table.ids)} rows"
    if made.table.groups is not None:
        title += f", groups by '{group_column}'"
    console.print(frame_table(made.counts, title=title + ")"))
    if made.invalidated:
        err_console.print(f"[yellow]warning:[/] the new folds invalidate {len(made.invalidated)} "
                          f"experiment(s), which must be retrained with --force: "
                          f"{', '.join(made.invalidated)}", highlight=False, soft_wrap=True)
    console.print(f"wrote {made.path} ({made.counts.shape[1] - 2} folds, "
                  f"{len(made.table.classes)} classes, seed {seed})")
