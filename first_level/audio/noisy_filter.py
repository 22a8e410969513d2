"""The noisy rows the earlier models agree with (argus-freesound): per fold, keep the noisy rows
whose labels an earlier experiment's fold model scores at least ``min_score``.

The scores come from ``.stack/noisy/<experiment>/fold_<k>.csv``, the predictions of that
experiment's fold-k model on the noisy clips (``stack first-level audio --noisy-meta`` writes
them). Fold k of the new experiment keeps rows by fold k's model alone: that model never trained
on fold k's curated labels, so the choice of noisy rows cannot carry them into fold k's
predictions. The experiment must therefore have been made on the same folds.csv.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from first_level.audio.noisy import NoisySet, NoisySettings
from first_level.audio.noisy_data import NoisyData
from first_level.runner import side_path
from stacker import layout
from stacker.errors import LayoutError, OptionError
from stacker.layout import workspace
from stacker.metrics import positive_precisions


def row_lwlrap(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-row label-ranking average precision, (n_rows,) float64: for each row the mean, over its
    labels, of the precision of its ranking at that label; NaN for a row without labels.
    y_true: (n_rows, n_classes) 0/1; y_score: the same shape."""
    rows, _, precision = positive_precisions(y_true, y_score)
    n_rows = len(np.asarray(y_true))
    count = np.bincount(rows, minlength=n_rows)
    total = np.bincount(rows, weights=precision, minlength=n_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def read_noisy_predictions(root, experiment: str, folds: layout.Folds,
                           ids: Sequence[str]) -> tuple[dict[int, np.ndarray], str]:
    """({fold: (n_noisy, n_classes) predictions of ``experiment``'s fold model, rows in ``ids``
    order, columns in folds.csv order}, a hash of the files). LayoutError/OptionError naming the
    file and the fix when the experiment or its noisy predictions do not fit."""
    meta = layout.read_meta(root, experiment)
    where = layout.experiment_dir(root, experiment)
    if not where.is_dir():
        raise OptionError(f"`noisy_filter`: no experiment '{experiment}' under {root}; train "
                          "it first with `noisy_meta` (the same noisy set)")
    if meta.get("fold_hash") != folds.hash:
        raise LayoutError(f"experiment '{experiment}' was made on other folds (fold_hash "
                          f"{meta.get('fold_hash')}, folds.csv has {folds.hash}); its fold-k "
                          "model may have seen this fold k's labels: retrain it on this folds.csv",
                          path=where / layout.META_FILE)
    folder = workspace.noisy_predictions_dir(root, experiment)
    digest = hashlib.sha1()
    out = {}
    for k in folds.fold_numbers:
        path = side_path(folder, k)
        if not path.exists():
            raise LayoutError(f"experiment '{experiment}' has no predictions of the noisy clips "
                              f"for fold {k}; train it with `noisy_meta` (the same noisy set), "
                              "with `force` if it was trained without", path=path)
        digest.update(path.read_bytes())
        probs = layout.read_probs(path)
        row = {row_id: i for i, row_id in enumerate(probs.ids)}
        missing = [i for i in ids if i not in row]
        if missing:
            raise LayoutError(f"noisy row '{missing[0]}' has no prediction ({len(missing)} "
                              f"missing); train '{experiment}' with this noisy set", path=path)
        column = {c: j for j, c in enumerate(probs.columns)}
        absent = [c for c in folds.classes if c not in column]
        if absent:
            raise LayoutError(f"class '{absent[0]}' of folds.csv has no column; train "
                              f"'{experiment}' on this folds.csv", path=path)
        out[k] = probs.values[np.array([row[i] for i in ids])][:, [column[c] for c in folds.classes]]
    return out, digest.hexdigest()[:16]


@dataclass(frozen=True)
class NoisyPlan:
    """The noisy rows each fold model trains on: the data, how to train on them, and per fold a
    bool mask (n_noisy,) of the rows kept (None: every row for every fold). ``record`` is what
    meta.json's params hold about them (hash, settings, filter), which a resume compares."""

    data: NoisyData
    settings: NoisySettings
    keep: dict[int, np.ndarray] | None
    record: dict

    def for_fold(self, fold: int) -> NoisySet:
        full = NoisySet(self.data.specs, self.data.y, self.settings)
        return full if self.keep is None else full.subset(self.keep[fold])


def plan_noisy(root, folds: layout.Folds, data: NoisyData, settings: NoisySettings, *,
               name: str, noisy_filter: str | None = None,
               noisy_min_score: float | None = None) -> NoisyPlan:
    """The :class:`NoisyPlan` of experiment ``name``: every noisy row, or per fold the rows whose
    labels experiment ``noisy_filter``'s fold model scores at least ``noisy_min_score`` (per-row
    lwlrap)."""
    filter_experiment, min_score = noisy_filter, noisy_min_score
    record = {"hash": data.hash, "n_rows": len(data.ids), **settings.to_dict()}
    if filter_experiment is None:
        if min_score is not None:
            raise OptionError("`noisy_min_score` needs `noisy_filter` EXPERIMENT (whose fold "
                              "models score the noisy labels)")
        return NoisyPlan(data=data, settings=settings, keep=None, record=record)
    if min_score is None or not 0 <= min_score <= 1:
        raise OptionError(f"`noisy_filter` needs `noisy_min_score` S in [0, 1] (the per-row "
                          f"lwlrap a noisy row's labels must reach), got {min_score}")
    if filter_experiment == name:
        raise OptionError(f"`noisy_filter` names the experiment being trained ('{name}'); name "
                          "an earlier experiment")
    predictions, source = read_noisy_predictions(root, filter_experiment, folds, data.ids)
    keep = {k: row_lwlrap(data.y, p) >= min_score for k, p in predictions.items()}
    record["filter"] = {"experiment": filter_experiment, "min_score": float(min_score),
                        "predictions_hash": source,
                        "kept": {str(k): int(mask.sum()) for k, mask in keep.items()}}
    return NoisyPlan(data=data, settings=settings, keep=keep, record=record)
