"""`stack auto`: the whole second level in one honest command, ending with one table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from stacker import layout
from stacker.cli.common import (
    RootOption,
    SchedulerOption,
    check_budget,
    check_input_file,
    check_metric,
    console,
    err_console,
    metric_option,
    print_files,
    progress_bar,
    user_errors,
    words_whole,
    writes_root,
)
from stacker.errors import OptionError

if TYPE_CHECKING:
    from stacker.auto import AutoResult


OVER_BUDGET, OVER_BUDGET_S = 1.5, 2.0   # a run this much over its --time-budget says so


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _members(members, weights) -> str:
    if len(members) == 1:
        return members[0]
    equal = max(weights.values()) - min(weights.values()) < 1e-9
    return " + ".join(m if equal else f"{weights[m]:.2f}·{m}" for m in members)


def auto_table(result: "AutoResult") -> Table:
    """Every candidate recipe with CV, nested CV and the fold held out of tuning; the choice."""
    metric = result.settings.metric
    fold = result.tuning.get("holdout_fold")
    table = Table(title=f"stack auto: {metric}, out-of-fold CV, nested CV and fold {fold} "
                        "(held out of tuning)")
    for column, justify in (("recipe", "left"), ("CV", "right"), ("nested CV", "right"),
                            (f"fold {fold}", "right"), ("what", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for recipe in result.recipes:
        chosen = recipe is result.final
        style = "[bold green]" if chosen else ""
        end = "[/]" if chosen else ""
        table.add_row(f"{style}{recipe.name}{' (chosen)' if chosen else ''}{end}", f"{recipe.cv:.4f}",
                      f"{style}{recipe.nested_cv:.4f}{end}", f"{recipe.holdout_cv:.4f}", recipe.what)
    # each recipe's members and the files follow the table, one line each (print_members, print_files)
    return words_whole(table)


def print_members(result: "AutoResult") -> None:
    """One line per recipe after its table: its members (and weights), never folded into a cell."""
    console.print("members of each recipe:", highlight=False)
    for recipe in result.recipes:
        console.print(f"  {recipe.name}: {_members(recipe.members, recipe.weights)}",
                      highlight=False, soft_wrap=True, markup=False)


@user_errors
@writes_root("stack auto")
def auto_command(
    root: RootOption = layout.DEFAULT_ROOT,
    metric: metric_option("Metric to choose by") = "lwlrap",
    time_budget: Annotated[float, typer.Option(help="Seconds for the whole run; tuning and level-2 "
                                                     "training adapt to it.")] = 480.0,
    template: Annotated[Optional[Path], typer.Option(help="Submission template CSV (id column + one "
                                                          "column per class); default: the layout's "
                                                          "test ids and classes.")] = None,
    out: Annotated[Path, typer.Option(help="The submission CSV (its sidecar: <out>.json).")] = Path("submission.csv"),
    report: Annotated[Optional[Path], typer.Option(help="The HTML report.")] = Path("report.html"),
    n_level2: Annotated[int, typer.Option(help="Level-2 experiments to train: the tuned best plus "
                                                "diverse good trials (0: no level 2).")] = 3,
    max_seeds: Annotated[int, typer.Option(help="Seeds averaged per level-2 experiment, as the "
                                                 "budget allows.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    trials: Annotated[Optional[int], typer.Option(help="Tune exactly this many trials and train every "
                                                       "configuration with --max-seeds seeds: the run "
                                                       "is reproducible to the bit. Default: the time "
                                                       "budget decides (recorded in the outputs).")] = None,
    device: Annotated[str, typer.Option(help="Level-2 device: cpu, cuda or auto.")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out/--report not written by "
                                             "stack auto.")] = False,
    scheduler: SchedulerOption = None,
) -> None:
    """Run the whole second level and write the submission.

    Collect, search, tune and train level 2, choose the best recipe by nested CV, and write the
    submission and the report. Rerun to resume: finished stages are reused."""
    import optuna

    from stacker.auto import AutoSettings, run_auto
    from stacker.level2.params import resolve_device

    optuna.logging.set_verbosity(optuna.logging.ERROR)   # progress bars say it; failures re-raise
    check_metric(metric)
    check_budget(time_budget)
    check_input_file(template, "--template")
    if trials is not None and trials < 0:
        raise OptionError(f"--trials must be 0 or more (or left out: the time budget decides), "
                          f"got {trials}")
    settings = AutoSettings(metric=metric, time_budget=time_budget, seed=seed, n_level2=n_level2,
                            max_seeds=max_seeds, device=resolve_device(device), n_trials=trials)
    result = run_auto(root, settings=settings, template=template, out=out, report=report, force=force,
                      stage=progress_bar, scheduler=scheduler)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(auto_table(result))
    print_members(result)
    print_files(result.files, _shown)
    final = result.final
    console.print(f"chosen: [bold]{final.name}[/] — expect about {final.nested_cv:.4f} {metric} on new "
                  f"data (nested CV; selected CV {final.cv:.4f}).", highlight=False)
    console.print(f"how the estimate was made: {result.estimate}.", highlight=False, soft_wrap=True)
    total = sum(result.seconds.values())
    console.print(f"{total:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
                  highlight=False)
    if total > OVER_BUDGET * time_budget and total - time_budget > OVER_BUDGET_S:
        err_console.print(f"[yellow]note:[/] the run took {total:.0f} s, over --time-budget "
                          f"{time_budget:g} s: every stage does its least work (one trial, one seed, "
                          "the searches) whatever the budget; give a larger budget for more",
                          highlight=False, soft_wrap=True)
