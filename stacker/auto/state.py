"""``<root>/.stack/auto/state.json``: what earlier runs finished, so that a rerun resumes.

The file holds ``{"key": ..., "stages": {stage: record}}``; ``key`` digests every input of the
stages (:func:`input_key`), and a run with another key starts from no stage. A stage's arrays
(the first-level recipes' nested predictions) go to ``<root>/.stack/auto/<stage>.npz`` with the
key inside, written before the record that points to them, so a stage is restored whole or not
at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from stacker.layout import workspace
from stacker.layout.atomic import atomic_write_bytes
from stacker.layout.collect import Collection

_KEY = "__key__"


def input_key(pool: Collection, settings) -> str:
    """A digest of everything the stages depend on: the level-1 predictions' content, the folds,
    the classes and the settings (not the time budget: a longer budget may reuse finished work)."""
    from stacker.level2.params import MLPParams

    digest = hashlib.blake2b(digest_size=16)
    recorded = {k: v for k, v in asdict(settings).items() if k != "time_budget"}
    # the level-2 parameters in full: a new stacker version's defaults are a changed input too
    recorded["level2_params"] = MLPParams.from_dict(settings.level2_params,
                                                    source="level-2 settings").to_dict()
    digest.update(json.dumps({"names": list(pool.names), "fold_hash": pool.folds.hash,
                              "classes": list(pool.classes), "settings": recorded},
                             sort_keys=True, default=str).encode())
    for i in range(pool.n_models):
        digest.update(np.ascontiguousarray(pool.oof[:, i]).tobytes())
        digest.update(np.ascontiguousarray(pool.test[:, :, i]).tobytes())
    digest.update("\n".join(map(str, pool.test_ids)).encode())
    return digest.hexdigest()


class StateStore:
    """The finished stages of runs with inputs ``key`` under ``root``."""

    def __init__(self, root: Path, key: str):
        self.root, self.key = Path(root), key
        state = workspace.read_auto_state(root)
        stages = state.get("stages", None) if state.get("key") == key else {}
        if stages is None:    # an earlier version kept the stages beside the key
            stages = {k: v for k, v in state.items() if k != "key"}
        self._stages: dict = dict(stages) if isinstance(stages, dict) else {}

    def record(self, stage: str):
        """The record ``stage`` saved, or None."""
        return self._stages.get(stage)

    def arrays(self, stage: str) -> dict[str, np.ndarray] | None:
        """The arrays ``stage`` saved with this key, or None (none saved, another key, damaged)."""
        try:
            with np.load(self._arrays_path(stage), allow_pickle=False) as found:
                if str(found[_KEY]) != self.key:
                    return None
                return {name: found[name] for name in found.files if name != _KEY}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None

    def save(self, stage: str, record, arrays: dict[str, np.ndarray] | None = None) -> None:
        """Record ``stage`` as finished with ``record`` (JSON) and ``arrays``."""
        if arrays:
            buffer = io.BytesIO()
            np.savez(buffer, **{_KEY: np.array(self.key)}, **arrays)
            atomic_write_bytes(self._arrays_path(stage), buffer.getvalue())
        self._stages[stage] = record
        workspace.write_auto_state(self.root, {"key": self.key, "stages": self._stages})

    def _arrays_path(self, stage: str) -> Path:
        return workspace.auto_dir(self.root) / f"{stage}.npz"
