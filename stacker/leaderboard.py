"""Scores of the experiments of a collection: overall CV, per fold, and the OOF correlation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stacker.layout.collect import Collection
from stacker.metrics import Metric, fold_scores, get_metric


def leaderboard(collection: Collection, metric: str | Metric = "lwlrap") -> pd.DataFrame:
    """One row per experiment, best first: overall OOF CV, mean and std of the per-fold scores,
    and each fold's score (columns ``fold_<k>``)."""
    metric = get_metric(metric)
    rows = []
    for m, name in enumerate(collection.names):
        scores = collection.oof[:, m]
        per_fold = fold_scores(collection.y, scores, collection.fold, collection.fold_numbers, metric)
        row = {"experiment": name, "level": collection.level(name),
               "cv": metric(collection.y, scores),
               "fold_mean": float(np.mean(per_fold)), "fold_std": float(np.std(per_fold))}
        row.update({f"fold_{k}": s for k, s in zip(collection.fold_numbers, per_fold)})
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table.sort_values("cv", ascending=not metric.greater_is_better, kind="stable")
    return table.reset_index(drop=True)


def oof_correlation(collection: Collection) -> pd.DataFrame:
    """Pearson correlation of the experiments' OOF probabilities (all rows and classes flattened),
    shape (n_models, n_models)."""
    flat = collection.oof.transpose(1, 0, 2).reshape(collection.n_models, -1).astype(np.float64)
    if collection.n_models == 1:
        corr = np.ones((1, 1))
    else:
        corr = np.corrcoef(flat)
    return pd.DataFrame(corr, index=list(collection.names), columns=list(collection.names))
