"""The candidate recipes of `stack auto`, the final blend (a first-level hedge, or the hedge over
both levels where the nested gate lets level 2 in), and the choice when there is no blend (pure
functions of a collection: nothing here reads or writes files)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from stacker.auto.settings import (
    BLEND_NAME,
    BLEND_PARTS,
    FIRST_LEVEL_BLEND_PARTS,
    MADE_BY,
    AutoSettings,
)
from stacker.blend import Blend, geo_mean
from stacker.errors import OptionError
from stacker.layout.collect import Collection
from stacker.metrics import fold_scores, get_metric
from stacker.search.config import SearchConfig
from stacker.search.engine import SearchResult, search_subsets

CLEAR_MARGIN = 2.0       # standard errors by which a recipe must beat another (clearly_better)


@dataclass(frozen=True)
class Recipe:
    """One candidate for the submission: ``combination``, the :class:`~stacker.blend.Blend` of
    ``members`` it was scored with (by default their geo-mean with ``weights``); ``search``: the
    record of the search that chose it (subsets.json's content), if one did.

    nested_cv: the score of the recipe's own choices made without the fold scored (equal to ``cv``
    for a recipe that chooses nothing on the folds). holdout_cv: the score on the fold held out of
    the level-2 tuning. nested_fold_cv: the nested predictions' score on each fold (folds.csv's
    fold order). nested_oof: those predictions, (n_rows, n_classes); saved with the run's state.
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
    combination: Blend | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.combination is None:
            object.__setattr__(self, "combination", Blend(
                tuple(self.members), self.blend, weights=[self.weights[m] for m in self.members]))

    def to_json(self) -> dict:
        return {"name": self.name, "what": self.what, "members": list(self.members),
                "weights": dict(self.weights), "cv": self.cv, "nested_cv": self.nested_cv,
                "holdout_cv": self.holdout_cv, "blend": self.blend, "search": self.search,
                "nested_fold_cv": list(self.nested_fold_cv)}

    def summary(self) -> dict:
        """:meth:`to_json` without the search record: one candidate of the outputs."""
        return self.to_json() | {"search": None}

    def to_state(self) -> dict:
        """:meth:`to_json` with the blend: what the run's state keeps (not ``nested_oof``)."""
        return self.to_json() | {"combination": self.combination.to_json()}

    @classmethod
    def from_json(cls, record: dict, nested_oof: np.ndarray | None = None) -> "Recipe":
        combination = record.get("combination")
        return cls(name=record["name"], what=record["what"], members=tuple(record["members"]),
                   weights=dict(record["weights"]), cv=float(record["cv"]),
                   nested_cv=float(record["nested_cv"]), holdout_cv=float(record["holdout_cv"]),
                   search=record.get("search"), blend=record.get("blend", "geo-mean"),
                   nested_fold_cv=tuple(float(v) for v in record.get("nested_fold_cv", ())),
                   nested_oof=nested_oof,
                   combination=None if combination is None else Blend.from_json(combination))


# ---------------------------------------------------------------- recipes


def fixed_recipe(collection: Collection, name: str, what: str, members, metric,
                 holdout: int) -> Recipe:
    """A recipe that chooses nothing on the folds: equal weights, nested CV = CV."""
    members = tuple(members)
    weights = {m: 1.0 / len(members) for m in members}
    blend = Blend(members).oof(collection)
    cv = float(metric(collection.y, blend))
    held = collection.fold == holdout
    return Recipe(name=name, what=what, members=members, weights=weights, cv=cv, nested_cv=cv,
                  holdout_cv=float(metric(collection.y[held], blend[held])),
                  nested_fold_cv=tuple(fold_scores(collection.y, blend, collection.fold,
                                                   collection.fold_numbers, metric)),
                  nested_oof=blend)


def searched_blend(result: SearchResult, classes: Sequence[str]) -> Blend:
    """The Blend a search chose: its per-class weights or linear stacker when it fitted one, else
    the geo-mean (or the result's blend) with its weights."""
    members = tuple(result.members)
    if result.combiner.get("coef") or result.combiner.get("class_weights"):
        chosen = Blend.from_record(result.to_json(), classes)
        return Blend.from_options(members, blend=result.blend, weights=chosen.matrix,
                                  intercept=chosen.intercept)
    return Blend(members, result.blend, weights=[result.weights[m] for m in members])


