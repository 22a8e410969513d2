"""The inputs of a level-2 run: which experiments (``--subset``), their OOF and test predictions in
memory (:class:`Level2Data`), their per-window predictions (:class:`Windows`) and the random
window augmentation drawn from them while training."""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from stacker import layout
from stacker.errors import LayoutError, OptionError
from stacker.layout.collect import Collection
from stacker.search.subsets import resolve_subset


@dataclass(frozen=True)
class Windows:
    """Per-window OOF predictions of the input experiments that saved them.

    models: positions (along the models axis) of those experiments, shape (n_wm,).
    values: array of shape (n_rows, n_wm, max_windows, n_classes), float32, zero-padded.
    lengths: array of shape (n_rows, n_wm), int64, the number of real windows (>= 1).
    """

    models: np.ndarray
    values: np.ndarray
    lengths: np.ndarray


@dataclass(frozen=True)
class Level2Data:
    """Everything one level-2 run needs, in memory.

    x: array of shape (n_rows, n_models, n_classes), float32, the inputs' OOF probabilities.
    y: array of shape (n_rows, n_classes), uint8.  fold: array of shape (n_rows,).
    test: array of shape (n_test_folds, n_test, n_models, n_classes) or None; ``test[i]`` comes from
        the first-level models of fold ``test_folds[i]``.
    """

    names: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    fold: np.ndarray
    single_label: bool
    test: np.ndarray | None = None
    test_folds: tuple[int, ...] = ()
    windows: Windows | None = None

    @property
    def fold_numbers(self) -> list[int]:
        return sorted(int(k) for k in np.unique(self.fold))

    def rows(self, mask: np.ndarray) -> "Level2Data":
        """The same data restricted to the rows where ``mask`` is true (new arrays)."""
        windows = None
        if self.windows is not None:
            windows = replace(self.windows, values=self.windows.values[mask],
                              lengths=self.windows.lengths[mask])
        return replace(self, x=self.x[mask], y=self.y[mask], fold=self.fold[mask], windows=windows)

    def test_of(self, k: int) -> np.ndarray | None:
        if self.test is None:
            return None
        return self.test[self.test_folds.index(k)]


def level2_data(collection: Collection, names: Sequence[str], *, use_windows: bool = True) -> Level2Data:
    """The inputs ``names`` of ``collection`` as a :class:`Level2Data` (reads per-window files)."""
    sub = collection.select(list(names))
    windows = load_windows(sub) if use_windows and sub.windows else None
    return Level2Data(names=tuple(names), x=sub.oof, y=sub.y, fold=sub.fold,
                      single_label=sub.folds.is_single_label, test=sub.test,
                      test_folds=tuple(sub.fold_numbers), windows=windows)


def shared_or_built(collection: Collection, names: Sequence[str], data: Level2Data | None, *,
                    use_windows: bool = True) -> Level2Data:
    """``data`` when the caller built it already (one run that tunes and trains reads its inputs
    once), else :func:`level2_data` of ``collection``. A given ``data`` must hold the inputs
    ``names`` on every row of ``collection``; with ``use_windows`` False its windows are left out
    (with True it keeps what it was built with)."""
    if data is None:
        return level2_data(collection, names, use_windows=use_windows)
    if tuple(data.names) != tuple(names) or len(data.y) != len(collection.ids):
        raise OptionError(f"the given level-2 inputs hold {', '.join(data.names)} on {len(data.y)} "
                          f"rows, not {', '.join(names)} on {len(collection.ids)}; build them with "
                          "level2_data(collection, names)")
    return data if use_windows or data.windows is None else replace(data, windows=None)


def _header_columns(path: Path, name: str) -> list[str]:
    """The class columns of a probs.csv or probs.parquet, in file order."""
    if path.suffix == ".parquet":
        return list(layout.read_probs(path, experiment=name).columns)
    with open(path, newline="", encoding="utf-8-sig") as handle:   # collect has checked it
        header = next(csv.reader(handle), [])
    if header and header[-1] == "":    # a trailing comma on every line
        header = header[:-1]
    if len(header) < 2:
        raise LayoutError("has no class columns in its header", experiment=name, path=path)
    return header[1:]


