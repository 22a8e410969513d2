"""`stack train`, `stack tune`, `stack predict`: level-2 MLPs on the OOF predictions."""

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from stacker import layout
from stacker.cli.common import (
    SchedulerOption,
    console,
    err_console,
    frame_table,
    load_collection,
    metric_option,
    progress_bar,
    user_errors,
    writes_root,
)
from stacker.errors import OptionError, PredictionMismatch
from stacker.metrics import get_metric

# the level-2 modules (stacker.level2.fit, level2_*) import torch: they are imported inside the commands
# so that `stack --help` and the other commands start fast.

PREDICT_TOLERANCE = 1e-6   # probs.csv keeps 7 significant digits

RootOpt = Annotated[Path, typer.Option("--root", help="Root folder of the prediction layout.")]
SubsetOpt = Annotated[Optional[str], typer.Option(
    "--subset", help="Inputs: best (the last `stack search-subsets`), all (every level-1 "
                     "experiment; the default) or NAME,NAME,...")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]
MetricOpt = metric_option("Validation metric")
EpochsOpt = Annotated[Optional[int], typer.Option("--max-epochs", help="Cap on epochs per fold "
                                                                       "model (overrides params).")]


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"--seeds must be integers separated by commas (e.g. 1,2,3), got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise OptionError(f"--seeds must list at least one seed, each once; got '{text}'")
    if min(seeds) < 0:
        raise OptionError(f"--seeds must be 0 or more (numpy seeds cannot be negative); got '{text}'")
    return seeds


@user_errors
@writes_root("stack train")
def train_command(
    name: Annotated[str, typer.Option("--name", help="Name of the level-2 experiment to write.")],
    root: RootOpt = layout.DEFAULT_ROOT,
    subset: SubsetOpt = None,
    params: Annotated[Optional[str], typer.Option(
        "--params", help="best (from `stack tune`) or a JSON file of parameters; default: the "
                         "built-in defaults.")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds, e.g. 1,2,3: each trains every fold; "
                                                       "the experiment is their geometric mean.")] = "0",
    per_seed: Annotated[bool, typer.Option("--per-seed", help="Write one experiment per seed "
                                                              "(NAME_seed<S>) instead.")] = False,
    device: DeviceOpt = "auto",
    metric: MetricOpt = "lwlrap",
    max_epochs: EpochsOpt = None,
    no_windows: Annotated[bool, typer.Option("--no-windows", help="Ignore per-window predictions "
                                                                  "(no window augmentation).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing experiment of that "
                                                        "name.")] = False,
    scheduler: SchedulerOption = None,
    early_stop_on_fold: Annotated[bool, typer.Option(
        "--early-stop-on-fold", help="Old behaviour: early-stop each fold model on its own "
                                     "validation fold. The CV it reports is optimistic. Default: "
                                     "an inner hold-out of the training folds "
                                     "(params inner_fraction), so the OOF is honest.")] = False,
) -> None:
    """Train a level-2 MLP per fold as a new experiment.

    Train a level-2 MLP per fold on the OOF predictions and write it as a new experiment.

    Each fold model is early-stopped on an inner hold-out of its training rows, never on the
    fold it predicts, so the level-2 OOF and CV are as honest as a first-level experiment's."""
    from stacker.level2.fit import TrainConfig
    from stacker.level2.inner import INNER_HOLDOUT, ON_FOLD
    from stacker.level2.inputs import choose_inputs
    from stacker.level2.params import read_params, resolve_device
    from stacker.level2.store import check_output, train_and_write

    scorer = get_metric(metric)
    device = resolve_device(device)
    seed_list = _parse_seeds(seeds)
    chosen, document = read_params(params, root)
    if max_epochs is not None:
        chosen = replace(chosen, max_epochs=max_epochs)
        chosen = type(chosen).from_dict(chosen.to_dict(), source="--max-epochs")
    collection = load_collection(root)
    inputs = choose_inputs(collection, subset)
    outputs = ({f"{name}_seed{s}": [s] for s in seed_list} if per_seed else {name: seed_list})
    for out in outputs:
        check_output(root, out, force=force, inputs=inputs)
    if document.get("inputs") and list(document["inputs"]) != inputs:
        err_console.print("[yellow]warning:[/] the params were tuned on other inputs "
                          f"({', '.join(document['inputs'])})", highlight=False)
    config = TrainConfig(params=chosen, seeds=seed_list, metric=scorer, device=device,
                         use_windows=not no_windows, scheduler=scheduler,
                         early_stopping=ON_FOLD if early_stop_on_fold else INNER_HOLDOUT)
    extra = {"params_source": str(params) if params else "defaults"}
    if document:
        extra["tuning"] = {k: document.get(k) for k in ("study", "cv", "holdout_fold",
                                                        "holdout_score")}
    with progress_bar(f"training {len(inputs)} inputs, folds x seeds"
                      + (f" on {scheduler}" if scheduler else "")) as update:
        result, paths = train_and_write(root, collection, inputs, outputs, config, force=force,
                                        extra_meta=extra, on_progress=update)
    _print_trained(result, outputs, paths, scorer.name)
    _print_notes(result, chosen, document, early_stop_on_fold)


