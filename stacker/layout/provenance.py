"""Who made a file of the layout, and whether a command may replace, resume or remove it.

Every writer records what it made (``meta.json``'s ``created`` and, for a command's own outputs,
``made_by``; the sidecar's ``made_by`` for a submission) and asks here before it replaces, resumes
into or removes anything. The rules live in this one module so that every command applies the
same ones:

- a new experiment may take the place of an existing one only with ``force``
  (:func:`check_new_experiment`);
- a command replaces or removes only what it made itself (:func:`check_own_experiment`,
  :func:`remove_own_experiment`, :func:`sidecar_made_by`);
- a run resumes into an experiment only when its ``meta.json`` says it was made the same way: the
  same folds, classes, input data, model, params and seed (:func:`check_resumable`), since mixing
  fold models of two set-ups gives out-of-fold predictions no single model made;
- an experiment counts as made on folds.csv when its recorded ``fold_hash`` is folds.csv's, or
  either is unknown (:func:`made_on_folds`);
- an output path the user names (``--out``, ``--report``) may never be a file of the layout
  itself: inside an experiment folder, ``folds.csv``, ``classes.txt`` or ``.stack/``, not even
  with ``force``; the message says which command owns it (:func:`check_replaceable`), nor one
  of the command's inputs (:func:`refuse_inputs_as_outputs`).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from stacker.errors import LayoutError, OutputExistsError
from stacker.layout.meta import read_meta
from stacker.layout.paths import CLASSES_FILE, FOLDS_FILE, STACK_DIR, experiment_dir

MADE_BY = "made_by"            # the key of meta.json / a sidecar that names the command that wrote it
CREATED = "created"            # the key of meta.json / a sidecar that says when it was written
_RETRAIN = "pass `force` to retrain it or choose another `name`"
_RETRAIN_EVERY_FOLD = "pass `force` to retrain every fold or choose another `name`"


def created_now() -> str:
    """When a writer records that it made something: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamped(meta: Mapping) -> dict:
    """``meta`` with ``created`` set to now: what a writer puts in meta.json."""
    return {**meta, CREATED: created_now()}


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


def check_new_experiment(root: Path | str, name: str, *, force: bool,
                         fix: str = "choose another `name` or pass `force` to replace it") -> None:
    """OutputExistsError when experiment ``name`` already exists under ``root`` and ``force`` is
    not set; ``fix`` ends the message (how the caller's user chooses another name or replaces it)."""
    if experiment_dir(root, name).exists() and not force:
        raise OutputExistsError(f"experiment '{name}' already exists under {root}; {fix}")
    if force:
        check_not_linked(root, name)


def check_not_linked(root: Path | str, name: str) -> None:
    """OutputExistsError when experiment ``name`` is a symbolic link: replacing it (``force``)
    would write through the link into a folder outside the layout, then fail to remove it."""
    folder = experiment_dir(root, name)
    if folder.is_symlink():
        raise OutputExistsError(f"experiment '{name}' under {root} is a symbolic link to "
                                f"{os.readlink(folder)}; `force` never writes through it: remove "
                                "the link (or copy the folder in its place) or choose another "
                                "`name`")


# what a command keeps under <root>/.stack/ -> the command that owns it
_WORKSPACE_OWNERS = {"cache": "stack collect", "leaderboard.csv": "stack collect",
                     "subsets.json": "stack search-subsets", "tune.db": "stack tune",
                     "best_params.json": "stack tune", "spectrograms": "stack first-level audio",
                     "auto": "stack auto", "staging": "stack auto", "lock": "every writer"}


def _is_experiment(folder: Path, child: str) -> bool:
    """Whether ``folder`` is (or writing ``child`` into it would make it) an experiment: it has a
    meta.json or a fold_<k> folder, or ``child`` is one."""
    if folder.name.startswith((".", "_")):
        return False
    if child.startswith("fold_"):
        return True
    if not folder.is_dir():
        return False
    if (folder / "meta.json").exists():
        return True
    try:
        return any(entry.name.startswith("fold_") and entry.is_dir() for entry in folder.iterdir())
    except OSError:
        return False


