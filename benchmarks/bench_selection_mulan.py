"""Selected CV vs nested CV vs held-out test lwlrap of the subset search, on real MULAN datasets.

For each dataset (emotions, birds, medical) a layout of six scikit-learn experiments is built with
``benchmarks/mulan_layout.py`` (5 folds of the train split; the test split's real labels are kept
aside). Each search method then chooses a geo-mean blend on the OOF rows; the script prints the
selected CV (optimistic: the same rows chose the subset), the nested CV (the selection repeated
with each fold held out), and the lwlrap of the blend's test predictions on the held-out test
labels, next to the best single experiment and the blend of all experiments.

    .venv/bin/python benchmarks/bench_selection_mulan.py [--workdir /tmp/stack_mulan] [emotions ...]

Layouts are built once under --workdir and reused (building all three takes a few minutes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from benchmarks.mulan_layout import DATASETS, MULAN_DIR, build_mulan_layout, read_test_labels  # noqa: E402
from stacker.blend import test_blend  # noqa: E402
from stacker.layout.collect import collect  # noqa: E402
from stacker.leaderboard import leaderboard  # noqa: E402
from stacker.metrics import lwlrap  # noqa: E402
from stacker.search.engine import search_subsets  # noqa: E402

METHODS = ("exhaustive", "greedy", "beam", "ges")


def held_out_score(collection, members, weights, y_test, order) -> float:
    w = None if weights is None else [weights[m] for m in members]
    probs = test_blend(collection, list(members), blend="geo-mean", weights=w)
    return lwlrap(y_test, probs[order])


def run_dataset(dataset: str, workdir: Path, n_jobs: int) -> list[dict]:
    root = workdir / dataset
    began = time.perf_counter()
    build_mulan_layout(dataset, root, seed=0)
    built = time.perf_counter() - began
    collection = collect(root)
    test_ids, y_test = read_test_labels(root)
    position = {i: r for r, i in enumerate(collection.test_ids)}
    order = np.array([position[i] for i in test_ids])
    board = leaderboard(collection, "lwlrap")
    best_single = board.experiment.iloc[0]
    rows = [{"method": f"single best ({best_single})", "size": 1, "cv": board.cv.iloc[0],
             "nested": float("nan"),
             "test": held_out_score(collection, [best_single], None, y_test, order)},
            {"method": "all experiments", "size": collection.n_models,
             "cv": lwlrap(collection.y, np.exp(np.log(np.clip(collection.oof.astype(np.float64),
                                                                1e-7, 1)).mean(axis=1))),
             "nested": float("nan"),
             "test": held_out_score(collection, collection.names, None, y_test, order)}]
    for method in METHODS:
        start = time.perf_counter()
        result = search_subsets(collection, metric="lwlrap", blend="geo-mean", method=method,
                                nested=True, n_jobs=n_jobs)
        weights = result.weights if method == "ges" else None
        rows.append({"method": method, "size": len(result.members), "cv": result.cv,
                     "nested": result.nested_cv, "seconds": time.perf_counter() - start,
                     "members": ",".join(result.members),
                     "test": held_out_score(collection, result.members, weights, y_test, order)})
    print(f"\n{dataset}: {len(collection.ids)} train rows (5 folds), {len(test_ids)} held-out test "
          f"rows, {len(collection.classes)} labels, {collection.n_models} experiments "
          f"(layout {built:.0f} s)")
    print(f"  {'method':<28} {'size':>4} {'selected CV':>11} {'nested CV':>9} {'gap':>7} "
          f"{'test lwlrap':>11}  members")
    for row in rows:
        gap = row["cv"] - row["nested"]
        print(f"  {row['method']:<28} {row['size']:>4} {row['cv']:>11.4f} "
              f"{row['nested']:>9.4f} {gap:>7.4f} {row['test']:>11.4f}  {row.get('members', '')}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stack_mulan"))
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    if not MULAN_DIR.is_dir():
        print(f"skipped: {MULAN_DIR} is absent (see ../shared/data/README.md)")
        return
    for dataset in args.datasets:
        run_dataset(dataset, args.workdir, args.n_jobs)


if __name__ == "__main__":
    main()
