"""Fold-consistent level-2 training: one :class:`~stacker.level2.net.StackMLP` per fold (and seed).

For fold ``k`` the model trains on the other folds' OOF rows. By default (``early_stopping=
"inner-holdout"``) a seeded, label-stratified fraction ``params.inner_fraction`` of those training
rows is set aside as the early-stopping rows: they choose the best epoch (best weights kept),
drive ReduceLROnPlateau and stop the training. Fold ``k``'s labels take no part in the fold-``k``
model, so its fold-``k`` predictions are true out-of-fold predictions and the level-2 CV is as
honest as a first-level one. Then (``params.refit``, the default) a fresh net trains on *all*
the other folds' rows for the chosen number of epochs, replaying the early-stopped run's
learning rates, so the fold model learns from as many rows as a first-level fold model does
(80% rather than 64% of the data with 5 folds). ``early_stopping="fold"`` is the old behaviour (fold ``k`` stops its
own model, as the FAT2019 winners did): its CV is optimistic. See :mod:`stacker.level2.inner`.
The fold-``k`` model predicts the test set from the first-level models' fold-``k`` test
predictions, so train and test inputs come from the same kind of model.

Window augmentation: when an input experiment saved per-window predictions
(``fold_<k>/val/<id>.npy``), each training row of that experiment is replaced, every time it is
drawn, by the mean of a random crop or a random subset of its windows. Early-stopping,
validation and test rows use the plain ``probs.csv`` values.

Seeds: each seed trains every fold; an experiment's predictions are the geometric mean over its
seeds. Whole tensors live on the device; there is no DataLoader and no worker process.

The parameters live in :mod:`stacker.level2.params`, the inputs in :mod:`stacker.level2.inputs`,
writing and reloading a trained run in :mod:`stacker.level2.store`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch import nn

from stacker.blend import geo_mean
from stacker.errors import OptionError
from stacker.layout.collect import Collection
from stacker.level2.inner import INNER_HOLDOUT, ON_FOLD, check_mode, inner_holdout_mask
from stacker.level2.inputs import Level2Data, shared_or_built, window_means
from stacker.level2.net import StackMLP
from stacker.level2.params import MLPParams
from stacker.metrics import Metric, check_defined, fold_scores, get_metric
from stacker.parallel import map_units
from stacker.runtime import ProgressCallback, fold_seed, torch_threads

MIN_STEPS = 8   # per epoch; caps the batch size on small data


# ---------------------------------------------------------------- one model


@dataclass(frozen=True)
class FoldFit:
    """One trained fold model. val_probs: (n_val, n_classes), fold ``k``'s predictions;
    test_probs: (n_test, n_classes) or None; history: one dict per epoch {epoch, train_loss,
    val_loss, val_score, lr}, where val_* are measured on the early-stopping rows.
    score: fold ``k``'s score of val_probs; stop_score: the best epoch's score on the
    early-stopping rows (the same as score when early_stopping is "fold").
    stop_rows: positions (in the data given to :func:`fit_fold`) of the early-stopping rows.
    refitted: the model (state_dict, predictions) is a fresh net trained on every training row
    for best_epoch epochs, after the early-stopped run chose that count (``params.refit``)."""

    fold: int
    seed: int
    score: float
    best_epoch: int
    val_probs: np.ndarray
    test_probs: np.ndarray | None
    state_dict: dict
    config: dict
    history: list
    stop_score: float = float("nan")
    early_stopping: str = INNER_HOLDOUT
    stop_rows: np.ndarray | None = None
    refitted: bool = False

    def predict(self, x: np.ndarray, *, single_label: bool, device: str = "cpu") -> np.ndarray:
        """This model's probabilities for x: (n, n_models, n_classes) -> (n, n_classes)."""
        model = StackMLP.from_config(self.config).to(device)
        model.load_state_dict(self.state_dict)
        model.eval()
        return predict_array(model, x, single_label, device)


def effective_batch_size(batch_size: int, n_train: int) -> int:
    """``batch_size``, capped so that an epoch over ``n_train`` rows has >= MIN_STEPS steps."""
    return max(1, min(batch_size, math.ceil(n_train / MIN_STEPS)))


def _probs(logits: torch.Tensor, single_label: bool) -> np.ndarray:
    out = torch.softmax(logits, dim=1) if single_label else torch.sigmoid(logits)
    return out.detach().cpu().numpy().astype(np.float32)