def _layout_owner(path: Path, root: Path) -> str | None:
    """What part of the layout under ``root`` the (resolved) ``path`` is and the command that owns
    it, or None when ``path`` is not a file of the layout."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    if not parts:
        return "the layout root"
    if parts == (FOLDS_FILE,) or parts == (CLASSES_FILE,):
        return f"the layout's {parts[0]}, written by `stack make-folds`"
    if parts[0] == STACK_DIR:
        owner = _WORKSPACE_OWNERS.get(parts[1], "stack") if len(parts) > 1 else "stack"
        return f"inside {STACK_DIR}/, the workspace of `{owner}`"
    if len(parts) > 1 and _is_experiment(root / parts[0], parts[1]):
        try:
            meta = read_meta(root, parts[0])
        except LayoutError:
            meta = {}
        owner = meta.get(MADE_BY) or (f"the command that trained it ({meta['model']})"
                                      if meta.get("model") else "the command that wrote it")
        owner = f"`{owner}`" if meta.get(MADE_BY) else owner
        return f"inside experiment '{parts[0]}' of the layout, owned by {owner}"
    return None


def check_replaceable(path: Path | str, root: Path | str, *, what: str = "`out`") -> None:
    """OutputExistsError, with or without ``force``, when the output ``path`` (``what``: the
    option that named it) is a file of the layout under ``root``: inside an experiment folder,
    ``folds.csv``, ``classes.txt`` or ``.stack/``. ``force`` replaces a command's earlier outputs
    and files outside the layout, never the layout's own files (the next ``stack collect`` would
    read a submission as predictions). Symbolic links are followed."""
    try:
        resolved, layout_root = Path(path).resolve(), Path(root).resolve()
    except OSError:
        return
    owner = _layout_owner(resolved, layout_root)
    if owner is not None:
        raise OutputExistsError(f"{what} {path} is {owner}; no command replaces a file of the "
                                "layout with another kind, even with `force`: write it to a path "
                                f"outside {root}'s experiment folders and {STACK_DIR}/")


def same_file(a: Path | str, b: Path | str) -> bool:
    """Whether two paths name one file (links followed; a hard link counts); False when unsure."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def refuse_inputs_as_outputs(outputs: Mapping[str, Path | str | None],
                             inputs: Mapping[str, Path | str | None], *,
                             root: Path | str | None = None) -> None:
    """``force`` replaces a command's earlier outputs, never what it reads nor the layout's own
    files: OutputExistsError when an output path (``{how the message names it: path}``, e.g.
    ``{"`out`": out}``) is one of the ``inputs`` (``{"`template`": path, "folds.csv": path}``),
    or a file of the layout under ``root`` (:func:`check_replaceable`), even with ``force``.
    None paths are skipped. Every command and ``stacker.auto`` ask here."""
    for what, out in outputs.items():
        for source_what, source in inputs.items():
            if out is not None and source is not None and same_file(out, source):
                raise OutputExistsError(f"{what} {out} is {source_what}, an input of this command; "
                                        "write to another path")
    if root is not None:
        for what, out in outputs.items():
            if out is not None:
                check_replaceable(out, root, what=what)


def made_on_folds(meta: Mapping, fold_hash: str | None) -> bool:
    """Whether an experiment whose meta.json holds ``meta`` was made on the folds whose hash is
    ``fold_hash``; an experiment that records no hash, or an unknown ``fold_hash`` (None: an
    unreadable folds.csv), counts as made on them: it may depend on them."""
    recorded = meta.get("fold_hash")
    return recorded is None or fold_hash is None or recorded == fold_hash


def check_resumable(meta: Mapping, expected: Mapping, *, where: Path | str, name: str) -> None:
    """OutputExistsError unless experiment ``name``, whose meta.json (at ``where``) holds ``meta``,
    was made the way ``expected`` describes, so that a run may keep its finished folds.

    expected: meta.json values of the run about to resume, any of ``fold_hash``, ``classes``,
    ``data_hash`` (None: unknown), ``model``, ``params``, ``seed``. The model, params, seed and
    data hash the run gives must be recorded in ``meta`` (a meta.json without them, say
    ``{"notes": "mine"}``, could hold folds of any model: refused, naming what is missing); the
    fold hash and classes are compared when ``meta`` records them (older experiments lack them).
    An empty ``meta`` (no meta.json) cannot be checked and is refused.
    """
    if not meta:
        raise OutputExistsError(
            f"experiment '{name}' exists without meta.json, so it cannot be resumed safely; "
            + _RETRAIN)
    missing = [key for key in ("model", "params", "seed", "data_hash")
               if expected.get(key) is not None and meta.get(key) is None]
    if missing:
        raise OutputExistsError(
            f"{where}: experiment '{name}' records no {', '.join(missing)}, so its finished folds "
            "may come from another set-up and it cannot be resumed; " + _RETRAIN_EVERY_FOLD)
    if "fold_hash" in expected and meta.get("fold_hash") and meta["fold_hash"] != expected["fold_hash"]:
        raise OutputExistsError(
            f"{where}: experiment '{name}' was made on other folds (fold_hash "
            f"{meta['fold_hash']}, folds.csv has {expected['fold_hash']}); " + _RETRAIN_EVERY_FOLD)
    if "classes" in expected and meta.get("classes") is not None \
            and list(meta["classes"]) != list(expected["classes"]):
        raise OutputExistsError(
            f"{where}: experiment '{name}' was made with other classes; " + _RETRAIN)
    data_hash = expected.get("data_hash")
    if data_hash is not None and meta.get("data_hash") not in (None, data_hash):
        raise OutputExistsError(
            f"{where}: experiment '{name}' was made on other input data (data_hash "
            f"{meta['data_hash']}, the data given now has {data_hash}); resuming would mix "
            "folds trained on both. Pass `force` to retrain every fold or choose another `name`")
    for key in ("model", "params", "seed"):
        if key in expected and key in meta and meta[key] != expected[key]:
            raise OutputExistsError(
                f"{where}: experiment '{name}' was made with {key} {json.dumps(meta[key])}, "
                f"not {json.dumps(expected[key])}; " + _RETRAIN)
