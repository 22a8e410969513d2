"""`stack auto`: the whole second level in one honest run (stack auto, the demo, stacker.auto).

The stages, in order, are :data:`stacker.auto.pipeline.STEPS`; :func:`run_auto` runs them.
The package is callable: ``stacker.auto(root=..., time_budget=..., ...)`` is :func:`auto`
(``stacker/auto/api.py``), the same run as the command, for notebooks.

    settings.py   AutoSettings and the names of what a run makes
    budget.py     the time-budget rules, each constant with its reason
    state.py      .stack/auto/state.json: each stage's saved result, for resuming
    recipes.py    the candidate recipes, the final blend and the choice (pure functions)
    context.py    the run context every stage reads and fills
    mlp.py        tune, plan and train level 2
    outputs.py    auto_blend, subsets.json, the submission and the report
    pipeline.py   the stages and run_auto
    api.py        auto(): the run from keywords, as the command makes it from options
"""

import sys
import types

from stacker.auto.api import auto
from stacker.auto.budget import COST_MARGIN, RESERVE_SHARE, TUNING_SHARE
from stacker.auto.pipeline import STEPS, AutoResult, Step, run_auto
from stacker.auto.recipes import CLEAR_MARGIN, Recipe, choose, gate_level2
from stacker.auto.settings import (
    BLEND_NAME,
    BLEND_PARTS,
    FIRST_LEVEL_BLEND_PARTS,
    LEVEL2_PREFIX,
    MADE_BY,
    AutoSettings,
)

__all__ = ["BLEND_NAME", "BLEND_PARTS", "CLEAR_MARGIN", "COST_MARGIN", "FIRST_LEVEL_BLEND_PARTS",
           "LEVEL2_PREFIX", "MADE_BY", "RESERVE_SHARE", "STEPS", "TUNING_SHARE", "AutoResult",
           "AutoSettings", "Recipe", "Step", "auto", "choose", "gate_level2", "run_auto"]


class _CallableModule(types.ModuleType):
    """``stacker.auto`` is both this package and the function :func:`auto`: a package attribute
    cannot be a function, since importing ``stacker.auto.<module>`` sets it to the package."""

    def __call__(self, *args, **kwargs) -> AutoResult:
        return auto(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
