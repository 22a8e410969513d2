"""`stack demo`: the whole method on the embedded synthetic dataset, ending with one table."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from stacker.cli.common import console, print_files, progress_bar, user_errors, words_whole

# stacker.cli.demo_pipeline imports torch and optuna: imported inside the command so the CLI starts fast.
if TYPE_CHECKING:
    from stacker.cli.demo_pipeline import DemoResult


def _score(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _shown(path: Path) -> str:
    """The path relative to the current folder when it lies below it (shorter in the table)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def result_table(result: "DemoResult") -> Table:
    """Every model's CV and held-out test lwlrap, the chosen subsets, the final blend."""
    from stacker.auto import BLEND_NAME

    table = Table(title="stack demo: lwlrap, out-of-fold CV and held-out test", show_lines=False)
    for column, justify in (("", "left"), ("CV", "right"), ("nested CV", "right"),
                            ("test", "right"), ("what", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    n_first = int((result.models.level == 1).sum())
    for row in result.models.itertuples(index=False):
        if row.experiment == BLEND_NAME:
            continue    # the submission, shown once below with its CV, nested CV and test
        inputs = result.level2_inputs.get(row.experiment)
        what = ("first level" if row.level == 1 else
                f"level 2 on {'all ' if len(inputs) == n_first else ''}{len(inputs)} first-level models"
                if inputs else f"level {row.level}")
        table.add_row(row.experiment, _score(row.cv), "", _score(row.test), what)
    table.add_section()
    table.add_row("first-level subset", _score(result.first_level_subset_cv),
                  _score(result.first_level_subset_nested_cv), _score(result.first_level_subset_test),
                  " + ".join(result.first_level_subset))
    table.add_row("best single model", _score(result.best_single_cv), "",
                  _score(result.best_single_test), result.best_single)
    members = (f"{BLEND_NAME}, stack auto's blend of its final selections"
               if result.final_members == [BLEND_NAME] else " + ".join(result.final_members))
    table.add_row("[bold]submission[/]", f"[bold]{result.final_cv:.4f}[/]",
                  _score(result.final_nested_cv), f"[bold]{result.final_test:.4f}[/]",
                  f"{result.final_recipe}: {members}")
    gain = result.final_cv - result.best_single_cv
    table.add_row("blend - best single", f"{gain:+.4f}", "",
                  f"{result.final_test - result.best_single_test:+.4f}",
                  "[green]the blend beats the best single model[/]" if result.blend_beats_single
                  else "[red]the blend does not beat the best single model[/]")
    return words_whole(table)   # the files follow the table, one line each (print_files)


@user_errors
def demo_command(
    workdir: Annotated[Path, typer.Option(
        help="Folder for the dataset, the layout, the submission and the report (resumed when "
             "it holds the same run).")] = Path("demo_run"),
    quick: Annotated[bool, typer.Option(
        "--quick", help="A small run (under a minute) instead of the full one (about 5-7 "
                        "minutes on 2 cores).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the dataset, the folds and every model.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Regenerate and retrain everything in "
                                                         "WORKDIR instead of resuming.")] = False,
) -> None:
    """Run the whole pipeline on a synthetic sound dataset.

    Generate a synthetic multi-label sound dataset, train first-level fold models (an audio CNN
    and scikit-learn models), stack them with level-2 MLPs, blend by geometric mean, and write
    submission.csv and report.html."""
    import optuna

    from stacker.cli.demo_pipeline import run_demo

    started = time.perf_counter()
    # the stages show their own progress; Optuna's per-trial INFO lines would bury it
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def stage(description: str):
        console.print(f"[bold cyan]>[/] {description}", highlight=False)
        return progress_bar(description)

    result = run_demo(workdir, quick=quick, seed=seed, force=force, stage=stage)
    for line in result.notes:
        console.print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)
    console.print(result_table(result))
    print_files(result.files, _shown)
    console.print(f"how the nested CV was estimated: {result.estimate}.", highlight=False, soft_wrap=True)
    spent = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in result.seconds.items())
    console.print(f"done in {time.perf_counter() - started:.0f}s ({spent})", highlight=False,
                  soft_wrap=True)
