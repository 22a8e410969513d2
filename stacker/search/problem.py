"""The prepared problem every selector works on: checked arrays, the config, the targets.

A **target** is which rows a selection may use: target 0 every OOF row; target ``1 + i`` every
row but fold ``fold_numbers[i]``'s (its selection predicts that fold: the nested CV).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from stacker.errors import OptionError
from stacker.metrics import Metric, check_defined
from stacker.runtime import ProgressCallback
from stacker.search.config import SearchConfig


@dataclass(frozen=True)
class Problem:
    """oof: (n_rows, n_models, n_classes) probabilities; y: (n_rows, n_classes); fold: (n_rows,);
    names: one per model; max_size: the config's, at most n_models; nested: asked for and
    possible (more than one fold)."""

    oof: np.ndarray
    y: np.ndarray
    fold: np.ndarray
    fold_numbers: list
    names: list
    config: SearchConfig
    max_size: int
    nested: bool
    on_progress: ProgressCallback | None = None
    # False: prepare left the [0, 1] check of oof to the quantizer, which reads every value anyway
    range_checked: bool = True

    @property
    def metric(self) -> Metric:
        return self.config.metric

    @property
    def n_models(self) -> int:
        return self.oof.shape[1]

    @property
    def targets(self) -> list[int]:
        return list(range(1 + len(self.fold_numbers))) if self.nested else [0]

    def progress(self, done: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(done, total)


def check_probabilities(values: np.ndarray) -> None:
    """OptionError unless every value is a probability in [0, 1] (no NaN)."""
    # min and max propagate NaN (and the comparisons then fail): no pool-sized temporary
    if values.size and not (np.min(values) >= 0 and np.max(values) <= 1):
        raise OptionError("oof must hold probabilities in [0, 1] (no NaN); check the experiments "
                          "with `stack collect`")


def prepare(oof, y, fold, *, names: Sequence[str], config: SearchConfig,
            fold_numbers: Sequence[int] | None = None,
            on_progress: ProgressCallback | None = None, check_range: bool = True) -> Problem:
    """Check the arrays against each other and the config; raises OptionError.
    check_range False: the [0, 1] check of ``oof`` is left to the quantizer (one pass less over
    the pool; :func:`stacker.search.methods.core.subset_context` makes it)."""
    oof = np.asarray(oof)
    names = list(names)
    n_models = oof.shape[1] if oof.ndim == 3 else 0
    if oof.ndim != 3 or n_models != len(names) or n_models == 0:
        raise OptionError(f"need oof of shape (n_rows, n_models, n_classes) with one name per "
                          f"model; got shape {oof.shape} and {len(names)} name(s)")
    if check_range:
        check_probabilities(oof)
    check_defined(config.metric, y, fold, sorted(np.unique(fold)) if fold_numbers is None
                  else fold_numbers)
    max_size = n_models if config.max_size is None else min(int(config.max_size), n_models)
    fold = np.asarray(fold)
    fold_numbers = (sorted(int(k) for k in np.unique(fold)) if fold_numbers is None
                    else list(fold_numbers))
    return Problem(oof=oof, y=np.asarray(y), fold=fold, fold_numbers=fold_numbers, names=names,
                   config=config, max_size=max_size, nested=config.nested and len(fold_numbers) > 1,
                   on_progress=on_progress, range_checked=check_range)
