"""`stack auto`: the whole second level in one honest run, as a list of stages over one pool.

collect -> first-level recipes (best single, geometric mean of all, subset search, ensemble
selection; each with its nested CV) -> tune the level-2 MLP (Optuna, within the time budget, with
one fold held out of tuning) -> plan and train the level-2 experiments (the tuned best and a few
diverse good trials, each averaged over seeds, honest OOF) -> the final recipes over first-level
and level-2 experiments (subset search, ensemble selection and the linear stacker, nested) -> the
final blend, their geometric mean, written as the experiment ``auto_blend`` whose OOF is the
parts' nested predictions -> the final choice: the final blend, unless another recipe's nested CV
is better by more than ``CLEAR_MARGIN`` standard errors of the per-fold differences ->
``subsets.json``, the submission and the report.

One pool: the layout is collected once; each experiment the run makes (``auto_mlp_<i>``,
``auto_blend``) is written to the layout for later commands and joins the pool in memory as the
values its files store, so nothing the run wrote is read back.

What the estimate accounts for (also written into the output):

- every subset/weight selection is nested: repeated without the fold it is scored on;
- the level-2 MLPs never see a fold's labels when predicting that fold (inner early stopping), and
  their hyper-parameters were tuned with one fold (``tuning_holdout_fold``) held out of tuning;
  their predictions on the other folds carry the tuning's (small) optimism;
- the final recipe is the final blend, fixed in advance, unless a candidate clearly beats it by
  nested CV (a declared choice; the output says which happened). Averaging the three final
  selections, rather than taking the best of a dozen noisy nested CVs, avoids the winner's curse
  of the choice on small data.

Resuming: finished stages are recorded in ``<root>/.stack/auto/state.json`` under a key made of
their inputs (the level-1 predictions' content, the folds, the settings), the first-level
recipes' nested predictions beside it (:mod:`stacker.auto.state`). A rerun with the same inputs
reuses them; a changed input redoes what depends on it. The Optuna study lives in
``<root>/.stack/auto/tune.db``; level-2 experiments are written into the layout as ``auto_mlp_<i>``
with the key in their ``meta.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stacker import layout
from stacker.auto import mlp, outputs
from stacker.auto.budget import Budget
from stacker.auto.context import OutputPaths, Run
from stacker.auto.recipes import (
    Recipe,
    choose,
    estimate_note,
    final_blend,
    final_recipes,
    level1_recipes,
)
from stacker.auto.settings import (
    BLEND_NAME,
    MADE_BY,
    AutoSettings,
)
from stacker.auto.state import StateStore, input_key
from stacker.errors import LayoutError
from stacker.layout import provenance
from stacker.layout.collect import Collection, collect
from stacker.layout.tables import as_stored
from stacker.metrics import get_metric
from stacker.runtime import Stage, quiet_stage
from stacker.submission import read_template


@dataclass
class AutoResult:
    """What the run chose and measured. recipes: every candidate, in the order considered."""

    root: Path
    recipes: list[Recipe]
    final: Recipe
    level2: dict[str, dict]              # experiment -> {params, seeds, cv, reused}
    tuning: dict
    estimate: str
    files: dict[str, Path]
    settings: AutoSettings
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_frame(self):
        """The recipes as a pandas DataFrame, in the order considered: name, what, cv,
        nested_cv, holdout_cv (the fold held out of tuning) and chosen (the submission)."""
        import pandas as pd

        return pd.DataFrame([{"name": r.name, "what": r.what, "cv": r.cv, "nested_cv": r.nested_cv,
                              "holdout_cv": r.holdout_cv, "chosen": r is self.final}
                             for r in self.recipes],
                            columns=["name", "what", "cv", "nested_cv", "holdout_cv", "chosen"])

    def _repr_html_(self) -> str:
        """Jupyter's view: the choice, the recipes table, how the estimate was made, the files."""
        from html import escape

        final, metric = self.final, escape(self.settings.metric)
        files = "".join(f"<li>{escape(k)}: <code>{escape(str(v))}</code></li>" for k, v in self.files.items())
        table = self.to_frame().to_html(index=False, float_format=lambda v: f"{v:.4f}", escape=True)
        return (f"<p><b>stack auto</b> ({metric}): submission <b>{escape(final.name)}</b>, expect "
                f"about {final.nested_cv:.4f} on new data (nested CV; selected CV {final.cv:.4f}; "
                f"holdout_cv: fold {self.tuning.get('holdout_fold')}, held out of tuning)</p>"
                f"{table}<p>How the estimate was made: {escape(self.estimate)}.</p>"
                + (f"<ul>{files}</ul>" if files else ""))