def split_rows(data: Level2Data, k: int, *, early_stopping: str, fraction: float,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit_rows, stop_rows, val_rows): positions of the rows that train the fold-``k`` model,
    that early-stop it, and that it predicts out of fold. Under "inner-holdout" the stop rows
    are a seeded, stratified ``fraction`` of the other folds' rows (chosen from their labels
    only); under "fold" they are fold ``k``'s rows."""
    check_mode(early_stopping)
    train_rows = np.flatnonzero(data.fold != k)
    val_rows = np.flatnonzero(data.fold == k)
    if not len(val_rows) or not len(train_rows):
        raise OptionError(f"fold {k} leaves no rows to train or to validate on; folds present: "
                          f"{data.fold_numbers}")
    if early_stopping == ON_FOLD:
        return train_rows, val_rows, val_rows
    mask = inner_holdout_mask(data.y[train_rows], fraction, seed=fold_seed(seed, k))
    return train_rows[~mask], train_rows[mask], val_rows


def fit_fold(data: Level2Data, k: int, *, params: MLPParams, seed: int = 0,
             metric: str | Metric = "lwlrap", device: str = "cpu", with_test: bool = True,
             threads: int | None = 1, early_stopping: str = INNER_HOLDOUT) -> FoldFit:
    """Train the fold-``k`` model on rows of the other folds and predict fold ``k``'s rows.

    early_stopping: "inner-holdout" (default; fold ``k``'s labels are never used) or "fold"
    (fold ``k`` early-stops its own model: optimistic); see :func:`split_rows`.
    threads: torch intra-op threads while training on the CPU (None: torch's default).
    """
    with torch_threads(threads if device == "cpu" else None):
        return _fit_fold(data, k, params=params, seed=seed, metric=get_metric(metric),
                         device=device, with_test=with_test, early_stopping=early_stopping)


def _fit_fold(data: Level2Data, k: int, *, params: MLPParams, seed: int, metric: Metric,
              device: str, with_test: bool, early_stopping: str) -> FoldFit:
    train_rows, stop_rows, val_rows = split_rows(data, k, early_stopping=early_stopping,
                                                 fraction=params.inner_fraction, seed=seed)
    torch.manual_seed(fold_seed(seed, k))
    generator = torch.Generator(device=device).manual_seed(fold_seed(seed, k))
    n_features = data.x.shape[1] * data.x.shape[2]
    run = _Training(data, train_rows, params=params, device=device, generator=generator)
    x_stop = torch.as_tensor(data.x[stop_rows].reshape(len(stop_rows), n_features), device=device)
    y_stop_np = data.y[stop_rows]
    y_stop = run.targets(stop_rows)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        run.optimizer, mode="max" if metric.greater_is_better else "min",
        factor=params.plateau_factor, patience=params.plateau_patience)
    best_score, best_epoch, best_state, stale = float("nan"), 0, None, 0
    history = []
    for epoch in range(1, params.max_epochs + 1):
        lr = run.optimizer.param_groups[0]["lr"]
        train_loss = run.epoch()
        run.model.eval()
        with torch.no_grad():
            logits = run.model(x_stop)
            val_loss = float(run.loss_fn(logits, y_stop))
        score = metric(y_stop_np, _probs(logits, data.single_label))
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "val_score": score, "lr": lr})
        if best_state is None or metric.is_better(score, best_score):
            best_score, best_epoch, stale = score, epoch, 0
            best_state = {key: value.detach().clone() for key, value in run.model.state_dict().items()}
        else:
            stale += 1
        if not math.isnan(score):
            scheduler.step(score)
        if stale >= params.patience:
            break
    model = run.model
    model.load_state_dict(best_state)
    refitted = bool(params.refit) and early_stopping == INNER_HOLDOUT
    if refitted:
        # a fresh net on every training row (fit + early-stopping rows) for the best epoch count,
        # each epoch at the learning rate the early-stopped run used: still blind to fold k
        all_rows = np.sort(np.concatenate([train_rows, stop_rows]))
        torch.manual_seed(fold_seed(seed, k))
        generator.manual_seed(fold_seed(seed, k))
        refit = _Training(data, all_rows, params=params, device=device, generator=generator)
        for entry in history[:best_epoch]:
            for group in refit.optimizer.param_groups:
                group["lr"] = entry["lr"]
            refit.epoch()
        model = refit.model
        best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    model.eval()
    test = data.test_of(k) if with_test else None
    val_probs = predict_array(model, data.x[val_rows], data.single_label, device)
    test_probs = None if test is None else predict_array(model, test, data.single_label, device)
    # fold k's labels are read only here, to report the score of predictions already made
    score = best_score if early_stopping == ON_FOLD else metric(data.y[val_rows], val_probs)
    return FoldFit(fold=k, seed=seed, score=score, best_epoch=best_epoch, val_probs=val_probs,
                   test_probs=test_probs, config=dict(model.config),
                   state_dict={key: value.cpu() for key, value in best_state.items()},
                   history=history, stop_score=best_score, early_stopping=early_stopping,
                   stop_rows=stop_rows, refitted=refitted)


