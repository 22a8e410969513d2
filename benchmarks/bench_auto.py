"""`stack auto` against the recipes a user would otherwise pick, on held-out labels; and its run time.

Part 1, quality. For each MULAN dataset (emotions, birds, medical; ``../shared/data/mulan``) the layout
of ``benchmarks/mulan_layout.py`` (six scikit-learn experiments, 5 folds of the train split, the
test split's real labels kept aside) goes through ``stacker.auto.run_auto``. The script prints, per
dataset, the held-out test lwlrap of: the best single model (by CV), the geometric mean of all, the
best first-level subset, ensemble selection (GES), each level-2 experiment, and `stack auto`'s final
blend, plus `stack auto`'s nested CV; then the mean over the datasets, and whether `stack auto` is
at least the best of the others on the mean and never more than 0.005 below the best on any one:
once against the recipes the issue lists, once with the first-level linear stacker (#14) added.

Part 2, time. A FAT2019-size layout (the real ``train_curated.csv`` rows and labels: 4,970 rows,
80 classes, 5 folds, 10 simulated experiments, 1,120 test rows) through `stack auto` with the default
budget and with ``--time-budget 120``: wall time against the budget.

    .venv/bin/python benchmarks/bench_auto.py [--workdir /tmp/stack_bench_auto] [--parts quality,time]
        [--budget 240] [--seed 0] [--trials N] [--dump DIR] [emotions ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from benchmarks.mulan_layout import DATASETS, MULAN_DIR, build_mulan_layout, read_test_labels  # noqa: E402
from stacker.auto import AutoSettings, run_auto  # noqa: E402
from stacker.layout.collect import collect  # noqa: E402
from stacker.metrics import lwlrap  # noqa: E402

TRAIN_CURATED = ROOT_DIR.parent / "shared" / "data" / "fat2019" / "train_curated.csv"


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def held_out(collection, recipe, y_test, order) -> float:
    probs = recipe.combination.test(collection)
    return lwlrap(y_test, probs[order])


def quality(dataset: str, workdir: Path, budget: float, seed: int = 0,
            trials: int | None = None, dump: Path | None = None) -> dict:
    root = workdir / dataset
    build_mulan_layout(dataset, root, seed=0)
    began = time.perf_counter()
    result = run_auto(root, settings=AutoSettings(time_budget=budget, seed=seed, n_trials=trials),
                      out=None, report=None)
    seconds = time.perf_counter() - began
    collection = collect(root)
    test_ids, y_test = read_test_labels(root)
    position = {i: p for p, i in enumerate(collection.test_ids)}
    order = [position[i] for i in test_ids]
    recipes = {r.name: r for r in result.recipes}
    rows = {}
    for name in ("best single", "all first-level", "first-level subset", "first-level GES",
                 "first-level linear", *result.level2):
        rows[name] = held_out(collection, recipes[name], y_test, order)
    final = result.final
    rows["stack auto"] = held_out(collection, final, y_test, order)
    if dump is not None:
        # the submission's test predictions, to compare two versions of stack auto bit for bit
        dump.mkdir(parents=True, exist_ok=True)
        probs = final.combination.test(collection)
        np.save(dump / f"{dataset}.npy", probs[order])
    return {"dataset": dataset, "test": rows, "nested_cv": final.nested_cv, "chosen": final.name,
            "seconds": seconds, "load": load()}


def print_quality(results: list[dict]) -> bool:
    names = list(dict.fromkeys(n for r in results for n in r["test"]))
    width = max(len(n) for n in names) + 2
    print(f"{'held-out test lwlrap':<{width}}" + "".join(f"{r['dataset']:>11}" for r in results)
          + f"{'mean':>11}")
    means = {}
    for name in names:
        values = [r["test"].get(name, np.nan) for r in results]
        means[name] = float(np.mean(values))
        print(f"{name:<{width}}" + "".join(f"{v:>11.4f}" for v in values) + f"{means[name]:>11.4f}")
    print(f"{'auto nested CV':<{width}}" + "".join(f"{r['nested_cv']:>11.4f}" for r in results))
    print(f"{'auto chose':<{width}}" + "".join(f"{r['chosen'][:10]:>11}" for r in results))
    print(f"{'auto seconds':<{width}}" + "".join(f"{r['seconds']:>11.0f}" for r in results))
    for r in results:
        print(f"  {r['dataset']}: {r['load']}")
    listed = [n for n in names if n not in ("stack auto", "first-level linear")]
    ok = _criterion(results, means, listed, "the recipes the issue lists")
    _criterion(results, means, [n for n in names if n != "stack auto"],
               "those and the first-level linear stacker")
    return ok


def _criterion(results: list[dict], means: dict, others: list[str], what: str) -> bool:
    """stack auto >= the best of ``others`` on the mean, and never 0.005 below the best on one."""
    best_mean = max(means[n] for n in others)
    worst_gap = max(max(r["test"][n] for n in others if n in r["test"]) - r["test"]["stack auto"]
                    for r in results)
    ok = means["stack auto"] >= best_mean - 1e-12 and worst_gap <= 0.005
    print(f"against {what}: stack auto mean {means['stack auto']:.4f} vs best other mean "
          f"{best_mean:.4f}; largest shortfall on one dataset {worst_gap:.4f} (limit 0.005): "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def fat2019_layout(root: Path) -> None:
    from stacker.layout import split_labels
    from stacker.simulate import write_simulated_layout

    if (root / "folds.csv").exists():
        return
    import pandas as pd

    frame = pd.read_csv(TRAIN_CURATED)
    ids = frame.fname.astype(str).tolist()
    labels = [split_labels(v) for v in frame.labels]
    fold = np.random.default_rng(0).permutation(np.arange(len(ids)) % 5)
    write_simulated_layout(root, ids, labels, fold, n_experiments=10, n_test=1120, seed=0,
                           skills=np.linspace(0.8, 1.6, 10))


def timing(workdir: Path, budgets) -> None:
    if not TRAIN_CURATED.exists():
        print(f"skip time: {TRAIN_CURATED} is absent")
        return
    for budget in budgets:
        root = workdir / f"fat2019_{int(budget)}"
        fat2019_layout(root)
        began = time.perf_counter()
        result = run_auto(root, settings=AutoSettings(time_budget=budget), out=None, report=None)
        seconds = time.perf_counter() - began
        stages = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
        print(f"FAT2019 size (4,970 x 80, 10 experiments, 5 folds), budget {budget:.0f} s: "
              f"{seconds:.0f} s ({seconds / budget:.2f} of the budget; {stages}); "
              f"trials {result.tuning.get('n_complete')} complete + {result.tuning.get('n_pruned')} "
              f"pruned, {len(result.level2)} level-2 experiments; chose {result.final.name} "
              f"(nested CV {result.final.nested_cv:.4f}); {load()}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stack_bench_auto"))
    parser.add_argument("--parts", default="quality,time")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="stack auto's time budget per MULAN dataset (seconds)")
    parser.add_argument("--seed", type=int, default=0,
                        help="stack auto's seed (tuning, level-2 models, searches); the first "
                             "level stays the same")
    parser.add_argument("--trials", type=int, default=None,
                        help="tune exactly this many trials (a reproducible run) instead of the "
                             "time budget deciding")
    parser.add_argument("--dump", type=Path, default=None,
                        help="save each dataset's submission (test rows x classes) as "
                             "DUMP/<dataset>.npy, to compare two versions bit for bit "
                             "(benchmarks/compare_dumps.py)")
    args = parser.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parts = set(args.parts.split(","))
    if "quality" in parts:
        if not MULAN_DIR.exists():
            print(f"skip quality: {MULAN_DIR} is absent")
        else:
            print_quality([quality(d, args.workdir, args.budget, args.seed, args.trials, args.dump)
                           for d in args.datasets])
    if "time" in parts:
        timing(args.workdir, [AutoSettings().time_budget, 120.0])


if __name__ == "__main__":
    main()
