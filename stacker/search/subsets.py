"""Which experiments a command works on: ``--subset best|all|NAME,NAME,...``.

``best`` is the subset chosen by the last ``stack search-subsets``, read from
``<root>/.stack/subsets.json`` (:mod:`stacker.layout.workspace`). Its keys:
``method, metric, blend, members (list of names), weights ({name: weight}), cv, nested_cv,
top (list of {members, size, cv}), by_size (list of {size, cv, nested_cv}), params, created``.

Weighted methods beyond one weight per member add (:func:`searched_weights` reads them):

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
    """The weights of a subsets.json ``record`` for ``members`` (in that order): shape (k,), or
    (k, n_classes) for per-class weights and the linear stacker's coefficients, and the linear
    stacker's intercepts (n_classes,) or None. ``path`` (the record's file) names it in errors.
    LayoutError when the record's per-class lists are
    for other classes or miss a member."""
    table = record.get("coef") or record.get("class_weights")
    if table is None:
        weights = record.get("weights") or {}
        return np.array([float(weights.get(m, 0.0)) for m in members]), None
    where = "the per-class weights" if "class_weights" in record else "the linear stacker"
    if list(record.get("classes") or []) != list(classes):
        raise LayoutError(f"{where} of the last search are for other classes than folds.csv's; "
                          "run `stack search-subsets` again", path=path)
    missing = [m for m in members if m not in table]
    if missing:
        raise LayoutError(f"{where} of the last search have no entry for '{missing[0]}'; use "
                          "--subset best or run `stack search-subsets` again", path=path)
    matrix = np.array([[float(v) for v in table[m]] for m in members])
    if matrix.shape[1] != len(classes):
        raise LayoutError(f"{where} of the last search hold {matrix.shape[1]} values per member, "
                          f"not one per class ({len(classes)}); run `stack search-subsets` again",
                          path=path)
    if "coef" in record:
        return matrix, np.array([float(b) for b in record["intercept"]])
    return matrix, None
