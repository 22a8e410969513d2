"""Honest level-2 OOF: which early-stopping rows, measured on real MULAN layouts.

For each dataset (``benchmarks/mulan_layout.py`` builds or resumes the first-level layout, with
its held-out test labels) the level-2 MLP is trained on the first-level experiments with:

    fold            the old behaviour: fold k early-stops the fold-k model (optimistic CV)
    inner-0.1/0.2/0.3  early stopping on a seeded, stratified fraction of the training rows;
                    the early-stopped net predicts (``refit=0``)
    refit-0.2       the same early stopping, then a fresh net trained on every training row for
                    the chosen epoch count predicts (``refit=1``, the default)
    inner-folds     K-1 models per fold, each early-stopped on one of the other folds, averaged
                    (geometric mean) on fold k and on the test set

and prints, per option and dataset, the level-2 CV (OOF lwlrap), the lwlrap of its fold-averaged
test predictions on the held-out test labels, the gap CV - test, and the training seconds.
Scores are means over ``--seeds`` (one run per seed). The first-level inputs' best CV and test
lwlrap are printed for reference. Print ``uptime`` with the figures: the machine is shared.

    python benchmarks/bench_level2_honest.py --root /tmp/mulan [--datasets emotions,birds,medical]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.mulan_layout import DATASETS, build_mulan_layout, read_test_labels  # noqa: E402
from stacker.layout.collect import collect  # noqa: E402
from stacker.level2 import fit as train  # noqa: E402
from stacker.level2.inputs import level2_data  # noqa: E402
from stacker.level2.params import MLPParams  # noqa: E402
from stacker.metrics import lwlrap  # noqa: E402

OPTIONS = ("fold", "inner-0.1", "inner-0.2", "inner-0.3", "refit-0.2", "inner-folds")


def run_option(data, option: str, seed: int, params: MLPParams) -> tuple[np.ndarray, np.ndarray]:
    """(oof (n_rows, n_classes), test (n_test, n_classes), the arithmetic mean over folds)."""
    oof = np.zeros(data.y.shape, dtype=np.float32)
    tests = []
    for k in data.fold_numbers:
        mine = data.fold == k
        if option == "inner-folds":
            inner = data.rows(~mine)
            fits = [train.fit_fold(inner, j, params=params, seed=seed, with_test=False,
                                   early_stopping="fold") for j in inner.fold_numbers]
            oof[mine] = train.geometric_mean(np.stack([f.predict(data.x[mine], single_label=data.single_label)
                                                       for f in fits]))
            tests.append(train.geometric_mean(np.stack([f.predict(data.test_of(k), single_label=data.single_label)
                                                        for f in fits])))
            continue
        if option == "fold":
            fit = train.fit_fold(data, k, params=params, seed=seed, early_stopping="fold")
        else:
            kind, fraction = option.split("-")
            fit = train.fit_fold(data, k, params=MLPParams(**{**params.to_dict(),
                                                              "inner_fraction": float(fraction),
                                                              "refit": int(kind == "refit")}),
                                 seed=seed)
        oof[mine] = fit.val_probs
        tests.append(fit.test_probs)
    return oof, np.mean(tests, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="one sub-folder per dataset")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--estimators", default="logreg,rf,et,knn")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--options", default=",".join(OPTIONS))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    estimators = args.estimators.split(",")
    params = MLPParams()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min); seeds {seeds}; "
          f"inputs {', '.join(estimators)}; default MLPParams")
    print(f"{'dataset':<9} {'option':<12} {'CV':>7} {'test':>7} {'CV-test':>8} {'seconds':>8}")
    for dataset in args.datasets.split(","):
        root = args.root / dataset
        build_mulan_layout(dataset, root, estimators=estimators)
        col = collect(root)
        col = col.select([n for n in col.names if n in estimators])
        test_ids, y_test = read_test_labels(root)
        order = {r: i for i, r in enumerate(col.test_ids)}
        test_rows = np.array([order[i] for i in test_ids])
        data = level2_data(col, col.names)
        inputs_cv = [lwlrap(col.y, col.oof[:, m]) for m in range(col.n_models)]
        inputs_test = [lwlrap(y_test, col.test[:, :, m].mean(0)[test_rows])
                       for m in range(col.n_models)]
        best = int(np.argmax(inputs_cv))
        print(f"{dataset:<9} {'best input':<12} {inputs_cv[best]:>7.4f} {inputs_test[best]:>7.4f} "
              f"{inputs_cv[best] - inputs_test[best]:>8.4f} {'':>8}  ({col.names[best]})")
        for option in args.options.split(","):
            cvs, tests, began = [], [], time.perf_counter()
            for seed in seeds:
                oof, test = run_option(data, option, seed, params)
                cvs.append(lwlrap(data.y, oof))
                tests.append(lwlrap(y_test, test[test_rows]))
            seconds = (time.perf_counter() - began) / len(seeds)
            cv, test = float(np.mean(cvs)), float(np.mean(tests))
            print(f"{dataset:<9} {option:<12} {cv:>7.4f} {test:>7.4f} {cv - test:>8.4f} "
                  f"{seconds:>8.1f}", flush=True)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")


if __name__ == "__main__":
    main()
