"""Noisy labels and test-time windows on real audio (FSDD), through `stack first-level audio`, timed.

From ``../shared/data/fsdd/meta.csv`` (the Free Spoken Digit Dataset): the official test split
(takes 0-4 of every speaker and digit) is held out; a small *curated* set is takes 5 to
``5 + curated_takes - 1``; a larger *noisy* set is ``n_noisy`` clips drawn (seeded) from the other
training takes, with a share ``noise_rate`` of their labels replaced by another digit (uniformly).
For every seed it trains, on the same folds of the curated set:

  curated    the curated rows only
  plain      + the noisy rows, plain cross-entropy on them
  lsoft      + the noisy rows, Lsoft (beta 0.7) on them
  pretrain   the noisy rows first (Lsoft), then a fine-tune on the curated rows
  pretrain_plain  the same two stages with the plain loss on the noisy rows (what Lsoft adds there)
  agreed     lsoft on the noisy rows that run lsoft's fold models agree with (argus): --noisy-filter
             lsoft_s<seed> --noisy-min-score 0.5 (the noisy label ranked first or second)
  agreed_plain    the same rows with the plain loss (what Lsoft adds there)
  windows    lsoft, predicted on --infer-windows widths pooled by the max per width

and prints the held-out lwlrap and accuracy of the fold-mean test predictions, the CV lwlrap (the
curated rows' OOF) and the wall time of each run, then their means over the seeds. The seeds change
the training (weights, crops, hold-out); the sets and folds are the same for every seed.

Every run passes the same ``--epoch-rows`` (default: the curated plus the noisy rows, one pass of the
mixed runs' data), as argus fixed its epoch size: with an epoch of every row once, the curated-only
run's epochs would be 11 times shorter (90 against 990 fit rows per fold), so the same --epochs and
patience (4 epochs, of 3 batches each) stop it before it learns (held-out accuracy near chance),
and the comparison would measure the number of gradient steps rather than the noisy data.
``--epoch-rows 0`` gives that old setup.

Every run also passes ``--epochs 30`` (default; the ``fast`` preset has 12): at 12 epochs of 1,080
rows every run was still improving at its last epoch (best epoch 12 of 12 on the inner hold-out,
curated-only and mixed alike), and the mixed runs, whose batches are mostly noisy rows, learn more
slowly, so a 12-epoch comparison measured how far each got in 12 epochs rather than what the noisy
data is worth. Early stopping (patience 4 on the curated hold-out) still ends each run.

The defaults (``--curated-takes 2``: 120 curated clips, 80 training rows a fold and a 20-row inner
hold-out, against 900 noisy clips; ``--patience 8``) are those of the issue's table. With 60 curated
clips (a 10-row hold-out) and the preset's patience of 4 epochs, runs stopped on chance peaks of the
hold-out and the held-out lwlrap of one config ranged from 0.72 to 0.98 over seeds; with 180 curated
clips and patience 4 the curated-only run was the best config (0.972 against 0.960 for Lsoft, 3
seeds): the noisy set helps when the curated set is small.

    nice -n 19 python benchmarks/bench_noisy.py --workdir /tmp/bench_noisy --seeds 0,1,2

An existing experiment is resumed (its time is then near zero): pass a fresh --workdir to time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:          # run as a script from anywhere
    sys.path.insert(0, str(ROOT_DIR))

from typer.testing import CliRunner  # noqa: E402

from stacker import layout  # noqa: E402
from stacker.cli.app import app  # noqa: E402
from stacker.metrics import accuracy, lwlrap  # noqa: E402

FSDD = ROOT_DIR.parent / "shared" / "data" / "fsdd"
CONFIGS = {
    "curated": [],
    "plain": ["--noisy-loss", "plain"],
    "lsoft": ["--noisy-loss", "lsoft"],
    "pretrain": ["--noisy-loss", "lsoft", "--noisy-schedule", "pretrain"],
    "pretrain_plain": ["--noisy-loss", "plain", "--noisy-schedule", "pretrain"],
    "agreed": ["--noisy-loss", "lsoft", "--noisy-filter", "lsoft_s{seed}", "--noisy-min-score", "0.5"],
    "agreed_plain": ["--noisy-loss", "plain", "--noisy-filter", "lsoft_s{seed}",
                     "--noisy-min-score", "0.5"],
}


def invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != 0:
        raise SystemExit(f"stack {' '.join(map(str, args[:2]))} failed:\n{result.output}")
    return result.output


def write_sets(meta: pd.DataFrame, workdir: Path, *, curated_takes: int, n_noisy: int,
               noise_rate: float, seed: int) -> dict[str, Path]:
    """train.csv (curated), noisy.csv (corrupted labels), test.csv under ``workdir``."""
    takes = meta["index"].astype(int)
    curated = meta[(meta.split == "train") & (takes < 5 + curated_takes)]
    rest = meta[(meta.split == "train") & (takes >= 5 + curated_takes)]
    rng = np.random.default_rng([seed, 23])
    noisy = rest.iloc[np.sort(rng.choice(len(rest), size=min(n_noisy, len(rest)), replace=False))]
    noisy = noisy.copy()
    digits = sorted(meta.label.astype(str).unique())
    wrong = rng.random(len(noisy)) < noise_rate
    noisy["label"] = [rng.choice([d for d in digits if d != label]) if flip else label
                      for label, flip in zip(noisy.label.astype(str), wrong)]
    paths = {"train": workdir / "train.csv", "noisy": workdir / "noisy.csv",
             "test": workdir / "test.csv"}
    curated[["fname", "label"]].to_csv(paths["train"], index=False)
    noisy[["fname", "label"]].to_csv(paths["noisy"], index=False)
    meta[meta.split == "test"][["fname", "label"]].to_csv(paths["test"], index=False)
    print(f"curated {len(curated)} clips, noisy {len(noisy)} clips ({wrong.mean():.0%} of their "
          f"labels replaced), held-out test {int((meta.split == 'test').sum())} clips")
    return paths


def heldout(root: Path, name: str, test_csv: Path) -> tuple[float, float]:
    """(lwlrap, accuracy) of the fold-mean test predictions against the held-out labels."""
    labels = pd.read_csv(test_csv, dtype=str).set_index("fname")["label"]
    probs = [layout.read_probs(layout.probs_path(root, name, k, "test"))
             for k in layout.list_fold_numbers(root, name)]
    ids = probs[0].ids
    mean = np.mean([p.values[pd.Index(p.ids).get_indexer(ids)] for p in probs], axis=0)
    columns = list(probs[0].columns)
    truth = np.zeros_like(mean)
    truth[np.arange(len(ids)), [columns.index(v) for v in labels.loc[ids]]] = 1
    return lwlrap(truth, mean), accuracy(truth, mean)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=FSDD, help="the FSDD folder (meta.csv, "
                        "recordings/)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--curated-takes", type=int, default=2,
                        help="takes per speaker and digit in the curated set")
    parser.add_argument("--n-noisy", type=int, default=900)
    parser.add_argument("--noise-rate", type=float, default=0.3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30,
                        help="the most epochs of every run (0: the preset's)")
    parser.add_argument("--patience", type=int, default=8,
                        help="--patience of every run (0: the preset's, 4 epochs)")
    parser.add_argument("--epoch-rows", type=int, default=None,
                        help="rows per training epoch of every run (default: curated + noisy rows; "
                             "0: every training row once, so the curated-only epochs are shorter)")
    parser.add_argument("--windows", default="20,40", help="--infer-windows of the windows run")
    parser.add_argument("--configs", default=",".join([*CONFIGS, "windows"]))
    args = parser.parse_args(argv)
    if not (args.data / "meta.csv").exists():
        raise SystemExit(f"{args.data} is missing; this benchmark needs the shared FSDD data")
    args.workdir.mkdir(parents=True, exist_ok=True)
    meta = pd.read_csv(args.data / "meta.csv", dtype=str)
    paths = write_sets(meta, args.workdir, curated_takes=args.curated_takes,
                       n_noisy=args.n_noisy, noise_rate=args.noise_rate, seed=0)
    epoch_rows = args.epoch_rows
    if epoch_rows is None:
        epoch_rows = sum(len(pd.read_csv(paths[part])) for part in ("train", "noisy"))
    print(f"epoch rows: {epoch_rows or 'every training row once'}; patience: "
          f"{args.patience or 'the preset'}")
    sizing = ["--epoch-rows", epoch_rows] if epoch_rows else []
    root = args.workdir / "root"
    if not (root / layout.FOLDS_FILE).exists():
        invoke("make-folds", paths["train"], "--label-column", "label", "--root", root,
               "--n-folds", args.folds)
    configs = {**CONFIGS, "windows": [*CONFIGS["lsoft"], "--infer-windows", args.windows,
                                      "--window-pool", "max"]}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for config in args.configs.split(","):
            name = f"{config}_s{seed}"
            if config.startswith("agreed") and "lsoft" not in args.configs.split(","):
                raise SystemExit("the agreed run filters by run lsoft's predictions: list lsoft first")
            noisy = ["--noisy-meta", paths["noisy"], "--noisy-audio-dir", args.data / "recordings"]
            start = time.perf_counter()
            invoke("first-level", "audio", "--meta", paths["train"], "--label-column", "label",
                   "--audio-dir", args.data / "recordings", "--test-meta", paths["test"],
                   "--name", name, "--root", root, "--seed", seed,
                   *(["--epochs", args.epochs] if args.epochs else []), *sizing,
                   *(["--patience", args.patience] if args.patience else []),
                   *(noisy if config != "curated" else []),
                   *[str(a).format(seed=seed) for a in configs[config]])
            wall = time.perf_counter() - start
            cv = layout.read_meta(root, name)["cv"]["lwlrap"]
            score, acc = heldout(root, name, paths["test"])
            rows.append(dict(config=config, seed=seed, heldout_lwlrap=score, heldout_acc=acc,
                             cv_lwlrap=cv, seconds=wall))
            print(f"{name:17s} held-out lwlrap {score:.4f}  accuracy {acc:.4f}  CV lwlrap "
                  f"{cv:.4f}  {wall:6.0f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print()
    print("mean over seeds:")
    print(table.groupby("config", sort=False)[["heldout_lwlrap", "heldout_acc", "cv_lwlrap",
                                               "seconds"]].mean().to_string(
        float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
