"""`stack first-level sklearn`: a scikit-learn estimator on feature CSVs, K-fold, into the layout."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from first_level.sklearn_models import ESTIMATORS, model_factory
from stacker import layout
from stacker.cli.common import (
    ProbsFormat,
    RootOption,
    SchedulerOption,
    console,
    frame_table,
    metric_option,
    progress_bar,
    user_errors,
    writes_root,
)
from stacker.errors import OptionError


def parse_params(text: Optional[str]) -> dict:
    """--params JSON -> dict; OptionError for anything but a JSON object."""
    if not text:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise OptionError(f"--params is not valid JSON ({error.msg} at character {error.pos}); "
                          """write e.g. '{"n_estimators": 500}'""") from None
    if not isinstance(params, dict):
        raise OptionError("--params must be a JSON object of estimator parameters, "
                          """e.g. '{"C": 0.5}'""")
    return params


@user_errors
@writes_root("stack first-level sklearn")
def sklearn_command(
    train: Annotated[Path, typer.Option(help="Training features CSV: the id column first, then "
                                             "numeric features; ids as in folds.csv.")],
    test: Annotated[Path, typer.Option(help="Test features CSV with the same columns.")],
    estimator: Annotated[str, typer.Option(help=f"{'|'.join(ESTIMATORS)} or module:Class.")],
    name: Annotated[str, typer.Option(help="Experiment name (a folder under ROOT).")],
    params: Annotated[Optional[str], typer.Option(help="Estimator parameters as a JSON object.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the estimator.")] = 0,
    root: RootOption = layout.DEFAULT_ROOT,
    force: Annotated[bool, typer.Option("--force", help="Retrain every fold, replacing what exists.")] = False,
    metric: metric_option("Metric for the CV scores") = "lwlrap",
    threads: Annotated[Optional[int], typer.Option(help="Cap on BLAS/OpenMP threads "
                                                        "(default: all cores).")] = None,
    scheduler: SchedulerOption = None,
    format: Annotated[ProbsFormat, typer.Option(help="File format of the predictions: "
                                                     "probs.csv or probs.parquet.")] = ProbsFormat.csv,
) -> None:
    """Train a scikit-learn estimator on every fold.

    Train ESTIMATOR on every fold of ROOT/folds.csv and write out-of-fold and test predictions."""
    import pandas as pd

    from first_level.features_io import check_matches_folds, check_same_columns, read_features
    from first_level.runner import run_kfold
    options = parse_params(params)
    layout.check_experiment_name(name)
    folds = layout.read_folds(root)
    train_features = read_features(train)
    test_features = read_features(test)
    check_same_columns(train_features, test_features)
    check_matches_folds(train_features, folds)
    make_model = model_factory(estimator, options, seed, single_label=folds.is_single_label,
                               threads=threads)
    with progress_bar(f"{name}: folds" + (f" on {scheduler}" if scheduler else "")) as update:
        result = run_kfold(root, name, make_model, train_features.X, train_features.ids,
                           test_features.X, test_features.ids, model=f"sklearn:{estimator}",
                           params=options, seed=seed, force=force, metric=metric,
                           on_progress=update, scheduler=scheduler, format=format.value,
                           extra_meta={"features": {"train": str(train), "test": str(test),
                                                    "n_features": len(train_features.columns)}})
    scores = pd.DataFrame({
        "fold": [str(k) for k in result.fold_scores] + ["all"],
        metric: list(result.fold_scores.values()) + [result.cv[metric]],
        "status": ["trained" if k in result.trained_folds else "kept" for k in result.fold_scores]
        + [""]})
    console.print(frame_table(scores, title=f"{name} ({estimator}): CV {metric}"))
    extra = ", ".join(f"{k} {v:.4f}" for k, v in result.cv.items() if k != metric and v is not None)
    console.print(f"wrote {layout.experiment_dir(root, name)}"
                  + (f"; CV {extra}" if extra else ""))
