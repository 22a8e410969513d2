"""Who made a file of the layout, and whether a command may replace or remove it.

Every writer records what it made (``meta.json``'s ``made_by`` for an experiment, the sidecar's
``made_by`` for a submission) and asks here before it replaces or removes anything. The rules live
in this one module so that every command applies the same ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Mapping

from stacker.errors import LayoutError, OutputExistsError
from stacker.layout.meta import read_meta
from stacker.layout.paths import experiment_dir

MADE_BY = "made_by"            # the key of meta.json / a sidecar that names the command that wrote it


def made_by(meta: Mapping | None, command: str) -> bool:
    """Whether a ``meta.json`` (or sidecar) record says ``command`` made the file."""
    return isinstance(meta, Mapping) and meta.get(MADE_BY) == command


def experiment_made_by(root: Path | str, name: str, command: str) -> bool:
    """Whether experiment ``name`` exists under ``root`` and its ``meta.json`` says ``command`` made it
    (an unreadable meta.json counts as not)."""
    if not experiment_dir(root, name).exists():
        return False
    try:
        return made_by(read_meta(root, name), command)
    except LayoutError:
        return False


def check_own_experiment(root: Path | str, name: str, command: str) -> None:
    """OutputExistsError when experiment ``name`` exists and ``command`` did not make it."""
    if experiment_dir(root, name).exists() and not made_by(read_meta(root, name), command):
        raise OutputExistsError(f"experiment '{name}' exists under {root} and was not made by "
                                f"{command}; rename it ({command} writes {name})")


def remove_own_experiment(root: Path | str, name: str, command: str) -> bool:
    """Delete experiment ``name`` if ``command`` made it; whether it did."""
    if not experiment_made_by(root, name, command):
        return False
    shutil.rmtree(experiment_dir(root, name))
    return True


def sidecar_made_by(sidecar: Path | str | None, command: str) -> bool:
    """Whether the JSON sidecar at ``sidecar`` says ``command`` wrote the file beside it."""
    if sidecar is None:
        return False
    try:
        return made_by(json.loads(Path(sidecar).read_text(encoding="utf-8")), command)
    except (OSError, ValueError):
        return False