class _Training:
    """A fresh :class:`StackMLP` with its optimiser, set up on ``rows`` of ``data``; each
    :meth:`epoch` is one shuffled pass over those rows (window augmentation included)."""

    def __init__(self, data: Level2Data, rows: np.ndarray, *, params: MLPParams, device: str,
                 generator: torch.Generator):
        self.data, self.params, self.device, self.generator = data, params, device, generator
        n_models, n_classes = data.x.shape[1:]
        self.n_features = n_models * n_classes
        self.n_rows = len(rows)
        self.batch_size = effective_batch_size(params.batch_size, self.n_rows)
        self.x = torch.as_tensor(data.x[rows], device=device)
        self.y = self.targets(rows)
        self.loss_fn = nn.CrossEntropyLoss() if data.single_label else nn.BCEWithLogitsLoss()
        self.windows = None
        if data.windows is not None:
            self.windows = (torch.as_tensor(data.windows.models, device=device),
                            torch.as_tensor(data.windows.values[rows], device=device),
                            torch.as_tensor(data.windows.lengths[rows], device=device))
        skip = "none" if not params.skip else ("log" if data.single_label else "logit")
        self.model = StackMLP(self.n_features, n_classes, hidden=params.hidden,
                              bottleneck=params.bottleneck, dropout=params.dropout,
                              skip=skip).to(device)
        flat = self.x.reshape(self.n_rows, self.n_features)
        self.model.set_input_scale(flat)
        if skip == "none":
            _init_head_bias(self.model, data.y[rows], data.single_label)
        # the skip path is a fixed function of the inputs: computed once unless windows vary them
        self.skip = None
        if skip != "none" and self.windows is None:
            with torch.no_grad():
                self.skip = self.model.skip_logits(flat)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=params.lr,
                                          weight_decay=params.weight_decay, fused=True)

    def targets(self, rows: np.ndarray) -> torch.Tensor:
        """The loss's targets for ``rows``: class indices (single-label) or the label matrix."""
        if self.data.single_label:
            return torch.as_tensor(self.data.y[rows].argmax(1), device=self.device)
        return torch.as_tensor(self.data.y[rows], dtype=torch.float32, device=self.device)

    def epoch(self) -> float:
        """One pass over the rows; the mean training loss."""
        self.model.train()
        order = torch.randperm(self.n_rows, generator=self.generator, device=self.device)
        total = torch.zeros((), device=self.device)
        for start in range(0, self.n_rows, self.batch_size):
            idx = order[start:start + self.batch_size]
            xb = self.x.index_select(0, idx)
            if self.windows is not None:
                wm, wv, wl = self.windows
                xb = xb.clone()
                xb[:, wm] = window_means(wv[idx], wl[idx], crop=self.params.window_crop,
                                         keep=self.params.window_keep, generator=self.generator)
            logits = self.model(xb.reshape(len(idx), self.n_features),
                                None if self.skip is None else self.skip.index_select(0, idx))
            loss = self.loss_fn(logits, self.y.index_select(0, idx))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * len(idx)
        return float(total) / self.n_rows