def load_windows(collection: Collection) -> Windows | None:
    """Read the per-window val files of every experiment of ``collection`` that has them."""
    models = [m for m, n in enumerate(collection.names) if n in collection.windows]
    if not models:
        return None
    per_model = []
    for m in models:
        name = collection.names[m]
        arrays: list[np.ndarray | None] = [None] * len(collection.ids)
        for k in collection.fold_numbers:
            rows = collection.folds.rows_of_fold(k)
            path = layout.probs_path(collection.root, name, k, "val")
            columns = _header_columns(path, name)
            position = {c: j for j, c in enumerate(columns)}
            order = [position[c] for c in collection.classes]
            found = layout.read_windows(collection.root, name, k, "val", collection.ids[rows])
            for row, array in zip(rows, found):
                if array.shape[1] != len(columns) or array.shape[0] < 1:
                    raise LayoutError(f"per-window array has shape {array.shape}; expected "
                                      f"(windows >= 1, {len(columns)} classes as in probs.csv)",
                                      experiment=name, path=layout.windows_path(
                                          collection.root, name, k, "val", collection.ids[row]))
                arrays[row] = array[:, order]
        per_model.append(arrays)
    max_windows = max(a.shape[0] for arrays in per_model for a in arrays)
    n_rows, n_classes = len(collection.ids), len(collection.classes)
    values = np.zeros((n_rows, len(models), max_windows, n_classes), dtype=np.float32)
    lengths = np.zeros((n_rows, len(models)), dtype=np.int64)
    for j, arrays in enumerate(per_model):
        for row, array in enumerate(arrays):
            values[row, j, :len(array)] = array
            lengths[row, j] = len(array)
    return Windows(models=np.array(models), values=values, lengths=lengths)


def window_means(values: torch.Tensor, lengths: torch.Tensor, *, crop: float, keep: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Random window augmentation: the mean of a random crop (half the time) or random subset.

    values: (batch, n_wm, max_windows, n_classes); lengths: (batch, n_wm) -> (batch, n_wm, n_classes).
    A crop is a contiguous run of at least ``ceil(crop * length)`` windows; a subset keeps each
    window with chance ``keep`` (and one random window when it would keep none). Padding never
    enters the mean.
    """
    batch, n_wm, max_w, _ = values.shape
    device = values.device
    shape = (batch, n_wm)
    pos = torch.arange(max_w, device=device)
    lengths_f = lengths.to(torch.float32)
    shortest = torch.clamp(torch.ceil(crop * lengths_f), min=1.0)
    span = shortest + torch.floor(torch.rand(shape, generator=generator, device=device)
                                  * (lengths_f - shortest + 1))
    start = torch.floor(torch.rand(shape, generator=generator, device=device) * (lengths_f - span + 1))
    crop_mask = (pos >= start[..., None]) & (pos < (start + span)[..., None])
    inside = pos < lengths[..., None]
    subset = (torch.rand((batch, n_wm, max_w), generator=generator, device=device) < keep) & inside
    forced = torch.floor(torch.rand(shape, generator=generator, device=device) * lengths_f)
    subset |= (~subset.any(-1))[..., None] & (pos == forced[..., None])
    use_crop = torch.rand(shape, generator=generator, device=device) < 0.5
    mask = torch.where(use_crop[..., None], crop_mask, subset).to(values.dtype)
    return (values * mask[..., None]).sum(2) / mask.sum(2)[..., None]


def choose_inputs(collection: Collection, spec: str | None) -> list[str]:
    """``--subset``: None or 'all' -> every level-1 experiment (level-2 ones only when named);
    'best' -> the subset search's members; 'A,B,...' -> those names."""
    if spec is None or spec.strip() in ("", "all"):
        names = [n for n in collection.names if collection.level(n) == 1]
        if not names:
            raise OptionError(f"no level-1 experiment under {collection.root}; name the inputs "
                              "with `subset` NAME,...")
        return names
    return resolve_subset(collection.root, spec, collection.names)
