"""Exhaustive subset search speed: every non-empty subset of 16 models on 5,000 x 80 OOF.

Target: all 65,535 subsets (geo-mean blend, lwlrap, nested CV included) in under 60 s with 2
processes. Then auto, greedy, beam and GES (nested CV included) on a pool of 200 models of the
same size: each under a minute. The baseline is a plain loop that blends each subset from scratch
(:func:`stacker.blend.blend_arrays`) and scores it with :func:`stacker.metrics.lwlrap`; it is timed on a
random sample of subsets and extrapolated to all of them (running it in full would take long).

    .venv/bin/python benchmarks/bench_search.py [--models 16] [--rows 5000] [--classes 80]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from stacker.blend import blend_arrays as blend
from stacker.metrics import lwlrap
from stacker.search.engine import search_arrays
from stacker.simulate import simulated_probs


def simulated_oof(n_rows: int, n_classes: int, n_models: int, n_folds: int, seed: int):
    """FAT2019-like labels (one per row, a second in 30% of rows) and correlated models."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_rows, n_classes), dtype=np.uint8)
    y[np.arange(n_rows), rng.integers(n_classes, size=n_rows)] = 1
    extra = np.flatnonzero(rng.random(n_rows) < 0.3)
    y[extra, rng.integers(n_classes, size=len(extra))] = 1
    shared = rng.normal(size=y.shape)
    skills = np.linspace(0.4, 1.2, n_models)         # CV lwlrap ~0.7-0.9, like FAT2019 models
    oof = np.stack([simulated_probs(y, skill=s, rng=rng, shared_noise=shared) for s in skills], axis=1)
    fold = rng.permutation(np.arange(n_rows) % n_folds)
    return oof, y, fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--sample", type=int, default=60, help="subsets timed in the plain loop")
    parser.add_argument("--pool", type=int, default=200,
                        help="models of the large-pool run of greedy/beam/GES (0: skip it)")
    args = parser.parse_args()
    oof, y, fold = simulated_oof(args.rows, args.classes, args.models, args.folds, seed=0)
    names = [f"sim_{m:03d}" for m in range(args.models)]
    total = 2 ** args.models - 1

    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), _cpu_seconds()
    result = search_arrays(oof, y, fold, names=names, metric="lwlrap", blend="geo-mean",
                           method="exhaustive", nested=True, n_jobs=args.n_jobs)
    fast_s, fast_cpu = time.perf_counter() - start, _cpu_seconds() - cpu

    rng = np.random.default_rng(1)
    sample = rng.choice(np.arange(1, total + 1), size=min(args.sample, total), replace=False)
    start = time.perf_counter()
    plain = {}
    for mask in sample:
        members = [m for m in range(args.models) if (int(mask) >> m) & 1]
        plain[tuple(members)] = lwlrap(y, blend(oof[:, members], "geo-mean"))
    per_subset = (time.perf_counter() - start) / len(sample)
    plain_total = per_subset * total

    best_plain = lwlrap(y, blend(oof[:, [names.index(n) for n in result.members]], "geo-mean"))
    print(f"exhaustive search: {total:,} subsets of {args.models} models on {args.rows:,} x "
          f"{args.classes} OOF, {args.folds} folds, geo-mean + lwlrap, nested CV included, "
          f"{args.n_jobs} processes")
    print(f"  total time        {fast_s:8.2f} s  ({'PASS' if fast_s < 60 else 'FAIL'}: target < 60 s)"
          f"; CPU {fast_cpu:.1f} s over all processes, 1-min load average {load:.1f} at the "
          f"start on {os.cpu_count()} cores")
    print(f"  subsets/s         {total / fast_s:8.0f}")
    print(f"  plain loop        {per_subset * 1e3:8.2f} ms/subset, measured on {len(sample)} random "
          f"subsets and extrapolated to {total:,}: ~{plain_total:,.0f} s")
    print(f"  speed-up          {plain_total / fast_s:8.1f}x  (plain loop / exhaustive search)")
    print(f"  chosen subset     {len(result.members)} models, CV {result.cv:.6f} "
          f"(plain-loop score of the same subset {best_plain:.6f}), nested CV {result.nested_cv:.6f}")
    if args.pool:
        large_pool(args.pool, args.rows, args.classes, args.folds, args.n_jobs)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def large_pool(n_models: int, n_rows: int, n_classes: int, n_folds: int, n_jobs: int) -> None:
    """Greedy, beam and GES (nested CV included) on a pool too large for the exhaustive search."""
    oof, y, fold = simulated_oof(n_rows, n_classes, n_models, n_folds, seed=2)
    names = [f"sim_{m:03d}" for m in range(n_models)]
    print(f"large pool: {n_models} models on {n_rows:,} x {n_classes} OOF, nested CV "
          f"({n_folds} folds), {n_jobs} processes")
    for method in ("auto", "greedy", "beam", "ges"):
        start = time.perf_counter()
        result = search_arrays(oof, y, fold, names=names, method=method, nested=True,
                               n_jobs=n_jobs)
        seconds = time.perf_counter() - start
        print(f"  {method:<7} -> {result.method:<7} {seconds:7.1f} s  "
              f"({'PASS' if seconds < 60 else 'FAIL'}: target < 60 s)  {len(result.members):3d} "
              f"members, CV {result.cv:.4f}, nested CV {result.nested_cv:.4f}, "
              f"{result.n_evaluated:,} candidates")


if __name__ == "__main__":
    main()
