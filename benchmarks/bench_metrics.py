"""lwlrap on 5,000 x 80 FAT2019-like labels: stacker.metrics.lwlrap against the DCASE 2019 loop.

Prints both times, the speed ratio measured in this run (target: at least 100x) and the
1-minute load average (the machine is shared: only the ratio is comparable between runs), checks
that the two agree, and times the previous implementation (one gather of every positive's row,
kept below) as a second reference. Run:
``.venv/bin/python benchmarks/bench_metrics.py [--rows 5000] [--classes 80]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from stacker.metrics import lwlrap
from stacker.metrics_reference import reference_lwlrap

TARGET_RATIO = 100.0


def fat2019_like(n_rows: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with 1-3 classes a row (mostly 1, as in train_curated.csv) and noisy float32 scores."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n_rows, n_classes), dtype=np.uint8)
    n_labels = rng.choice([1, 2, 3], size=n_rows, p=[0.86, 0.12, 0.02])
    for i, k in enumerate(n_labels):
        truth[i, rng.choice(n_classes, size=k, replace=False)] = 1
    logits = 2.0 * truth + rng.normal(size=truth.shape) - 1.5
    return truth, (1 / (1 + np.exp(-logits))).astype(np.float32)


def previous_lwlrap(truth, scores) -> float:
    """The implementation before the pass-by-pass one: every positive's row gathered, compared
    with the positive's score and counted twice (classes, positives)."""
    truth = np.asarray(truth) > 0
    rows, classes = np.nonzero(truth)
    row_scores = scores[rows]
    at_or_above = row_scores >= scores[rows, classes][:, None]
    hits = np.count_nonzero(at_or_above & truth[rows], axis=1)
    return float(np.mean(hits / np.count_nonzero(at_or_above, axis=1)))


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    truth, scores = fat2019_like(args.rows, args.classes, args.seed)
    fast_value, naive_value = lwlrap(truth, scores), reference_lwlrap(truth, scores)
    if abs(fast_value - naive_value) > 1e-9 or abs(previous_lwlrap(truth, scores) - fast_value) > 1e-12:
        raise SystemExit(f"lwlrap {fast_value!r} != reference {naive_value!r}")
    load = os.getloadavg()[0]
    # interleaved rounds, best of each: a burst of load on the shared machine hits both alike
    fast, naive, previous = [], [], []
    for _ in range(3):
        fast.append(best_time(lambda: lwlrap(truth, scores), repeats=20))
        previous.append(best_time(lambda: previous_lwlrap(truth, scores), repeats=10))
        naive.append(best_time(lambda: reference_lwlrap(truth, scores), repeats=1))
    fast, naive, previous = min(fast), min(naive), min(previous)
    ratio = naive / fast
    print(f"lwlrap on {args.rows} x {args.classes} ({int(truth.sum())} positives), "
          f"value {fast_value:.6f} (reference {naive_value:.6f}); 1-minute load average "
          f"{load:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  stacker.metrics.lwlrap : {fast * 1e3:8.2f} ms")
    print(f"  previous implementation: {previous * 1e3:8.2f} ms  ({previous / fast:.1f}x slower)")
    print(f"  DCASE reference loop   : {naive * 1e3:8.2f} ms")
    print(f"  ratio                  : {ratio:8.1f}x  (target >= {TARGET_RATIO:.0f}x: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
