"""The context of one `stack auto` run: what every stage reads, and where each puts its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stacker.auto.budget import Budget
from stacker.auto.recipes import Recipe, Searches
from stacker.auto.settings import AutoSettings
from stacker.auto.state import StateStore
from stacker.layout.collect import Collection
from stacker.metrics import Metric
from stacker.runtime import Laps, Stage


@dataclass(frozen=True)
class OutputPaths:
    """Where the submission (plus its sidecar ``<out>.json``) and the report go (None: skipped);
    ``template``: the submission's shape; ``force``: replace files an earlier run did not make."""

    template: Path | str | None = None
    out: Path | str | None = "submission.csv"
    report: Path | str | None = "report.html"
    force: bool = False


@dataclass
class Run:
    """One run. The first fields are given; the stages fill the rest, in pipeline order.

    collection: the pool in memory: the layout as collected once, then every experiment the run
    makes, joined as the values its files store (nothing the run wrote is read back).
    """

    root: Path
    settings: AutoSettings
    metric: Metric
    budget: Budget
    stage: Stage
    outputs: OutputPaths
    scheduler: str | None = None
    collection: Collection | None = None
    notes: list[str] = field(default_factory=list)
    laps: Laps = field(default_factory=Laps)
    # collect
    level1: list[str] = field(default_factory=list)
    pool1: Collection | None = None
    holdout: int = -1
    key: str = ""
    state: StateStore | None = None
    # the stages' results
    recipes: list[Recipe] = field(default_factory=list)
    configs: list = field(default_factory=list)
    tuning: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)
    level2: dict[str, dict] = field(default_factory=dict)
    histories: dict = field(default_factory=dict)    # trained level-2: {name: {fold: entries}}
    everything: Collection | None = None
    blend: Recipe | None = None
    final: Recipe | None = None
    estimate: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    _level2_data: object = None

    def searches(self) -> Searches:
        return Searches(settings=self.settings, holdout=self.holdout, stage=self.stage,
                        notes=self.notes)

    def level2_data(self):
        """The level-2 inputs (every level-1 experiment), built once for tuning and training."""
        if self._level2_data is None:
            from stacker.level2.inputs import level2_data

            self._level2_data = level2_data(self.pool1, list(self.pool1.names))
        return self._level2_data