@dataclass(frozen=True)
class Step:
    """One stage: its ``name`` (also its record in the run's state, for the stages that save
    one), ``run(context)``, which reads what earlier stages left on the context and leaves its
    result there (restoring a saved result instead of redoing it, where it saves one), the
    ``lap`` of AutoResult.seconds it ends (None: the time counts to the next), and whether it
    ``applies`` to this run."""

    name: str
    run: Callable[[Run], None]
    lap: str | None = None
    applies: Callable[[Run], bool] = lambda run: True


def _with_level2(run: Run) -> bool:
    return run.settings.n_level2 > 0


def collect_step(run: Run) -> None:
    """The level-1 pool (collected once, unless the caller passed its collection), the fold held
    out of tuning, the inputs' key and the state of earlier runs with that key."""
    if run.collection is None:
        with run.stage("collect") as update:
            run.collection = collect(run.root, on_progress=update)
    collection = run.collection
    if run.outputs.template is not None:   # a bad template is refused now, not after every stage
        read_template(run.outputs.template, collection.test_ids, collection.classes)
    run.level1 = [n for n in collection.names if collection.level(n) == 1]
    ignored = [n for n in collection.names if collection.level(n) != 1
               and not provenance.made_by(collection.meta.get(n, {}), MADE_BY)]
    if ignored:
        run.notes.append(f"level-2 experiments not made by stack auto are not used: {', '.join(ignored)}")
    for reason in collection.skipped:                 # say what collect left out, and why
        run.notes.append(f"collect skipped {reason}")
    if not run.level1:
        raise LayoutError(f"no level-1 experiment under {run.root}; write first-level predictions "
                          "first (stack first-level ..., stack import, or stacker.layout)")
    if len(collection.fold_numbers) < 3:
        raise LayoutError(f"{run.root}: stack auto needs at least 3 folds (one is held out of "
                          f"tuning); folds.csv has {len(collection.fold_numbers)}")
    run.pool1 = collection.select(run.level1)
    run.holdout = int(collection.fold_numbers[-1])
    run.tuning = {"holdout_fold": run.holdout}     # what tuning did: nothing yet
    run.key = input_key(run.pool1, run.settings)
    run.state = StateStore(run.root, run.key)


def level1_step(run: Run) -> None:
    """The first-level recipes, restored with their nested predictions when saved."""
    run.recipes = _restored_recipes(run.state, "level1")
    if run.recipes is None:
        began = time.perf_counter()
        run.recipes = level1_recipes(run.pool1, run.searches())
        run.budget.first_level_took(time.perf_counter() - began)
        run.state.save("level1", [r.to_state() for r in run.recipes],
                       {str(i): r.nested_oof for i, r in enumerate(run.recipes)
                        if r.nested_oof is not None})


def _restored_recipes(state: StateStore, stage: str) -> list[Recipe] | None:
    """The saved recipes of ``stage``, each with its nested predictions; None unless all are."""
    records = state.record(stage)
    arrays = state.arrays(stage) if isinstance(records, list) else None
    if arrays is None or len(arrays) != len(records):
        return None
    try:
        return [Recipe.from_json(r, arrays[str(i)]) for i, r in enumerate(records)]
    except (KeyError, TypeError, ValueError):
        return None


