"""One short check of every GPU path on CUDA: the subset search, level-2 training, the CNN's fit.

For a session that is lent a GPU machine. Each step runs on ``--device`` (default cuda) and
prints its time; the search also runs on the CPU and must choose the same subsets with the same
scores (the torch path is bit-identical to the numpy one). Exits 2 with a one-line message when
torch sees no CUDA device, and 1 when a step fails. About a minute on an idle GPU:

    .venv/bin/python benchmarks/gpu_check.py [--device cuda] [--models 16] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def check_search(device: str, n_models: int, n_rows: int) -> bool:
    from bench_search import simulated_oof

    from stacker.search.engine import search_arrays

    oof, y, fold = simulated_oof(n_rows, 80, n_models, 5, seed=0)
    names = [f"sim_{m:03d}" for m in range(n_models)]
    ok = True
    for method in ("exhaustive", "greedy"):
        runs = {}
        for where in (device, "cpu"):
            start = time.perf_counter()
            runs[where] = search_arrays(oof, y, fold, names=names, method=method, nested=True,
                                        n_jobs=os.cpu_count() or 1, device=where)
            seconds = time.perf_counter() - start
            print(f"  search {method:<10} {where:<6} {seconds:7.2f} s  "
                  f"({runs[where].params['backend']}, {runs[where].n_evaluated:,} candidates)",
                  flush=True)
        gpu, cpu = runs[device], runs["cpu"]
        same = (gpu.members == cpu.members and gpu.cv == cpu.cv and gpu.nested_cv == cpu.nested_cv
                and [c.members for c in gpu.top] == [c.members for c in cpu.top])
        print(f"  search {method:<10} same result on {device} and cpu: {same}")
        ok = ok and same
    return ok


def check_level2(device: str, n_rows: int, max_epochs: int) -> bool:
    from bench_train import build

    from stacker.layout.collect import collect
    from stacker.level2 import fit as train
    from stacker.level2 import params as level2_params

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "layout"
        build(root, n_rows=n_rows)
        collection = collect(root)
        params = level2_params.MLPParams(max_epochs=max_epochs)
        start = time.perf_counter()
        result = train.train_level2(collection, collection.names, params=params, device=device)
        seconds = time.perf_counter() - start
        cv, _ = result.scores()
    print(f"  level-2 training  {device:<6} {seconds:7.2f} s  ({len(result.fold_numbers)} folds, "
          f"{n_rows:,} rows, at most {max_epochs} epochs), CV {cv:.4f}", flush=True)
    return bool(np.isfinite(cv))


def check_cnn(device: str, n_clips: int, epochs: int) -> bool:
    from first_level.audio.model import AudioCNNModel

    rng = np.random.default_rng(0)
    n_classes, n_mels = 10, 64
    labels = rng.integers(n_classes, size=n_clips)
    y = np.eye(n_classes, dtype=np.float32)[labels]
    # class-dependent bands in noise: learnable in a few epochs
    X = []
    for k in labels:
        spec = rng.normal(size=(n_mels, int(rng.integers(60, 140)))).astype(np.float32)
        spec[4 + 5 * k: 8 + 5 * k] += 2.0
        X.append(spec)
    cut = int(0.8 * n_clips)
    model = AudioCNNModel(epochs=epochs, device=device, seed=0)
    start = time.perf_counter()
    model.fit(X[:cut], y[:cut], X[cut:], y[cut:])
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(model.predict_proba(X[cut:]).argmax(1) == labels[cut:]))
    print(f"  CNN fit           {device:<6} {seconds:7.2f} s  ({cut} clips, {epochs} epochs), "
          f"held-out accuracy {accuracy:.3f}", flush=True)
    return bool(np.isfinite(accuracy))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", type=int, default=16, help="models of the exhaustive search")
    parser.add_argument("--quick", action="store_true", help="smaller problems (a smoke test)")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False); run it "
              "on a machine with a GPU, or pass --device cpu to exercise the same code on the CPU")
        return 2
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"gpu_check on {args.device} ({name}); torch {torch.__version__}; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    quick = args.quick
    steps = [
        ("search", lambda: check_search(args.device, 8 if quick else args.models,
                                        600 if quick else 5000)),
        ("level-2", lambda: check_level2(args.device, 600 if quick else 5000, 3 if quick else 20)),
        ("cnn", lambda: check_cnn(args.device, 80 if quick else 600, 2 if quick else 8)),
    ]
    failed = []
    for label, step in steps:
        try:
            if not step():
                failed.append(label)
        except Exception as error:  # noqa: BLE001 - report every step, then fail
            print(f"  {label} FAILED: {type(error).__name__}: {error}", flush=True)
            failed.append(label)
    print("gpu_check: " + ("all steps passed" if not failed else f"FAILED: {', '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
