"""The audio CNN on the Free Spoken Digit Dataset, end to end through the CLI, timed.

Writes ``<workdir>/train.csv`` and ``test.csv`` (the official split=train / split=test rows of
``../shared/data/fsdd/meta.csv``), makes 5 stratified folds (or speaker-grouped ones with
``--group speaker``) under ``<workdir>/<folds>``, runs ``stack first-level audio --preset fast``,
and prints the wall time (and its ratio to the 15-minute budget), the CV lwlrap and accuracy, and
the accuracy of the fold-mean on the held-out test split.

Run: ``python benchmarks/bench_audio_fsdd.py --workdir /tmp/fsdd_bench`` (about 5-7 minutes on
2 busy CPU cores; ``--epochs 1`` for a quick smoke run). An existing experiment is resumed, so
pass a fresh --workdir (or --force) to time a full run.
"""

from __future__ import annotations

import argparse
import json
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

FSDD = ROOT_DIR.parent / "shared" / "data" / "fsdd"
BUDGET_S = 15 * 60


def invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != 0:
        raise SystemExit(f"stack {' '.join(map(str, args[:2]))} failed:\n{result.output}")
    return result.output


def heldout_accuracy(root: Path, name: str, test_meta: Path) -> float:
    labels = pd.read_csv(test_meta, dtype=str).set_index("fname")["label"]
    probs = [layout.read_probs(layout.probs_path(root, name, k, "test"))
             for k in layout.list_fold_numbers(root, name)]
    ids = probs[0].ids
    mean = np.mean([p.values[pd.Index(p.ids).get_indexer(ids)] for p in probs], axis=0)
    predicted = np.asarray(probs[0].columns)[mean.argmax(axis=1)]
    return float((predicted == labels.loc[ids].to_numpy()).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--group", default=None, help="group column for the folds (speaker)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    if not (FSDD / "meta.csv").exists():
        raise SystemExit(f"{FSDD} is missing; this benchmark needs the shared FSDD data")
    args.workdir.mkdir(parents=True, exist_ok=True)
    meta = pd.read_csv(FSDD / "meta.csv", dtype=str)
    train, test = args.workdir / "train.csv", args.workdir / "test.csv"
    meta[meta.split == "train"][["fname", "label", "speaker"]].to_csv(train, index=False)
    meta[meta.split == "test"][["fname", "label", "speaker"]].to_csv(test, index=False)
    root = args.workdir / (f"grouped_{args.group}" if args.group else "stratified")
    if not (root / layout.FOLDS_FILE).exists():
        invoke("make-folds", train, "--label-column", "label", "--root", root,
               *(["--group-column", args.group] if args.group else []))

    start = time.perf_counter()
    invoke("first-level", "audio", "--meta", train, "--audio-dir", FSDD / "recordings",
           "--test-meta", test, "--name", "cnn_fast", "--preset", "fast", "--root", root,
           *(["--epochs", args.epochs] if args.epochs else []), *(["--force"] if args.force else []))
    wall = time.perf_counter() - start

    cv = json.loads((root / "cnn_fast" / layout.META_FILE).read_text())["cv"]
    print(f"folds: {'grouped by ' + args.group if args.group else 'stratified'}, 5 folds, "
          f"{len(meta[meta.split == 'train'])} training clips")
    print(f"wall time {wall:.0f} s = {wall / BUDGET_S:.2f} of the 15-minute budget")
    print(f"CV lwlrap {cv['lwlrap']:.4f}, CV accuracy {cv['accuracy']:.4f}, "
          f"test accuracy (fold mean) {heldout_accuracy(root, 'cnn_fast', test):.4f}")


if __name__ == "__main__":
    main()
