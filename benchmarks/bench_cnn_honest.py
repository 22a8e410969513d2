"""Honest early stopping for the audio CNN, measured on the `stack demo --quick` data.

Trains the demo's quick CNN on every fold of a finished demo work folder (``stack demo --quick
--workdir W`` first; its spectrogram cache is reused) with:

    fold         the old behaviour: the validation fold early-stops its own model (a reference,
                 reproduced by holding out exactly the validation rows; optimistic)
    inner-F      a seeded, stratified fraction F of the training rows early-stops (best weights)
    refit-F      as inner-F, then a fresh net trains on every training row for the best epoch
                 count, replaying the learning rates of the hold-out run

and prints the OOF CV lwlrap, the lwlrap of the fold-averaged test predictions on the demo's
held-out test labels, and the seconds per run (means over ``--seeds``), with the machine load.

    python benchmarks/bench_cnn_honest.py --workdir /tmp/demo [--fractions 0.15,0.25] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from first_level.audio.dataset import prepare_audio  # noqa: E402
from first_level.audio.features import MelSettings  # noqa: E402
from first_level.audio.metadata import read_metadata  # noqa: E402
from first_level.audio.model import AudioCNNModel  # noqa: E402
from stacker import layout  # noqa: E402
from stacker.cli.demo_pipeline import demo_settings  # noqa: E402
from stacker.metrics import lwlrap  # noqa: E402
from stacker.runtime import fold_seed  # noqa: E402


class StopOnValidationFold(AudioCNNModel):
    """The old behaviour, for reference: fit on train + validation rows with exactly the
    validation rows as the hold-out (so the validation fold's labels early-stop the model)."""

    def fit(self, X_train, y_train, X_val=None, y_val=None):
        self._n_val = len(X_val)
        return super().fit(list(X_train) + list(X_val), np.concatenate([y_train, y_val]))

    def inner_holdout(self, y):
        mask = np.zeros(len(y), dtype=bool)
        mask[len(y) - self._n_val:] = True
        return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--fractions", default="0.15,0.25")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--options", default=None, help="e.g. fold,inner-0.25,refit-0.25")
    args = parser.parse_args()
    settings = demo_settings(quick=True, seed=0)
    root, data_dir = args.workdir / "predictions", args.workdir / "data"
    audio = prepare_audio(root, read_metadata(data_dir / "train.csv", format="fat2019"),
                          data_dir / "train", MelSettings(**settings.mel), test_dir=data_dir / "test",
                          cache_dir=args.workdir / "cache")
    folds = layout.read_folds(root)
    position = {i: n for n, i in enumerate(audio.ids)}
    specs = [audio.specs[position[i]] for i in folds.ids]
    labels = pd.read_csv(data_dir / "test_labels.csv", dtype=str, keep_default_na=False)
    test_labels = dict(zip(labels.iloc[:, 0], labels.iloc[:, 1]))
    y_test = layout.labels_to_matrix([layout.split_labels(test_labels[i]) for i in audio.test_ids],
                                     folds.classes)
    load = os.getloadavg()
    print(f"load {load[0]:.2f} {load[1]:.2f} (1, 5 min); {len(specs)} clips, {folds.n_folds} folds")
    print(f"{'option':<12} {'CV':>7} {'test':>7} {'seconds':>8}")
    options = args.options.split(",") if args.options else (
        ["fold"] + [f"inner-{f}" for f in args.fractions.split(",")]
        + [f"refit-{f}" for f in args.fractions.split(",")])
    for option in options:
        cvs, tests, began = [], [], time.perf_counter()
        seeds = [int(s) for s in args.seeds.split(",")]
        for seed in seeds:
            oof = np.zeros(folds.y.shape, dtype=np.float32)
            test = 0.0
            for k in folds.fold_numbers:
                train, val = np.flatnonzero(folds.fold != k), folds.rows_of_fold(k)
                common = dict(settings.cnn, seed=fold_seed(seed, k), device="cpu")
                model = (StopOnValidationFold(**common) if option == "fold" else
                         AudioCNNModel(**common, inner_fraction=float(option.split("-")[1]),
                                       refit=option.startswith("refit")))
                model.fit([specs[i] for i in train], folds.y[train].astype(np.float32),
                          [specs[i] for i in val], folds.y[val].astype(np.float32))
                oof[val] = model.predict_proba([specs[i] for i in val])
                test = test + model.predict_proba(audio.test_specs) / folds.n_folds
            cvs.append(lwlrap(folds.y, oof))
            tests.append(lwlrap(y_test, test))
        seconds = (time.perf_counter() - began) / len(seeds)
        print(f"{option:<12} {np.mean(cvs):>7.4f} {np.mean(tests):>7.4f} {seconds:>8.1f}",
              flush=True)
    load = os.getloadavg()
    print(f"load {load[0]:.2f} {load[1]:.2f} (1, 5 min)")


if __name__ == "__main__":
    main()
