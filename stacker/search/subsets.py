"""Which experiments a command works on: ``--subset best|all|NAME,NAME,...``.

``best`` is the subset chosen by the last ``stack search-subsets``, read from
``<root>/.stack/subsets.json`` (:mod:`stacker.layout.workspace`). Its keys:
``method, metric, blend, members (list of names), weights ({name: weight}), cv, nested_cv,
top (list of {members, size, cv}), by_size (list of {size, cv, nested_cv}), params, created``.

Weighted methods beyond one weight per member add (:meth:`stacker.blend.Blend.from_record` reads
them, with the members, ``blend``, ``power`` and ``eps``, into a :class:`stacker.blend.Blend`):

* ``--method per-class``: ``class_weights`` ({name: [one weight per class]}, each class's column
  summing to 1) and ``classes`` (their order); ``weights`` is then the mean over classes.
* ``--method linear``: ``blend: "linear"``, ``coef`` ({name: [one coefficient per class]},
  non-negative), ``intercept`` ([one per class]) and ``classes``: the blend is
  ``sigmoid(intercept[c] + sum_m coef[m][c] * logit(p_m[:, c]))`` (:func:`stacker.blend.logit_linear`);
  ``weights`` is the mean coefficient per member, normalised, for display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from stacker.blend import Blend
from stacker.errors import LayoutError, OptionError
from stacker.layout.workspace import read_subsets, subsets_path


def resolve_subset(root: Path | str, spec: str | None, available: Sequence[str]) -> list[str]:
    """Names selected by ``spec``: None or 'all' -> every available experiment; 'best' -> the
    search's members; otherwise a comma-separated list of names, each checked against ``available``."""
    if spec is None or spec.strip() in ("", "all"):
        return list(available)
    if spec.strip() == "best":
        names = list(read_subsets(root)["members"])
        missing = [n for n in names if n not in available]
        if missing:
            raise LayoutError(f"the searched subset names '{missing[0]}', which is not a valid "
                              "experiment now; run `stack search-subsets` again",
                              path=subsets_path(root))
        return names
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise OptionError(f"`subset` names '{unknown[0]}', which is not an experiment under {root}; "
                          f"known: {', '.join(available)}")
    if len(set(names)) != len(names):
        raise OptionError("`subset` names an experiment twice; list each once")
    return names


def searched_weights(record: dict, members: Sequence[str], classes: Sequence[str], *,
                     path: Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The weights of a subsets.json ``record`` for ``members`` (in that order), as arrays: (k,),
    or (k, n_classes) for per-class weights and the linear stacker's coefficients, and the linear
    stacker's intercepts (n_classes,) or None. A shim over :meth:`stacker.blend.Blend.from_record`
    (which see for the errors) for the callers of the older API (older callers of
    :mod:`stacker.auto`, ``benchmarks/bench_weights.py``); new code takes the Blend itself."""
    chosen = Blend.from_record({**record, "members": list(members)}, classes, path=path)
    weights = chosen.matrix
    intercept = None if chosen.intercept is None else np.array(chosen.intercept)
    return (np.ones(len(chosen.members)) if weights is None else weights), intercept
