"""Exhaustive subset search speed: every non-empty subset of 16 models on 5,000 x 80 OOF.

Targets (idle, 2 cores): all 65,535 subsets (geo-mean blend, lwlrap, nested CV included) in at
most 15 s; then greedy, beam and GES (nested CV included) on a pool of 200 models of the same
size each at most half the time of the previous implementation. The machine is shared, so every
figure comes with the 1-minute load average and a ratio against references timed in the same run:

- "previous": the numpy scorer with worker processes (the implementation before the compiled
  kernel; still the fallback without numba), run in full (``--reference none`` skips it);
- "plain loop": each subset blended from scratch (:func:`stacker.blend.blend_arrays`) and scored with
  :func:`stacker.metrics.lwlrap`, timed on a random sample and extrapolated.

Fixed costs (``--fixed``, the default; ``--fixed 0`` skips them), each in a fresh process: the
interpreter and ``stack --help``; importing the search; a warm ``collect()`` of a collected layout
(mapping the pool); importing numba and the first call of the compiled kernels with their on-disk
cache, and with an empty cache (compiling them); quantizing that pool.

    .venv/bin/python benchmarks/bench_search.py [--models 16] [--rows 5000] [--classes 80]
        [--fixed 40]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import time

import numpy as np

from stacker.blend import blend_arrays as blend
from stacker.metrics import lwlrap
from stacker.search import kernel
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


@contextlib.contextmanager
def previous_implementation():
    """The numpy scorer with worker processes: the search as it was before the compiled kernel."""
    available = kernel.available
    kernel.available = lambda: False
    try:
        yield
    finally:
        kernel.available = available


def timed(fn):
    """(result, wall seconds, CPU seconds of every thread and finished child, load before)."""
    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), _cpu_seconds()
    result = fn()
    return result, time.perf_counter() - start, _cpu_seconds() - cpu, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16, help="models of the exhaustive search "
                        "(0: skip it)")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--sample", type=int, default=60, help="subsets timed in the plain loop")
    parser.add_argument("--pool", type=int, default=200,
                        help="models of the large-pool run of greedy/beam/GES (0: skip it)")
    parser.add_argument("--reference", choices=("full", "none"), default="full",
                        help="also run the previous implementation (full) or not (none)")
    parser.add_argument("--fixed", type=int, default=40,
                        help="models of the pool whose fixed costs are measured (0: skip them)")
    args = parser.parse_args()
    if args.fixed:
        fixed_costs(args.fixed, args.rows, args.classes, args.folds)
    if args.models:
        exhaustive(args)
    if args.pool:
        large_pool(args.pool, args.rows, args.classes, args.folds, args.n_jobs,
                   args.reference == "full")


def exhaustive(args) -> None:
    """Every subset of ``args.models`` models, this version against the previous one."""
    oof, y, fold = simulated_oof(args.rows, args.classes, args.models, args.folds, seed=0)
    names = [f"sim_{m:03d}" for m in range(args.models)]
    total = 2 ** args.models - 1
    print(f"exhaustive search: {total:,} subsets of {args.models} models on {args.rows:,} x "
          f"{args.classes} OOF, {args.folds} folds, geo-mean + lwlrap, nested CV included, "
          f"{args.n_jobs} processes/threads, {os.cpu_count()} cores")
    search = lambda: search_arrays(oof, y, fold, names=names, metric="lwlrap", blend="geo-mean",
                                   method="exhaustive", nested=True, n_jobs=args.n_jobs,
                                   device="cpu")
    result, fast_s, fast_cpu, load = timed(search)
    print(f"  this version      {fast_s:8.2f} s  ({result.params['backend']}; target <= 15 s idle);"
          f" CPU {fast_cpu:.1f} s; load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.reference == "full":
        with previous_implementation():
            previous, old_s, old_cpu, load = timed(search)
        same = (previous.members == result.members and previous.nested_cv == result.nested_cv
                and [c.members for c in previous.top] == [c.members for c in result.top])
        print(f"  previous          {old_s:8.2f} s  ({previous.params['backend']}, processes); CPU "
              f"{old_cpu:.1f} s; load {load:.1f} -> {os.getloadavg()[0]:.1f}")
        print(f"  ratio             {old_s / fast_s:8.1f}x wall, {old_cpu / fast_cpu:.1f}x CPU  "
              f"(previous / this version; same result: {same}); this version at the previous's "
              f"43 s idle figure: ~{43 * fast_s / old_s:.1f} s")

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
    print(f"  subsets/s         {total / fast_s:8.0f}")
    print(f"  plain loop        {per_subset * 1e3:8.2f} ms/subset, measured on {len(sample)} random "
          f"subsets and extrapolated to {total:,}: ~{plain_total:,.0f} s (load "
          f"{os.getloadavg()[0]:.1f})")
    print(f"  speed-up          {plain_total / fast_s:8.1f}x  (plain loop / exhaustive search)")
    print(f"  chosen subset     {len(result.members)} models, CV {result.cv:.6f} "
          f"(plain-loop score of the same subset {best_plain:.6f}), nested CV {result.nested_cv:.6f}")


def _cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its finished children (worker processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def large_pool(n_models: int, n_rows: int, n_classes: int, n_folds: int, n_jobs: int,
               reference: bool) -> None:
    """Greedy, beam and GES (nested CV included) on a pool too large for the exhaustive search."""
    oof, y, fold = simulated_oof(n_rows, n_classes, n_models, n_folds, seed=2)
    names = [f"sim_{m:03d}" for m in range(n_models)]
    print(f"large pool: {n_models} models on {n_rows:,} x {n_classes} OOF, nested CV "
          f"({n_folds} folds), {n_jobs} processes/threads; target: each at most half the "
          f"previous time")
    for method in ("auto", "greedy", "beam", "ges"):
        run = lambda method=method: search_arrays(oof, y, fold, names=names, method=method,
                                                  nested=True, n_jobs=n_jobs, device="cpu")
        result, seconds, cpu, load = timed(run)
        line = (f"  {method:<7} -> {result.method:<7} {seconds:7.1f} s (CPU {cpu:6.1f} s, load "
                f"{load:4.1f})  {len(result.members):3d} members, CV {result.cv:.4f}, nested CV "
                f"{result.nested_cv:.4f}, {result.n_evaluated:,} candidates")
        if reference and method != "auto":
            with previous_implementation():
                previous, old_s, old_cpu, old_load = timed(run)
            same = previous.members == result.members and previous.nested_cv == result.nested_cv
            line += (f"; previous {old_s:.1f} s (CPU {old_cpu:.1f} s, load {old_load:.1f}): "
                     f"ratio {old_s / seconds:.2f}x wall, {old_cpu / cpu:.2f}x CPU "
                     f"({'PASS' if old_s / seconds >= 2 else 'FAIL'}: >= 2x), same result: {same}")
        print(line, flush=True)


# ---------------------------------------------------------------- fixed costs

_CHILD = {
    "stack --help": "from stacker.cli.app import app; import sys; sys.argv = ['stack', '--help']\n"
                    "try:\n    app()\nexcept SystemExit:\n    pass",
    "import the search": "import stacker.search.engine, stacker.layout",
    "warm collect()": "from stacker.layout.collect import collect; import time; t = time.perf_counter()"
                      "; collect(ROOT); print('inner', time.perf_counter() - t)",
    "numba kernels": "import time; t = time.perf_counter(); import numba; print('import', "
                     "time.perf_counter() - t); from stacker.search import kernel, stable_rows; "
                     "import numpy as np; t = time.perf_counter(); QUANTIZED",
    "quantize": "import numpy as np, time; from stacker.layout.collect import collect; "
                "from stacker.search.scoring import make_scorer, quantize; c = collect(ROOT); "
                "s = make_scorer(c.y, c.fold, c.fold_numbers, 'lwlrap', blend='geo-mean', "
                "power=2.0); t = time.perf_counter(); quantize(c.oof, 'geo-mean', max_terms=25, "
                "power=2.0, eps=1e-7, rows=s.rows, n_jobs=2); print('inner', time.perf_counter() - t)",
}
# the first call of each kernel on toy arrays of the types the search passes (loads or compiles)
_FIRST_CALLS = (
    "i = lambda *s: np.zeros(s, dtype=np.int64); f = lambda *s: np.zeros(s); "
    "q = i(1, 1, 2); st = np.array([0, 1]); c = i(1); k = stable_rows._compile(); "
    "k['margins'](q, st, c, i(1, 1), i(1, 1)); b, a, v = i(1, 1), i(1, 1), f(1, 1); "
    "k['base_state'](q[0], st, c, f(1), b[0], a[0], v[0]); "
    "k['extend'](q, q, c, c, c, st, c, c, f(1), i(1, 1), i(1, 1), b, a, v, True, 8, f(1, 1), "
    "i(1)); "
    "print('first calls', time.perf_counter() - t)")


def fixed_costs(n_models: int, n_rows: int, n_classes: int, n_folds: int) -> None:
    """Start-up, imports, pool loading, kernel loading/compilation and quantization, each timed
    in a fresh process (wall seconds of the process, and the part inside it where it applies)."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from stacker import layout
    from stacker.layout.collect import collect

    project = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench_fixed_") as tmp:
        root = Path(tmp) / "layout"
        oof, y, fold = simulated_oof(n_rows, n_classes, n_models, n_folds, seed=4)
        classes = [f"c{j:02d}" for j in range(n_classes)]
        layout.write_folds(root, [f"r{i:05d}" for i in range(n_rows)],
                           [tuple(classes[j] for j in np.flatnonzero(r)) for r in y], fold,
                           classes=classes)
        folds = layout.read_folds(root)
        test = np.full((10, n_classes), 0.5, dtype=np.float32)
        for m in range(n_models):
            for k in folds.fold_numbers:
                rows = folds.rows_of_fold(k)
                layout.write_fold_predictions(root, f"exp_{m:03d}", k, "val", folds.ids[rows],
                                              oof[rows, m], classes, format="parquet")
                layout.write_fold_predictions(root, f"exp_{m:03d}", k, "test",
                                              [f"t{i}" for i in range(10)], test, classes,
                                              format="parquet")
        collect(root)
        print(f"fixed costs ({n_models} models x {n_rows:,} rows x {n_classes} classes, each in a "
              f"fresh process, {os.cpu_count()} cores):")
        env = {**os.environ, "PYTHONPATH": str(project)}
        empty_cache = Path(tmp) / "numba_cache"
        runs = [(name, code.replace("ROOT", json.dumps(str(root))).replace("QUANTIZED", _FIRST_CALLS),
                 env) for name, code in _CHILD.items()]
        runs.insert(4, ("numba kernels, no cache", runs[3][1],
                        {**env, "NUMBA_CACHE_DIR": str(empty_cache)}))
        runs.insert(0, ("python -c pass", "pass", env))
        for name, code, child_env in runs:
            load = os.getloadavg()[0]
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code], env=child_env, cwd=project,
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"{name}: failed:\n{done.stderr[-2000:]}")
            inner = "; ".join(f"{line.rsplit(' ', 1)[0]} {float(line.rsplit(' ', 1)[1]):.2f} s"
                              for line in done.stdout.splitlines()
                              if line.split(" ")[0] in ("inner", "import", "first"))
            print(f"  {name:<26}{seconds:7.2f} s process" + (f" ({inner})" if inner else "")
                  + f"  load {load:.1f}", flush=True)


if __name__ == "__main__":
    main()
