"""What a `stack auto` run depends on besides the layout, and the names it gives what it makes."""

from __future__ import annotations

from dataclasses import dataclass, field

from stacker.errors import OptionError

MADE_BY = "stack auto"
LEVEL2_PREFIX = "auto_mlp_"
BLEND_NAME = "auto_blend"
# the final blend is one of two hedges, each the geometric mean of two differently made, class-
# calibrated selections (a weighted selection with its class bias, and the logistic stacker): the
# first-level one, or the one over first level + level 2 where the gate lets level 2 in
FIRST_LEVEL_BLEND_PARTS = ("first-level GES+bias", "first-level linear")
BLEND_PARTS = ("final GES+bias", "final linear")


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

    def check(self) -> None:
        """OptionError naming the setting that cannot run."""
        if self.time_budget <= 0:
            raise OptionError(f"`time_budget` must be positive, got {self.time_budget}")
        if self.n_level2 < 0 or self.max_seeds < 1:
            raise OptionError("`n_level2` must be >= 0 and `max_seeds` >= 1")

    def level2_names(self) -> list[str]:
        """The level-2 experiments a run may make: auto_mlp_1 .. auto_mlp_<n_level2>."""
        return [f"{LEVEL2_PREFIX}{i}" for i in range(1, self.n_level2 + 1)]
