"""Speed against a real peer: AutoGluon's ``EnsembleSelection`` against ``stack`` GES, whole processes.

``benchmarks/bench_peers.py --speed`` runs this. For each pool size (40 and 200 models of 5,000 rows
x 80 classes, 5 folds: FAT2019-like labels and correlated models, ``bench_search.simulated_oof``) it
writes one layout (probs.parquet, kept under ``--workdir``), collects it once (``stack collect``:
the pool every later command maps) and saves the same OOF as one ``.npy`` for AutoGluon. Then it
times, as whole processes (interpreter start-up, imports and reading the pool included):

    AutoGluon  ``EnsembleSelection(ensemble_size=25, problem_type="softclass")`` handed a vectorised
               lwlrap (one comparison matrix, no sort), as bench_peers.py calls it, fitted on the
               ``.npy`` pool (np.load: the cheapest read it could have)
    stack      ``stack search-subsets --method ges --ges-iterations 25 --no-nested`` (its default
               geo-mean blend), and the same with ``--blend mean``: AutoGluon's own blend, the
               weighted average of probabilities

each ``--repeats`` times, alternating, after one untimed warm-up of each (the files in the page
cache, numba's on-disk cache of the compiled kernel and the bytecode of both written, as an install
leaves them). It prints the median seconds, the
ratios AutoGluon / stack (targets: >= 10x on 200 models, >= 3x on 40), whether stack's mean blend
chose AutoGluon's weights (AutoGluon breaks ties at random and scores in float64, stack exactly:
they agree unless two candidates tie), and the load average before and after each figure.

    /work/venv-peers/bin/python benchmarks/bench_peers.py --speed [--models 40,200] [--repeats 3]

The interpreter running it needs ``autogluon.core`` (the ``[peers]`` extra); ``stack`` runs under the
same interpreter with this checkout first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
ITERATIONS = 25
TARGETS = {40: 3.0, 200: 10.0}       # AutoGluon seconds / stack seconds, at least


def fast_lwlrap(y: np.ndarray, scores: np.ndarray) -> float:
    """lwlrap with one (n_positives, n_classes) comparison and no sort (bench_peers.py's
    ``fast_lwlrap``; ties count as above, as in DCASE's reference)."""
    truth = np.asarray(y) > 0
    rows, cols = np.nonzero(truth)
    above = scores[rows] >= scores[rows, cols][:, None]
    precision = (above & truth[rows]).sum(axis=1) / above.sum(axis=1)
    return float(precision.mean()) if len(precision) else float("nan")


def autogluon_child(folder: Path) -> None:
    """The AutoGluon process: load the pool, fit EnsembleSelection, print its weights as JSON."""
    from autogluon.core.metrics import make_scorer
    from autogluon.core.models.greedy_ensemble.ensemble_selection import EnsembleSelection

    oof = np.load(folder / "oof.npy")                 # (n_models, n_rows, n_classes) float32
    y = np.load(folder / "y.npy").astype(np.float64)
    scorer = make_scorer("lwlrap", fast_lwlrap, optimum=1, greater_is_better=True, needs_proba=True)
    selection = EnsembleSelection(ensemble_size=ITERATIONS, problem_type="softclass", metric=scorer,
                                  random_state=np.random.RandomState(0))
    selection.fit([oof[m] for m in range(len(oof))], y)
    print(json.dumps([float(w) for w in selection.weights_]))


# ---------------------------------------------------------------- the pools


def build_pool(folder: Path, n_models: int, *, n_rows: int, n_classes: int, n_folds: int) -> Path:
    """The layout of ``n_models`` simulated experiments under ``folder / 'layout'`` (reused when
    its parameters match), collected once, and ``oof.npy`` / ``y.npy`` for AutoGluon."""
    from benchmarks.bench_search import simulated_oof
    from stacker import layout
    from stacker.layout.collect import collect

    root = folder / "layout"
    params = {"models": n_models, "rows": n_rows, "classes": n_classes, "folds": n_folds, "v": 1}
    marker = folder / "params.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    oof, y, fold = simulated_oof(n_rows, n_classes, n_models, n_folds, seed=3)
    classes = [f"c{j:02d}" for j in range(n_classes)]
    ids = [f"r{i:05d}" for i in range(n_rows)]
    labels = [tuple(classes[j] for j in np.flatnonzero(row)) for row in y]
    layout.write_folds(root, ids, labels, fold, classes=classes)
    folds = layout.read_folds(root)
    test_ids = [f"t{i:03d}" for i in range(100)]
    test = np.full((len(test_ids), n_classes), 0.5, dtype=np.float32)
    for m in range(n_models):
        name = f"exp_{m:03d}"
        for k in folds.fold_numbers:
            rows = folds.rows_of_fold(k)
            layout.write_fold_predictions(root, name, k, "val", folds.ids[rows], oof[rows, m],
                                          folds.classes, format="parquet")
            layout.write_fold_predictions(root, name, k, "test", test_ids, test, folds.classes,
                                          format="parquet")
        layout.write_meta(root, name, {"model": "simulated", "level": 1, "fold_hash": folds.hash})
    collection = collect(root)
    np.save(folder / "oof.npy", np.ascontiguousarray(np.moveaxis(np.asarray(collection.oof), 1, 0)))
    np.save(folder / "y.npy", np.asarray(collection.y))
    layout.atomic_write_json(marker, params)
    return root


# ---------------------------------------------------------------- timing whole processes


def timed_process(command: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds, stdout) of ``command``; raises SystemExit with its output when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed (exit {done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return seconds, done.stdout


def stack_weights(root: Path, names_order: int) -> list[float]:
    """The weights of subsets.json as a list in experiment order (exp_000, exp_001, ...)."""
    record = json.loads((root / ".stack" / "subsets.json").read_text())
    weights = record.get("weights") or {}
    return [float(weights.get(f"exp_{m:03d}", 0.0)) for m in range(names_order)]


def compare(n_models: int, folder: Path, repeats: int) -> dict:
    """AutoGluon's and stack's medians, their ratio and the loads, on one pool."""
    root = folder / "layout"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}
    # both tools as installed: pip writes every package's bytecode at install time, so the
    # warm-up runs may write the checkout's (a session that sets PYTHONDONTWRITEBYTECODE would
    # otherwise recompile stack's sources in every timed run, and not AutoGluon's)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    autogluon = [sys.executable, str(Path(__file__).resolve()), "--child", str(folder)]
    stack = [sys.executable, "-c", "from stacker.cli.entry import main; main()", "search-subsets",
             "--root", str(root), "--method", "ges", "--ges-iterations", str(ITERATIONS),
             "--no-nested", "--device", "cpu"]
    commands = {"autogluon": autogluon, "stack": stack, "stack mean": stack + ["--blend", "mean"]}
    load_before = os.getloadavg()[0]
    _, out = timed_process(autogluon, env)                    # warm-up: the page cache
    ag_weights = json.loads(out.strip().splitlines()[-1])
    timed_process(stack, env)                                 # warm-up: numba's on-disk cache
    times: dict = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            times[name].append(timed_process(command, env)[0])
    ours = stack_weights(root, n_models)                      # the last run: --blend mean
    same = bool(np.allclose(ag_weights, ours, atol=1e-9))
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"models": n_models, "autogluon_s": median["autogluon"], "stack_s": median["stack"],
            "stack_mean_s": median["stack mean"], "ratio": median["autogluon"] / median["stack"],
            "ratio_mean": median["autogluon"] / median["stack mean"], "same_weights": same,
            "load": [load_before, os.getloadavg()[0]], "times": times}


def run(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="40,200", help="pool sizes, comma-separated")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each tool")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "stack_peers_speed",
                        help="the layouts, one folder per pool size (reused)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return autogluon_child(args.child)
    try:
        import autogluon.core  # noqa: F401
    except ImportError:
        raise SystemExit(f"{sys.executable} has no autogluon.core: run this benchmark with the "
                         "[peers] environment's python (pip install -e '.[peers]')") from None
    sizes = [int(s) for s in args.models.split(",")]
    print(f"AutoGluon EnsembleSelection ({ITERATIONS} steps) against stack GES "
          f"(--ges-iterations {ITERATIONS} --no-nested), whole processes, {args.rows:,} rows x "
          f"{args.classes} classes, median of {args.repeats}; {os.cpu_count()} cores", flush=True)
    results = []
    for n in sizes:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        build_pool(args.workdir / f"m{n}", n, n_rows=args.rows, n_classes=args.classes,
                   n_folds=args.folds)
        print(f"  {n} models: layout ready ({time.perf_counter() - start:.0f} s, load {load:.1f})",
              flush=True)
        r = compare(n, args.workdir / f"m{n}", args.repeats)
        target = TARGETS.get(n)
        verdict = "" if target is None else (f"; target >= {target:.0f}x "
                                             + ("met" if r["ratio"] >= target else "NOT met"))
        print(f"  {n:4d} models: AutoGluon {r['autogluon_s']:6.2f} s, stack {r['stack_s']:5.2f} s "
              f"(geo-mean) -> {r['ratio']:5.1f}x{verdict}; stack --blend mean "
              f"{r['stack_mean_s']:5.2f} s -> {r['ratio_mean']:5.1f}x, AutoGluon's weights: "
              f"{r['same_weights']}; load {r['load'][0]:.1f} -> {r['load'][1]:.1f}", flush=True)
        results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    run()
