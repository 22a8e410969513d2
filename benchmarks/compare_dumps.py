"""Compare two `bench_auto.py --dump` folders: the largest absolute difference per dataset.

    .venv/bin/python benchmarks/compare_dumps.py BEFORE_DIR AFTER_DIR [--tolerance 1e-6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args(argv)
    worst = 0.0
    names = sorted(p.name for p in args.before.glob("*.npy"))
    if not names:
        print(f"no .npy files in {args.before}")
        return 1
    for name in names:
        before = np.load(args.before / name)
        after_path = args.after / name
        if not after_path.exists():
            print(f"{name}: missing in {args.after}")
            return 1
        after = np.load(after_path)
        if before.shape != after.shape:
            print(f"{name}: shapes differ {before.shape} vs {after.shape}")
            return 1
        diff = float(np.max(np.abs(before - after)))
        worst = max(worst, diff)
        print(f"{name}: max |before - after| = {diff:.3g}")
    ok = worst <= args.tolerance
    print(f"largest difference {worst:.3g} (tolerance {args.tolerance:g}): {'SAME' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
