"""The time-budget rules of `stack auto`: how the seconds left are shared between its stages.

With a fixed number of trials (``AutoSettings.n_trials``) only the tuning's own timeout is unused:
every configuration trains with every seed, so the run is reproducible to the bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

# Tuning gets a little under half of what is left when it starts: training the configurations it
# chose (several seeds each) costs about as much again, and the final searches come after.
TUNING_SHARE = 0.45
# Of the whole budget, kept for what follows level-2 training: the final searches over both
# levels, the final blend, the submission and the report.
RESERVE_SHARE = 0.05
# The final searches repeat the first-level ones (class biases included: one more search per fold)
# over a few more models, the level-2 experiments: the reserve is at least this many times what
# the first-level searches took in this run.
FINAL_SEARCH_FACTOR = 1.5
# A configuration's training time, estimated from its fold models as timed in its trial, plus a
# quarter for what the trial did not do: the test predictions and writing the experiment.
COST_MARGIN = 1.25


@dataclass
class Budget:
    """The clock of one run: ``total`` seconds from ``started`` (time.perf_counter)."""

    total: float
    started: float = field(default_factory=time.perf_counter)
    first_level_seconds: float = 0.0          # what this run's first-level searches took

    def first_level_took(self, seconds: float) -> None:
        """Record the first-level searches' seconds (the reserve for the final ones grows)."""
        self.first_level_seconds = float(seconds)

    @property
    def deadline(self) -> float:
        return self.started + self.total

    @property
    def reserve(self) -> float:
        """Seconds kept for the stages after level-2 training: RESERVE_SHARE of the total, or
        FINAL_SEARCH_FACTOR times the first-level searches' seconds when that is more."""
        return max(RESERVE_SHARE * self.total, FINAL_SEARCH_FACTOR * self.first_level_seconds)

    def tuning_seconds(self) -> float:
        """The tuning's share of what is left now."""
        return max(0.0, TUNING_SHARE * (self.deadline - time.perf_counter()))

    def training_seconds(self) -> float:
        """What is left now for level-2 training, the reserve kept."""
        return max(0.0, self.deadline - time.perf_counter() - self.reserve)

    def too_late_for(self, seconds: float) -> bool:
        """Whether work of ``seconds`` started now would eat into the reserve."""
        return time.perf_counter() + seconds > self.deadline - self.reserve


def training_cost(per_fold: float, fallback: float | None, *, n_folds: int, n_seeds: int) -> float:
    """Seconds to train one configuration: ``per_fold`` seconds per fold model as timed in its
    trial (``fallback``, the tuning's mean, when unknown), every fold and seed, with COST_MARGIN."""
    seconds = per_fold if not math.isnan(per_fold) else (fallback or 0.0)
    return COST_MARGIN * seconds * n_folds * n_seeds


def plan_training(per_fold: list[float], fallback: float | None, *, n_folds: int, max_seeds: int,
                  seconds: float) -> tuple[int, int]:
    """(seeds per configuration, configurations) that fit ``seconds``: as many seeds as the
    budget allows for every configuration (at least one), then fewer configurations (at least
    one). ``per_fold``: each configuration's seconds per fold model, best configuration first."""
    def cost(configs, n_seeds):
        return sum(training_cost(c, fallback, n_folds=n_folds, n_seeds=n_seeds) for c in configs)

    seeds, count = max_seeds, len(per_fold)
    while seeds > 1 and cost(per_fold, seeds) > seconds:
        seeds -= 1
    while count > 1 and cost(per_fold[:count], seeds) > seconds:
        count -= 1
    return seeds, count
