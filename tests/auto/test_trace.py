"""One cold `stack auto` run traced with an audit hook: every level-1 prediction file is opened
once, and nothing the run wrote is read back by it (the pool stays in memory)."""

from __future__ import annotations

import importlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stacker.auto import AutoSettings, run_auto

TINY = dict(hidden=16, bottleneck=4, max_epochs=4, patience=2, batch_size=32)
PROBS = {"probs.csv", "probs.parquet"}
_TRACE: dict = {"on": False, "reads": []}


def _hook(event: str, args) -> None:
    if not _TRACE["on"] or event != "open":
        return
    path, mode, flags = args
    if not isinstance(path, (str, bytes, os.PathLike)):
        return                                   # os.fdopen of a descriptor already counted
    if isinstance(mode, str):
        reading = not any(c in mode for c in "wax+")
    else:
        reading = (flags & (os.O_WRONLY | os.O_RDWR)) == 0
    if reading and os.path.exists(path):       # a look for a file not there yet reads nothing
        _TRACE["reads"].append(Path(os.fsdecode(path)).resolve())


sys.addaudithook(_hook)     # a hook cannot be removed: it records only while a test traces


def test_a_cold_run_opens_each_level1_file_once_and_reads_nothing_it_wrote(small_layout, tmp_path,
                                                                          monkeypatch):
    root = small_layout().resolve()
    level1 = sorted(p.resolve() for p in root.rglob("*") if p.name in PROBS)
    before = {p.resolve() for p in root.rglob("*")}
    # collect parses experiments in worker processes, which the hook does not see: threads here
    monkeypatch.setattr(importlib.import_module("stacker.layout.collect"), "ProcessPoolExecutor",
                        ThreadPoolExecutor)
    settings = AutoSettings(time_budget=60.0, n_level2=1, max_seeds=1, n_trials=1,
                            level2_params=TINY, search_budget=5.0)
    _TRACE.update(on=True, reads=[])
    try:
        result = run_auto(root, settings=settings, out=tmp_path / "submission.csv",
                          report=tmp_path / "report.html")
    finally:
        _TRACE["on"] = False
    reads = _TRACE["reads"]
    assert "auto_mlp_1" in result.level2 and result.recipes[-1].name == "final blend"
    assert len(level1) == 3 * 3 * 2                     # 3 experiments x 3 folds x val/test
    counts = {p: reads.count(p) for p in level1}
    assert counts == {p: 1 for p in level1}
    written = sorted(p.resolve() for p in root.rglob("*") if p.resolve() not in before)
    made = [p for p in written if p.name in PROBS]
    assert {p.parent.parent.parent.name for p in made} == {"auto_mlp_1", "auto_blend"}
    # nothing the run wrote is read back: neither predictions nor subsets.json, history.json,
    # the run's state; only collect's own cache (the pool it memory-maps) is
    cache = (root / ".stack" / "cache").resolve()
    read_back = sorted({p for p in reads if p in set(written) and cache not in p.parents})
    assert read_back == []
    outputs = {(tmp_path / n).resolve() for n in ("submission.csv", "submission.csv.json",
                                                  "report.html")}
    assert not outputs & set(reads)
