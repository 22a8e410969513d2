"""`stack import`: a notebook's OOF and test prediction files -> one validated experiment."""

from pathlib import Path
from typing import Annotated

import typer

from stacker import layout
from stacker.cli.common import ProbsFormat, console, err_console, user_errors, writes_root


@user_errors
@writes_root("stack import")
def import_command(
    name: Annotated[str, typer.Argument(help="Experiment name (a folder under ROOT).")],
    oof: Annotated[Path, typer.Option(help="Out-of-fold predictions: .npy/.npz (rows in folds.csv "
                                           "order, or --ids order) or .csv/.parquet (id column, "
                                           "then one column per class).")],
    test: Annotated[Path, typer.Option(help="Test predictions: .npy/.npz (test rows, classes) "
                                            "fold-averaged or (folds, test rows, classes) per "
                                            "fold, or .csv/.parquet with an id column.")],
    root: Annotated[Path, typer.Option(help="Root folder of the prediction layout (holds "
                                            "folds.csv).")] = layout.DEFAULT_ROOT,
    ids: Annotated[Path | None, typer.Option(help="CSV whose first column is the id of each "
                                                     "OOF array row (e.g. train.csv).")] = None,
    test_ids: Annotated[Path | None, typer.Option(help="CSV whose first column is the id of "
                                                          "each test array row (e.g. "
                                                          "sample_submission.csv); default: "
                                                          "row numbers.")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class of each array "
                                                        "column, in order (default: classes.txt "
                                                        "order, else sorted).")] = None,
    from_logits: Annotated[str | None, typer.Option(help="The predictions are logits: apply "
                                                            "'sigmoid' (multi-label, binary) or "
                                                            "'softmax' (single-label).")] = None,
    format: Annotated[ProbsFormat, typer.Option(help="File format to write: probs.csv or "
                                                     "probs.parquet.")] = ProbsFormat.csv,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing experiment NAME.")] = False,
) -> None:
    """Import OOF and test predictions made elsewhere.

    Import OOF and test predictions saved elsewhere as experiment NAME under ROOT."""
    from stacker.notebook import import_predictions  # scipy: only when the command runs

    result = import_predictions(name, oof=oof, test=test, ids=ids, test_ids=test_ids,
                                classes=classes, root=root, from_logits=from_logits,
                                format=format.value, force=force)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(result.summary(), highlight=False, soft_wrap=True, markup=False)
