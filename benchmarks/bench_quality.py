"""Does stacking pay on real data? Held-out test lwlrap of the whole `stack` pipeline on MULAN sets.

For each dataset (emotions, birds, medical) the layout of ``benchmarks/mulan_layout.py`` holds six
scikit-learn experiments (5 folds of the train split, each fold model predicting the test split)
and the real test labels, which no step below reads. The script then runs the commands a user
would run, through the CLI:

    stack search-subsets --method exhaustive                  -> the chosen subset S
    stack tune --trials N --seed 0                            -> best params (inputs: all level-1)
    stack train --params best --seeds 0,1,2 --per-seed --name l2_all      (inputs: all level-1)
    stack train --params best --seeds 0,1,2 --per-seed --name l2_sub --subset best   (inputs: S)
    stack blend --geo-mean --subset S + the six level-2 experiments

and prints, for each dataset, the OOF CV and the held-out test lwlrap of: the best single model
(by CV), the geometric mean of all models, the chosen subset, each level-2 MLP (its seeds'
geometric mean) and the final blend. The final blend must beat the best single model and the
geometric mean of all models on the test split. Training time per fold model is printed too.

    .venv/bin/python benchmarks/bench_quality.py [--workdir /tmp/stack_bench_quality]
        [--trials 30] [--seeds 0,1,2] [emotions birds medical]

Layouts are built once under --workdir and reused; the level-2 steps are redone on every run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from typer.testing import CliRunner  # noqa: E402

from benchmarks.mulan_layout import DATASETS, MULAN_DIR, build_mulan_layout, read_test_labels  # noqa: E402
from stacker import layout  # noqa: E402
from stacker.blend import oof_blend, test_blend  # noqa: E402
from stacker.cli.app import app  # noqa: E402
from stacker.layout.collect import collect  # noqa: E402
from stacker.metrics import lwlrap  # noqa: E402
from stacker.search.subsets import read_subsets  # noqa: E402

PREFIX = "l2_"   # level-2 experiments this script writes (and removes before each run)


def stack(*args) -> str:
    """Run one `stack` command in-process; stop with its output when it fails."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != 0:
        raise SystemExit(f"`stack {' '.join(map(str, args))}` failed:\n{result.output}")
    return result.output


def clean(root: Path) -> None:
    """Remove what an earlier run of this script wrote, keeping the first-level experiments."""
    for name in layout.list_experiments(root):
        if name.startswith(PREFIX) and int(layout.read_meta(root, name).get("level", 1)) == 2:
            shutil.rmtree(layout.experiment_dir(root, name))
    for leftover in ("bench_tune.db", "best_params.json", "subsets.json"):
        (root / layout.STACK_DIR / leftover).unlink(missing_ok=True)


def run_dataset(dataset: str, workdir: Path, trials: int, seeds: list[int], device: str) -> dict:
    root = workdir / dataset
    build_mulan_layout(dataset, root, seed=0)
    clean(root)
    level1 = [n for n in layout.list_experiments(root)
              if int(layout.read_meta(root, n).get("level", 1)) == 1]
    stack("search-subsets", "--root", root, "--method", "exhaustive", "--n-jobs", 1)
    subset = list(read_subsets(root)["members"])
    began = time.perf_counter()
    stack("tune", "--root", root, "--trials", trials, "--seed", 0, "--device", device,
          "--storage", f"sqlite:///{root / layout.STACK_DIR / 'bench_tune.db'}", "--study", "bench")
    tune_s = time.perf_counter() - began
    tuned = json.loads((root / layout.STACK_DIR / "best_params.json").read_text())
    seed_text = ",".join(map(str, seeds))
    began = time.perf_counter()
    stack("train", "--root", root, "--params", "best", "--seeds", seed_text, "--per-seed",
          "--name", f"{PREFIX}all", "--device", device)
    stack("train", "--root", root, "--params", "best", "--seeds", seed_text, "--per-seed",
          "--name", f"{PREFIX}sub", "--subset", "best", "--device", device)
    train_s = time.perf_counter() - began
    l2_all = [f"{PREFIX}all_seed{s}" for s in seeds]
    l2_sub = [f"{PREFIX}sub_seed{s}" for s in seeds]
    final = subset + l2_all + l2_sub
    out = root / "final_submission.csv"
    stack("blend", "--geo-mean", "--root", root, "--subset", ",".join(final), "--out", out, "--force")

    col = collect(root)
    test_ids, y_test = read_test_labels(root)
    position = {i: r for r, i in enumerate(col.test_ids)}
    order = np.array([position[i] for i in test_ids])
    n_folds = len(col.fold_numbers)
    fold_models = 2 * n_folds * len(seeds)

    def score(members):
        return (lwlrap(col.y, oof_blend(col, members)),
                lwlrap(y_test, test_blend(col, members)[order]))

    singles = {n: score([n]) for n in level1}
    best = max(singles, key=lambda n: singles[n][0])
    submission = pd.read_csv(out, dtype={0: str}).set_index(layout.read_folds(root).id_column)
    final_test = lwlrap(y_test, submission.loc[test_ids, list(col.classes)].to_numpy())
    final_cv, final_check = score(final)
    # the CSV keeps 7 significant digits: rounding can create a few ties, nothing more
    assert abs(final_check - final_test) < 1e-3, (final_check, final_test)
    rows = [("best single (by CV): " + best, 1, *singles[best]),
            ("geo-mean of all models", len(level1), *score(level1)),
            ("chosen subset: " + ",".join(subset), len(subset), *score(subset)),
            (f"level-2 MLP on all ({len(seeds)} seeds)", len(seeds), *score(l2_all)),
            (f"level-2 MLP on subset ({len(seeds)} seeds)", len(seeds), *score(l2_sub)),
            ("final blend: subset + level-2", len(final), final_cv, final_test)]
    return {"dataset": dataset, "rows": rows, "tune_s": tune_s, "trials": trials,
            "tuned_cv": tuned["cv"], "train_s": train_s, "fold_models": fold_models,
            "beats_single": final_test > singles[best][1],
            "beats_geo": final_test > rows[1][3], "best_test_single": max(t for _, t in singles.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stack_bench_quality"))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not MULAN_DIR.is_dir():
        raise SystemExit(f"{MULAN_DIR} is absent: the MULAN data is needed (see ../shared/data)")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for dataset in args.datasets:
        result = run_dataset(dataset, args.workdir, args.trials, seeds, args.device)
        results.append(result)
        print(f"\n{dataset}: tune {result['trials']} trials in {result['tune_s']:.0f} s (tuned CV "
              f"{result['tuned_cv']:.4f}, optimistic); train {result['fold_models']} fold models in "
              f"{result['train_s']:.1f} s = {result['train_s'] / result['fold_models']:.2f} s per "
              "fold model (CLI, collect included)")
        print(f"{'':<48} {'size':>4} {'CV':>7} {'test':>7}")
        for label, size, cv, test in result["rows"]:
            print(f"{label:<48} {size:>4} {cv:>7.4f} {test:>7.4f}")
        print(f"(best single model on the test split itself, for reference: "
              f"{result['best_test_single']:.4f})")
    print("\nfinal blend vs best single / vs geo-mean of all (held-out test lwlrap):")
    for r in results:
        final = r["rows"][-1][3]
        print(f"  {r['dataset']:<9} {final:.4f}: "
              f"{'beats' if r['beats_single'] else 'LOSES TO'} best single {r['rows'][0][3]:.4f}, "
              f"{'beats' if r['beats_geo'] else 'LOSES TO'} geo-mean {r['rows'][1][3]:.4f}")
    if not all(r["beats_single"] and r["beats_geo"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
