"""Level-2 training speed: 5 folds of one MLP on 5,000 rows x (7 models x 80 classes).

Target: under 30 s for the 5 folds on a 2-core machine (the issue's budget). Prints the time of
each fold, its epochs and its score, and the ratio of the total to the target. With
``--compare-threads`` it also trains fold 0 with torch's default thread count, to show why the
trainer uses one intra-op thread on the CPU.

    .venv/bin/python benchmarks/bench_train.py [--device auto] [--compare-threads]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stacker.layout.collect import collect
from stacker.level2 import fit as train
from stacker.level2 import inputs as level2_inputs
from stacker.level2 import params as level2_params
from stacker.metrics import lwlrap
from stacker.simulate import write_simulated_layout

TARGET_S = 30.0


def build(root: Path, *, n_rows=5000, n_classes=80, n_models=7, n_folds=5, seed=0) -> None:
    rng = np.random.default_rng(seed)
    classes = [f"class_{j:02d}" for j in range(n_classes)]
    labels = [tuple(sorted(set(rng.choice(classes, 1 + int(rng.random() < 0.2)))))
              for _ in range(n_rows)]
    fold = rng.permutation(np.arange(n_rows) % n_folds)
    write_simulated_layout(root, [f"clip_{i:05d}" for i in range(n_rows)], labels, fold,
                           n_experiments=n_models, n_test=1000, classes=classes, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compare-threads", action="store_true")
    args = parser.parse_args()
    device = level2_params.resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "layout"
        start = time.perf_counter()
        build(root)
        col = collect(root)
        print(f"layout: {len(col.ids)} rows x ({col.n_models} models x {len(col.classes)} classes), "
              f"{len(col.fold_numbers)} folds, {len(col.test_ids)} test rows; built and collected "
              f"in {time.perf_counter() - start:.1f} s; device {device}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f} (other processes share the CPUs)")
        best_input = max(lwlrap(col.y, col.oof[:, m]) for m in range(col.n_models))
        stamps = [time.perf_counter()]
        result = train.train_level2(col, col.names, params=level2_params.MLPParams(), device=device,
                                    on_progress=lambda done, total: stamps.append(time.perf_counter()))
        total = stamps[-1] - stamps[1]
        cv, per_fold = result.scores()
        print(f"{'fold':>4} {'seconds':>8} {'epochs':>7} {'best':>5} {'lwlrap':>7}")
        for i, k in enumerate(result.fold_numbers):
            fit = result.fits[(0, k)]
            print(f"{k:>4} {stamps[i + 2] - stamps[i + 1]:>8.2f} {len(fit.history):>7} "
                  f"{fit.best_epoch:>5} {per_fold[k]:>7.4f}")
        print(f"total {total:.1f} s for {len(result.fold_numbers)} folds "
              f"({total / len(result.fold_numbers):.2f} s per fold); target {TARGET_S:.0f} s; "
              f"ratio total/target = {total / TARGET_S:.2f} ({'OK' if total < TARGET_S else 'SLOW'})")
        print(f"level-2 CV {cv:.4f}; best input {best_input:.4f}")
        if args.compare_threads and device == "cpu":
            data = level2_inputs.level2_data(col, col.names)
            timings = {}
            for threads in (1, None):
                t0 = time.perf_counter()
                fit = train.fit_fold(data, result.fold_numbers[0], params=level2_params.MLPParams(),
                                     threads=threads)
                timings[threads] = (time.perf_counter() - t0) / len(fit.history)
            print(f"seconds per epoch: 1 thread {timings[1]:.3f}, torch default "
                  f"({os.cpu_count()}) {timings[None]:.3f}; ratio default/1 = "
                  f"{timings[None] / timings[1]:.2f}")


if __name__ == "__main__":
    main()