def searched_recipe(collection: Collection, name: str, what: str, result: SearchResult,
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
                  nested_oof=result.nested_oof,
                  combination=searched_blend(result, collection.classes))


@dataclass(frozen=True)
class Searches:
    """How one run searches: its settings, the held-out fold, progress (``stage``) and notes."""

    settings: AutoSettings
    holdout: int
    stage: object
    notes: list

    def config(self, **options) -> SearchConfig:
        """The search configuration of this run (its metric, seed and search budget; geo-mean
        blends) with ``options`` (method, max_size, ...)."""
        return SearchConfig.from_options(metric=self.settings.metric, blend="geo-mean",
                                         seed=self.settings.seed,
                                         time_budget=self.settings.search_budget, **options)

    def search(self, collection: Collection, pool, description: str, **options) -> SearchResult:
        with self.stage(description) as update:
            return search_subsets(collection, pool=list(pool), config=self.config(**options),
                                  on_progress=update)

    def with_class_bias(self, collection: Collection, name: str, base: Recipe,
                        result: SearchResult) -> Recipe:
        """``base`` (the recipe of the geo-mean search ``result``) with a per-class logit bias
        fitted inside the nesting (:mod:`stacker.search.class_bias`: each fold's bias comes from
        the same search run again without that fold)."""
        from stacker.search.class_bias import searched_class_bias

        metric = get_metric(self.settings.metric)
        config = self.config(method=result.method)
        names = list(result.pool)
        with self.stage(f"class bias of {base.name} (its search again without each fold)") as update:
            bias = searched_class_bias(collection.oof[:, collection.index(names)], collection.y,
                                       collection.fold, names=names,
                                       fold_numbers=collection.fold_numbers, config=config,
                                       nested_oof=result.nested_oof)
            update(1, 1)
        combination = replace(base.combination, class_bias=tuple(bias.bias))
        search = {**(base.search or {}), "class_bias": [float(b) for b in bias.bias],
                  "class_bias_strength": bias.strength,
                  "class_bias_fold_strengths": list(bias.fold_strengths)}
        held = collection.fold == self.holdout
        return replace(base, name=name, what=f"{base.what} + class bias", search=search,
                       cv=float(metric(collection.y, combination.oof(collection))),
                       nested_cv=bias.nested_cv, nested_fold_cv=bias.nested_fold_cv,
                       holdout_cv=float(metric(collection.y[held], bias.nested_oof[held])),
                       nested_oof=bias.nested_oof, combination=combination)

    def optional(self, collection: Collection, pool, description: str, **options):
        """A candidate the data may not support (the method refuses it): a note instead."""
        try:
            return self.search(collection, pool, description, **options)
        except OptionError as error:
            self.notes.append(f"{description}: skipped ({error})")
            return None

    def selections(self, collection: Collection, names: list[str], where: str, prefix: str,
                   suffix: str) -> list[Recipe]:
        """The subset search, ensemble selection (also with its class bias) and (when the data
        allow) linear stacker over ``names``, as the recipes '<prefix> subset', '<prefix> GES',
        '<prefix> GES+bias', '<prefix> linear'."""
        subset = self.search(collection, names, f"subset search over {where}", method="auto")
        ges = self.search(collection, names, f"ensemble selection over {where}", method="ges")
        ges_recipe = searched_recipe(collection, f"{prefix} GES", f"weighted selection{suffix}",
                                     ges, self.holdout)
        recipes = [searched_recipe(collection, f"{prefix} subset", f"geo-mean subset{suffix}",
                                   subset, self.holdout),
                   ges_recipe,
                   self.with_class_bias(collection, f"{prefix} GES+bias", ges_recipe, ges)]
        linear = self.optional(collection, names, f"linear stacker over {where}", method="linear")
        if linear is not None:
            recipes.append(searched_recipe(collection, f"{prefix} linear",
                                           f"linear stacker{suffix}", linear, self.holdout))
        return recipes


