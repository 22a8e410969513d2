"""Fold-consistent level-2 training: one :class:`~stacker.mlp.StackMLP` per fold (and seed).

For fold ``k`` the model trains on the other folds' OOF rows and is validated on fold ``k``'s rows
(early stopping on the validation metric, best weights kept, ReduceLROnPlateau on the same score).
Its fold-``k`` predictions are the level-2 OOF; it predicts the test set from the first-level
models' fold-``k`` test predictions, so train and test inputs come from the same kind of model.
Note: fold ``k`` both stops the training and scores it (as the FAT2019 winners did); the bias is
small (the leakage test bounds it) and ``stack tune --holdout-fold`` gives an untouched estimate.

Window augmentation: when an input experiment saved per-window predictions
(``fold_<k>/val/<id>.npy``), each training row of that experiment is replaced, every time it is
drawn, by the mean of a random crop or a random subset of its windows. Validation and test rows
use the plain ``probs.csv`` values.

Seeds: each seed trains every fold; an experiment's predictions are the geometric mean over its
seeds. Whole tensors live on the device; there is no DataLoader and no worker process.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from stacker import layout
from stacker.blend import geo_mean
from stacker.collect import Collection
from stacker.errors import LayoutError, OptionError, OutputExistsError
from stacker.metrics import Metric, get_metric
from stacker.mlp import StackMLP
from stacker.selection import resolve_subset

ProgressCallback = Callable[[int, int], None]
BEST_PARAMS_FILE = "best_params.json"
MODEL_FILE = "model.pt"
PARAMS_FILE = "params.json"
HISTORY_FILE = "history.json"
MODEL_FORMAT = 1
MIN_STEPS = 8   # per epoch; caps the batch size on small data


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class MLPParams:
    """Hyper-parameters of one level-2 model. ``hidden`` is the first hidden layer (the second has
    ``hidden // 2``); ``patience`` is early stopping's, ``plateau_*`` ReduceLROnPlateau's;
    ``window_crop`` is the shortest crop (fraction of the windows) and ``window_keep`` the chance
    that a window stays in a random subset, for window augmentation. ``batch_size`` is an upper
    bound: an epoch always has at least ``MIN_STEPS`` steps, so a few hundred rows still train
    with small batches. ``skip`` (1/0): add the inputs' mean log-odds to the output (see
    :class:`~stacker.mlp.StackMLP`)."""

    hidden: int = 128
    bottleneck: int = 32
    dropout: float = 0.2
    lr: float = 5e-3
    weight_decay: float = 1e-6
    batch_size: int = 256
    patience: int = 10
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    max_epochs: int = 60
    window_crop: float = 0.5
    window_keep: float = 0.75
    skip: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping, *, source: str = "params") -> "MLPParams":
        """Validated params from a mapping; missing keys take the defaults. OptionError names the
        key, the allowed range and the value."""
        known = {f.name: f for f in fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            raise OptionError(f"{source}: unknown parameter '{unknown[0]}'; known: "
                              f"{', '.join(known)}")
        out = {}
        for key, value in values.items():
            kind = int if known[key].type in ("int", int) else float
            try:
                if isinstance(value, bool) or (kind is int and float(value) != int(value)):
                    raise ValueError
                out[key] = kind(value)
            except (TypeError, ValueError):
                raise OptionError(f"{source}: parameter '{key}' must be a number ({kind.__name__}), "
                                  f"got {value!r}") from None
        params = cls(**out)
        checks = [("hidden", params.hidden >= 1, ">= 1"), ("bottleneck", params.bottleneck >= 1, ">= 1"),
                  ("dropout", 0 <= params.dropout < 1, "in [0, 1)"), ("lr", params.lr > 0, "> 0"),
                  ("weight_decay", params.weight_decay >= 0, ">= 0"),
                  ("batch_size", params.batch_size >= 1, ">= 1"), ("patience", params.patience >= 1, ">= 1"),
                  ("plateau_factor", 0 < params.plateau_factor < 1, "in (0, 1)"),
                  ("plateau_patience", params.plateau_patience >= 0, ">= 0"),
                  ("max_epochs", params.max_epochs >= 1, ">= 1"),
                  ("window_crop", 0 < params.window_crop <= 1, "in (0, 1]"),
                  ("window_keep", 0 < params.window_keep <= 1, "in (0, 1]"),
                  ("skip", params.skip in (0, 1), "0 or 1")]
        for key, ok, allowed in checks:
            if not ok:
                raise OptionError(f"{source}: parameter '{key}' must be {allowed}, "
                                  f"got {getattr(params, key)}")
        return params


def best_params_path(root: Path | str) -> Path:
    return Path(root) / layout.STACK_DIR / BEST_PARAMS_FILE


def read_params(spec: str | Path | None, root: Path | str) -> tuple[MLPParams, dict]:
    """``--params``: None -> defaults; 'best' -> ``<root>/.stack/best_params.json`` (written by
    ``stack tune``); otherwise a JSON file, either flat ``{name: value}`` or ``{"params": {...}}``.
    Returns (params, the whole JSON document or {})."""
    if spec is None:
        return MLPParams(), {}
    path = best_params_path(root) if str(spec) == "best" else Path(spec)
    if not path.exists():
        hint = "run `stack tune` first" if str(spec) == "best" else "check the path"
        raise OptionError(f"--params: {path} does not exist; {hint}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise OptionError(f"--params: {path} is not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(document, dict):
        raise OptionError(f"--params: {path} must hold a JSON object of parameters")
    values = document["params"] if "params" in document else document
    if not isinstance(values, dict):
        raise OptionError(f"--params: {path}: 'params' must be a JSON object")
    return MLPParams.from_dict(values, source=str(path)), document if "params" in document else {}


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; 'cuda' without a GPU is an OptionError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda: no CUDA device is available here; use auto or cpu")
    if device not in ("cpu", "cuda"):
        raise OptionError(f"--device must be auto, cpu or cuda, got '{device}'")
    return device


# ---------------------------------------------------------------- inputs


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


def _header_columns(path: Path, name: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
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


# ---------------------------------------------------------------- one model


@dataclass(frozen=True)
class FoldFit:
    """One trained fold model. val_probs: (n_val, n_classes); test_probs: (n_test, n_classes) or
    None; history: one dict per epoch {epoch, train_loss, val_loss, val_score, lr}."""

    fold: int
    seed: int
    score: float
    best_epoch: int
    val_probs: np.ndarray
    test_probs: np.ndarray | None
    state_dict: dict
    config: dict
    history: list

    def predict(self, x: np.ndarray, *, single_label: bool, device: str = "cpu") -> np.ndarray:
        """This model's probabilities for x: (n, n_models, n_classes) -> (n, n_classes)."""
        model = StackMLP.from_config(self.config).to(device)
        model.load_state_dict(self.state_dict)
        model.eval()
        return _predict_array(model, x, single_label, device)


