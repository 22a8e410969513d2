"""meta.json: what an experiment says about itself (model, params, seed, level, cv, fold_hash)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from stacker.errors import LayoutError
from stacker.layout.atomic import atomic_write_json
from stacker.layout.paths import META_FILE, experiment_dir
from stacker.layout.reading import read_text


def read_meta(root: Path | str, name: str) -> dict:
    """``meta.json`` of an experiment, or ``{}`` when it has none (imported experiments)."""
    path = experiment_dir(root, name) / META_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(read_text(path, what="meta.json", experiment=name))
    except json.JSONDecodeError as error:
        raise LayoutError(f"not valid JSON (line {error.lineno}): {error.msg}; fix or delete it",
                          experiment=name, path=path) from None
    if not isinstance(meta, dict):
        raise LayoutError("must hold a JSON object", experiment=name, path=path)
    level = meta.get("level", 1)
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise LayoutError(f"\"level\" is {json.dumps(level)}; it must be a whole number (1 for "
                          "first-level models, 2 for stacked ones)", experiment=name, path=path)
    return meta


def write_meta(root: Path | str, name: str, meta: Mapping) -> Path:
    return atomic_write_json(experiment_dir(root, name) / META_FILE, dict(meta))
