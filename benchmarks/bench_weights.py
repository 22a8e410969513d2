"""Weighted blends beyond GES on real data: selected CV, nested CV, held-out test lwlrap and time.

For the three MULAN datasets (emotions, birds, medical; layouts of six scikit-learn experiments
built by ``benchmarks/mulan_layout.py``, 5 folds, the test split's real labels kept aside) and one
audio layout (the ``stack demo`` synthetic audio dataset: CNN and scikit-learn models on
log-mel spectrograms, plus its level-2 MLPs; test labels in ``data/test_labels.csv``), every
weighted method of ``stack search-subsets`` chooses a geo-mean blend on the OOF rows. Printed per
method: the selected CV (optimistic), the nested CV (the honest estimate), the lwlrap of the
blend's test predictions on the held-out labels, the members and the seconds it took. The best
single experiment and the equal-weight blend of all experiments are the baselines.

    .venv/bin/python benchmarks/bench_weights.py [--workdir /tmp/stack_weights] [--demo-quick]
                                                 [emotions birds medical demo]

Layouts are built once under --workdir and reused (the MULAN ones take a few minutes; the demo
about 5-10 minutes, or under a minute with --demo-quick).
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
from first_level import synth  # noqa: E402
from stacker import layout  # noqa: E402
from stacker.blend import test_blend  # noqa: E402
from stacker.errors import OptionError  # noqa: E402
from stacker.layout.collect import collect  # noqa: E402
from stacker.leaderboard import leaderboard  # noqa: E402
from stacker.metrics import lwlrap  # noqa: E402
from stacker.search.engine import search_subsets  # noqa: E402
from stacker.search.subsets import searched_weights  # noqa: E402

# (label, method, extra options)
METHODS = (("ges", "ges", {}),
           ("ges sorted-init 3", "ges", {"ges_init": 3}),
           ("ges-bagged", "ges-bagged", {}),
           ("cmaes", "cmaes", {}),
           ("per-class", "per-class", {}),
           ("linear", "linear", {}))


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} cores"


def demo_layout(workdir: Path, quick: bool) -> tuple[Path, np.ndarray, np.ndarray]:
    """Root of the demo's prediction layout (built if absent) and its test ids and labels."""
    from typer.testing import CliRunner

    from stacker.cli.app import app

    demo = workdir / ("demo_quick" if quick else "demo")
    if not (demo / "predictions" / layout.FOLDS_FILE).exists():
        args = ["demo", "--workdir", str(demo)] + (["--quick"] if quick else [])
        result = CliRunner().invoke(app, args)
        if result.exit_code != 0:
            raise SystemExit(f"stack demo failed:\n{result.output}")
    root = demo / "predictions"
    ids, labels = synth.read_labels(demo / "data" / "test_labels.csv")
    classes = layout.read_folds(root).classes
    return root, np.asarray(ids), layout.labels_to_matrix(labels, classes)


def test_score(collection, result, y_test, order) -> float:
    members = list(result.members)
    weights, intercept = searched_weights(result.to_json(), members, collection.classes)
    probs = test_blend(collection, members, blend=result.blend, weights=weights,
                       intercept=intercept, power=result.power, eps=result.eps)
    return lwlrap(y_test, probs[order])


def run_layout(name: str, root: Path, test_ids, y_test, n_jobs: int, seed: int) -> list[dict]:
    collection = collect(root)
    position = {i: r for r, i in enumerate(collection.test_ids)}
    order = np.array([position[i] for i in test_ids])
    board = leaderboard(collection, "lwlrap")
    single = str(board.experiment.iloc[0])
    equal = np.ones(collection.n_models)
    all_oof = collection.oof.astype(np.float64)
    rows = [{"method": f"single best ({single})", "size": 1, "cv": float(board.cv.iloc[0]),
             "nested": float("nan"),
             "test": lwlrap(y_test, test_blend(collection, [single])[order]), "seconds": 0.0},
            {"method": "all, equal weights", "size": collection.n_models,
             "cv": lwlrap(collection.y, np.exp(np.log(np.clip(all_oof, 1e-7, 1)).mean(axis=1))),
             "nested": float("nan"), "seconds": 0.0,
             "test": lwlrap(y_test, test_blend(collection, collection.names,
                                               weights=equal)[order])}]
    for label, method, options in METHODS:
        start = time.perf_counter()
        try:
            result = search_subsets(collection, metric="lwlrap", blend="geo-mean", method=method,
                                    nested=True, n_jobs=n_jobs, seed=seed, **options)
        except OptionError as error:
            rows.append({"method": label, "refused": str(error)})
            continue
        rows.append({"method": label, "size": len(result.members), "cv": result.cv,
                     "nested": result.nested_cv, "seconds": time.perf_counter() - start,
                     "members": ",".join(f"{m}:{result.weights[m]:.2f}" for m in result.members),
                     "test": test_score(collection, result, y_test, order)})
    print(f"\n{name}: {len(collection.ids)} train rows ({collection.folds.n_folds} folds), "
          f"{len(test_ids)} held-out test rows, {len(collection.classes)} labels, "
          f"{collection.n_models} experiments; {load()}")
    print(f"  {'method':<26} {'size':>4} {'selected CV':>11} {'nested CV':>9} {'gap':>7} "
          f"{'test lwlrap':>11} {'seconds':>7}  members (weights)")
    for row in rows:
        if "refused" in row:
            print(f"  {row['method']:<26} refused: {row['refused']}")
            continue
        gap = row["cv"] - row["nested"]
        print(f"  {row['method']:<26} {row['size']:>4} {row['cv']:>11.4f} {row['nested']:>9.4f} "
              f"{gap:>7.4f} {row['test']:>11.4f} {row['seconds']:>7.1f}  {row.get('members', '')}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layouts", nargs="*", default=[*DATASETS, "demo"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stack_weights"))
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-quick", action="store_true",
                        help="the small demo (240 train clips) instead of the full one")
    args = parser.parse_args()
    print(f"bench_weights: {load()}")
    for name in args.layouts:
        if name == "demo":
            root, test_ids, y_test = demo_layout(args.workdir, args.demo_quick)
            run_layout("demo (synthetic audio)" + (" --quick" if args.demo_quick else ""),
                       root, test_ids, y_test, args.n_jobs, args.seed)
            continue
        if not MULAN_DIR.is_dir():
            print(f"skipped {name}: {MULAN_DIR} is absent (see ../shared/data/README.md)")
            continue
        root = args.workdir / "mulan" / name
        build_mulan_layout(name, root, seed=0)
        test_ids, y_test = read_test_labels(root)
        run_layout(f"mulan/{name}", root, test_ids, y_test, args.n_jobs, args.seed)


if __name__ == "__main__":
    main()
