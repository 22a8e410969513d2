"""The one in-memory pool and the saved stages of `stack auto`: what a run holds equals what its
files store, and a resumed run restores the first-level recipes with their nested predictions."""

from __future__ import annotations

import numpy as np
import pytest

from stacker import layout
from stacker.auto import AutoSettings, run_auto
from stacker.layout.collect import collect

TINY = dict(hidden=16, bottleneck=4, max_epochs=4, patience=2, batch_size=32)


def test_as_stored_is_what_a_written_probs_csv_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.random((50, 3)) ** 3                     # float64, many digits, tiny values
    values[0] = [0.0, 1.0, 0.5]
    path = layout.write_probs(tmp_path / "probs.csv", [f"r{i}" for i in range(50)], values,
                              ["a", "b", "c"])
    stored = layout.as_stored(values)
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, layout.read_probs(path).values)
    assert not np.array_equal(stored, values.astype(np.float32))   # the text rounds: it matters


def test_with_experiment_adds_what_collect_would_read(small_layout):
    root = small_layout()
    col = collect(root)
    oof = np.full((len(col.ids), len(col.classes)), 0.25, dtype=np.float32)
    test = np.full((len(col.fold_numbers), len(col.test_ids), len(col.classes)), 0.5, np.float32)
    more = col.with_experiment("extra", oof, test, {"level": 2, "cv": np.float64(0.5)})
    assert more.names == (*col.names, "extra") and more.level("extra") == 2
    assert type(more.meta["extra"]["cv"]) is float                 # as meta.json reads back
    np.testing.assert_array_equal(more.oof[:, -1], oof)
    np.testing.assert_array_equal(more.test[:, :, -1], test)
    np.testing.assert_array_equal(more.oof[:, :-1], col.oof)      # the others unchanged
    again = more.with_experiment("extra", oof * 2, test, {})
    assert again.names == more.names and again.oof[0, -1, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        col.with_experiment("bad", oof[:-1], test, {})
    # an experiment read from the layout joins as collect reads it
    level1 = col.select(list(col.names[:2]))
    joined = level1.with_layout_experiment(col.names[2])
    np.testing.assert_array_equal(joined.oof, col.oof)
    np.testing.assert_array_equal(joined.test, col.test)


def test_a_resumed_run_restores_the_first_level_recipes_without_searching(small_layout,
                                                                        monkeypatch):
    import stacker.auto.pipeline as pipeline

    root = small_layout()
    settings = AutoSettings(time_budget=60.0, n_level2=0, search_budget=5.0, level2_params=TINY)
    first = run_auto(root, settings=settings, out=None, report=None)

    def no_search(*args, **kwargs):
        raise AssertionError("level 1 searched again")

    monkeypatch.setattr(pipeline, "level1_recipes", no_search)
    again = run_auto(root, settings=settings, out=None, report=None)
    for a, b in zip(first.recipes, again.recipes):
        assert a.to_json() == b.to_json() and a.combination == b.combination
        np.testing.assert_array_equal(a.nested_oof, b.nested_oof)
    # a damaged arrays file is not trusted: the stage runs again (and here, refuses)
    (layout.stack_dir(root) / "auto" / "level1.npz").write_bytes(b"not an archive")
    with pytest.raises(AssertionError, match="searched again"):
        run_auto(root, settings=settings, out=None, report=None)


def test_a_state_file_of_the_earlier_layout_keeps_its_tuning_and_plan(tmp_path):
    from stacker.auto.state import StateStore
    from stacker.layout import workspace

    workspace.write_auto_state(tmp_path, {"key": "k", "tune": {"n_complete": 4},
                                          "plan": {"seeds": 2}, "level1": [{"name": "x"}]})
    store = StateStore(tmp_path, "k")
    assert store.record("tune") == {"n_complete": 4} and store.record("plan") == {"seeds": 2}
    assert store.arrays("level1") is None          # no nested predictions: searched again
    assert StateStore(tmp_path, "other").record("tune") is None
    store.save("plan", {"seeds": 1})
    assert workspace.read_auto_state(tmp_path) == {"key": "k", "stages": {
        "tune": {"n_complete": 4}, "plan": {"seeds": 1}, "level1": [{"name": "x"}]}}
