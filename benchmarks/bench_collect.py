"""`stacker.layout.collect` on a layout of FAT2019 size: 50 experiments x 5 folds, 4,970 rows, 1,120 test rows,
80 classes. Prints the cold time (no cache: every CSV parsed), the warm time (from ``.stack/cache``)
and their ratio, measured in this run. Targets: cold < 10 s on 2 cores, warm well under 1 s.

Row ids and labels come from ``../shared/data/fat2019/train_curated.csv`` when present (else synthetic).
The first ``--distinct`` experiments are written by ``stacker.simulate`` (the project's writer); the
rest are file copies of them, which costs collect exactly as much to read and saves minutes of
writing. ``--workdir DIR`` keeps the layout and reuses it on the next run.

Run: ``.venv/bin/python benchmarks/bench_collect.py [--experiments 50] [--workdir DIR] [--jobs 2]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from stacker import layout
from stacker.layout.collect import collect
from stacker.simulate import write_simulated_layout

TRAIN_CURATED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fat2019" / "train_curated.csv"
COLD_TARGET_S = 10.0
WARM_TARGET_S = 1.0


def rows_and_labels(n_classes: int, seed: int) -> tuple[list[str], list[tuple[str, ...]], str]:
    if TRAIN_CURATED.exists():
        with open(TRAIN_CURATED, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return ([r["fname"] for r in rows], [tuple(r["labels"].split(",")) for r in rows],
                str(TRAIN_CURATED))
    rng = np.random.default_rng(seed)
    classes = [f"class_{j:02d}" for j in range(n_classes)]
    labels = [tuple(sorted({classes[i % n_classes]}
                           | set(rng.choice(classes, size=int(rng.integers(0, 2))))))
              for i in range(4970)]
    return [f"{i:08x}.wav" for i in range(4970)], labels, "synthetic ids"


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process and of its finished worker processes (user + system)."""
    own, workers = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, workers.ru_utime + workers.ru_stime


def build(root: Path, args) -> str:
    params = {"experiments": args.experiments, "distinct": args.distinct, "folds": args.folds,
              "test": args.test, "seed": args.seed}
    marker = root / "bench_params.json"
    ids, labels, source = rows_and_labels(80, args.seed)
    if marker.exists() and json.loads(marker.read_text()) == params:
        return source + ", reused"
    if root.exists():
        shutil.rmtree(root)
    fold = np.random.default_rng(args.seed).permutation(np.arange(len(ids)) % args.folds)
    distinct = min(args.distinct, args.experiments)
    names = write_simulated_layout(root, ids, labels, fold, n_experiments=distinct, n_test=args.test,
                                   seed=args.seed, skills=np.linspace(1.0, 2.5, distinct))
    for e in range(distinct, args.experiments):
        source_name, name = names[e % distinct], f"sim_{e:03d}"
        shutil.copytree(root / source_name, root / name)
        meta = layout.read_meta(root, name)
        meta["copied_from"] = source_name
        layout.write_meta(root, name, meta)
    layout.atomic_write_json(marker, params)
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--distinct", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--test", type=int, default=1120)
    parser.add_argument("--jobs", type=int, default=2, help="collect's n_jobs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the layout here (reused when its parameters match)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_collect_") as tmp:
        root = args.workdir if args.workdir is not None else Path(tmp) / "layout"
        start = time.perf_counter()
        source = build(root, args)
        built = time.perf_counter() - start
        shutil.rmtree(root / layout.STACK_DIR, ignore_errors=True)

        load = os.getloadavg()[0]
        cpu_before, start = cpu_seconds(), time.perf_counter()
        cold = collect(root, n_jobs=args.jobs)
        cold_s = time.perf_counter() - start
        cpu_cold = [after - before for after, before in zip(cpu_seconds(), cpu_before)]
        cpu_before, start = cpu_seconds(), time.perf_counter()
        warm = collect(root, n_jobs=args.jobs)
        warm_s = time.perf_counter() - start
        cpu_warm = sum(cpu_seconds()) - sum(cpu_before)

        if cold.skipped or not (np.array_equal(cold.oof, warm.oof)
                                and np.array_equal(cold.test, warm.test)):
            raise SystemExit("cold and warm collections differ, or an experiment was skipped")
        print(f"collect: {cold.n_models} experiments x {len(cold.fold_numbers)} folds, "
              f"{len(cold.ids)} rows, {len(cold.test_ids)} test rows, {len(cold.classes)} classes "
              f"({source}; layout ready in {built:.1f} s)")
        print(f"  oof {cold.oof.shape} float32, test {cold.test.shape} float32, n_jobs={args.jobs}")
        print(f"  cold (parse every CSV, write cache): {cold_s:7.2f} s  (target < {COLD_TARGET_S:.0f} s: "
              f"{'met' if cold_s < COLD_TARGET_S else 'NOT met'})")
        print(f"  warm (from .stack/cache)           : {warm_s:7.2f} s  (target < {WARM_TARGET_S:.0f} s: "
              f"{'met' if warm_s < WARM_TARGET_S else 'NOT met'})")
        print(f"  warm / cold                        : {warm_s / cold_s:7.3f}  "
              f"({cold_s / warm_s:.0f}x faster)")
        # wall time depends on what else runs; CPU time says what the work itself costs
        print(f"  cpu: cold {cpu_cold[0]:.2f} s main + {cpu_cold[1]:.2f} s workers "
              f"(~{max(cpu_cold[0], sum(cpu_cold) / max(args.jobs, 1)):.1f} s wall on "
              f"{args.jobs} free cores), warm {cpu_warm:.2f} s; load average at start "
              f"{load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
