"""`stack report`: write one self-contained HTML page with the leaderboard and the plots."""

from pathlib import Path
from typing import Annotated

import typer

from stacker import layout
from stacker.cli.common import (
    RootOption,
    check_metric,
    console,
    err_console,
    metric_option,
    progress_bar,
    user_errors,
)
from stacker.layout.provenance import refuse_inputs_as_outputs


@user_errors
def report_command(
    root: RootOption = layout.DEFAULT_ROOT,
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    metric: metric_option("Metric for the leaderboard") = "lwlrap",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write the HTML report of the experiments.

    Leaderboard, OOF correlation heatmap, subset-search curve, per-class scores of the searched
    blend against the best single model, and level-2 learning curves, in one HTML file."""
    from stacker.report import write_report  # matplotlib: imported only when a report is made

    check_metric(metric)
    refuse_inputs_as_outputs({"`out`": out}, {"folds.csv": root / layout.FOLDS_FILE,
                                              "classes.txt": root / layout.CLASSES_FILE}, root=root)

    with progress_bar("report: collecting experiments, then drawing") as update:
        report = write_report(root, out, metric=metric, force=force, on_progress=update)
    for line in report.notes:
        err_console.print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)
    console.print(f"report written to {out} ({report.n_images} figures, "
                  f"{out.stat().st_size / 1024:.0f} KiB)", soft_wrap=True)
