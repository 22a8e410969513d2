"""Which experiments a command works on: ``--subset best|all|NAME,NAME,...``.

``best`` is the subset chosen by the last ``stack search-subsets``, read from
``<root>/.stack/subsets.json`` (written by :mod:`stacker.search.engine`'s command). Its keys:
``method, metric, blend, members (list of names), weights ({name: weight}), cv, nested_cv,
top (list of {members, size, cv}), by_size (list of {size, cv, nested_cv}), params, created``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from stacker import layout
from stacker.errors import LayoutError, OptionError

SUBSETS_FILE = "subsets.json"


def subsets_path(root: Path | str) -> Path:
    return Path(root) / layout.STACK_DIR / SUBSETS_FILE


def read_subsets(root: Path | str) -> dict:
    """The last subset search's result; LayoutError when there is none yet."""
    path = subsets_path(root)
    if not path.exists():
        raise LayoutError("no subset search result yet; run `stack search-subsets` first or pass "
                          "--subset NAME,NAME,...", path=path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise LayoutError(f"not valid JSON ({error.msg}); run `stack search-subsets` again",
                          path=path) from None
    if not isinstance(result, dict) or not result.get("members"):
        raise LayoutError("has no 'members'; run `stack search-subsets` again", path=path)
    return result


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
        raise OptionError(f"--subset names '{unknown[0]}', which is not an experiment under {root}; "
                          f"known: {', '.join(available)}")
    if len(set(names)) != len(names):
        raise OptionError("--subset names an experiment twice; list each once")
    return names
