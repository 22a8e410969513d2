"""The search space of the level-2 tuning, in one place: each tuned hyper-parameter of
:class:`~stacker.level2.params.MLPParams` with its range, its kind (int or float, or a set of
choices) and whether it is searched (and compared) on a log scale.

``stack tune`` draws its trials from :data:`SPACE` (:func:`suggest`, in the order listed, which
the seeded sampler's draws depend on); ``stack auto`` measures how far apart two trials are in
:func:`normalised` coordinates. Light on imports (numpy, pandas): no torch, no optuna.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from stacker.errors import OptionError

LOG_FLOOR = 1e-12   # log() of a value at or below zero would be -inf or nan


@dataclass(frozen=True)
class Dimension:
    """One tuned parameter: an int or float in [low, high], or one of ``choices``.

    log: sampled on a log scale (ranges) and, for every dimension, compared on a log scale in
    :func:`normalised` (batch sizes 32..256 are a doubling apart, not evenly spaced).
    """

    name: str
    kind: type
    low: float
    high: float
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial) -> int | float:
        """This parameter's value for an optuna trial (``trial.suggest_*``)."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def including(self, value: float) -> "Dimension":
        """This dimension widened to contain ``value`` (a choice added, or the range stretched),
        so that a trial fixed at ``value`` lies inside its distribution. Unchanged for a value
        already inside, and for one a log scale cannot hold (<= 0): optuna then warns."""
        if self.choices:
            if value in self.choices:
                return self
            return replace(self, choices=tuple(sorted({*self.choices, self.kind(value)})),
                           low=min(self.low, value), high=max(self.high, value))
        if self.low <= value <= self.high or (self.log and value <= 0):
            return self
        return replace(self, low=min(self.low, value), high=max(self.high, value))


def _choice(name: str, choices: Sequence[int], *, log: bool = False) -> Dimension:
    return Dimension(name, int, min(choices), max(choices), log=log, choices=tuple(choices))


# the eight hyper-parameters plus the skip path on/off; everything else (max_epochs,
# window settings) comes from the base params. The order is the order of the sampler's draws.
SPACE: tuple[Dimension, ...] = (
    Dimension("hidden", int, 32, 512, log=True),
    Dimension("bottleneck", int, 4, 128, log=True),
    Dimension("dropout", float, 0.0, 0.5),
    Dimension("lr", float, 3e-4, 3e-2, log=True),
    Dimension("weight_decay", float, 1e-7, 1e-3, log=True),
    _choice("batch_size", [32, 64, 128, 256], log=True),
    Dimension("patience", int, 4, 20),
    Dimension("plateau_factor", float, 0.1, 0.8),
    _choice("skip", [0, 1]),
)
TUNED_PARAMS: tuple[str, ...] = tuple(d.name for d in SPACE)
LOG_SCALED: tuple[str, ...] = tuple(d.name for d in SPACE if d.log)
_BY_NAME = {d.name: d for d in SPACE}


def dimension(name: str) -> Dimension:
    """The dimension called ``name``; OptionError for a parameter that is not tuned."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise OptionError(f"'{name}' is not a tuned parameter; tuned: {', '.join(TUNED_PARAMS)}") from None


def suggest(trial, around: object | None = None) -> dict[str, int | float]:
    """{name: value} of every tuned parameter for an optuna trial, drawn in :data:`SPACE`'s order.

    around: base params (any object with the tuned names as attributes, e.g.
    :class:`~stacker.level2.params.MLPParams`); each dimension is widened to include its base
    value (:meth:`Dimension.including`), the same for every trial of a study, so a study whose
    first trial is the base itself (``enqueue_base``) keeps it inside the space. Default bases
    lie inside :data:`SPACE`, where this changes nothing.
    """
    space = SPACE if around is None else tuple(d.including(getattr(around, d.name)) for d in SPACE)
    return {d.name: d.suggest(trial) for d in space}


def normalised(trials: pd.DataFrame | Mapping[str, Sequence[float]]) -> np.ndarray:
    """Trials' tuned parameters as coordinates in [0, 1], comparable across parameters.

    trials: one row per trial, one column per tuned parameter (a DataFrame, or {name: values}).
    Returns an array of shape (n_trials, n_columns), columns in the given order: each column is
    taken on a log scale where :data:`SPACE` says ``log`` (values floored at LOG_FLOOR), then
    scaled so that its smallest value over these trials is 0 and its largest 1 (a column with a
    single value is all 0).
    """
    frame = trials if isinstance(trials, pd.DataFrame) else pd.DataFrame(dict(trials))
    columns = list(frame.columns)
    scale = [dimension(c) for c in columns]     # an unknown column is an error, not a guess
    values = frame.astype(float).to_numpy()
    if not len(values):
        return values
    logs = [i for i, d in enumerate(scale) if d.log]
    values[:, logs] = np.log(np.maximum(values[:, logs], LOG_FLOOR))
    spread = values.max(axis=0) - values.min(axis=0)
    return (values - values.min(axis=0)) / np.where(spread > 0, spread, 1.0)


__all__ = ["Dimension", "LOG_SCALED", "SPACE", "TUNED_PARAMS", "dimension", "normalised", "suggest"]
