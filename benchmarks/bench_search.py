"""Exhaustive subset search speed: every non-empty subset of 16 models on 5,000 x 80 OOF.

Target: all 65,535 subsets (geo-mean blend, lwlrap, nested CV included) in under 60 s with 2
processes. The baseline is a plain loop that blends each subset from scratch
(:func:`stacker.blend.blend`) and scores it with :func:`stacker.metrics.lwlrap`; it is timed on a
random sample of subsets and extrapolated to all of them (running it in full would take long).

    .venv/bin/python benchmarks/bench_search.py [--models 16] [--rows 5000] [--classes 80]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stacker.blend import blend
from stacker.metrics import lwlrap
from stacker.search import search_arrays
from stacker.simulate import simulated_probs


def simulated_oof(n_rows: int, n_classes: int, n_models: int, n_folds: int, seed: int):
    """FAT2019-like labels (one per row, a second in 30% of rows) and correlated models."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_rows, n_classes), dtype=np.uint8)
    y[np.arange(n_rows), rng.integers(n_classes, size=n_rows)] = 1
    extra = np.flatnonzero(rng.random(n_rows) < 0.3)
    y[extra, rng.integers(n_classes, size=len(extra))] = 1
    shared = rng.normal(size=y.shape)
    skills = np.linspace(1.0, 2.5, n_models)
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
    args = parser.parse_args()
    oof, y, fold = simulated_oof(args.rows, args.classes, args.models, args.folds, seed=0)
    names = [f"sim_{m:03d}" for m in range(args.models)]
    total = 2 ** args.models - 1

    start = time.perf_counter()
    result = search_arrays(oof, y, fold, names=names, metric="lwlrap", blend="geo-mean",
                           method="exhaustive", nested=True, n_jobs=args.n_jobs)
    fast_s = time.perf_counter() - start

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
    print(f"  total time        {fast_s:8.2f} s  ({'PASS' if fast_s < 60 else 'FAIL'}: target < 60 s)")
    print(f"  subsets/s         {total / fast_s:8.0f}")
    print(f"  plain loop        {per_subset * 1e3:8.2f} ms/subset, measured on {len(sample)} random "
          f"subsets and extrapolated to {total:,}: ~{plain_total:,.0f} s")
    print(f"  speed-up          {plain_total / fast_s:8.1f}x  (plain loop / exhaustive search)")
    print(f"  chosen subset     {len(result.members)} models, CV {result.cv:.6f} "
          f"(plain-loop score of the same subset {best_plain:.6f}), nested CV {result.nested_cv:.6f}")


if __name__ == "__main__":
    main()
