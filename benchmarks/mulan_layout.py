"""A real multi-label layout from a MULAN dataset: folds, sklearn experiments, held-out test labels.

``build_mulan_layout("emotions", root)`` reads ``../shared/data/mulan/<dataset>/{train,test}.csv``
(feature columns first, then one 0/1 column per label named in ``labels.txt``) and writes

    <root>/folds.csv, classes.txt     iterative stratification of the train rows (ids train_00000...)
    <root>/<estimator>/...            one experiment per estimator through first_level.runner,
                                      predicting the test split (ids test_00000...)
    <root>/test_labels.csv            id,labels (comma-joined): the real test labels, so that
                                      benchmarks can score blends on held-out data

Calling it again on the same root resumes: finished folds are kept. Other benchmarks import it::

    from benchmarks.mulan_layout import build_mulan_layout   (or put benchmarks/ on sys.path)

The two larger sets (bibtex: 4,880 rows x 1,836 features x 159 labels; tmc2007: 21,519 rows x 500
features x 22 labels) get their own estimators and settings (``LARGE``), which keep each to about
15-30 minutes on 2 CPU cores; the three small sets keep the six estimators and ``PARAMS``.

Run: ``python benchmarks/mulan_layout.py emotions --root /tmp/mulan_emotions`` (or ``all``: the
five sets); it prints each experiment's CV lwlrap, its lwlrap on the held-out test split and the
time it took.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:          # run as a script from anywhere
    sys.path.insert(0, str(ROOT_DIR))

from first_level.folds import iterative_stratification  # noqa: E402
from first_level.runner import RunResult, run_kfold  # noqa: E402
from first_level.sklearn_models import SklearnFoldModel  # noqa: E402
from stacker import layout  # noqa: E402
from stacker.errors import OutputExistsError  # noqa: E402

MULAN_DIR = ROOT_DIR.parent / "shared" / "data" / "mulan"
DATASETS = ("emotions", "birds", "medical")          # the small sets, the default of most benchmarks
ALL_DATASETS = (*DATASETS, "bibtex", "tmc2007")
ESTIMATORS = ("logreg", "rf", "et", "knn", "hgb", "mlp")
TEST_LABELS_FILE = "test_labels.csv"
ID_COLUMN = "id"
# Settings that keep a whole dataset to a few minutes on 2 CPU cores; recorded in meta.json.
PARAMS = {"logreg": {"C": 0.1}, "rf": {"n_estimators": 300}, "et": {"n_estimators": 300},
          "knn": {"n_neighbors": 15}, "hgb": {"max_iter": 60, "learning_rate": 0.1},
          "mlp": {"hidden_layer_sizes": [128], "alpha": 1e-2, "max_iter": 300}}
# The larger sets: (estimators, per-estimator settings over PARAMS). bibtex's 159 one-vs-rest
# boosters would take hours, so it has no hgb; fewer trees and epochs where the rows are many.
LARGE = {
    "bibtex": (("logreg", "rf", "et", "knn", "mlp"),
               {"rf": {"n_estimators": 60}, "et": {"n_estimators": 60},
                "mlp": {"hidden_layer_sizes": [128], "alpha": 1e-2, "max_iter": 60}}),
    "tmc2007": (ESTIMATORS,
                {"rf": {"n_estimators": 60, "min_samples_leaf": 3},
                 "et": {"n_estimators": 60, "min_samples_leaf": 3},
                 "hgb": {"max_iter": 40, "learning_rate": 0.15},
                 "mlp": {"hidden_layer_sizes": [128], "alpha": 1e-2, "max_iter": 40}}),
}


def dataset_settings(dataset: str | Path) -> tuple[tuple[str, ...], dict]:
    """(estimators, {estimator: params}) that build_mulan_layout uses for ``dataset`` by default."""
    estimators, overrides = LARGE.get(Path(str(dataset)).name, (ESTIMATORS, {}))
    return tuple(estimators), {e: overrides.get(e, PARAMS.get(e, {})) for e in estimators}


def read_mulan(dataset: str | Path) -> dict:
    """One MULAN dataset: {'classes', 'X_train', 'y_train', 'X_test', 'y_test'} with
    X_*: (n_rows, n_features) float32 and y_*: (n_rows, n_labels) uint8 in labels.txt order."""
    folder = Path(dataset) if Path(dataset).is_dir() else MULAN_DIR / str(dataset)
    if not (folder / "labels.txt").exists():
        raise FileNotFoundError(f"{folder}: no MULAN dataset here (labels.txt, train.csv, "
                                "test.csv); see ../shared/data/README.md")
    classes = [line.strip() for line in (folder / "labels.txt").read_text().splitlines()
               if line.strip()]
    out = {"classes": classes, "name": folder.name}
    for split in ("train", "test"):
        frame = pd.read_csv(folder / f"{split}.csv")
        features = [c for c in frame.columns if c not in set(classes)]
        out[f"X_{split}"] = frame[features].to_numpy(dtype=np.float32)
        out[f"y_{split}"] = frame[classes].to_numpy(dtype=np.uint8)
    return out


def _labels_of(y: np.ndarray, classes: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(c for c, v in zip(classes, row) if v) for row in y]


def build_mulan_layout(dataset: str | Path, root: Path | str, *, seed: int = 0,
                       estimators: Sequence[str] | None = None, n_folds: int = 5,
                       threads: int | None = 1,
                       on_experiment: Callable[[str, RunResult, float], None] | None = None) -> Path:
    """Write folds, one experiment per estimator and test_labels.csv under ``root``; returns root.

    estimators: None for the dataset's own (:func:`dataset_settings`: the six of ``ESTIMATORS`` on
    the small sets). on_experiment(name, result, seconds) is called after each experiment.
    """
    root = Path(root)
    default_estimators, settings = dataset_settings(dataset)
    estimators = default_estimators if estimators is None else tuple(estimators)
    data = read_mulan(dataset)
    classes = data["classes"]
    ids = [f"train_{i:05d}" for i in range(len(data["y_train"]))]
    test_ids = [f"test_{i:05d}" for i in range(len(data["y_test"]))]
    fold = iterative_stratification(data["y_train"], n_folds, seed=seed)
    labels = _labels_of(data["y_train"], classes)
    if (root / layout.FOLDS_FILE).exists():
        current = layout.read_folds(root)
        if current.hash != layout.fold_hash(ids, fold) or list(current.classes) != classes:
            raise OutputExistsError(f"{root / layout.FOLDS_FILE} holds other folds; use an empty "
                                    "--root for this dataset/seed/n_folds")
    else:
        layout.write_folds(root, ids, labels, fold, id_column=ID_COLUMN, classes=classes)
    test_frame = pd.DataFrame({ID_COLUMN: test_ids,
                               "labels": [",".join(r) for r in _labels_of(data["y_test"], classes)]})
    layout.atomic_write_text(root / TEST_LABELS_FILE, test_frame.to_csv(index=False))
    for estimator in estimators:
        params = settings.get(estimator, PARAMS.get(estimator, {}))
        start = time.perf_counter()
        result = run_kfold(
            root, estimator,
            lambda k, e=estimator, p=params: SklearnFoldModel(e, p, seed, threads=threads),
            data["X_train"], ids, data["X_test"], test_ids, model=f"sklearn:{estimator}",
            params=params, seed=seed, extra_meta={"dataset": f"mulan/{data['name']}"})
        if on_experiment is not None:
            on_experiment(estimator, result, time.perf_counter() - start)
    return root


def read_test_labels(root: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(test ids (n_test,), y (n_test, n_classes) uint8 in folds.csv class order) of a built root."""
    root = Path(root)
    frame = pd.read_csv(root / TEST_LABELS_FILE, dtype=str, keep_default_na=False)
    classes = layout.read_folds(root).classes
    y = layout.labels_to_matrix([layout.split_labels(v) for v in frame["labels"]], classes)
    return frame[ID_COLUMN].to_numpy(dtype=str), y