def level1_recipes(pool: Collection, searches: Searches) -> list[Recipe]:
    """Best single, the geo-mean of all, and the three selections over the first level."""
    metric = get_metric(searches.settings.metric)
    names = list(pool.names)
    single = searches.search(pool, names, "best single first-level model", method="exhaustive",
                             max_size=1)
    recipes = [searched_recipe(pool, "best single", "the best CV", single, searches.holdout)]
    if len(names) > 1:
        recipes.append(fixed_recipe(pool, "all first-level", "geo-mean of all", names, metric,
                                    searches.holdout))
        recipes += searches.selections(pool, names, "the first level", "first-level", "")
    return recipes


def final_recipes(everything: Collection, level2: list[str], level1: list[str],
                  searches: Searches) -> list[Recipe]:
    """Each level-2 experiment, their geo-mean, and the three selections over both levels."""
    metric = get_metric(searches.settings.metric)
    recipes = [fixed_recipe(everything, name, "MLP on level 1", [name], metric, searches.holdout)
               for name in level2]
    if len(level2) > 1:
        recipes.append(fixed_recipe(everything, "all level-2", "geo-mean of MLPs", level2, metric,
                                    searches.holdout))
    if level2:
        recipes += searches.selections(everything, [*level1, *level2],
                                       "first level + level 2", "final", ", L1+L2")
    return recipes


# ---------------------------------------------------------------- the final blend and the choice


@dataclass(frozen=True)
class BlendExperiment:
    """The final blend as an experiment of the layout: oof (n_rows, n_classes), the geo-mean of
    the parts' nested predictions; test (n_test, n_classes), the same in every fold folder."""

    oof: np.ndarray
    test: np.ndarray
    meta: dict


def _hedge(parts: Sequence[Recipe]) -> tuple | None:
    """(parts, the geometric mean of their nested predictions); None unless there are two or more
    parts with nested predictions."""
    parts = [p for p in parts if p.nested_oof is not None]
    if len(parts) < 2:
        return None
    return tuple(parts), geo_mean(np.stack([p.nested_oof for p in parts], axis=-2))


def gate_level2(first: np.ndarray, second: np.ndarray, y: np.ndarray, fold: np.ndarray,
                fold_numbers: Sequence[int], metric) -> tuple[np.ndarray, list[bool], bool]:
    """The stacked-overfitting gate between the first-level blend's nested predictions ``first``
    and the level-2 blend's ``second`` (n_rows, n_classes): fold ``k``'s rows come from the
    level-2 blend only when its mean per-fold score on the *other* folds beats the first-level
    blend's, so the choice for fold ``k`` never sees fold ``k``'s labels. Returns (the gated
    nested predictions, the choice per fold, the choice on every fold: the test predictions')."""
    sign = metric.sign()
    gain = sign * (np.asarray(fold_scores(y, second, fold, fold_numbers, metric))
                   - np.asarray(fold_scores(y, first, fold, fold_numbers, metric)))
    out = np.array(first, dtype=np.float64)
    chosen = []
    for i, k in enumerate(fold_numbers):
        use = bool(np.delete(gain, i).mean() > 0)
        chosen.append(use)
        if use:
            out[fold == k] = second[fold == k]
    return out, chosen, bool(gain.mean() > 0)


