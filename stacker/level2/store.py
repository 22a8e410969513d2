"""Writing a trained level-2 run as an experiment (predictions, weights, params, history),
training and writing one in a single call (:func:`train_and_write`, what ``stack train`` does),
and reloading its weights to predict again."""

from __future__ import annotations

import io
import shutil
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from stacker import layout
from stacker.errors import LayoutError, OptionError, OutputExistsError
from stacker.layout import provenance, workspace
from stacker.layout.collect import Collection
from stacker.level2 import fit as level2_fit
from stacker.level2.fit import Level2Result, TrainConfig, geometric_mean, predict_array
from stacker.level2.inner import ON_FOLD, OPTIMISTIC_NOTE
from stacker.level2.inputs import Level2Data
from stacker.level2.net import StackMLP
from stacker.runtime import ProgressCallback

MODEL_FILE = "model.pt"
PARAMS_FILE = "params.json"
HISTORY_FILE = "history.json"
MODEL_FORMAT = 1


def check_output(root: Path | str, name: str, *, force: bool, inputs: Sequence[str] = ()) -> None:
    """Refuse an output name that exists (unless ``force``) or that is one of the inputs."""
    layout.check_experiment_name(name)
    if name in inputs:
        raise OptionError(f"`name` '{name}' is one of the input experiments; choose a new name")
    if layout.experiment_dir(root, name).exists() and not force:
        raise OutputExistsError(f"experiment '{name}' already exists under {root}; choose another "
                                "`name` or pass `force` to replace it")
    if force:
        provenance.check_not_linked(root, name)