def _test_score(root: Path, name: str) -> float:
    """lwlrap on the held-out test split of the fold-averaged test predictions."""
    from stacker.metrics import lwlrap

    test_ids, y = read_test_labels(root)
    folds = layout.read_folds(root)
    total = 0.0
    for k in folds.fold_numbers:
        probs = layout.read_probs(layout.probs_path(root, name, k, "test"))
        row = {r: i for i, r in enumerate(probs.ids)}
        col = {c: j for j, c in enumerate(probs.columns)}
        total = total + probs.values[[row[i] for i in test_ids]][:, [col[c] for c in folds.classes]]
    return lwlrap(y, total / folds.n_folds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help=f"{', '.join(ALL_DATASETS)}, 'all', or a folder")
    parser.add_argument("--root", required=True, type=Path,
                        help="output folder (with 'all': one sub-folder per dataset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--estimators", default=None,
                        help="comma-separated; default: the dataset's own (dataset_settings)")
    args = parser.parse_args(argv)
    names = ALL_DATASETS if args.dataset == "all" else (args.dataset,)
    print(f"{'dataset':<10} {'experiment':<8} {'CV lwlrap':>9} {'test lwlrap':>11} {'seconds':>8}")
    for dataset in names:
        root = args.root / dataset if args.dataset == "all" else args.root
        began = time.perf_counter()

        def show(name, result, seconds, dataset=dataset, root=root):
            print(f"{dataset:<10} {name:<8} {result.cv['lwlrap']:>9.4f} "
                  f"{_test_score(root, name):>11.4f} {seconds:>8.1f}", flush=True)

        build_mulan_layout(dataset, root, seed=args.seed, n_folds=args.n_folds,
                           estimators=args.estimators.split(",") if args.estimators else None,
                           on_experiment=show)
        print(f"{dataset:<10} {'(all)':<8} {'':>9} {'':>11} {time.perf_counter() - began:>8.1f}")


if __name__ == "__main__":
    main()
