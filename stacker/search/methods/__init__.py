"""The selection methods of the subset search: one selector per method behind one protocol.

A selector is ``select(problem) -> Selection``: it takes the prepared
:class:`stacker.search.problem.Problem` (the checked arrays and the
:class:`stacker.search.config.SearchConfig`, whose part for the method it reads) and returns its
fit for every target (:class:`stacker.search.result.Selection`), which
:func:`stacker.search.result.build_result` scores. :data:`SELECTORS` is the one registry.

Subset methods (integer-count ensembles of quantized members, :mod:`.core`): ``exhaustive``,
``greedy``, ``beam``, ``ges`` and ``auto`` (:mod:`.auto` picks one of the first three). Weighted
methods (a float fit per target, :mod:`.weighted`): ``ges-bagged`` (:mod:`.ges`), ``cmaes``,
``per-class`` and ``linear``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import stacker.search.methods.auto as auto
import stacker.search.methods.beam as beam
import stacker.search.methods.cmaes as cmaes
import stacker.search.methods.exhaustive as exhaustive
import stacker.search.methods.ges as ges
import stacker.search.methods.greedy as greedy
import stacker.search.methods.linear as linear
import stacker.search.methods.per_class as per_class
from stacker.search.config import METHODS
from stacker.search.problem import Problem
from stacker.search.result import Selection


@dataclass(frozen=True)
class Method:
    """A selector and its family. weighted: a float fit per target (one candidate, no ranked
    lists), run and scored on one BLAS thread (the same sums, so the same result)."""

    select: Callable[[Problem], Selection]
    weighted: bool = False


SELECTORS: dict[str, Method] = {
    "auto": Method(auto.select),
    "exhaustive": Method(exhaustive.select),
    "greedy": Method(greedy.select),
    "beam": Method(beam.select),
    "ges": Method(ges.select),
    "ges-bagged": Method(ges.select_bagged, weighted=True),
    "cmaes": Method(cmaes.select, weighted=True),
    "per-class": Method(per_class.select, weighted=True),
    "linear": Method(linear.select, weighted=True),
}
# the config checks method names without importing the selectors: the two lists are one
assert tuple(SELECTORS) == METHODS
WEIGHTED_METHODS = tuple(name for name, method in SELECTORS.items() if method.weighted)

__all__ = ["METHODS", "SELECTORS", "WEIGHTED_METHODS", "Method"]