def write_level2(root: Path | str, name: str, result: Level2Result, collection: Collection, *,
                 seeds: Sequence[int] | None = None, force: bool = False,
                 extra_meta: Mapping | None = None) -> Path:
    """Write ``result`` (the geometric mean over ``seeds``, default all) as experiment ``name``.

    Everything goes to a staging folder under ``<root>/.stack/`` first and is renamed into place,
    so a crash never leaves half an experiment. Returns the experiment folder.
    """
    root = Path(root)
    seeds = list(result.seeds if seeds is None else seeds)
    check_output(root, name, force=force, inputs=result.names)
    oof, test = result.combined(seeds)
    staging = workspace.staging_dir(root) / f"{name}-{uuid.uuid4().hex[:8]}"
    folds = collection.folds
    try:
        for i, k in enumerate(result.fold_numbers):
            rows = folds.rows_of_fold(k)
            layout.write_fold_predictions(staging, name, k, "val", folds.ids[rows], oof[rows],
                                          folds.classes, id_column=folds.id_column)
            layout.write_fold_predictions(staging, name, k, "test", collection.test_ids, test[i],
                                          folds.classes, id_column=folds.id_column)
            fits = [result.fits[(s, k)] for s in seeds]
            fold_folder = layout.experiment_dir(staging, name) / f"fold_{k}"
            buffer = io.BytesIO()
            torch.save({"format": MODEL_FORMAT, "config": fits[0].config,
                        "single_label": result.single_label, "seeds": seeds, "fold": int(k),
                        "inputs": list(result.names), "params": result.params.to_dict(),
                        "state_dicts": [f.state_dict for f in fits]}, buffer)
            layout.atomic_write_bytes(fold_folder / MODEL_FILE, buffer.getvalue())
            layout.atomic_write_json(fold_folder / PARAMS_FILE, {
                **result.params.to_dict(), "seeds": seeds, "fold": int(k),
                "best_epochs": {str(f.seed): f.best_epoch for f in fits},
                "scores": {str(f.seed): f.score for f in fits},
                "early_stopping": result.early_stopping,
                "stop_scores": {str(f.seed): f.stop_score for f in fits},
                "n_stop_rows": int(len(fits[0].stop_rows)) if fits[0].stop_rows is not None
                else None, "model": fits[0].config})
            layout.atomic_write_json(fold_folder / HISTORY_FILE, fold_history(result, seeds, k))
        layout.write_meta(staging, name, level2_meta(result, folds.hash, seeds=seeds,
                                                     extra_meta=extra_meta))
        if layout.experiment_dir(root, name).exists():
            check_output(root, name, force=force, inputs=result.names)
        target = layout.install_experiment(staging, root, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fold_history(result: Level2Result, seeds: Sequence[int], fold: int) -> list[dict]:
    """The learning curves of fold ``fold``'s models, one entry per (seed, epoch): the content of
    its ``history.json``."""
    return [{**entry, "seed": f.seed} for f in (result.fits[(s, fold)] for s in seeds)
            for entry in f.history]


def level2_meta(result: Level2Result, fold_hash: str, *, seeds: Sequence[int],
                extra_meta: Mapping | None = None) -> dict:
    """The meta.json record of ``result`` written as the geometric mean over ``seeds``."""
    cv, per_fold = result.scores(seeds)
    meta = {"model": "stack_mlp", "level": 2, "inputs": list(result.names),
            "params": result.params.to_dict(), "seeds": list(seeds), "seed": seeds[0],
            "fold_hash": fold_hash, "metric": result.metric, "cv": cv,
            "cv_folds": {str(k): v for k, v in per_fold.items()},
            "window_augmentation": result.window_augmentation,
            "early_stopping": result.early_stopping,
            "single_label": result.single_label}
    if result.early_stopping == ON_FOLD:
        meta["cv_note"] = OPTIMISTIC_NOTE
    meta.update(extra_meta or {})
    return meta


def train_and_write(root: Path | str, collection: Collection, names: Sequence[str],
                    outputs: Mapping[str, Sequence[int] | None], config: TrainConfig, *,
                    force: bool = False, extra_meta: Mapping | None = None,
                    data: Level2Data | None = None,
                    on_progress: ProgressCallback | None = None) -> tuple[Level2Result, dict[str, Path]]:
    """Train the level-2 MLP on the inputs ``names`` once and write it as one or more experiments.

    outputs: {experiment name: the seeds whose geometric mean it holds (None: all of
    ``config.seeds``)}, e.g. ``{"mlp": None}``, or one experiment per seed. Every name is checked
    (:func:`check_output`) before any training. data, on_progress: as for
    :func:`~stacker.level2.fit.train_level2`; force, extra_meta: as for :func:`write_level2`.
    Returns (the trained run, {name: experiment folder}).
    """
    for name in outputs:
        check_output(root, name, force=force, inputs=names)
    # looked up on the module when called, so that a replaced train_level2 (tests that interrupt a
    # command) is the one that runs
    result = level2_fit.train_level2(collection, names, config, data=data, on_progress=on_progress)
    paths = {name: write_level2(root, name, result, collection, seeds=seeds, force=force,
                                extra_meta=extra_meta)
             for name, seeds in outputs.items()}
    return result, paths


def load_fold_model(root: Path | str, name: str, fold: int, *, device: str = "cpu") -> tuple[list, dict]:
    """The saved fold model(s): ([StackMLP per seed, in eval mode], the saved record)."""
    path = layout.experiment_dir(root, name) / f"fold_{fold}" / MODEL_FILE
    if not path.exists():
        raise LayoutError(f"{MODEL_FILE} is missing: not a level-2 experiment written by "
                          "`stack train`", experiment=name, path=path)
    try:
        record = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        raise LayoutError(f"cannot be read ({type(error).__name__}); retrain with `stack train "
                          "--force`", experiment=name, path=path) from None
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise LayoutError(f"unknown model format; expected format {MODEL_FORMAT}", experiment=name,
                          path=path)
    models = []
    for state in record["state_dicts"]:
        model = StackMLP.from_config(record["config"]).to(device)
        model.load_state_dict(state)
        model.eval()
        models.append(model)
    return models, record


def predict(root: Path | str, name: str, test_inputs: np.ndarray, *, device: str = "cpu",
            fold_numbers: Sequence[int] | None = None) -> np.ndarray:
    """Re-predict with the saved weights of level-2 experiment ``name``.

    test_inputs: array of shape (n_folds, n_test, n_models, n_classes), the inputs' fold test
        predictions (``collection.select(meta['inputs']).test``); ``test_inputs[i]`` goes to the
        model of fold ``fold_numbers[i]`` (default: the experiment's folds, sorted).
    Returns probs of shape (n_folds, n_test, n_classes): each fold's geometric mean over seeds.
    """
    folds = list(fold_numbers) if fold_numbers is not None else layout.list_fold_numbers(root, name)
    test_inputs = np.asarray(test_inputs, dtype=np.float32)
    if test_inputs.ndim != 4 or len(test_inputs) != len(folds):
        raise OptionError(f"test_inputs must have shape (n_folds={len(folds)}, n_test, n_models, "
                          f"n_classes), got {test_inputs.shape}")
    out = []
    for i, k in enumerate(folds):
        models, record = load_fold_model(root, name, k, device=device)
        n_features = record["config"]["n_features"]
        if test_inputs[i, 0].size != n_features:
            raise OptionError(f"experiment '{name}' expects {n_features} input features "
                              f"({len(record['inputs'])} models x classes), got "
                              f"{test_inputs.shape[2]} x {test_inputs.shape[3]}")
        per_seed = np.stack([predict_array(m, test_inputs[i], record["single_label"], device)
                             for m in models])
        out.append(geometric_mean(per_seed, single_label=record["single_label"]))
    return np.stack(out)


def verify_predictions(collection: Collection, name: str, *, device: str = "cpu") -> dict[int, float]:
    """Re-predict level-2 experiment ``name`` from its saved weights and compare with its saved
    test probs. Returns {fold: max absolute difference}."""
    meta = collection.meta.get(name, {})
    inputs = meta.get("inputs")
    if int(meta.get("level", 1)) != 2 or not inputs:
        raise OptionError(f"experiment '{name}' is not a level-2 experiment written by `stack train` "
                          "(its meta.json has no level 2 and inputs)")
    missing = [n for n in inputs if n not in collection.names]
    if missing:
        raise LayoutError(f"input experiment '{missing[0]}' of '{name}' is missing or invalid under "
                          f"{collection.root}; restore it to re-predict", experiment=name)
    again = predict(collection.root, name, collection.select(inputs).test, device=device,
                    fold_numbers=collection.fold_numbers)
    saved = collection.test[:, :, collection.index([name])[0]]
    return {k: float(np.max(np.abs(again[i] - saved[i])))
            for i, k in enumerate(collection.fold_numbers)}
