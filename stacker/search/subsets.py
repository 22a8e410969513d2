"""Which experiments a command works on: ``--subset best|all|NAME,NAME,...``.

``best`` is the subset chosen by the last ``stack search-subsets``, read from
``<root>/.stack/subsets.json`` (:mod:`stacker.layout.workspace`). Its keys:
``method, metric, blend, members (list of names), weights ({name: weight}), cv, nested_cv,
top (list of {members, size, cv}), by_size (list of {size, cv, nested_cv}), params, created``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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
