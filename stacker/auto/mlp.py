"""Level 2 of `stack auto`: tune the MLP with one fold held out, plan what the budget allows, and
train (or reuse) the experiments ``auto_mlp_<i>``, which join the run's pool in memory."""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from typing import Sequence

import numpy as np

from stacker import layout
from stacker.auto.budget import plan_training, training_cost
from stacker.auto.context import Run
from stacker.auto.settings import LEVEL2_PREFIX, MADE_BY
from stacker.layout import provenance, workspace
from stacker.layout.tables import as_stored


def tune_step(run: Run) -> None:
    """Tune the level-2 MLP on the folds other than the held-out one, within its share of the
    budget; ``run.configs``: the configurations to train (best first), ``run.tuning``: what the
    tuning did (saved, so a rerun reuses the study)."""
    from stacker.level2.params import MLPParams
    from stacker.level2.tune import TUNED_PARAMS, TuneConfig, tune

    settings, pool = run.settings, run.pool1
    base = MLPParams.from_dict(settings.level2_params, source="level-2 settings")
    storage_path = workspace.auto_dir(run.root) / "tune.db"
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    study_name = f"auto-{run.key[:16]}"
    done = run.state.record("tune")
    budget = run.budget.tuning_seconds()
    began = time.perf_counter()
    if done:
        n_trials, timeout = 0, None
    elif settings.n_trials is not None:
        n_trials, timeout = settings.n_trials, None
    else:
        n_trials, timeout = 10_000, budget
    config = TuneConfig(n_trials=0, storage=f"sqlite:///{storage_path.resolve()}",
                        study_name=study_name, seed=settings.seed, holdout_fold=run.holdout,
                        metric=settings.metric, base_params=base, device=settings.device,
                        enqueue_base=True, score_holdout=False)
    names, data = list(pool.names), run.level2_data()
    if settings.n_trials is not None and not done:
        # an interrupted run of a fixed number of trials runs only the ones still missing
        before = tune(pool, names, config, data=data)
        n_trials = max(0, settings.n_trials - before.n_complete - before.n_pruned)
    what = "reusing the study" if done else (f"{n_trials} trials" if timeout is None else f"{budget:.0f} s")
    with run.stage(f"tune the level-2 MLP ({what})") as update:
        result = tune(pool, names, replace(config, n_trials=n_trials, timeout=timeout), data=data,
                      on_progress=lambda d, t, note=None: update(d, None if timeout else t, note=note))
    elapsed = time.perf_counter() - began
    trials = result.trials
    complete = trials[trials.state == "complete"] if len(trials) else trials
    folds_fitted = int(trials.folds_done.sum()) if len(trials) else 0
    fit_seconds = (elapsed / folds_fitted) if (not done and folds_fitted) else (done or {}).get("fit_seconds")
    run.configs = diverse_configs(complete, base, settings.n_level2, TUNED_PARAMS,
                                  result.seconds) or [(base, math.nan)]
    run.tuning = {"holdout_fold": run.holdout, "study": study_name, "storage": str(storage_path),
                  "n_complete": result.n_complete, "n_pruned": result.n_pruned,
                  "best_value": result.best_value, "fit_seconds": fit_seconds,
                  "tuning_folds": [k for k in pool.fold_numbers if k != run.holdout]}
    run.state.save("tune", run.tuning)


def diverse_configs(trials, base, n: int, keys: Sequence[str], seconds: dict) -> list[tuple]:
    """The best trial, then up to ``n - 1`` good trials each as far as possible (in the normalised
    parameter space) from those already taken. "Good": the better half of the finished trials (at
    least ``n``). Returns [(params, seconds per fold model in its trial)].
    """
    from stacker.level2.space import normalised

    if n <= 0 or trials is None or not len(trials):
        return []
    good = trials.iloc[:max(n, math.ceil(len(trials) / 2))]
    columns = [k for k in keys if k in good.columns]
    unit = normalised(good[columns])
    chosen = [0]
    while len(chosen) < min(n, len(good)):
        distance = np.min([np.abs(unit - unit[c]).sum(axis=1) for c in chosen], axis=0)
        distance[chosen] = -1.0
        pick = int(np.argmax(distance))
        if distance[pick] <= 0:
            break
        chosen.append(pick)
    configs = []
    for i in chosen:
        row = good.iloc[i]
        overrides = {k: (int(row[k]) if isinstance(getattr(base, k), int) else float(row[k]))
                     for k in columns}
        per_fold = seconds.get(int(row["trial"]), math.nan) / max(1, int(row["folds_done"]))
        configs.append((replace(base, **overrides), per_fold))
    return configs


