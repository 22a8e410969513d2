"""A pool at scale: 100 experiments x 50,000 rows x 100 classes (5 folds, 10,000 test rows), Parquet.

Writes the layout (vectorised numpy, one pyarrow table per fold file), then runs each step in its
own process and prints its wall time and the peak resident memory of that process tree (``os.wait4``;
memory-mapped pages count while they are mapped) against the pool's float32 size, and the CPU
seconds of the process tree (the machine is shared: CPU time says what the work itself costs):

1. ``collect()`` cold (no cache: every Parquet file read, the mapped pool written; the bytes it
   wrote, workers included, from /proc/self/io)
2. ``collect()`` warm (stat the files, map the pool)
3. ``stack collect`` (warm collect + leaderboard + correlation table)
4. ``stack search-subsets --method greedy`` (nested CV; each ``stack`` step runs the console
   script's entry point, ``stacker.cli.entry:main``, as a user's ``stack`` does)
5. ``stack blend --geo-mean --subset best`` (the submission for 10,000 test rows)
6. ``stack search-subsets --method ges`` (nested CV)

Targets on a 2-core machine: cold collect < 60 s, warm collect < 1 s, nested greedy < 120 s, peak
memory of any step < 2x the pool's float32 size. The load average is printed with every figure.

With ``--reference DIR`` (another version of the code, e.g. ``git archive <commit> | tar -x -C DIR``)
the cold collect, nested greedy and nested GES also run with that code, just before ours, in the same
run: its time, bytes written, the ratio and whether the selections (members, weights, nested CV and
every fold's selection) are identical. Before each timed search, each version collects untimed
(its own cache), the writes are synced and the free memory is touched once (a virtual machine's
first touch of memory is a host page fault: without it a step's time depended on the steps before).

Run: ``.venv/bin/python benchmarks/bench_scale.py [--workdir DIR] [--experiments 100] [--rows 50000]
[--reference DIR [--repeat N]]`` (``--repeat``: each search N times, the versions alternating, the
runs of median time compared: one run of each is one sample of a noisy machine)
(``--workdir`` keeps the layout, about 4 GB, and reuses it when its parameters match; the cache and
the search's scratch files need about 3x that again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stacker import layout

PROJECT = Path(__file__).resolve().parents[1]
TARGETS = {"collect() cold": 60.0, "collect() warm": 1.0, "search greedy (nested)": 120.0}
MEMORY_TARGET = 2.0            # x the pool's float32 size


# ---------------------------------------------------------------- the layout


def build(root: Path, args) -> float:
    """Write folds.csv, the template and every experiment as probs.parquet; returns seconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    params = {k: getattr(args, k) for k in ("experiments", "rows", "classes", "folds", "test", "seed")}
    marker = root / "bench_params.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return 0.0
    if root.exists():
        shutil.rmtree(root)
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    classes = [f"class_{j:03d}" for j in range(args.classes)]
    ids = np.array([f"r{i:06d}" for i in range(args.rows)])
    fold = rng.permutation(np.arange(args.rows) % args.folds)
    first = rng.integers(0, args.classes, args.rows)
    second = np.where(rng.random(args.rows) < 0.3, rng.integers(0, args.classes, args.rows), first)
    labels = [(classes[a],) if a == b else (classes[a], classes[b]) for a, b in zip(first, second)]
    layout.write_folds(root, ids, labels, fold, classes=classes)
    y_t = np.zeros((args.classes, args.rows), dtype=np.float32)        # (classes, rows)
    y_t[first, np.arange(args.rows)] = 1
    y_t[second, np.arange(args.rows)] = 1
    test_ids = np.array([f"t{i:06d}" for i in range(args.test)])
    test_y_t = (rng.random((args.classes, args.test), dtype=np.float32) < 0.015).astype(np.float32)
    template = "fname," + ",".join(classes) + "\n" + "".join(
        f"{i}," + ",".join(["0"] * args.classes) + "\n" for i in test_ids)
    (root / "sample_submission.csv").write_text(template)
    names = ["fname"] + classes
    fold_rows = {k: np.flatnonzero(fold == k) for k in range(args.folds)}
    fold_ids = {k: pa.array(ids[rows], type=pa.string()) for k, rows in fold_rows.items()}
    fold_y = {k: np.ascontiguousarray(y_t[:, rows]) for k, rows in fold_rows.items()}
    test_id_array = pa.array(test_ids, type=pa.string())

    def write(path: Path, id_array, values_t: np.ndarray) -> None:
        """values_t: (classes, rows) float32; each class column is a zero-copy row of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_arrays([id_array] + [pa.array(values_t[j]) for j in range(len(values_t))],
                                     names=names)
        pq.write_table(table, path, use_dictionary=False)

    # models share most of their errors (as real pools do), so blending gains level off
    common = {k: rng.random(fold_y[k].shape, dtype=np.float32) for k in range(args.folds)}
    common_test = rng.random(test_y_t.shape, dtype=np.float32)
    for e in range(args.experiments):
        skill = np.float32(0.05 + 0.25 * e / max(args.experiments - 1, 1))
        for k in range(args.folds):
            noise = 0.7 * common[k] + 0.3 * rng.random(fold_y[k].shape, dtype=np.float32)
            write(layout.probs_path(root, f"exp_{e:03d}", k, "val", format="parquet"), fold_ids[k],
                  (fold_y[k] * skill + noise) / (1 + skill))
            noise = 0.7 * common_test + 0.3 * rng.random(test_y_t.shape, dtype=np.float32)
            write(layout.probs_path(root, f"exp_{e:03d}", k, "test", format="parquet"),
                  test_id_array, (test_y_t * skill + noise) / (1 + skill))
        layout.write_meta(root, f"exp_{e:03d}", {"model": "bench", "seed": args.seed, "level": 1})
    layout.atomic_write_json(marker, params)
    return time.perf_counter() - start


# ---------------------------------------------------------------- one step, in its own process


def run_step(command: list[str], *, env: dict) -> dict:
    """Run ``command``; its wall time, exit code, output tail and the peak RSS of it and the
    children it waited for (wait4's ru_maxrss, KiB on Linux)."""
    load = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return {"seconds": seconds, "rc": os.waitstatus_to_exitcode(status),
            "cpu": usage.ru_utime + usage.ru_stime,
            "peak_bytes": usage.ru_maxrss * 1024, "output": text, "load_before": load[0],
            "load_after": os.getloadavg()[0]}


def code_used(env: dict) -> str:
    """Where the ``stacker`` a child started with ``env`` imports comes from."""
    out = subprocess.run([sys.executable, "-P", "-c", "import stacker; print(stacker.__file__)"],
                         env=env, cwd=PROJECT, capture_output=True, text=True, check=True)
    return str(Path(out.stdout.strip()).parent.parent)


def warm_cache(collect_command: list, env: dict) -> None:
    """An untimed collect() with ``env``'s code before its timed search: each version keeps its
    own cache format (a version that finds the other's cache rebuilds it, 35 s here, which would
    be timed as part of its search)."""
    result = run_step(collect_command, env=env)
    if result["rc"] != 0:
        raise SystemExit(f"collect before the search failed:\n{result['output'][-2000:]}")
    os.sync()       # its writes flushed: the timed search does not share the disk with them
    touch_free_memory()


def touch_free_memory(fraction: float = 0.8) -> None:
    """Touch ``fraction`` of the machine's free memory (MemFree: the page cache, the pool's
    files, stays) once, in a child process, and let it go. In a virtual machine (these are
    Firecracker guests) the first touch of guest memory the host has not backed yet is a host
    page fault, several times a normal one: a timed step that allocates gigabytes then pays for
    what earlier processes did or did not touch (measured: the reference's quantize 10.1 s or
    3.6 s, its nested greedy 19.4 or 13.4 s, depending on the steps before). Touched once,
    memory freed and allocated again costs what it costs on a real machine, for either
    version."""
    free = 0
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemFree:"):
                free = int(line.split()[1]) * 1024
    size = int(free * fraction)
    if size > 0:
        subprocess.run([sys.executable, "-c", f"import numpy as np; np.ones({size}, np.uint8)"],
                       check=True)


def library_collect(root: str) -> None:
    """Child of ``--step collect``: time collect() alone and say whether the pool is mapped."""
    start = time.perf_counter()
    from stacker.layout.collect import collect

    imported = time.perf_counter()
    collection = collect(root, n_jobs=2)
    done = time.perf_counter()
    base, mapped = collection.oof, False
    while base is not None:
        mapped = mapped or type(base).__name__ == "mmap"
        base = getattr(base, "base", None)
    print(json.dumps({"collect_s": done - imported, "import_s": imported - start, "mapped": mapped,
                      "oof": list(collection.oof.shape), "test": list(collection.test.shape),
                      "skipped": len(collection.skipped), **written_bytes()}))


def written_bytes() -> dict:
    """What this process and the children it waited for (collect's workers) wrote:
    ``write_bytes`` (pages dirtied for the disk, mapped writes included) from /proc/self/io."""
    try:
        fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    except OSError:
        return {}
    return {"write_bytes": int(fields["write_bytes"]), "wchar": int(fields["wchar"])}


def selection(root: Path) -> dict:
    """The parts of subsets.json a selection is judged by: members, weights, nested CV and each
    fold's selection."""
    record = json.loads((root / layout.STACK_DIR / "subsets.json").read_text())
    return {"members": record["members"], "weights": record["weights"],
            "nested_cv": record["nested_cv"],
            "folds": [(f["members"], f["weights"]) for f in record["nested_folds"]]}


def _median_run(runs: list) -> dict:
    """The run of median wall time (the lower middle one of an even number)."""
    return sorted(runs, key=lambda run: run["seconds"])[(len(runs) - 1) // 2]


def compare_line(name: str, before: dict, after: dict, seconds: float) -> str:
    """The reference's figures against ours for one step."""
    if name.startswith("collect()"):
        inner = json.loads(before["output"].strip().splitlines()[-1])
        written = (f", written {inner['write_bytes'] / 2**30:.2f} GiB"
                   if "write_bytes" in inner else "")
        return (f"reference: {inner['collect_s']:.2f} s{written} (load {before['load_before']:.1f}); "
                f"ratio {inner['collect_s'] / seconds:.2f}x")
    same = after["same"]            # (each round's selections, compared as it ran)
    return (f"reference: {before['seconds']:.1f} s (CPU {before['cpu']:.1f} s, load "
            f"{before['load_before']:.1f}); ratio {before['seconds'] / seconds:.2f}x wall, "
            f"{before['cpu'] / max(after['cpu'], 1e-9):.2f}x CPU; identical selections: {same}")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the layout here")
    parser.add_argument("--steps", default="cold,warm,cli-collect,greedy,blend,ges",
                        help="which steps to run, in this order: cold,warm,cli-collect,greedy,"
                             "blend,ges (blend needs greedy's subsets.json)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a checkout of the code to compare with (e.g. `git archive <commit>` "
                             "unpacked): its cold collect, greedy and GES run in the same run, "
                             "before ours, with ratios and whether the selections are identical")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --reference: run each search this many times, the two "
                             "versions alternating, and compare the runs of median time")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "collect":
        return library_collect(args.root)

    tmp = None if args.workdir is not None else tempfile.TemporaryDirectory(prefix="bench_scale_")
    root = (args.workdir if args.workdir is not None else Path(tmp.name)) / "layout"
    try:
        built = build(root, args)
        shutil.rmtree(root / layout.STACK_DIR, ignore_errors=True)
        env = {**os.environ, "PYTHONPATH": str(PROJECT), "COLUMNS": "200"}
        # -P: the working folder is not put first on sys.path, so PYTHONPATH says whose code runs
        # (without it every `-c` child imported this checkout's stacker, the reference's too)
        # the `stack` console script's entry point (stacker.cli.entry:main), what a user runs,
        # for either version (before, the CLI app itself: ours then paid the interpreter's
        # teardown, 0.2-0.3 s with numba's kernels loaded, which `stack` skips)
        stack = [sys.executable, "-P", "-c", "from stacker.cli.entry import main; main()"]
        me = [sys.executable, str(Path(__file__).resolve()), "--step", "collect", "--root", str(root)]
        every = {
            "cold": ("collect() cold", me), "warm": ("collect() warm", me),
            "cli-collect": ("stack collect (warm)", stack + ["collect", "--root", str(root)]),
            "greedy": ("search greedy (nested)", stack + ["search-subsets", "--root", str(root),
                                                         "--method", "greedy"]),
            "blend": ("blend geo-mean", stack + ["blend", "--geo-mean", "--root", str(root),
                                                 "--subset", "best", "--template",
                                                 str(root / "sample_submission.csv"), "--out",
                                                 str(root / "submission.csv"), "--force"]),
            "ges": ("search ges (nested)", stack + ["search-subsets", "--root", str(root),
                                                    "--method", "ges"])}
        unknown = [key for key in args.steps.split(",") if key not in every]
        if unknown:
            raise SystemExit(f"unknown step '{unknown[0]}'; choose from {','.join(every)}")
        steps = [every[key] for key in args.steps.split(",")]
        pool_bytes = 4 * args.experiments * args.classes * (args.rows + args.folds * args.test)
        oof_bytes = 4 * args.experiments * args.classes * args.rows
        print(f"bench_scale: {args.experiments} experiments x {args.rows:,} rows x {args.classes} "
              f"classes, {args.folds} folds, {args.test:,} test rows, probs.parquet "
              f"({'reused' if not built else f'written in {built:.0f} s'}); pool float32 "
              f"{pool_bytes / 2**30:.2f} GiB (oof {oof_bytes / 2**30:.2f} + test "
              f"{(pool_bytes - oof_bytes) / 2**30:.2f}); {os.cpu_count()} cores")
        print(f"{'step':<26}{'wall s':>9}{'cpu s':>8}{'peak GiB':>10}{'x pool':>8}{'x oof':>7}  load "
              f"before/after  target")
        worst = 0.0
        compared = {"collect() cold", "search greedy (nested)", "search ges (nested)"}
        if args.reference is not None:
            for who, path in (("this checkout", PROJECT), ("reference", args.reference.resolve())):
                print(f"{who}: {code_used({**env, 'PYTHONPATH': str(path)})}")
        for name, command in steps:
            rounds = []
            searching = name.startswith("search")
            repeat = args.repeat if args.reference is not None and searching else 1
            for _ in range(repeat):
                before = None
                if args.reference is not None and name in compared:
                    if name == "collect() cold":
                        shutil.rmtree(root / layout.STACK_DIR, ignore_errors=True)
                    reference_env = {**env, "PYTHONPATH": str(args.reference.resolve())}
                    if searching:
                        warm_cache(me, reference_env)
                    before = run_step(command, env=reference_env)
                    if before["rc"] != 0:
                        print(f"{name} (reference): failed (exit {before['rc']}):\n"
                              f"{before['output'][-3000:]}")
                        raise SystemExit(1)
                    before["selection"] = selection(root) if searching else None
                    if name == "collect() cold":
                        shutil.rmtree(root / layout.STACK_DIR, ignore_errors=True)
                if args.reference is not None and name in compared and searching:
                    warm_cache(me, env)
                result = run_step(command, env=env)
                if result["rc"] != 0:
                    print(f"{name}: failed (exit {result['rc']}):\n{result['output'][-3000:]}")
                    raise SystemExit(1)
                if before is not None and searching:
                    result["same"] = before["selection"] == selection(root)
                rounds.append((before, result))
            if len(rounds) > 1:
                # the run of median wall time of each version, every round's times beside it
                before = _median_run([b for b, _ in rounds])
                result = _median_run([r for _, r in rounds])
                result["same"] = all(r["same"] for _, r in rounds)
                result["rounds"] = [(b["seconds"], r["seconds"]) for b, r in rounds]
            seconds = result["seconds"]
            note = ""
            if name.startswith("collect()"):
                inner = json.loads(result["output"].strip().splitlines()[-1])
                seconds = inner["collect_s"]
                note = f" (collect() only; mapped pool: {inner['mapped']})"
                if "write_bytes" in inner:
                    note += f"; written {inner['write_bytes'] / 2**30:.2f} GiB"
            ratio = result["peak_bytes"] / pool_bytes
            worst = max(worst, ratio)
            target = TARGETS.get(name)
            verdict = "" if target is None else (f"< {target:.0f} s " + ("met" if seconds < target
                                                                          else "NOT met"))
            print(f"{name:<26}{seconds:9.2f}{result['cpu']:8.1f}{result['peak_bytes'] / 2**30:10.2f}{ratio:8.2f}"
                  f"{result['peak_bytes'] / oof_bytes:7.2f}  {result['load_before']:5.1f} / "
                  f"{result['load_after']:5.1f}  {verdict}{note}")
            if name.startswith("search"):
                lines = [line for line in result["output"].splitlines() if "nested" in line.lower()]
                if lines:
                    print(f"    {lines[-1].strip()[:150]}")
            if before is not None:
                print("    " + compare_line(name, before, result, seconds))
            if "rounds" in result:
                times = ", ".join(f"{b:.1f}/{r:.2f}" for b, r in result["rounds"])
                print(f"    medians of {len(result['rounds'])} rounds (reference/this checkout, "
                      f"alternating: {times} s)")
        print(f"peak memory of any step: {worst:.2f}x the pool's float32 size (target < "
              f"{MEMORY_TARGET:.0f}x: {'met' if worst < MEMORY_TARGET else 'NOT met'}); "
              f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
