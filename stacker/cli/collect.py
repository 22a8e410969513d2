"""`stack collect`: validate and align every experiment, print the leaderboard and correlations."""

from typing import Annotated

import typer

from stacker import layout
from stacker.cli.common import (
    RootOption,
    console,
    frame_table,
    load_collection,
    metric_option,
    user_errors,
    writes_root,
)
from stacker.layout import workspace
from stacker.metrics import get_metric


@user_errors
@writes_root("stack collect")
def collect_command(
    root: RootOption = layout.DEFAULT_ROOT,
    metric: metric_option("Metric for the leaderboard") = "lwlrap",
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 1) on the first bad experiment instead "
                                              "of skipping it.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Re-read every file.")] = False,
) -> None:
    """Validate and align the experiments; print the leaderboard.

    Validate every experiment under ROOT, align them, cache the arrays and print the leaderboard."""
    from stacker.leaderboard import leaderboard, oof_correlation
    scorer = get_metric(metric)
    collection = load_collection(root, strict=strict, use_cache=not no_cache)
    board = leaderboard(collection, scorer)
    out = workspace.write_leaderboard(root, board.to_csv(index=False))
    shown = board[["experiment", "level", "cv"]].assign(
        folds=[f"{m:.4f} ± {s:.4f}" for m, s in zip(board.fold_mean, board.fold_std)])
    console.print(frame_table(shown, title=f"Leaderboard ({scorer.name}, "
                                           f"{'higher' if scorer.greater_is_better else 'lower'} is better)"))
    corr = oof_correlation(collection).reset_index(names="experiment")
    console.print(frame_table(corr, title="Correlation of OOF predictions", float_format="{:.3f}"))
    console.print(f"{collection.n_models} experiment(s), {len(collection.ids)} rows, "
                  f"{len(collection.test_ids)} test rows, {len(collection.classes)} classes, "
                  f"{len(collection.fold_numbers)} folds; leaderboard written to {out}")
