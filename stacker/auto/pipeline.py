"""`stack auto`: the whole second level in one honest run.

collect -> first-level recipes (best single, geometric mean of all, subset search, ensemble
selection; each with its nested CV) -> tune the level-2 MLP (Optuna, within the time budget, with
one fold held out of tuning) -> train the level-2 experiments (the tuned best and a few diverse good
trials, each averaged over seeds, honest OOF) -> the final recipes over first-level and level-2
experiments (subset search, ensemble selection and the linear stacker, nested) -> the final blend,
their geometric mean, written as the experiment ``auto_blend`` whose OOF is the parts' nested
predictions -> the final choice: the final blend, unless another recipe's nested CV is better by
more than ``CLEAR_MARGIN`` standard errors of the per-fold differences -> ``subsets.json``, the
submission and the report.

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
their inputs (the level-1 predictions' content, the folds, the settings). A rerun with the same
inputs reuses them; a changed input redoes what depends on it. The Optuna study lives in
``<root>/.stack/auto/tune.db``; level-2 experiments are written into the layout as ``auto_mlp_<i>``
with the key in their ``meta.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from stacker import layout
from stacker.blend import Blend, oof_blend
from stacker.errors import LayoutError, OptionError, OutputExistsError
from stacker.layout import provenance, workspace
from stacker.layout.collect import Collection, collect
from stacker.metrics import fold_scores, get_metric
from stacker.runtime import Laps, Stage, quiet_stage
from stacker.search.engine import SearchResult, search_subsets
from stacker.submission import sidecar_path

MADE_BY = "stack auto"
LEVEL2_PREFIX = "auto_mlp_"
BLEND_NAME = "auto_blend"
# the final blend averages these recipes (the first-level ones when no level-2 experiment exists)
BLEND_PARTS = ("final subset", "final GES", "final linear")
FIRST_LEVEL_BLEND_PARTS = ("first-level subset", "first-level GES", "first-level linear")
CLEAR_MARGIN = 2.0       # standard errors by which a recipe must beat the final blend to replace it


@dataclass(frozen=True)
class AutoSettings:
    """Everything a run depends on besides the layout (recorded in the outputs).

    time_budget: seconds for the whole run (tuning and level-2 training adapt to it).
    n_level2: level-2 experiments to train (the tuned best plus diverse good trials).
    max_seeds: seeds averaged per level-2 experiment, when the budget allows.
    level2_params: MLPParams overrides for the base configuration (and the tuning's first trial).
    search_budget: seconds the exhaustive subset search may take before ``auto`` falls back to beam.
    n_trials: tune exactly this many trials and train every configuration with ``max_seeds`` seeds
        (reproducible to the bit); None lets the time budget decide both (recorded in the outputs).
    """

    metric: str = "lwlrap"
    time_budget: float = 480.0
    seed: int = 0
    n_level2: int = 3
    max_seeds: int = 3
    level2_params: dict = field(default_factory=dict)
    search_budget: float = 60.0
    device: str = "cpu"
    n_trials: int | None = None


@dataclass(frozen=True)
class Recipe:
    """One candidate for the submission: a ``blend`` of ``members`` (geo-mean with ``weights``; the
    per-class weights or the linear stacker of a weighted search live in ``search``).

    nested_cv: the score of the recipe's own choices made without the fold scored (equal to ``cv``
    for a recipe that chooses nothing on the folds). holdout_cv: the score on the fold held out of
    the level-2 tuning. nested_fold_cv: the nested predictions' score on each fold (folds.csv's
    fold order). nested_oof: those predictions, (n_rows, n_classes); kept for this run only.
    """

    name: str
    what: str
    members: tuple[str, ...]
    weights: dict
    cv: float
    nested_cv: float
    holdout_cv: float
    search: dict | None = None
    blend: str = "geo-mean"
    nested_fold_cv: tuple = ()
    nested_oof: np.ndarray | None = field(default=None, repr=False, compare=False)

    def blend_options(self, classes: Sequence[str]) -> dict:
        """Keyword arguments of :func:`stacker.blend.oof_blend` / ``test_blend`` / the submission
        that rebuild exactly the blend this recipe was scored with."""
        from stacker.search.subsets import searched_weights

        if self.search and (self.search.get("coef") or self.search.get("class_weights")):
            weights, intercept = searched_weights(self.search, self.members, classes)
        else:
            weights, intercept = [self.weights[m] for m in self.members], None
        return {"blend": self.blend, "weights": weights, "intercept": intercept}

    def to_json(self) -> dict:
        return {"name": self.name, "what": self.what, "members": list(self.members),
                "weights": dict(self.weights), "cv": self.cv, "nested_cv": self.nested_cv,
                "holdout_cv": self.holdout_cv, "blend": self.blend, "search": self.search,
                "nested_fold_cv": list(self.nested_fold_cv)}

    @classmethod
    def from_json(cls, record: dict) -> "Recipe":
        return cls(name=record["name"], what=record["what"], members=tuple(record["members"]),
                   weights=dict(record["weights"]), cv=float(record["cv"]),
                   nested_cv=float(record["nested_cv"]), holdout_cv=float(record["holdout_cv"]),
                   search=record.get("search"), blend=record.get("blend", "geo-mean"),
                   nested_fold_cv=tuple(float(v) for v in record.get("nested_fold_cv", ())))


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


def run_auto(root: Path | str = layout.DEFAULT_ROOT, *, settings: AutoSettings = AutoSettings(),
             template: Path | str | None = None, out: Path | str | None = "submission.csv",
             report: Path | str | None = "report.html", force: bool = False,
             stage: Stage | None = None, collection: Collection | None = None,
             scheduler: str | None = None) -> AutoResult:
    """Run every stage on the layout at ``root``; see the module docstring.

    out, report: where the submission (plus its sidecar ``<out>.json``) and the HTML report go;
    None skips them. An existing file there is replaced only when ``force`` or when an earlier
    `stack auto` made it (its sidecar says so). stage: ``stage(description)`` returns a context
    manager yielding ``update(done, total)`` (the CLI passes a progress bar).
    collection: an already collected layout (the demo passes its own); collected here otherwise.
    scheduler: a dask.distributed scheduler address: the level-2 seed x fold models train there
    (the results are the same as here).
    """
    started = time.perf_counter()
    deadline = started + settings.time_budget
    stage = stage or quiet_stage
    root = Path(root)
    metric = get_metric(settings.metric)
    if settings.time_budget <= 0:
        raise OptionError(f"`time_budget` must be positive, got {settings.time_budget}")
    if settings.n_level2 < 0 or settings.max_seeds < 1:
        raise OptionError("`n_level2` must be >= 0 and `max_seeds` >= 1")
    _check_outputs(out, report, force)
    for name in (BLEND_NAME, *(f"{LEVEL2_PREFIX}{i}" for i in range(1, settings.n_level2 + 1))):
        _check_own_experiment(root, name)        # refused now, not after minutes of training
    laps = Laps()
    lap, seconds = laps.lap, laps.seconds
    notes: list[str] = []

    # ---- 1. collect: the level-1 pool
    if collection is None:
        with stage("collect") as update:
            collection = collect(root, on_progress=update)
    level1 = [n for n in collection.names if collection.level(n) == 1]
    ignored = [n for n in collection.names
               if collection.level(n) != 1 and not _made_by_auto(collection.meta.get(n, {}))]
    if ignored:
        notes.append(f"level-2 experiments not made by stack auto are not used: {', '.join(ignored)}")
    if not level1:
        raise LayoutError(f"no level-1 experiment under {root}; write first-level predictions first "
                          "(stack first-level ..., stack import, or stacker.layout)")
    if len(collection.fold_numbers) < 3:
        raise LayoutError(f"{root}: stack auto needs at least 3 folds (one is held out of tuning); "
                          f"folds.csv has {len(collection.fold_numbers)}")
    pool1 = collection.select(level1)
    holdout = int(collection.fold_numbers[-1])
    key = _input_key(pool1, settings)
    state = workspace.read_auto_state(root)
    if state.get("key") != key:
        state = {"key": key}
    lap("collect")

    # ---- 2. first-level recipes
    recipes = _cached_recipes(state, "level1")
    if recipes is None:
        recipes = _level1_recipes(pool1, settings, holdout, stage, notes)
        state["level1"] = [r.to_json() for r in recipes]
        workspace.write_auto_state(root, state)
    lap("first-level search")

    # ---- 3. tune and train level 2
    level2: dict[str, dict] = {}
    tuning: dict = {"holdout_fold": holdout}
    if settings.n_level2 > 0:
        configs, tuning = _tune(root, pool1, settings, state, holdout, deadline, stage)
        lap("tune")
        level2 = _train_level2(root, pool1, configs, tuning, settings, key, state, deadline,
                               stage, notes, scheduler)
        _remove_stale_level2(root, set(level2), notes)
        lap("level 2")

    # ---- 4. final recipes over level 1 + level 2, the choice, the outputs
    if level2:
        with stage("collect level 2") as update:
            collection = collect(root, on_progress=update)
    everything = collection.select([*level1, *level2])
    level2_recipes = _level2_recipes(everything, list(level2), list(level1), settings, holdout, stage,
                                     notes)
    names = BLEND_PARTS if level2 else FIRST_LEVEL_BLEND_PARTS
    if not level2 and any(r.nested_oof is None for r in recipes if r.name in names):
        # recipes reused from an earlier run lack their nested predictions: search them again
        recipes = _level1_recipes(pool1, settings, holdout, stage, [])
    recipes = [*recipes, *level2_recipes]
    blend = _final_blend(root, everything, [r for r in recipes if r.name in names], metric, holdout,
                         key)
    if blend is not None:
        recipes.append(blend)
        with stage(f"collect {BLEND_NAME}") as update:
            collection = collect(root, on_progress=update)
        everything = collection.select([*level1, *level2, BLEND_NAME])
    final = _choose(recipes, metric, default=blend)
    estimate = _estimate_note(final, recipes, holdout, bool(level2), blend)
    lap("final selection")
    files = _write_outputs(root, everything, final, recipes, settings, tuning, estimate, template,
                           out, report, force, stage)
    lap("outputs")
    return AutoResult(root=root, recipes=recipes, final=final, level2=level2, tuning=tuning,
                      estimate=estimate, files=files, settings=settings, seconds=seconds, notes=notes)


# ---------------------------------------------------------------- inputs and state

def _input_key(pool: Collection, settings: AutoSettings) -> str:
    """A digest of everything the stages depend on: the level-1 predictions' content, the folds,
    the classes and the settings (not the time budget: a longer budget may reuse finished work)."""
    from stacker.level2.params import MLPParams

    digest = hashlib.blake2b(digest_size=16)
    recorded = {k: v for k, v in asdict(settings).items() if k != "time_budget"}
    # the level-2 parameters in full: a new stacker version's defaults are a changed input too
    recorded["level2_params"] = MLPParams.from_dict(settings.level2_params,
                                                    source="level-2 settings").to_dict()
    digest.update(json.dumps({"names": list(pool.names), "fold_hash": pool.folds.hash,
                              "classes": list(pool.classes), "settings": recorded},
                             sort_keys=True, default=str).encode())
    for i in range(pool.n_models):
        digest.update(np.ascontiguousarray(pool.oof[:, i]).tobytes())
        digest.update(np.ascontiguousarray(pool.test[:, :, i]).tobytes())
    digest.update("\n".join(map(str, pool.test_ids)).encode())
    return digest.hexdigest()


def _cached_recipes(state: dict, stage_name: str) -> list[Recipe] | None:
    records = state.get(stage_name)
    if not isinstance(records, list):
        return None
    try:
        return [Recipe.from_json(r) for r in records]
    except (KeyError, TypeError, ValueError):
        return None


def _made_by_auto(meta: dict) -> bool:
    return provenance.made_by(meta, MADE_BY)


# ---------------------------------------------------------------- recipes

def _fixed_recipe(collection: Collection, name: str, what: str, members, metric, holdout) -> Recipe:
    """A recipe that chooses nothing on the folds: equal weights, nested CV = CV."""
    members = tuple(members)
    weights = {m: 1.0 / len(members) for m in members}
    blend = oof_blend(collection, list(members))
    cv = float(metric(collection.y, blend))
    held = collection.fold == holdout
    return Recipe(name=name, what=what, members=members, weights=weights, cv=cv, nested_cv=cv,
                  holdout_cv=float(metric(collection.y[held], blend[held])),
                  nested_fold_cv=tuple(fold_scores(collection.y, blend, collection.fold,
                                                   collection.fold_numbers, metric)),
                  nested_oof=blend)


def _searched_recipe(collection: Collection, name: str, what: str, result: SearchResult,
                     holdout: int) -> Recipe:
    """A recipe chosen by a search: its nested CV, and the held-out-of-tuning fold's score of the
    selection made without that fold."""
    held = [f for f in result.nested_folds if f.fold == holdout]
    holdout_cv = held[0].cv if held else float("nan")
    nested = result.nested_cv if result.nested_cv is not None else result.cv
    return Recipe(name=name, what=f"{what} ({result.method})", members=tuple(result.members),
                  weights=dict(result.weights), cv=float(result.cv), nested_cv=float(nested),
                  holdout_cv=float(holdout_cv), search=result.to_json(), blend=result.blend,
                  nested_fold_cv=tuple(float(f.cv) for f in result.nested_folds),
                  nested_oof=result.nested_oof)


def _search(collection: Collection, pool, settings: AutoSettings, stage, description, **options):
    with stage(description) as update:
        return search_subsets(collection, pool=list(pool), metric=settings.metric, blend="geo-mean",
                              seed=settings.seed, time_budget=settings.search_budget,
                              on_progress=update, **options)


def _optional_search(collection, pool, settings, stage, description, notes: list, **options):
    """A candidate the data may not support (the method refuses it): a note instead of a recipe."""
    try:
        return _search(collection, pool, settings, stage, description, **options)
    except OptionError as error:
        notes.append(f"{description}: skipped ({error})")
        return None


def _level1_recipes(pool: Collection, settings: AutoSettings, holdout: int, stage,
                    notes: list) -> list[Recipe]:
    metric = get_metric(settings.metric)
    names = list(pool.names)
    single = _search(pool, names, settings, stage, "best single first-level model",
                     method="exhaustive", max_size=1)
    recipes = [_searched_recipe(pool, "best single", "the best CV",
                                single, holdout)]
    if len(names) > 1:
        recipes.append(_fixed_recipe(pool, "all first-level", "geo-mean of all", names, metric, holdout))
        subset = _search(pool, names, settings, stage, "subset search over the first level",
                         method="auto")
        recipes.append(_searched_recipe(pool, "first-level subset", "geo-mean subset", subset, holdout))
        ges = _search(pool, names, settings, stage, "ensemble selection over the first level",
                      method="ges")
        recipes.append(_searched_recipe(pool, "first-level GES", "weighted selection", ges, holdout))
        linear = _optional_search(pool, names, settings, stage, "linear stacker over the first level",
                                  notes, method="linear")
        if linear is not None:
            recipes.append(_searched_recipe(pool, "first-level linear", "linear stacker", linear,
                                            holdout))
    return recipes


def _level2_recipes(everything: Collection, level2: list[str], level1: list[str],
                    settings: AutoSettings, holdout: int, stage, notes: list) -> list[Recipe]:
    metric = get_metric(settings.metric)
    recipes = [_fixed_recipe(everything, name, "MLP on level 1", [name],
                             metric, holdout) for name in level2]
    if len(level2) > 1:
        recipes.append(_fixed_recipe(everything, "all level-2", "geo-mean of MLPs",
                                     level2, metric, holdout))
    if level2:
        names = [*level1, *level2]
        subset = _search(everything, names, settings, stage,
                         "subset search over first level + level 2", method="auto")
        recipes.append(_searched_recipe(everything, "final subset", "geo-mean subset, L1+L2", subset, holdout))
        ges = _search(everything, names, settings, stage,
                      "ensemble selection over first level + level 2", method="ges")
        recipes.append(_searched_recipe(everything, "final GES", "weighted selection, L1+L2", ges, holdout))
        linear = _optional_search(everything, names, settings, stage,
                                  "linear stacker over first level + level 2", notes, method="linear")
        if linear is not None:
            recipes.append(_searched_recipe(everything, "final linear", "linear stacker, L1+L2", linear,
                                            holdout))
    return recipes


def _choose(recipes: Sequence[Recipe], metric, default: Recipe | None = None) -> Recipe:
    """The final recipe. With a ``default`` (the final blend): the default, unless another
    recipe's nested CV is *clearly* better (:func:`_clearly_better`); the best such one then.
    Without: the recipe with the best nested CV; ties go to the earlier (simpler) one."""
    sign = metric.sign()
    best = default if default is not None else recipes[0]
    for recipe in recipes:
        if recipe is best or math.isnan(recipe.nested_cv):
            continue
        if sign * recipe.nested_cv > sign * best.nested_cv and (
                default is None or _clearly_better(recipe, default, sign)):
            best = recipe
    return best


def _clearly_better(recipe: Recipe, default: Recipe, sign: float) -> bool:
    """Whether ``recipe`` beats ``default`` on the folds by more than CLEAR_MARGIN standard errors
    of their paired per-fold nested score differences (a one-sided paired t-test, roughly)."""
    a, b = np.asarray(recipe.nested_fold_cv, float), np.asarray(default.nested_fold_cv, float)
    if len(a) != len(b) or len(a) < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False
    gain = sign * (a - b)
    return bool(gain.mean() > CLEAR_MARGIN * gain.std(ddof=1) / math.sqrt(len(gain)))


def _final_blend(root: Path, everything: Collection, parts: Sequence[Recipe], metric, holdout: int,
                 key: str) -> Recipe | None:
    """The geometric mean of ``parts`` (each with its own blend), written into the layout as the
    experiment ``auto_blend``: its OOF is the geometric mean of the parts' *nested* predictions
    (each fold's rows from selections made without that fold), so it is as honest as a level-2
    OOF; its test predictions (the same in every fold folder) blend the parts' selections made on
    every fold. None (and no experiment) with fewer than two parts."""
    from stacker.blend import geo_mean, test_blend

    parts = [p for p in parts if p.nested_oof is not None]
    if len(parts) < 2:
        _remove_own(root, BLEND_NAME)
        return None
    classes = everything.classes
    selected = np.stack([oof_blend(everything, list(p.members), **p.blend_options(classes))
                         for p in parts], axis=-2)
    nested = geo_mean(np.stack([p.nested_oof for p in parts], axis=-2))
    test = geo_mean(np.stack([test_blend(everything, list(p.members), **p.blend_options(classes))
                              for p in parts], axis=-2))
    y, fold = everything.y, everything.fold
    nested_cv = float(metric(y, nested))
    fold_cv = fold_scores(y, nested, fold, everything.fold_numbers, metric)
    held = fold == holdout
    names = ", ".join(p.name for p in parts)
    meta = {"model": "stack auto blend", "level": 3, "made_by": MADE_BY, "auto_key": key,
            "parts": [p.to_json() | {"search": None} for p in parts], "metric": metric.name,
            "cv": nested_cv,
            "cv_folds": {str(k): v for k, v in zip(everything.fold_numbers, fold_cv)},
            "fold_hash": everything.folds.hash,
            "cv_note": (f"geometric mean of {names}; OOF: each fold's rows from the selections made "
                        "without that fold (nested); test: the selections made on every fold")}
    _write_predictions(root, BLEND_NAME, everything, nested, test, meta)
    return Recipe(name="final blend", what=f"geo-mean of {names}", members=(BLEND_NAME,),
                  weights={BLEND_NAME: 1.0}, cv=float(metric(y, geo_mean(selected))),
                  nested_cv=nested_cv, holdout_cv=float(metric(y[held], nested[held])),
                  nested_fold_cv=tuple(fold_cv), nested_oof=nested)


def _write_predictions(root: Path, name: str, collection: Collection, oof: np.ndarray,
                       test: np.ndarray, meta: dict) -> None:
    """Experiment ``name`` (val rows of each fold from ``oof``, ``test`` in every fold), staged
    whole and renamed into place (`run_auto` refused one it did not make before any stage ran)."""
    import uuid

    folds = collection.folds
    staging = workspace.staging_dir(root) / f"{name}-{uuid.uuid4().hex[:8]}"
    try:
        for k in collection.fold_numbers:
            rows = folds.rows_of_fold(k)
            layout.write_fold_predictions(staging, name, k, "val", folds.ids[rows], oof[rows],
                                          folds.classes, id_column=folds.id_column)
            layout.write_fold_predictions(staging, name, k, "test", collection.test_ids, test,
                                          folds.classes, id_column=folds.id_column)
        layout.write_meta(staging, name, meta)
        layout.install_experiment(staging, root, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_own_experiment(root: Path, name: str) -> None:
    """OutputExistsError when experiment ``name`` exists and an earlier `stack auto` did not make it."""
    provenance.check_own_experiment(root, name, MADE_BY)


def _remove_own(root: Path, name: str) -> bool:
    """Delete experiment ``name`` if an earlier `stack auto` made it (it would mislead); whether
    it did."""
    return provenance.remove_own_experiment(root, name, MADE_BY)


def _estimate_note(final: Recipe, recipes, holdout: int, tuned: bool, blend: Recipe | None) -> str:
    parts = ["nested CV: every subset/weight selection is repeated without the fold it is scored on"]
    if tuned:
        parts.append(f"the level-2 MLPs predict each fold without its labels (inner early stopping) "
                     f"and were tuned with fold {holdout} held out of tuning; on the other folds "
                     "their predictions carry the tuning's small optimism; the selections over them "
                     "learn from other folds' level-2 predictions, whose models saw the scored "
                     "fold's labels (as in any stacking CV)")
    if blend is None:
        parts.append(f"the final recipe is the best of {len(recipes)} candidates by nested CV "
                     "(a declared choice)")
    elif final is blend:
        parts.append(f"the final recipe is the final blend ({blend.what}), fixed before any score "
                     f"was seen: no other of the {len(recipes)} candidates beat its nested CV by more "
                     f"than {CLEAR_MARGIN:g} standard errors of the per-fold differences")
    else:
        parts.append(f"the final recipe replaced the final blend because its nested CV is better by "
                     f"more than {CLEAR_MARGIN:g} standard errors of the per-fold differences (a "
                     f"declared choice among {len(recipes)} candidates)")
    parts.append(f"on fold {holdout}, which no tuning saw, it scores {final.holdout_cv:.4f}")
    return "; ".join(parts)


# ---------------------------------------------------------------- level 2

def _tune(root: Path, pool: Collection, settings: AutoSettings, state: dict, holdout: int,
          deadline: float, stage) -> tuple[list, dict]:
    """Tune the level-2 MLP on the folds other than ``holdout``, within its share of the budget;
    returns the configurations to train (best first) and what the tuning did."""
    from stacker.level2.params import MLPParams
    from stacker.level2.tune import TUNED_PARAMS, tune

    base = MLPParams.from_dict(settings.level2_params, source="level-2 settings")
    storage_path = workspace.auto_dir(root) / "tune.db"
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{storage_path.resolve()}"
    study_name = f"auto-{state['key'][:16]}"
    done = state.get("tune")
    remaining = deadline - time.perf_counter()
    # tuning gets about half of what is left; training the chosen configurations the other half
    budget = max(0.0, 0.45 * remaining)
    began = time.perf_counter()
    if done:
        n_trials, timeout = 0, None
    elif settings.n_trials is not None:
        n_trials, timeout = settings.n_trials, None
    else:
        n_trials, timeout = 10_000, budget
    options = dict(storage=storage, study_name=study_name, seed=settings.seed, holdout_fold=holdout,
                   metric=settings.metric, base_params=base, device=settings.device, enqueue_base=True,
                   score_holdout=False)
    if settings.n_trials is not None and not done:
        # an interrupted run of a fixed number of trials runs only the ones still missing
        before = tune(pool, list(pool.names), n_trials=0, **options)
        n_trials = max(0, settings.n_trials - before.n_complete - before.n_pruned)
    what = "reusing the study" if done else (f"{n_trials} trials" if timeout is None else f"{budget:.0f} s")
    with stage(f"tune the level-2 MLP ({what})") as update:
        result = tune(pool, list(pool.names), n_trials=n_trials, timeout=timeout,
                      on_progress=lambda d, t: update(d, None if timeout else t), **options)
    elapsed = time.perf_counter() - began
    trials = result.trials
    complete = trials[trials.state == "complete"] if len(trials) else trials
    folds_fitted = int(trials.folds_done.sum()) if len(trials) else 0
    fit_seconds = (elapsed / folds_fitted) if (not done and folds_fitted) else (done or {}).get("fit_seconds")
    configs = _diverse_configs(complete, base, settings.n_level2, TUNED_PARAMS, result.seconds)
    if not configs:
        configs = [(base, math.nan)]
    info = {"holdout_fold": holdout, "study": study_name, "storage": str(storage_path),
            "n_complete": result.n_complete, "n_pruned": result.n_pruned,
            "best_value": result.best_value, "fit_seconds": fit_seconds,
            "tuning_folds": [k for k in pool.fold_numbers if k != holdout]}
    state["tune"] = info
    workspace.write_auto_state(root, state)
    return configs, info


def _diverse_configs(trials, base, n: int, keys: Sequence[str], seconds: dict) -> list[tuple]:
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


def _train_level2(root: Path, pool: Collection, configs: list, tuning: dict,
                  settings: AutoSettings, key: str, state: dict, deadline: float, stage,
                  notes: list, scheduler: str | None = None) -> dict:
    """Train (or reuse) ``auto_mlp_<i>`` for each configuration that fits the remaining budget."""
    from stacker.level2.fit import train_level2
    from stacker.level2.store import write_level2

    n_folds = len(pool.fold_numbers)
    reserve = 0.05 * settings.time_budget          # the final searches, the submission, the report

    def cost(config_seconds: float, n_seeds: int) -> float:
        """Seconds to train one configuration: its fold models as timed in its trial (else the
        tuning's mean), all folds and seeds, plus a margin for the test predictions and files."""
        per_fold = config_seconds if config_seconds == config_seconds else tuning.get("fit_seconds") or 0.0
        return 1.25 * per_fold * n_folds * n_seeds

    plan = state.get("plan")
    if not (isinstance(plan, dict) and plan.get("time_budget") == settings.time_budget):
        remaining = max(0.0, deadline - time.perf_counter() - reserve)
        seeds, count = settings.max_seeds, len(configs)
        if settings.n_trials is None:
            # as many seeds as the budget allows for every configuration, then fewer configurations
            while seeds > 1 and sum(cost(c, seeds) for _, c in configs) > remaining:
                seeds -= 1
            while count > 1 and sum(cost(c, seeds) for _, c in configs[:count]) > remaining:
                count -= 1
        # the plan is kept, so an interrupted run resumes it instead of re-planning on its leftover time
        plan = {"time_budget": settings.time_budget, "seeds": seeds, "count": count}
        state["plan"] = plan
        workspace.write_auto_state(root, state)
    count = min(int(plan["count"]), len(configs))
    if count < len(configs):
        notes.append(f"time budget: {count} of {len(configs)} level-2 configurations planned")
    seed_list = [settings.seed + i for i in range(int(plan["seeds"]))]
    trained: dict[str, dict] = {}
    for i, (params, seconds) in enumerate(configs[:count], start=1):
        name = f"{LEVEL2_PREFIX}{i}"
        record = {"auto_key": key, "params": params.to_dict(), "seeds": seed_list,
                  "inputs": list(pool.names)}
        # read from the layout: the caller's collection may hold the level-1 experiments only
        # (the demo's); one that stack auto did not make was refused before any stage ran
        exists = layout.experiment_dir(root, name).exists()
        meta = layout.read_meta(root, name) if exists else None
        if meta is not None and all(meta.get(k) == v for k, v in record.items()):
            trained[name] = {**record, "cv": meta.get("cv"), "reused": True}
            continue
        late = time.perf_counter() + cost(seconds, len(seed_list)) > deadline - reserve
        if trained and settings.n_trials is None and late:
            # slower than planned (a busier machine): keep the budget, skip the rest
            notes.append(f"time budget: stopped after {len(trained)} level-2 experiment(s)")
            break
        with stage(f"level 2: {name} ({len(seed_list)} seed(s) x {n_folds} folds)") as update:
            result = train_level2(pool, list(pool.names), params=params, seeds=seed_list,
                                  metric=settings.metric, device=settings.device, on_progress=update,
                                  scheduler=scheduler)
        write_level2(root, name, result, pool, force=True,
                     extra_meta={"made_by": MADE_BY, **record, "tuning_holdout_fold": tuning["holdout_fold"]})
        trained[name] = {**record, "cv": result.scores()[0], "reused": False}
    return trained


def _remove_stale_level2(root: Path, keep: set[str], notes: list) -> None:
    """Level-2 experiments an earlier `stack auto` made from other inputs: they would mislead."""
    for name in layout.list_experiments(root):
        if name.startswith(LEVEL2_PREFIX) and name not in keep and _remove_own(root, name):
            notes.append(f"removed {name}, made by an earlier stack auto from other inputs")


# ---------------------------------------------------------------- outputs

def _made_by_earlier_auto(out: Path | str | None) -> bool:
    return out is not None and provenance.sidecar_made_by(sidecar_path(out), MADE_BY)


def _check_outputs(out, report, force: bool) -> None:
    """Refuse to replace a user's file: only ``force`` or an earlier `stack auto`'s own outputs."""
    own = force or _made_by_earlier_auto(out)
    for path in (out, None if out is None else sidecar_path(out), report):
        if path is not None and Path(path).exists() and not own:
            raise OutputExistsError(f"{path} exists and was not written by stack auto; pass `force` "
                                    "to replace it or choose another `out`/`report`")
    if out is not None and report is not None and Path(out).resolve() == Path(report).resolve():
        raise OptionError("`out` and `report` are the same file; give each its own path")


def _write_outputs(root: Path, everything: Collection, final: Recipe, recipes, settings, tuning,
                   estimate, template, out, report, force, stage) -> dict[str, Path]:
    from stacker.submission import make_submission

    own = force or _made_by_earlier_auto(out)
    files = {"layout": root, "subsets": workspace.subsets_path(root),
             "state": workspace.auto_state_path(root)}
    metric = get_metric(settings.metric)
    members = list(final.members)
    options = final.blend_options(everything.classes)
    blend = oof_blend(everything, members, **options)
    record = dict(final.search or {})
    record.update({
        "method": "auto", "recipe": final.name, "what": final.what, "metric": metric.name,
        "blend": final.blend, "members": members, "weights": dict(final.weights),
        "cv": float(metric(everything.y, blend)),
        "fold_cv": fold_scores(everything.y, blend, everything.fold, everything.fold_numbers, metric),
        "nested_cv": final.nested_cv, "estimate": estimate, "root": str(root),
        "fold_hash": everything.folds.hash,
        "candidates": [r.to_json() | {"search": None} for r in recipes],
        "params": {"auto": asdict(settings), "tuning": tuning}})
    record.setdefault("top", [])
    record.setdefault("by_size", [])
    workspace.write_subsets(root, record)
    if out is not None:
        with stage("submission") as update:
            make_submission(everything, Blend.from_options(members, **options), out=out,
                            template=template, force=own, metric=metric.name,
                            extra={"made_by": MADE_BY, "recipe": final.name, "nested_cv": final.nested_cv,
                                   "holdout_cv": final.holdout_cv, "estimate": estimate,
                                   "report": None if report is None else str(report),
                                   "candidates": [r.to_json() | {"search": None} for r in recipes],
                                   "auto": asdict(settings), "tuning": tuning,
                                   "blend_parts": everything.meta.get(BLEND_NAME, {}).get("parts")
                                   if BLEND_NAME in members else None})
            update(1, 1)
        files["submission"] = Path(out)
        files["sidecar"] = sidecar_path(out)
    if report is not None:
        from stacker.report import write_report

        with stage("report") as update:
            write_report(root, report, force=own, collection=everything, on_progress=update)
        files["report"] = Path(report)
    return files