def effective_batch_size(batch_size: int, n_train: int) -> int:
    """``batch_size``, capped so that an epoch over ``n_train`` rows has >= MIN_STEPS steps."""
    return max(1, min(batch_size, math.ceil(n_train / MIN_STEPS)))


def fold_seed(seed: int, fold: int) -> int:
    """A distinct, reproducible torch seed for each (seed, fold) pair."""
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])


def _probs(logits: torch.Tensor, single_label: bool) -> np.ndarray:
    out = torch.softmax(logits, dim=1) if single_label else torch.sigmoid(logits)
    return out.detach().cpu().numpy().astype(np.float32)


@contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` intra-op threads (restored afterwards); None leaves torch's setting alone.
    One thread is the default on the CPU: these nets are small, and extra threads only wait on
    each other (ten times slower on a busy 2-core machine)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_fold(data: Level2Data, k: int, *, params: MLPParams, seed: int = 0,
             metric: str | Metric = "lwlrap", device: str = "cpu", with_test: bool = True,
             threads: int | None = 1) -> FoldFit:
    """Train the fold-``k`` model: rows of the other folds train it, fold ``k``'s rows validate it.

    threads: torch intra-op threads while training on the CPU (None: torch's default).
    """
    with torch_threads(threads if device == "cpu" else None):
        return _fit_fold(data, k, params=params, seed=seed, metric=get_metric(metric),
                         device=device, with_test=with_test)


def _fit_fold(data: Level2Data, k: int, *, params: MLPParams, seed: int, metric: Metric,
              device: str, with_test: bool) -> FoldFit:
    train_rows = np.flatnonzero(data.fold != k)
    val_rows = np.flatnonzero(data.fold == k)
    if not len(val_rows) or not len(train_rows):
        raise OptionError(f"fold {k} leaves no rows to train or to validate on; folds present: "
                          f"{data.fold_numbers}")
    torch.manual_seed(fold_seed(seed, k))
    generator = torch.Generator(device=device).manual_seed(fold_seed(seed, k))
    n_models, n_classes = data.x.shape[1:]
    n_features = n_models * n_classes
    n_train = len(train_rows)
    batch_size = effective_batch_size(params.batch_size, n_train)
    x_train = torch.as_tensor(data.x[train_rows], device=device)
    x_val = torch.as_tensor(data.x[val_rows].reshape(len(val_rows), n_features), device=device)
    y_val_np = data.y[val_rows]
    if data.single_label:
        loss_fn = nn.CrossEntropyLoss()
        y_train = torch.as_tensor(data.y[train_rows].argmax(1), device=device)
        y_val = torch.as_tensor(y_val_np.argmax(1), device=device)
    else:
        loss_fn = nn.BCEWithLogitsLoss()
        y_train = torch.as_tensor(data.y[train_rows], dtype=torch.float32, device=device)
        y_val = torch.as_tensor(y_val_np, dtype=torch.float32, device=device)
    windows = None
    if data.windows is not None:
        windows = (torch.as_tensor(data.windows.models, device=device),
                   torch.as_tensor(data.windows.values[train_rows], device=device),
                   torch.as_tensor(data.windows.lengths[train_rows], device=device))

    skip = "none" if not params.skip else ("log" if data.single_label else "logit")
    model = StackMLP(n_features, n_classes, hidden=params.hidden, bottleneck=params.bottleneck,
                     dropout=params.dropout, skip=skip).to(device)
    model.set_input_scale(x_train.reshape(n_train, n_features))
    if skip == "none":
        _init_head_bias(model, data.y[train_rows], data.single_label)
    # the skip path is a fixed function of the inputs: compute it once unless windows vary them
    skip_train = None
    if skip != "none" and windows is None:
        with torch.no_grad():
            skip_train = model.skip_logits(x_train.reshape(n_train, n_features))
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay,
                                 fused=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max" if metric.greater_is_better else "min",
        factor=params.plateau_factor, patience=params.plateau_patience)
    best_score, best_epoch, best_state, stale = float("nan"), 0, None, 0
    history = []
    for epoch in range(1, params.max_epochs + 1):
        model.train()
        order = torch.randperm(n_train, generator=generator, device=device)
        total = torch.zeros((), device=device)
        for start in range(0, n_train, batch_size):
            idx = order[start:start + batch_size]
            xb = x_train.index_select(0, idx)
            if windows is not None:
                wm, wv, wl = windows
                xb = xb.clone()
                xb[:, wm] = window_means(wv[idx], wl[idx], crop=params.window_crop,
                                         keep=params.window_keep, generator=generator)
            logits = model(xb.reshape(len(idx), n_features),
                           None if skip_train is None else skip_train.index_select(0, idx))
            loss = loss_fn(logits, y_train.index_select(0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = float(loss_fn(logits, y_val))
        score = metric(y_val_np, _probs(logits, data.single_label))
        history.append({"epoch": epoch, "train_loss": float(total) / n_train, "val_loss": val_loss,
                        "val_score": score, "lr": optimizer.param_groups[0]["lr"]})
        if best_state is None or metric.is_better(score, best_score):
            best_score, best_epoch, stale = score, epoch, 0
            best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        else:
            stale += 1
        if not math.isnan(score):
            scheduler.step(score)
        if stale >= params.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    test = data.test_of(k) if with_test else None
    with torch.no_grad():
        val_probs = _probs(model(x_val), data.single_label)
        test_probs = None if test is None else _predict_array(model, test, data.single_label, device)
    return FoldFit(fold=k, seed=seed, score=best_score, best_epoch=best_epoch, val_probs=val_probs,
                   test_probs=test_probs, config=dict(model.config),
                   state_dict={key: value.cpu() for key, value in best_state.items()},
                   history=history)


def _init_head_bias(model: StackMLP, y: np.ndarray, single_label: bool) -> None:
    """Start the output at the training rows' class prior (log-odds, or log-probability for a
    softmax), so the first epochs are not spent learning it."""
    prior = np.clip(y.mean(0), 1.0 / (len(y) + 2), 1 - 1.0 / (len(y) + 2))
    bias = np.log(prior) if single_label else np.log(prior) - np.log1p(-prior)
    with torch.no_grad():
        model.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def _predict_array(model: StackMLP, x: np.ndarray, single_label: bool, device: str) -> np.ndarray:
    """x: (n, n_models, n_classes) -> probs (n, n_classes), in one pass (reproducible)."""
    with torch.no_grad():
        flat = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1),
                               device=device)
        return _probs(model(flat), single_label)


def geometric_mean(probs: np.ndarray, *, axis: int = 0, single_label: bool = False) -> np.ndarray:
    """:func:`stacker.blend.geo_mean` along ``axis`` (the blend ``stack blend`` uses), as float32;
    rows renormalised to sum 1 for single-label probabilities."""
    out = geo_mean(probs, axis=axis)
    if single_label:
        out /= out.sum(axis=-1, keepdims=True)
    return out.astype(np.float32)


# ---------------------------------------------------------------- every fold, every seed


@dataclass(frozen=True)
class Level2Result:
    """A trained level-2 run.

    oof: array of shape (n_seeds, n_rows, n_classes): each seed's OOF (fold-k rows by fold-k model).
    test: array of shape (n_seeds, n_folds, n_test, n_classes); ``test[s, i]`` from fold_numbers[i].
    fits: {(seed, fold): FoldFit}.
    """

    names: tuple[str, ...]
    params: MLPParams
    seeds: tuple[int, ...]
    metric: str
    single_label: bool
    fold_numbers: tuple[int, ...]
    fold: np.ndarray
    y: np.ndarray
    oof: np.ndarray
    test: np.ndarray
    fits: dict
    window_augmentation: bool

    def combined(self, seeds: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(oof (n_rows, n_classes), test (n_folds, n_test, n_classes)): geometric mean over
        ``seeds`` (default all)."""
        picks = [self.seeds.index(s) for s in (seeds if seeds is not None else self.seeds)]
        return (geometric_mean(self.oof[picks], single_label=self.single_label),
                geometric_mean(self.test[picks], single_label=self.single_label))

    def scores(self, seeds: Sequence[int] | None = None) -> tuple[float, dict[int, float]]:
        """(overall CV, {fold: score}) of the combined OOF of ``seeds``."""
        metric = get_metric(self.metric)
        oof, _ = self.combined(seeds)
        per_fold = {k: metric(self.y[self.fold == k], oof[self.fold == k]) for k in self.fold_numbers}
        return metric(self.y, oof), per_fold


def train_level2(collection: Collection, names: Sequence[str], *, params: MLPParams = MLPParams(),
                 seeds: Sequence[int] = (0,), metric: str | Metric = "lwlrap", device: str = "cpu",
                 use_windows: bool = True, on_progress: ProgressCallback | None = None) -> Level2Result:
    """Train one model per (seed, fold) on the inputs ``names`` of ``collection``.

    on_progress: called as ``on_progress(done, n_seeds * n_folds)`` after each model.
    """
    metric = get_metric(metric)
    if not names:
        raise OptionError("no input experiments; pass --subset NAME,... or add level-1 experiments")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise OptionError(f"--seeds must list distinct integers, got {list(seeds)}")
    data = level2_data(collection, names, use_windows=use_windows)
    folds = data.fold_numbers
    n_rows, n_classes = data.y.shape
    oof = np.zeros((len(seeds), n_rows, n_classes), dtype=np.float32)
    test = np.zeros((len(seeds), len(folds), data.test.shape[1], n_classes), dtype=np.float32)
    fits = {}
    total = len(seeds) * len(folds)
    if on_progress:
        on_progress(0, total)
    for s, seed in enumerate(seeds):
        for i, k in enumerate(folds):
            fit = fit_fold(data, k, params=params, seed=seed, metric=metric, device=device)
            oof[s, data.fold == k] = fit.val_probs
            test[s, i] = fit.test_probs
            fits[(seed, k)] = fit
            if on_progress:
                on_progress(s * len(folds) + i + 1, total)
    return Level2Result(names=tuple(names), params=params, seeds=tuple(int(s) for s in seeds),
                        metric=metric.name, single_label=data.single_label,
                        fold_numbers=tuple(folds), fold=data.fold, y=data.y, oof=oof, test=test,
                        fits=fits, window_augmentation=data.windows is not None)


def choose_inputs(collection: Collection, spec: str | None) -> list[str]:
    """``--subset``: None or 'all' -> every level-1 experiment (level-2 ones only when named);
    'best' -> the subset search's members; 'A,B,...' -> those names."""
    if spec is None or spec.strip() in ("", "all"):
        names = [n for n in collection.names if collection.level(n) == 1]
        if not names:
            raise OptionError(f"no level-1 experiment under {collection.root}; name the inputs "
                              "with --subset NAME,...")
        return names
    return resolve_subset(collection.root, spec, collection.names)


# ---------------------------------------------------------------- writing and reloading


def check_output(root: Path | str, name: str, *, force: bool, inputs: Sequence[str] = ()) -> None:
    """Refuse an output name that exists (unless ``force``) or that is one of the inputs."""
    if not name or name.startswith((".", "_")) or "/" in name or "\\" in name:
        raise OptionError(f"--name '{name}' is not a usable experiment folder name; use letters, "
                          "digits, '-' and '_' (not starting with '.' or '_')")
    if name in inputs:
        raise OptionError(f"--name '{name}' is one of the input experiments; choose a new name")
    if layout.experiment_dir(root, name).exists() and not force:
        raise OutputExistsError(f"experiment '{name}' already exists under {root}; choose another "
                                "--name or pass --force to replace it")


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
    cv, per_fold = result.scores(seeds)
    staging = layout.stack_dir(root) / "staging" / f"{name}-{uuid.uuid4().hex[:8]}"
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
                "scores": {str(f.seed): f.score for f in fits}, "model": fits[0].config})
            layout.atomic_write_json(fold_folder / HISTORY_FILE, [
                {**entry, "seed": f.seed} for f in fits for entry in f.history])
        meta = {"model": "stack_mlp", "level": 2, "inputs": list(result.names),
                "params": result.params.to_dict(), "seeds": seeds, "seed": seeds[0],
                "fold_hash": folds.hash, "metric": result.metric, "cv": cv,
                "cv_folds": {str(k): v for k, v in per_fold.items()},
                "window_augmentation": result.window_augmentation,
                "single_label": result.single_label}
        meta.update(extra_meta or {})
        layout.write_meta(staging, name, meta)
        target = layout.experiment_dir(root, name)
        if target.exists():
            check_output(root, name, force=force, inputs=result.names)
            trash = staging.with_name(staging.name + "-replaced")
            target.rename(trash)
            layout.experiment_dir(staging, name).rename(target)
            shutil.rmtree(trash)
        else:
            layout.experiment_dir(staging, name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
        per_seed = np.stack([_predict_array(m, test_inputs[i], record["single_label"], device)
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
