"""`stack auto`: the whole second level in one honest run (see :mod:`stacker.auto.pipeline`)."""

from stacker.auto.pipeline import (  # noqa: F401
    BLEND_NAME,
    BLEND_PARTS,
    CLEAR_MARGIN,
    FIRST_LEVEL_BLEND_PARTS,
    LEVEL2_PREFIX,
    MADE_BY,
    AutoResult,
    AutoSettings,
    Recipe,
    _choose,
    run_auto,
)

__all__ = ["BLEND_NAME", "BLEND_PARTS", "CLEAR_MARGIN", "FIRST_LEVEL_BLEND_PARTS", "LEVEL2_PREFIX",
           "MADE_BY", "AutoResult", "AutoSettings", "Recipe", "run_auto"]
