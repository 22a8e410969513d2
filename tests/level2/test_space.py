"""The tuning search space: one definition for stack tune's trials and stack auto's distances."""

from dataclasses import fields

import numpy as np
import optuna
import pandas as pd
import pytest

from stacker.errors import OptionError
from stacker.level2 import space
from stacker.level2.params import MLPParams


def naive_suggest(trial):
    """The search space as stack tune drew it before it had a module of its own."""
    return dict(hidden=trial.suggest_int("hidden", 32, 512, log=True),
                bottleneck=trial.suggest_int("bottleneck", 4, 128, log=True),
                dropout=trial.suggest_float("dropout", 0.0, 0.5),
                lr=trial.suggest_float("lr", 3e-4, 3e-2, log=True),
                weight_decay=trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
                batch_size=trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
                patience=trial.suggest_int("patience", 4, 20),
                plateau_factor=trial.suggest_float("plateau_factor", 0.1, 0.8),
                skip=trial.suggest_categorical("skip", [0, 1]))


def naive_normalised(frame: pd.DataFrame) -> np.ndarray:
    """The coordinates stack auto compared trials in before the space said which are log-scaled."""
    values = frame.astype(float).to_numpy()
    logs = [i for i, k in enumerate(frame.columns)
            if k in ("hidden", "bottleneck", "lr", "weight_decay", "batch_size")]
    values[:, logs] = np.log(np.maximum(values[:, logs], 1e-12))
    spread = values.max(axis=0) - values.min(axis=0)
    return (values - values.min(axis=0)) / np.where(spread > 0, spread, 1.0)


def test_the_space_tunes_mlp_params_of_their_own_kind():
    assert space.TUNED_PARAMS == ("hidden", "bottleneck", "dropout", "lr", "weight_decay",
                                  "batch_size", "patience", "plateau_factor", "skip")
    assert space.LOG_SCALED == ("hidden", "bottleneck", "lr", "weight_decay", "batch_size")
    kinds = {f.name: f.type for f in fields(MLPParams)}
    for d in space.SPACE:
        assert kinds[d.name] == d.kind.__name__
        assert d.low <= getattr(MLPParams(), d.name) <= d.high


@pytest.mark.parametrize("sampler", [optuna.samplers.RandomSampler, optuna.samplers.TPESampler])
def test_suggest_draws_what_the_old_space_drew(sampler):
    studies = [optuna.create_study(sampler=sampler(seed=4)) for _ in range(2)]
    for _ in range(15):
        trials = [s.ask() for s in studies]
        drawn = [space.suggest(trials[0]), naive_suggest(trials[1])]
        assert drawn[0] == drawn[1] and list(drawn[0]) == list(space.TUNED_PARAMS)
        for s, t in zip(studies, trials):
            s.tell(t, float(drawn[0]["dropout"]))


def test_normalised_matches_the_old_coordinates():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"hidden": rng.integers(32, 513, 12), "dropout": rng.random(12) / 2,
                          "lr": 10 ** rng.uniform(-3.5, -1.5, 12),
                          "batch_size": rng.choice([32, 64, 128, 256], 12),
                          "skip": np.r_[np.zeros(6), np.ones(6)].astype(int),
                          "patience": np.full(12, 7)})
    unit = space.normalised(frame)
    assert np.array_equal(unit, naive_normalised(frame))
    assert unit.shape == (12, 6) and unit.min() == 0 and unit.max() == 1
    assert not unit[:, 5].any()                          # one value: all zero
    as_dict = space.normalised({k: list(v) for k, v in frame.items()})
    assert np.array_equal(as_dict, unit)


def test_normalised_refuses_a_parameter_that_is_not_tuned():
    with pytest.raises(OptionError, match="'max_epochs' is not a tuned parameter"):
        space.normalised(pd.DataFrame({"hidden": [32, 64], "max_epochs": [3, 4]}))


def test_a_base_outside_the_space_widens_it_and_one_inside_changes_nothing():
    hidden, batch, lr = space.dimension("hidden"), space.dimension("batch_size"), space.dimension("lr")
    assert hidden.including(16) == space.Dimension("hidden", int, 16, 512, log=True)
    assert hidden.including(600).high == 600 and hidden.including(64) is hidden
    assert batch.including(16).choices == (16, 32, 64, 128, 256) and batch.including(64) is batch
    assert lr.including(0.0) is lr                       # a log scale cannot hold 0: left as is
    # the default base is inside SPACE: suggest(around=MLPParams()) draws what suggest() draws
    studies = [optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1)) for _ in range(2)]
    for _ in range(12):
        trials = [s.ask() for s in studies]
        drawn = [space.suggest(trials[0]), space.suggest(trials[1], around=MLPParams())]
        assert drawn[0] == drawn[1]
        for s, t in zip(studies, trials):
            s.tell(t, float(drawn[0]["dropout"]))