def final_blend(everything: Collection, recipes: Sequence[Recipe], metric, holdout: int,
                key: str) -> tuple[Recipe, BlendExperiment] | None:
    """The recipe 'final blend' of the experiment ``auto_blend``: the first-level blend (the
    geometric mean of FIRST_LEVEL_BLEND_PARTS) or, on the folds where the level-2 blend (of
    BLEND_PARTS) beats it on the other folds, the level-2 blend (:func:`gate_level2`). Its OOF is
    made of the parts' *nested* predictions (each fold's rows from selections, class biases and a
    gate made without that fold), so it is as honest as a level-2 OOF; its test predictions blend
    the chosen parts' selections made on every fold. None without a first-level blend."""
    by_name = {r.name: r for r in recipes}
    first = _hedge([by_name[n] for n in FIRST_LEVEL_BLEND_PARTS if n in by_name])
    second = _hedge([by_name[n] for n in BLEND_PARTS if n in by_name])
    if first is None:
        return None
    y, fold, folds = everything.y, everything.fold, everything.fold_numbers
    chosen, nested, gate = first, first[1], None
    if second is not None:
        nested, per_fold, use_second = gate_level2(first[1], second[1], y, fold, folds, metric)
        chosen = second if use_second else first
        gate = {"level2_folds": [int(k) for k, use in zip(folds, per_fold) if use],
                "level2_test": use_second, "first_level_parts": [p.name for p in first[0]],
                "level2_parts": [p.name for p in second[0]]}
    parts = chosen[0]
    # the chosen parts' selections made on every fold: the in-sample CV and the test predictions
    selected = geo_mean(np.stack([p.combination.oof(everything) for p in parts], axis=-2))
    test = geo_mean(np.stack([p.combination.test(everything) for p in parts], axis=-2))
    nested_cv = float(metric(y, nested))
    fold_cv = fold_scores(y, nested, fold, folds, metric)
    held = fold == holdout
    names = ", ".join(p.name for p in parts)
    meta = {"model": "stack auto blend", "level": 3, "made_by": MADE_BY, "auto_key": key,
            "parts": [p.summary() for p in parts], "metric": metric.name, "cv": nested_cv,
            "gate": gate, "cv_folds": {str(k): v for k, v in zip(folds, fold_cv)},
            "fold_hash": everything.folds.hash,
            "cv_note": (f"geometric mean of {names}; OOF: each fold's rows from the selections made "
                        "without that fold (nested; the level-2 gate too); test: the selections "
                        "made on every fold")}
    what = f"geo-mean of {names}"
    if gate is not None:
        what += (f" (level 2 {'in' if gate['level2_test'] else 'out'}: the level-2 blend led on "
                 f"the other folds for {len(gate['level2_folds'])} of {len(folds)} folds)")
    recipe = Recipe(name="final blend", what=what, members=(BLEND_NAME,),
                    weights={BLEND_NAME: 1.0}, cv=float(metric(y, selected)),
                    nested_cv=nested_cv, holdout_cv=float(metric(y[held], nested[held])),
                    nested_fold_cv=tuple(fold_cv), nested_oof=nested)
    return recipe, BlendExperiment(oof=nested, test=test, meta=meta)


def choose(recipes: Sequence[Recipe], metric, default: Recipe | None = None) -> Recipe:
    """The final recipe. With a ``default`` (the final blend): the default, unless another
    recipe's nested CV is *clearly* better (:func:`clearly_better`); the best such one then.
    Without: the recipe with the best nested CV; ties go to the earlier (simpler) one."""
    sign = metric.sign()
    best = default if default is not None else recipes[0]
    for recipe in recipes:
        if recipe is best or math.isnan(recipe.nested_cv):
            continue
        if sign * recipe.nested_cv > sign * best.nested_cv and (
                default is None or clearly_better(recipe, default, sign)):
            best = recipe
    return best


def clearly_better(recipe: Recipe, default: Recipe, sign: float) -> bool:
    """Whether ``recipe`` beats ``default`` on the folds by more than CLEAR_MARGIN standard errors
    of their paired per-fold nested score differences (a one-sided paired t-test, roughly)."""
    a, b = np.asarray(recipe.nested_fold_cv, float), np.asarray(default.nested_fold_cv, float)
    if len(a) != len(b) or len(a) < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False
    gain = sign * (a - b)
    return bool(gain.mean() > CLEAR_MARGIN * gain.std(ddof=1) / math.sqrt(len(gain)))


def estimate_note(final: Recipe, recipes, holdout: int, tuned: bool, blend: Recipe | None) -> str:
    """What the final recipe's estimate accounts for, in sentences (written into the outputs)."""
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
    else:
        parts.append(f"the final recipe is the final blend ({blend.what}), fixed before any score "
                     "was seen; its class biases were fitted without the fold they predict, and its "
                     "one choice, whether level 2 is used, is nested too (made for each fold on the "
                     f"other folds); the other {len(recipes) - 1} candidates are shown for comparison "
                     "only")
    parts.append("the test predictions come from selections made on every fold (more rows than "
                 "any nested selection saw), so the held-out score tends to be higher than the "
                 "nested CV")
    parts.append(f"on fold {holdout}, which no tuning saw, it scores {final.holdout_cv:.4f}")
    return "; ".join(parts)