def final_step(run: Run) -> None:
    """The pool of level 1 + level 2 (reused level-2 experiments the caller's collection lacks
    are read from the layout: an earlier run wrote them) and the final recipes over it."""
    collection = run.collection
    for name in run.level2:
        if name not in collection.names:
            collection = collection.with_layout_experiment(name)
    run.collection = collection
    run.everything = collection.select([*run.level1, *run.level2])
    run.recipes = [*run.recipes, *final_recipes(run.everything, list(run.level2), run.level1,
                                                run.searches())]


def blend_step(run: Run) -> None:
    """The final blend (:func:`~stacker.auto.recipes.final_blend`), written as ``auto_blend`` and joined to the
    pool as its files store it; without one, an earlier run's ``auto_blend`` is removed."""
    made = final_blend(run.everything, run.recipes, run.metric, run.holdout, run.key)
    if made is None:
        provenance.remove_own_experiment(run.root, BLEND_NAME, MADE_BY)
        return
    run.blend, experiment = made
    run.recipes.append(run.blend)
    outputs.write_experiment(run.root, BLEND_NAME, run.everything, experiment.oof,
                             experiment.test, experiment.meta)
    test = as_stored(experiment.test)
    run.everything = run.everything.with_experiment(
        BLEND_NAME, as_stored(experiment.oof),
        test[None].repeat(len(run.everything.fold_numbers), axis=0), experiment.meta)


def choice_step(run: Run) -> None:
    # the final blend is fixed in advance (its one choice, the gate, is nested); without one
    # (fewer than two selections) the best nested CV, a declared choice
    run.final = run.blend if run.blend is not None else choose(run.recipes, run.metric)
    run.estimate = estimate_note(run.final, run.recipes, run.holdout, bool(run.level2), run.blend)


STEPS = (
    Step("collect", collect_step, lap="collect"),
    Step("level1", level1_step, lap="first-level search"),
    Step("tune", mlp.tune_step, lap="tune", applies=_with_level2),
    Step("plan", mlp.plan_step, applies=_with_level2),
    Step("level2", mlp.train_step, lap="level 2", applies=_with_level2),
    Step("final", final_step),
    Step("blend", blend_step),
    Step("choice", choice_step, lap="final selection"),
    Step("outputs", outputs.write_outputs, lap="outputs"),
)


def run_auto(root: Path | str = layout.DEFAULT_ROOT, *, settings: AutoSettings = AutoSettings(),
             template: Path | str | None = None, out: Path | str | None = "submission.csv",
             report: Path | str | None = "report.html", force: bool = False,
             stage: Stage | None = None, collection: Collection | None = None,
             scheduler: str | None = None) -> AutoResult:
    """Run every stage (:data:`STEPS`) on the layout at ``root``; see the module docstring.

    out, report: where the submission (plus its sidecar ``<out>.json``) and the HTML report go;
    None skips them. An existing file there is replaced only when ``force`` or when an earlier
    `stack auto` made it (its sidecar says so); neither may be an input of the run nor a file of
    the layout. stage: a :data:`~stacker.runtime.Stage` (the CLI and ``stacker.auto`` pass
    :func:`stacker.progress.show_progress`; default: none).
    collection: an already collected layout (the demo passes its own); collected here otherwise.
    scheduler: a dask.distributed scheduler address: the level-2 seed x fold models train there
    (the results are the same as here).
    """
    budget = Budget(settings.time_budget)
    paths = OutputPaths(template=template, out=out, report=report, force=force)
    run = Run(root=Path(root), settings=settings, metric=get_metric(settings.metric), budget=budget,
              stage=stage or quiet_stage, outputs=paths, scheduler=scheduler, collection=collection)
    settings.check()
    outputs.check_outputs(paths, run.root)
    for name in (BLEND_NAME, *settings.level2_names()):
        # refused now, not after minutes of training
        provenance.check_own_experiment(run.root, name, MADE_BY)
    for step in STEPS:
        if step.applies(run):
            step.run(run)
            if step.lap:
                run.laps.lap(step.lap)
    return AutoResult(root=run.root, recipes=run.recipes, final=run.final, level2=run.level2,
                      tuning=run.tuning, estimate=run.estimate,
                      files=run.files, settings=settings, seconds=run.laps.seconds,
                      notes=run.notes)