def _print_trained(result, outputs: dict, paths: dict, metric: str) -> None:
    """The folder of each experiment written, then one table of their per-fold and overall CV."""
    import pandas as pd

    rows = []
    for out, group in outputs.items():
        cv, per_fold = result.scores(group)
        for k, score in per_fold.items():
            epochs = ",".join(str(result.fits[(s, k)].best_epoch) for s in group)
            rows.append({"experiment": out, "fold": str(k), metric: score, "best epoch": epochs})
        rows.append({"experiment": out, "fold": "overall", metric: cv, "best epoch": ""})
        console.print(f"wrote {paths[out]}", highlight=False)
    console.print(frame_table(pd.DataFrame(rows), title=f"Level-2 CV ({metric}; inputs: "
                                                        f"{', '.join(result.names)})"))


def _print_notes(result, chosen, document: dict, early_stop_on_fold: bool) -> None:
    """What the CV above means: window augmentation, the early stopping, tuned params."""
    from stacker.level2.inner import OPTIMISTIC_NOTE

    if result.window_augmentation:
        console.print("window augmentation: on (per-window predictions found)")
    if early_stop_on_fold:
        console.print(f"[yellow]note:[/] {OPTIMISTIC_NOTE}", highlight=False)
    else:
        refit = (", then refit on all of them for the chosen epoch count" if chosen.refit
                 else "")
        console.print(f"early stopping: inner hold-out ({chosen.inner_fraction:.0%} of each fold "
                      f"model's training rows{refit}); the CV above is out of fold", highlight=False)
    if document:
        note = ("note: these params were chosen by `stack tune` on these folds, so this CV is "
                "optimistic")
        if document.get("holdout_score") is not None:
            note += (f"; held-out fold {document['holdout_fold']} scored "
                     f"{document['holdout_score']:.4f} with them")
        console.print(note, highlight=False)


_SHORT = [("hidden", "hidden={:d}"), ("bottleneck", "gate={:d}"), ("dropout", "drop={:.2f}"),
          ("lr", "lr={:.1e}"), ("weight_decay", "wd={:.0e}"), ("batch_size", "batch={:d}"),
          ("patience", "pat={:d}"), ("plateau_factor", "plat={:.2f}"), ("skip", "skip={:d}")]


def _compact_trials(frame):
    """The trials table narrow enough for a terminal: the params in one wrapped column."""
    import pandas as pd
    params = [" ".join(fmt.format(int(row[c]) if "d}" in fmt else float(row[c]))
                       for c, fmt in _SHORT if c in row and pd.notna(row[c]))
              for _, row in frame.iterrows()]
    return pd.DataFrame({"trial": frame["trial"].astype(str), "state": frame["state"],
                         "cv": frame["cv"].astype(float),
                         "folds": frame["folds_done"].astype(str), "params": params})