def plan_step(run: Run) -> None:
    """How many seeds and configurations to train: the saved plan of an interrupted run with the
    same budget (resumed, not re-planned on its leftover time), else what the budget allows."""
    settings = run.settings
    plan = run.state.record("plan")
    if not (isinstance(plan, dict) and plan.get("time_budget") == settings.time_budget):
        seeds, count = settings.max_seeds, len(run.configs)
        if settings.n_trials is None:
            seeds, count = plan_training([c for _, c in run.configs], run.tuning.get("fit_seconds"),
                                         n_folds=len(run.pool1.fold_numbers),
                                         max_seeds=settings.max_seeds,
                                         seconds=run.budget.training_seconds())
        plan = {"time_budget": settings.time_budget, "seeds": seeds, "count": count}
        run.state.save("plan", plan)
    run.plan = plan


def train_step(run: Run) -> None:
    """Train (or reuse) ``auto_mlp_<i>`` for each planned configuration; each joins the pool in
    memory; level-2 experiments an earlier run made from other inputs are removed."""
    pool, settings = run.pool1, run.settings
    count = min(int(run.plan["count"]), len(run.configs))
    if count < len(run.configs):
        run.notes.append(f"time budget: {count} of {len(run.configs)} level-2 configurations planned")
    seed_list = [settings.seed + i for i in range(int(run.plan["seeds"]))]
    n_folds = len(pool.fold_numbers)
    for i, (params, seconds) in enumerate(run.configs[:count], start=1):
        name = f"{LEVEL2_PREFIX}{i}"
        record = {"auto_key": run.key, "params": params.to_dict(), "seeds": seed_list,
                  "inputs": list(pool.names)}
        # read from the layout: the caller's collection may hold the level-1 experiments only
        # (the demo's); one that stack auto did not make was refused before any stage ran
        exists = layout.experiment_dir(run.root, name).exists()
        meta = layout.read_meta(run.root, name) if exists else None
        if meta is not None and all(meta.get(k) == v for k, v in record.items()):
            run.level2[name] = {**record, "cv": meta.get("cv"), "reused": True}
            continue
        cost = training_cost(seconds, run.tuning.get("fit_seconds"), n_folds=n_folds,
                             n_seeds=len(seed_list))
        if run.level2 and settings.n_trials is None and run.budget.too_late_for(cost):
            # slower than planned (a busier machine): keep the budget, skip the rest
            run.notes.append(f"time budget: stopped after {len(run.level2)} level-2 experiment(s)")
            break
        cv = _train_one(run, name, params, seed_list, record)
        run.level2[name] = {**record, "cv": cv, "reused": False}
    _remove_stale(run)


def _train_one(run: Run, name: str, params, seeds: list[int], record: dict) -> float:
    """Train and write ``name``, keep it (as its files store it) and its learning curves for the
    run; its CV."""
    from stacker.level2.fit import TrainConfig
    from stacker.level2.store import fold_history, level2_meta, train_and_write

    pool, settings = run.pool1, run.settings
    config = TrainConfig(params=params, seeds=seeds, metric=settings.metric,
                         device=settings.device, scheduler=run.scheduler)
    extra = {"made_by": MADE_BY, **record, "tuning_holdout_fold": run.tuning["holdout_fold"]}
    with run.stage(f"level 2: {name} ({len(seeds)} seed(s) x {len(pool.fold_numbers)} folds)") as update:
        result, _ = train_and_write(run.root, pool, list(pool.names), {name: None}, config,
                                    force=True, extra_meta=extra, data=run.level2_data(),
                                    on_progress=update)
    oof, test = result.combined()
    order = [list(result.fold_numbers).index(k) for k in pool.fold_numbers]
    run.collection = run.collection.with_experiment(
        name, as_stored(oof), as_stored(test[order]),
        level2_meta(result, pool.folds.hash, seeds=list(result.seeds), extra_meta=extra))
    run.histories[name] = {k: fold_history(result, result.seeds, k) for k in result.fold_numbers}
    return result.scores()[0]


def _remove_stale(run: Run) -> None:
    """Level-2 experiments an earlier `stack auto` made from other inputs: they would mislead."""
    for name in layout.list_experiments(run.root):
        # exactly the names a run makes (auto_mlp_<i>): a user's copy 'auto_mlp_1_keep' stays
        if (re.fullmatch(rf"{re.escape(LEVEL2_PREFIX)}\d+", name) and name not in run.level2
                and provenance.remove_own_experiment(run.root, name, MADE_BY)):
            run.notes.append(f"removed {name}, made by an earlier stack auto from other inputs")
