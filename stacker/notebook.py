"""``stacker.import_predictions``: a notebook's OOF and test predictions, in memory, as one
experiment of the layout: the same checks and messages as `stack import`
(:func:`stacker.layout.importing.import_experiment` does the work), and a result that renders as
a table in Jupyter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from stacker import layout
from stacker.layout.importing import Imported, import_experiment
from stacker.metrics import fold_scores, get_metric

METRIC = "lwlrap"     # the score `stack import` prints


@dataclass(frozen=True)
class ImportResult:
    """An imported experiment and its out-of-fold score. experiment: what was written (its
    ``oof`` (n_rows, n_classes), ``test`` (n_folds, n_test, n_classes), ``meta``); cv: the OOF
    :data:`METRIC`; fold_cv: {fold number: score}; n_folds, n_classes: of folds.csv."""

    experiment: Imported
    cv: float
    fold_cv: dict
    n_classes: int

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def path(self) -> Path:
        return self.experiment.path

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the import noticed and fixed (values rounded into [0, 1], ...), one line each."""
        return self.experiment.warnings

    def summary(self) -> str:
        """One line: where it went, its rows, classes and folds, and its OOF score (what `stack
        import` prints)."""
        return (f"imported '{self.name}' into {self.path}: {len(self.experiment.oof)} OOF rows, "
                f"{len(self.experiment.test_ids)} test rows "
                f"({self.experiment.meta['test_predictions']}), {self.n_classes} classes, "
                f"{len(self.fold_cv)} folds; OOF {METRIC} {self.cv:.4f}")

    def to_frame(self):
        """One row (concatenate several with ``pandas.concat``): experiment, OOF and test rows,
        classes, folds, how the test predictions are kept, the CV, and each fold's score."""
        import pandas as pd

        scores = list(self.fold_cv.values())
        row = {"experiment": self.name, "oof_rows": len(self.experiment.oof),
               "test_rows": len(self.experiment.test_ids), "classes": self.n_classes,
               "folds": len(self.fold_cv), "test_predictions": self.experiment.meta["test_predictions"],
               METRIC: self.cv, "fold_mean": float(np.mean(scores)), "fold_std": float(np.std(scores))}
        row.update({f"fold_{k}": s for k, s in self.fold_cv.items()})
        return pd.DataFrame([row])

    def _repr_html_(self) -> str:
        from html import escape

        table = self.to_frame().to_html(index=False, float_format=lambda v: f"{v:.4f}")
        return f"<p>imported <b>{escape(self.name)}</b> into <code>{escape(str(self.path))}</code></p>{table}"


def import_predictions(name: str, *, oof, test, ids=None, test_ids=None,
                       classes: Sequence[str] | str | None = None,
                       root: Path | str = layout.DEFAULT_ROOT, from_logits: str | None = None,
                       format: str = "csv", force: bool = False) -> ImportResult:
    """Write experiment ``name`` under ``root`` from predictions in memory (or files), checked
    against ``<root>/folds.csv`` as `stack import` checks them; nothing is written on an error.

    oof: (n_rows, n_classes) numpy array in folds.csv row order (or ``ids`` order), or a
    DataFrame with the row ids in a named index or its first column, then one column per class.
    test: (n_test, n_classes) fold-averaged or (n_folds, n_test, n_classes) per fold, or a
    DataFrame as ``oof``. ids / test_ids: the id of each array row (a list, array or Series, a
    DataFrame such as sample_submission whose class columns then name the arrays' column
    order, or a CSV path). classes: the class of each array column, in order (a list, or
    "a,b,c"). from_logits, format, force: as `stack import`'s options.
    """
    if isinstance(classes, str):
        classes = [c for c in classes.split(",") if c.strip()]
    imported = import_experiment(root, name, oof=oof, test=test, ids=ids, test_ids=test_ids,
                                 classes=classes, from_logits=from_logits, format=format, force=force)
    folds = layout.read_folds(root)
    metric = get_metric(METRIC)
    per_fold = fold_scores(folds.y, imported.oof, folds.fold, folds.fold_numbers, metric)
    return ImportResult(experiment=imported, cv=float(metric(folds.y, imported.oof)),
                        fold_cv={int(k): float(s) for k, s in zip(folds.fold_numbers, per_fold)},
                        n_classes=len(folds.classes))


__all__ = ["METRIC", "ImportResult", "import_predictions"]