@user_errors
@writes_root("stack tune", shared=True)   # parallel workers of one study share the root
def tune_command(
    trials: Annotated[int, typer.Option("--trials", help="Trials to run now (they add to the "
                                                         "study's earlier ones).")],
    root: RootOpt = layout.DEFAULT_ROOT,
    subset: SubsetOpt = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop starting trials after "
                                                                       "this many seconds.")] = None,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", help="Optuna storage URL (default sqlite:///<root>/.stack/tune.db). Workers on "
                          "several machines share a study through one database URL, e.g. "
                          "postgresql://user:pass@host/db, read as postgresql+psycopg:// (psycopg 3, "
                          "pip install -e '.[postgres]').")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (default: derived from "
                                                                 "the inputs, metric and folds).")] = None,
    n_jobs: Annotated[int, typer.Option("--n-jobs", help="Trials run in parallel threads.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampler and of the models; give "
                                                     "each parallel worker its own.")] = 0,
    holdout_fold: Annotated[Optional[int], typer.Option(
        "--holdout-fold", help="Tune on the other folds only, then score the tuned params on "
                               "this untouched fold.")] = None,
    metric: MetricOpt = "lwlrap",
    device: DeviceOpt = "auto",
    max_epochs: EpochsOpt = None,
) -> None:
    """Tune the level-2 MLP with Optuna.

    Tune the level-2 MLP with Optuna (TPE, median pruning per fold); save the best params."""
    import optuna

    from stacker.level2.inputs import choose_inputs
    from stacker.level2.params import MLPParams, resolve_device
    from stacker.level2.tune import HONESTY_NOTE, save_best_params, tune

    optuna.logging.set_verbosity(optuna.logging.ERROR)   # a failed trial re-raises: one line
    scorer = get_metric(metric)
    device = resolve_device(device)
    base = MLPParams() if max_epochs is None else MLPParams.from_dict({"max_epochs": max_epochs},
                                                                      source="--max-epochs")
    collection = load_collection(root)
    inputs = choose_inputs(collection, subset)
    with progress_bar(f"tuning on {len(inputs)} inputs") as update:
        result = tune(collection, inputs, n_trials=trials, timeout=timeout, storage=storage,
                      study_name=study, n_jobs=n_jobs, seed=seed, holdout_fold=holdout_fold,
                      metric=scorer, base_params=base, device=device, on_progress=update)
    if len(result.trials):
        console.print(frame_table(_compact_trials(result.trials), title=f"Best trials "
                                                                        f"({scorer.name})", max_rows=10))
    console.print(f"study '{result.study_name}' in {result.storage}: {result.n_complete} complete, "
                  f"{result.n_pruned} pruned ({result.n_this_run} finished in this run)",
                  highlight=False)
    if result.best_params is None:
        console.print("no complete trial yet: nothing saved; run more --trials")
        return
    path = save_best_params(root, result, fold_hash=collection.folds.hash)
    console.print(f"best tuned CV {result.best_value:.4f} -- {HONESTY_NOTE}", highlight=False)
    if result.holdout_fold is not None:
        console.print(f"held-out fold {result.holdout_fold} (not used for tuning or early "
                      f"stopping): tuned params {result.holdout_score:.4f}, default params "
                      f"{result.holdout_default_score:.4f}", highlight=False)
    console.print(f"best params saved to {path}; train with `stack train --params best`",
                  highlight=False)


@user_errors
def predict_command(
    name: Annotated[str, typer.Option("--name", help="The level-2 experiment to re-predict.")],
    root: RootOpt = layout.DEFAULT_ROOT,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Re-predict a level-2 experiment's test set and check it.

    Re-predict a level-2 experiment's test set from its saved weights; check it equals the
    saved test probs."""
    import pandas as pd

    from stacker.level2.params import resolve_device
    from stacker.level2.store import verify_predictions

    device = resolve_device(device)
    collection = load_collection(root)
    if name not in collection.names:
        raise OptionError(f"no valid experiment named '{name}' under {root}")
    diffs = verify_predictions(collection, name, device=device)
    frame = pd.DataFrame({"fold": [str(k) for k in diffs], "max |diff|": list(diffs.values())})
    console.print(frame_table(frame, title=f"{name}: re-predicted vs saved test probs",
                              float_format="{:.2e}"))
    worst = max(diffs.values())
    if worst > PREDICT_TOLERANCE:
        raise PredictionMismatch(f"experiment '{name}': re-predicted test probs differ from the "
                                 f"saved ones by up to {worst:.2e} (> {PREDICT_TOLERANCE:g}); the "
                                 "weights or the inputs changed since training")
    console.print(f"ok: {len(diffs)} fold model(s) reproduce the saved test probs "
                  f"({len(collection.test_ids)} rows)")
