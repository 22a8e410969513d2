"""First-level training here and on a dask LocalCluster: 5 folds x 4 scikit-learn models.

On a real MULAN dataset (``../shared/data/mulan``, emotions by default) the four models (logreg,
rf, et, hgb; one BLAS/OpenMP thread each) are trained fold by fold in this process, then again with
every fold sent as one task to a LocalCluster of 2 worker processes x 1 thread on loopback (the
same code path as ``stack first-level sklearn --scheduler ADDRESS``). Prints both wall times, their
ratio, the cluster's start-up time (not included), the machine's load, and checks that both runs
wrote identical prediction files.

    .venv/bin/python benchmarks/bench_distributed.py [--dataset emotions] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:          # run as a script from anywhere
    sys.path.insert(0, str(ROOT_DIR))

from benchmarks.mulan_layout import ID_COLUMN, PARAMS, read_mulan  # noqa: E402
from first_level.folds import iterative_stratification  # noqa: E402
from first_level.runner import run_kfold  # noqa: E402
from first_level.sklearn_models import SklearnFoldModel  # noqa: E402
from stacker import layout  # noqa: E402

MODELS = ("logreg", "rf", "et", "hgb")
N_FOLDS = 5


def train_all(root: Path, data: dict, *, scheduler: str | None) -> dict[str, float]:
    """Write folds and the 4 experiments under ``root``; returns {model: training wall time (s)}."""
    ids = [f"train_{i:05d}" for i in range(len(data["y_train"]))]
    test_ids = [f"test_{i:05d}" for i in range(len(data["y_test"]))]
    fold = iterative_stratification(data["y_train"], N_FOLDS, seed=0)
    labels = [tuple(c for c, v in zip(data["classes"], row) if v) for row in data["y_train"]]
    layout.write_folds(root, ids, labels, fold, id_column=ID_COLUMN, classes=data["classes"])
    seconds = {}
    for estimator in MODELS:
        params = PARAMS[estimator]
        start = time.perf_counter()
        run_kfold(root, estimator,
                  lambda k, e=estimator, p=params: SklearnFoldModel(e, p, 0, threads=1),
                  data["X_train"], ids, data["X_test"], test_ids, model=f"sklearn:{estimator}",
                  params=params, seed=0, scheduler=scheduler)
        seconds[estimator] = time.perf_counter() - start
    return seconds


def prediction_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("probs.csv"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="emotions")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    try:
        data = read_mulan(args.dataset)
    except FileNotFoundError as error:
        print(f"skipped: {error}")
        return
    from distributed import LocalCluster

    print(f"mulan/{data['name']}: {len(data['y_train'])} train rows x {data['X_train'].shape[1]} "
          f"features, {len(data['classes'])} labels, {len(data['y_test'])} test rows; "
          f"{N_FOLDS} folds x {len(MODELS)} models ({', '.join(MODELS)}); {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        load_before = os.getloadavg()[0]
        here = train_all(Path(tmp) / "here", data, scheduler=None)
        began = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None, silence_logs=40) as cluster:
            startup = time.perf_counter() - began
            there = train_all(Path(tmp) / "cluster", data, scheduler=cluster.scheduler_address)
        same = prediction_files(Path(tmp) / "here") == prediction_files(Path(tmp) / "cluster")
        load_after = os.getloadavg()[0]
    print(f"{'run':<34} " + " ".join(f"{m:>7}" for m in MODELS) + f" {'wall s':>7}")
    for label, times in (("here (one process, 1 thread)", here),
                         (f"LocalCluster ({args.workers} workers x 1 thread)", there)):
        print(f"{label:<34} " + " ".join(f"{times[m]:>7.1f}" for m in MODELS)
              + f" {sum(times.values()):>7.1f}")
    print(f"ratio here / cluster: {sum(here.values()) / sum(there.values()):.2f}x  (cluster "
          f"start-up {startup:.1f} s, not included); identical prediction files: "
          f"{'yes' if same else 'NO'}")
    print(f"load average {load_before:.1f} before, {load_after:.1f} after (1 min; other processes "
          "share the CPUs)")
    if not same:
        raise SystemExit("the cluster run wrote other predictions than the local run")


if __name__ == "__main__":
    main()
