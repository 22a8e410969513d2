"""Every file under ``<root>/.stack/``, the stacker's own workspace beside the layout.

One place names them all, with one reader and one writer where a file has a schema; the layout
README lists them. Nothing here is a user's file: each is rebuilt by rerunning the command that
wrote it.

| path                          | written by                               | read by                        |
|-------------------------------|------------------------------------------|--------------------------------|
| ``cache/``                    | ``stack collect`` (any command collecting)| ``collect``                    |
| ``leaderboard.csv``           | ``stack collect``                        | the user                       |
| ``subsets.json``              | ``stack search-subsets``, demo, auto     | ``--subset best``, blend, report|
| ``tune.db`` (+ ``.lock``)     | ``stack tune``                           | ``stack tune`` (resume)        |
| ``best_params.json`` (+ lock) | ``stack tune``                           | ``--params best``              |
| ``spectrograms/``             | ``stack first-level audio``              | the same, on a rerun           |
| ``noisy/<name>/fold_<k>.csv`` | ``stack first-level audio --noisy-meta`` | ``--noisy-filter <name>``      |
| ``staging/``                  | level-2 writers (renamed into place)     | nothing                        |
| ``auto/state.json``           | ``stack auto``                           | ``stack auto`` (resume)        |
| ``auto/tune.db``              | ``stack auto`` (its Optuna study)        | ``stack auto`` (resume)        |
| ``auto/<stage>.npz``          | ``stack auto`` (a stage's arrays)        | ``stack auto`` (resume)        |
"""

from __future__ import annotations

import json
from pathlib import Path

from stacker.errors import LayoutError
from stacker.layout.atomic import atomic_write_json, atomic_write_text
from stacker.layout.paths import STACK_DIR

CACHE_DIR = "cache"
LEADERBOARD_FILE = "leaderboard.csv"
SUBSETS_FILE = "subsets.json"
TUNE_DB = "tune.db"
BEST_PARAMS_FILE = "best_params.json"
SPECTROGRAMS_DIR = "spectrograms"
NOISY_DIR = "noisy"
STAGING_DIR = "staging"
AUTO_DIR = "auto"
AUTO_STATE_FILE = "state.json"


def workspace_dir(root: Path | str) -> Path:
    """``<root>/.stack`` (not created)."""
    return Path(root) / STACK_DIR


def cache_dir(root: Path | str) -> Path:
    return workspace_dir(root) / CACHE_DIR


def leaderboard_path(root: Path | str) -> Path:
    return workspace_dir(root) / LEADERBOARD_FILE


def subsets_path(root: Path | str) -> Path:
    return workspace_dir(root) / SUBSETS_FILE


def tune_db_path(root: Path | str) -> Path:
    return workspace_dir(root) / TUNE_DB


def best_params_path(root: Path | str) -> Path:
    return workspace_dir(root) / BEST_PARAMS_FILE


def spectrograms_dir(root: Path | str) -> Path:
    return workspace_dir(root) / SPECTROGRAMS_DIR


def noisy_predictions_dir(root: Path | str, name: str) -> Path:
    """``.stack/noisy/<name>``: experiment ``name``'s fold models on the noisy clips, one
    ``fold_<k>.csv`` (probs.csv form) per fold; beside the layout, so nothing collects them."""
    return workspace_dir(root) / NOISY_DIR / name


def staging_dir(root: Path | str) -> Path:
    return workspace_dir(root) / STAGING_DIR


def auto_dir(root: Path | str) -> Path:
    return workspace_dir(root) / AUTO_DIR


def auto_state_path(root: Path | str) -> Path:
    return auto_dir(root) / AUTO_STATE_FILE


def read_auto_state(root: Path | str) -> dict:
    """What earlier `stack auto` runs finished, by stage and input key; {} when none (or unreadable:
    the state is only a cache of finished work, so a damaged one means redoing that work)."""
    try:
        state = json.loads(auto_state_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_auto_state(root: Path | str, state: dict) -> Path:
    return atomic_write_json(auto_state_path(root), state)


def write_leaderboard(root: Path | str, csv_text: str) -> Path:
    return atomic_write_text(leaderboard_path(root), csv_text)


def write_subsets(root: Path | str, record: dict) -> Path:
    """Save a subset search's result (:meth:`stacker.search.SearchResult.to_json` plus context).
    Its keys are listed in :mod:`stacker.search.subsets`, with the per-class weights
    (``class_weights``) and the linear stacker (``coef``, ``intercept``) of the weighted methods."""
    return atomic_write_json(subsets_path(root), record)


def read_subsets(root: Path | str) -> dict:
    """The last subset search's result; LayoutError when there is none yet or it is unreadable."""
    path = subsets_path(root)
    if not path.exists():
        raise LayoutError("no subset search result yet; run `stack search-subsets` first or pass "
                          "`subset` NAME,NAME,...", path=path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise LayoutError(f"not valid JSON ({error.msg}); run `stack search-subsets` again",
                          path=path) from None
    if not isinstance(result, dict) or not result.get("members"):
        raise LayoutError("has no 'members'; run `stack search-subsets` again", path=path)
    return result