def _init_head_bias(model: StackMLP, y: np.ndarray, single_label: bool) -> None:
    """Start the output at the training rows' class prior (log-odds, or log-probability for a
    softmax), so the first epochs are not spent learning it."""
    prior = np.clip(y.mean(0), 1.0 / (len(y) + 2), 1 - 1.0 / (len(y) + 2))
    bias = np.log(prior) if single_label else np.log(prior) - np.log1p(-prior)
    with torch.no_grad():
        model.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def predict_array(model: StackMLP, x: np.ndarray, single_label: bool, device: str) -> np.ndarray:
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
    early_stopping: "inner-holdout" (honest OOF) or "fold" (optimistic CV); see :func:`fit_fold`.
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
    early_stopping: str = INNER_HOLDOUT

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
        per_fold = dict(zip(self.fold_numbers, fold_scores(self.y, oof, self.fold, self.fold_numbers, metric)))
        return metric(self.y, oof), per_fold


def _fit_unit(unit: tuple[int, int], *, data: Level2Data, params: MLPParams, metric: Metric,
              device: str, early_stopping: str) -> FoldFit:
    """One (seed, fold) model, here or on a cluster worker."""
    seed, k = unit
    return fit_fold(data, k, params=params, seed=seed, metric=metric, device=device,
                    early_stopping=early_stopping)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How :func:`train_level2` trains: the MLP's ``params``; ``seeds`` (each trains every fold);
    the validation ``metric``; the torch ``device``; ``use_windows`` (window augmentation when an
    input saved per-window predictions); ``early_stopping`` ("inner-holdout", the default: honest
    OOF, or "fold": optimistic; see :func:`fit_fold`); ``scheduler``: a dask.distributed scheduler
    address, where each (seed, fold) model is one task on its workers (same results as here), or
    None to train them here, one after another."""

    params: MLPParams = MLPParams()
    seeds: Sequence[int] = (0,)
    metric: str | Metric = "lwlrap"
    device: str = "cpu"
    use_windows: bool = True
    early_stopping: str = INNER_HOLDOUT
    scheduler: str | None = None


def train_level2(collection: Collection, names: Sequence[str], config: TrainConfig | None = None, *,
                 data: Level2Data | None = None, on_progress: ProgressCallback | None = None,
                 **options) -> Level2Result:
    """Train one model per (seed, fold) on the inputs ``names`` of ``collection``.

    config: how to train (:class:`TrainConfig`); ``options`` are its fields by keyword
    (``train_level2(col, names, params=..., seeds=[1, 2])``), applied over ``config`` if given.
    data: the inputs already in memory (``level2_data(collection, names)``), so that one run that
    tunes and trains reads them once; None reads them here. See :func:`~stacker.level2.inputs.
    shared_or_built` for how ``use_windows`` applies to them.
    on_progress: called as ``on_progress(done, n_seeds * n_folds)`` after each model.
    """
    config = TrainConfig(**options) if config is None else replace(config, **options)
    seeds, early_stopping = config.seeds, config.early_stopping
    metric = get_metric(config.metric)
    check_mode(early_stopping)
    if not names:
        raise OptionError("no input experiments; pass `subset` NAME,... or add level-1 experiments")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise OptionError(f"`seeds` must list distinct integers, got {list(seeds)}")
    check_defined(metric, collection.y, collection.fold, collection.fold_numbers)
    data = shared_or_built(collection, names, data, use_windows=config.use_windows)
    folds = data.fold_numbers
    n_rows, n_classes = data.y.shape
    oof = np.zeros((len(seeds), n_rows, n_classes), dtype=np.float32)
    test = np.zeros((len(seeds), len(folds), data.test.shape[1], n_classes), dtype=np.float32)
    units = [(seed, k) for seed in seeds for k in folds]
    fitted = map_units(_fit_unit, units, scheduler=config.scheduler, on_progress=on_progress,
                       shared=dict(data=data, params=config.params, metric=metric,
                                   device=config.device, early_stopping=early_stopping))
    fits = dict(zip(units, fitted))
    for s, seed in enumerate(seeds):
        for i, k in enumerate(folds):
            oof[s, data.fold == k] = fits[(seed, k)].val_probs
            test[s, i] = fits[(seed, k)].test_probs
    return Level2Result(names=tuple(names), params=config.params,
                        seeds=tuple(int(s) for s in seeds), metric=metric.name,
                        single_label=data.single_label, fold_numbers=tuple(folds), fold=data.fold,
                        y=data.y, oof=oof, test=test, fits=fits,
                        window_augmentation=data.windows is not None,
                        early_stopping=early_stopping)
