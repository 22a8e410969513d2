"""stacker.auto and `stack auto`: every stage on a small layout, the choice, resuming, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stacker import layout
from stacker.auto import BLEND_PARTS, FIRST_LEVEL_BLEND_PARTS, AutoSettings, Recipe, gate_level2, run_auto
from stacker.auto import choose as _choose
from stacker.cli.app import app
from stacker.errors import OutputExistsError
from stacker.layout import workspace
from stacker.metrics import get_metric

TINY = dict(hidden=16, bottleneck=4, max_epochs=4, patience=2, batch_size=32)


def settings(**overrides) -> AutoSettings:
    values = dict(time_budget=120.0, n_level2=2, max_seeds=1, n_trials=2, level2_params=TINY,
                  search_budget=5.0)
    values.update(overrides)
    return AutoSettings(**values)


@pytest.fixture
def layout_root(small_layout):
    """60 rows, 4 classes, 3 folds, 3 simulated experiments."""
    return small_layout()


def test_runs_every_stage_and_writes_what_it_chose(layout_root, tmp_path):
    out, report = tmp_path / "submission.csv", tmp_path / "report.html"
    result = run_auto(layout_root, settings=settings(), out=out, report=report)
    names = [r.name for r in result.recipes]
    assert names[:5] == ["best single", "all first-level", "first-level subset", "first-level GES",
                         "first-level GES+bias"]
    assert {"auto_mlp_1", "auto_mlp_2", "all level-2", "final subset", "final GES",
            "final GES+bias", "final linear", "final blend"} <= set(names)
    blend = result.recipes[-1]
    assert blend.name == "final blend" and blend.members == ("auto_blend",)
    assert result.final is blend            # fixed in advance: the other recipes are for comparison
    best = result.final.nested_cv
    # the final choice is what `stack blend --subset best` will read, and what the submission holds
    subsets = workspace.read_subsets(layout_root)
    assert subsets["members"] == list(result.final.members) and subsets["nested_cv"] == best
    sidecar = json.loads((tmp_path / "submission.csv.json").read_text())
    assert sidecar["members"] == list(result.final.members) and sidecar["made_by"] == "stack auto"
    assert {"weights", "cv", "nested_cv", "estimate"} <= set(sidecar)
    assert sidecar["nested_cv"] == pytest.approx(best)
    parts = [p["name"] for p in sidecar["blend_parts"] or []]   # what the blend is made of
    gate = layout.read_meta(layout_root, "auto_blend")["gate"]
    assert parts == list(BLEND_PARTS if gate["level2_test"] else FIRST_LEVEL_BLEND_PARTS)
    assert sidecar["level2_gate"] == gate          # the sidecar says what the gate chose
    assert report.exists() and out.read_text().count("\n") == 21     # header + 20 test rows
    page = report.read_text()
    assert "stack auto: the candidate recipes" in page and "final linear" in page
    assert f"The submission is <b>{result.final.name}</b>" in page
    # its recipes replace the size curve (not reported as a damaged subsets.json); the submission
    # is named in the leaderboard, where its CV is the nested CV
    assert ("Subset search: best score by subset size" in page) == bool(subsets.get("by_size"))
    assert "In the leaderboard the submission is the experiment <b>auto_blend</b>" in page
    assert "Per-class lwlrap: the submission vs best single model" in page
    assert "by_size" not in page
    for name in ("auto_mlp_1", "auto_mlp_2"):
        meta = layout.read_meta(layout_root, name)
        assert meta["level"] == 2 and meta["made_by"] == "stack auto"
        assert meta["inputs"] == ["sim_000", "sim_001", "sim_002"]   # level 1 only
        assert meta["tuning_holdout_fold"] == 2
    assert "held out of tuning" in result.estimate and "final blend" in result.estimate
    meta = layout.read_meta(layout_root, "auto_blend")
    assert meta["level"] == 3 and meta["made_by"] == "stack auto"
    assert [part["name"] for part in meta["parts"]] == parts
    assert gate["first_level_parts"] == list(FIRST_LEVEL_BLEND_PARTS)
    assert gate["level2_parts"] == list(BLEND_PARTS)


def test_the_report_reads_the_candidates_or_names_what_is_wrong():
    from stacker.errors import LayoutError
    from stacker.report import auto_candidates

    assert auto_candidates({"members": ["a"]}) is None              # a plain search's record
    frame = auto_candidates({"recipe": "b", "candidates": [
        {"name": "a", "what": "x", "cv": 0.8, "nested_cv": 0.7, "holdout_cv": 0.75},
        {"name": "b", "cv": 0.9, "nested_cv": 0.8}]})
    assert frame.chosen.tolist() == [False, True] and np.isnan(frame.holdout_cv.iloc[1])
    with pytest.raises(LayoutError, match="candidates"):
        auto_candidates({"candidates": [{"name": "a", "cv": "high"}]})


def test_the_final_blend_is_the_geometric_mean_of_the_parts_nested_predictions(layout_root):
    """auto_blend's OOF is made of the blends' nested predictions (honest: each fold's rows from
    selections made without it): the first-level blend's, or the level-2 blend's on the folds where
    the gate took it; its test predictions blend the chosen parts' selections made on every fold,
    and its collected CV is the blend recipe's nested CV."""
    from stacker.blend import geo_mean, test_blend
    from stacker.layout.collect import collect

    result = run_auto(layout_root, settings=settings(), out=None, report=None)
    recipes = {r.name: r for r in result.recipes}
    col = collect(layout_root)
    lwlrap = get_metric("lwlrap")
    first = geo_mean(np.stack([recipes[n].nested_oof for n in FIRST_LEVEL_BLEND_PARTS], axis=-2))
    second = geo_mean(np.stack([recipes[n].nested_oof for n in BLEND_PARTS], axis=-2))
    gated, per_fold, use_second = gate_level2(first, second, col.y, col.fold, col.fold_numbers, lwlrap)
    written = col.oof[:, col.index(["auto_blend"])[0]]
    np.testing.assert_allclose(written, gated, atol=1e-5)
    gate = layout.read_meta(layout_root, "auto_blend")["gate"]
    assert gate["level2_folds"] == [k for k, use in zip(col.fold_numbers, per_fold) if use]
    assert lwlrap(col.y, written) == pytest.approx(recipes["final blend"].nested_cv, abs=1e-4)
    parts = [recipes[n] for n in (BLEND_PARTS if use_second else FIRST_LEVEL_BLEND_PARTS)]
    expected = geo_mean(np.stack([p.combination.test(col) for p in parts], axis=-2))
    np.testing.assert_allclose(test_blend(col, ["auto_blend"]), expected, atol=1e-5)
    # a rerun gives the same blend, and an experiment of that name not made by stack auto is refused
    again = run_auto(layout_root, settings=settings(), out=None, report=None)
    assert again.recipes[-1].to_json() == recipes["final blend"].to_json()
    meta_path = layout.experiment_dir(layout_root, "auto_blend") / "meta.json"
    meta_path.write_text(json.dumps({"level": 1}))
    state = workspace.auto_state_path(layout_root)
    stamp = state.stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="auto_blend"):
        run_auto(layout_root, settings=settings(), out=None, report=None)
    assert state.stat().st_mtime_ns == stamp        # refused before any stage ran


def test_a_rerun_reuses_finished_stages_and_a_changed_input_redoes_them(layout_root, tmp_path):
    out = tmp_path / "submission.csv"
    first = run_auto(layout_root, settings=settings(), out=out, report=None)
    assert not any(v["reused"] for v in first.level2.values())
    again = run_auto(layout_root, settings=settings(), out=out, report=None)
    assert all(v["reused"] for v in again.level2.values())
    assert [r.to_json() | {"search": None} for r in again.recipes] == \
        [r.to_json() | {"search": None} for r in first.recipes]
    # one experiment's predictions change: every stage that depends on them is redone
    path = layout.probs_path(layout_root, "sim_000", 0, "val")
    probs = layout.read_probs(path)
    layout.write_probs(path, probs.ids, np.clip(probs.values * 0.9, 0, 1), probs.columns)
    changed = run_auto(layout_root, settings=settings(), out=out, report=None)
    assert not any(v["reused"] for v in changed.level2.values())


def test_results_are_reproducible_for_a_seed(small_layout, tmp_path):
    a = run_auto(small_layout("a"), settings=settings(n_level2=1), out=None, report=None)
    b = run_auto(small_layout("b"), settings=settings(n_level2=1), out=None, report=None)
    assert [r.to_json() | {"search": None} for r in a.recipes] == \
        [r.to_json() | {"search": None} for r in b.recipes]


def test_refuses_to_replace_a_users_files(layout_root, tmp_path):
    mine = tmp_path / "submission.csv"
    mine.write_text("precious\n")
    with pytest.raises(OutputExistsError, match="not written by stack auto"):
        run_auto(layout_root, settings=settings(n_level2=0), out=mine, report=None)
    assert mine.read_text() == "precious\n"
    # a user's experiment that happens to be called auto_mlp_1 is never replaced
    source = layout.experiment_dir(layout_root, "sim_002")
    target = layout.experiment_dir(layout_root, "auto_mlp_1")
    target.mkdir()
    for k in (0, 1, 2):
        for split in ("val", "test"):
            p = layout.probs_path(layout_root, "sim_002", k, split)
            q = layout.probs_path(layout_root, "auto_mlp_1", k, split)
            q.parent.mkdir(parents=True)
            q.write_bytes(p.read_bytes())
    assert source.exists()
    with pytest.raises(OutputExistsError, match="was not made by stack auto"):
        run_auto(layout_root, settings=settings(n_level2=1), out=tmp_path / "s.csv", report=None)
    assert layout.probs_path(layout_root, "auto_mlp_1", 0, "val").exists()
    assert not workspace.auto_state_path(layout_root).exists()    # refused before any stage ran


def test_choose_takes_the_best_nested_cv_and_the_simpler_on_ties():
    def recipe(name, nested):
        return Recipe(name=name, what="", members=("a",), weights={"a": 1.0}, cv=0.9, nested_cv=nested,
                      holdout_cv=nested)

    lwlrap, log_loss = get_metric("lwlrap"), get_metric("log_loss")
    recipes = [recipe("simple", 0.8), recipe("better", 0.85), recipe("tie", 0.85)]
    assert _choose(recipes, lwlrap).name == "better"
    assert _choose(recipes, log_loss).name == "simple"


def test_choose_keeps_the_final_blend_unless_a_recipe_is_clearly_better_on_the_folds():
    def recipe(name, folds):
        return Recipe(name=name, what="", members=("a",), weights={"a": 1.0}, cv=0.9,
                      nested_cv=float(np.mean(folds)), holdout_cv=folds[-1],
                      nested_fold_cv=tuple(folds))

    lwlrap, log_loss = get_metric("lwlrap"), get_metric("log_loss")
    blend = recipe("final blend", [0.80, 0.82, 0.78, 0.81, 0.79])
    noisy = recipe("noisy", [0.84, 0.80, 0.81, 0.83, 0.78])          # better mean, within noise
    steady = recipe("steady", [0.82, 0.84, 0.80, 0.83, 0.81])        # +0.02 on every fold
    assert _choose([noisy, blend], lwlrap, default=blend) is blend
    assert _choose([noisy, steady, blend], lwlrap, default=blend) is steady
    assert _choose([noisy, steady, blend], log_loss, default=blend) is blend   # lower is better
    # without the blend: the plain best nested CV
    assert _choose([noisy, steady], lwlrap) is steady


def test_cli_ends_with_the_table(layout_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["auto", "--root", str(layout_root), "--n-level2", "1",
                                      "--trials", "1", "--max-seeds", "1", "--time-budget", "60"])
    assert result.exit_code == 0, result.output
    assert "stack auto" in result.output and "(chosen)" in result.output
    assert "auto_mlp_1" in result.output
    assert json.loads((tmp_path / "submission.csv.json").read_text())["auto"]["n_trials"] == 1
    assert "nested CV" in result.output and (tmp_path / "submission.csv").exists()
    # `stack blend --subset best --weights` rebuilds the submission from the layout
    again = CliRunner().invoke(app, ["blend", "--root", str(layout_root), "--subset", "best",
                                     "--weights", "--out", "again.csv"])
    assert again.exit_code == 0, again.output
    import pandas as pd

    submitted, rebuilt = pd.read_csv(tmp_path / "submission.csv"), pd.read_csv(tmp_path / "again.csv")
    assert list(submitted.columns) == list(rebuilt.columns)
    np.testing.assert_allclose(rebuilt.iloc[:, 1:].to_numpy(), submitted.iloc[:, 1:].to_numpy(),
                               rtol=1e-5, atol=1e-7)
    refused = CliRunner().invoke(app, ["auto", "--root", str(layout_root), "--n-level2", "0",
                                       "--report", "submission.csv"])
    assert refused.exit_code == 1 and "--out" in refused.output and "Traceback" not in refused.output


def permute_fold_labels(root, fold: int, seed: int = 1) -> None:
    """Shuffle the labels among the rows of ``fold`` only (folds.csv), keeping everything else."""
    folds = layout.read_folds(root)
    labels = list(folds.labels)
    rows = np.flatnonzero(folds.fold == fold)
    for row, source in zip(rows, np.random.default_rng(seed).permutation(rows)):
        labels[row] = folds.labels[source]
    layout.write_folds(root, folds.ids, labels, folds.fold, id_column=folds.id_column,
                       classes=folds.classes)


def test_the_fold_held_out_of_tuning_never_influences_its_own_level2_predictions(small_layout):
    """Permute the labels of the fold held out of tuning: every level-2 experiment's predictions
    for that fold are unchanged (tuning, configuration choice, early stopping: none saw them)."""
    runs = []
    for name, permute in (("same", False), ("permuted", True)):
        root = small_layout(name)
        if permute:
            permute_fold_labels(root, fold=2)
        result = run_auto(root, settings=settings(), out=None, report=None)
        assert result.tuning["holdout_fold"] == 2
        runs.append((root, result))
    (root_a, a), (root_b, b) = runs
    assert list(a.level2) == list(b.level2) and a.level2
    for name in a.level2:
        assert a.level2[name]["params"] == b.level2[name]["params"]
        val_a = layout.read_probs(layout.probs_path(root_a, name, 2, "val"))
        val_b = layout.read_probs(layout.probs_path(root_b, name, 2, "val"))
        np.testing.assert_allclose(val_a.values, val_b.values, atol=1e-6)
    # and the test can fail: the labels did change what the other folds' models learned
    moved = max(np.abs(layout.read_probs(layout.probs_path(root_a, n, 0, "val")).values
                       - layout.read_probs(layout.probs_path(root_b, n, 0, "val")).values).max()
                for n in a.level2)
    assert moved > 1e-4


def test_without_level2_the_final_blend_averages_the_first_level_selections(layout_root):
    """No level-2 experiment: the blend's parts are the first-level biased GES and linear stacker,
    also on a rerun that reuses the cached first-level recipes (searched again for their nested
    predictions, with the same result)."""
    first = run_auto(layout_root, settings=settings(n_level2=0), out=None, report=None)
    again = run_auto(layout_root, settings=settings(n_level2=0), out=None, report=None)
    for result in (first, again):
        meta = layout.read_meta(layout_root, "auto_blend")
        assert [p["name"] for p in meta["parts"]] == list(FIRST_LEVEL_BLEND_PARTS)
        assert meta["gate"] is None
        assert result.recipes[-1].name == "final blend"
    assert again.recipes[-1].to_json() == first.recipes[-1].to_json()


def test_new_level2_defaults_redo_the_tuning_instead_of_failing(layout_root, monkeypatch):
    """A stacker upgrade that changes MLPParams' defaults is a changed input: the rerun tunes a
    new study and retrains, instead of refusing the old study's other base parameters."""
    from dataclasses import replace

    from stacker.level2.params import MLPParams

    first = run_auto(layout_root, settings=settings(n_level2=1), out=None, report=None)
    original = MLPParams.from_dict.__func__
    monkeypatch.setattr(MLPParams, "from_dict", classmethod(
        lambda cls, values, source="params": replace(original(cls, values, source=source),
                                                     inner_fraction=0.25)))
    again = run_auto(layout_root, settings=settings(n_level2=1), out=None, report=None)
    assert not again.level2["auto_mlp_1"]["reused"] and first.tuning["study"] != again.tuning["study"]


def test_a_rerun_given_only_the_level1_collection_reuses_its_level2(layout_root):
    """The demo passes its own level-1 collection: the level-2 experiments on disk are still
    reused (their meta.json read from the layout), not retrained on every rerun."""
    from stacker.layout.collect import collect

    def level1():
        col = collect(layout_root)
        return col.select([n for n in col.names if col.level(n) == 1])

    first = run_auto(layout_root, settings=settings(n_level2=1), out=None, report=None,
                     collection=level1())
    again = run_auto(layout_root, settings=settings(n_level2=1), out=None, report=None,
                     collection=level1())
    assert not first.level2["auto_mlp_1"]["reused"] and again.level2["auto_mlp_1"]["reused"]
    assert again.final.to_json() == first.final.to_json()


def _gate_reference(first, second, y, fold, folds, metric):
    """The gate written plainly: for each fold, the mean per-fold gain of the level-2 blend over
    the other folds, from scores computed fold by fold."""
    out, chosen = first.copy(), []
    for k in folds:
        gains = [metric(y[fold == j], second[fold == j]) - metric(y[fold == j], first[fold == j])
                 for j in folds if j != k]
        chosen.append(sum(gains) / len(gains) > 0)
        if chosen[-1]:
            out[fold == k] = second[fold == k]
    return out, chosen


def _gate_inputs(seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((200, 5)) < 0.3).astype(np.uint8)
    fold = np.arange(200) % 4
    first = np.clip(y * 0.3 + rng.random((200, 5)) * 0.7, 0.01, 0.99)
    second = np.clip(y * 0.2 + rng.random((200, 5)) * 0.8, 0.01, 0.99)
    second[fold == 1] = first[fold == 1] * 0.5 + 0.5 * (y[fold == 1] * 0.9 + 0.05)  # level 2 wins there
    return first, second, y, fold, [0, 1, 2, 3]


def test_the_gate_matches_a_plain_reference():
    lwlrap = get_metric("lwlrap")
    mixed = []
    for seed in range(4):
        first, second, y, fold, folds = _gate_inputs(seed)
        out, chosen, _ = gate_level2(first, second, y, fold, folds, lwlrap)
        ref, ref_chosen = _gate_reference(first, second, y, fold, folds, lwlrap)
        assert chosen == ref_chosen
        np.testing.assert_array_equal(out, ref)
        mixed.append(any(chosen) and not all(chosen))
    assert any(mixed)                      # the inputs make both choices happen in one gate


def test_the_gate_of_a_fold_does_not_see_that_folds_labels():
    lwlrap = get_metric("lwlrap")
    first, second, y, fold, folds = _gate_inputs(0)
    out, _, _ = gate_level2(first, second, y, fold, folds, lwlrap)
    for k in folds:
        permuted = y.copy()
        rows = np.flatnonzero(fold == k)
        permuted[rows] = y[np.random.default_rng(k).permutation(rows)]
        again, _, _ = gate_level2(first, second, permuted, fold, folds, lwlrap)
        np.testing.assert_array_equal(again[fold == k], out[fold == k])


def test_without_level2_no_folds_labels_move_its_own_final_blend_predictions(small_layout):
    """The whole first-level path (selections, class biases, their strengths, the blend) is
    nested: permuting one fold's labels leaves auto_blend's OOF of that fold unchanged, while the
    other folds' predictions move (so the test can fail)."""
    blends = []
    for name, permute in (("same", False), ("permuted", True)):
        root = small_layout(name)
        if permute:
            permute_fold_labels(root, fold=1)
        run_auto(root, settings=settings(n_level2=0), out=None, report=None)
        blends.append([layout.read_probs(layout.probs_path(root, "auto_blend", k, "val")).values
                       for k in (0, 1, 2)])
    (a0, a1, a2), (b0, b1, b2) = blends
    np.testing.assert_array_equal(a1, b1)
    assert max(np.abs(a0 - b0).max(), np.abs(a2 - b2).max()) > 1e-6


def test_only_the_exact_files_an_earlier_run_recorded_are_replaced(layout_root, tmp_path):
    """Issue 20 (3, 4): the earlier run's sidecar gives it --out, the sidecar and the --report it
    names, nothing else; its cleanup removes auto_mlp_<i> only, never a user's 'auto_mlp_1_keep'."""
    import hashlib
    import shutil

    out, report = tmp_path / "submission.csv", tmp_path / "report.html"
    run_auto(layout_root, settings=settings(n_level2=2), out=out, report=report)
    features = tmp_path / "train_features.csv"
    features.write_text("id,f1\nrow_000.wav,0.5\n")
    digest = hashlib.sha1(features.read_bytes()).hexdigest()
    with pytest.raises(OutputExistsError, match="train_features.csv exists and was not written"):
        run_auto(layout_root, settings=settings(n_level2=2), out=out, report=features)
    assert hashlib.sha1(features.read_bytes()).hexdigest() == digest
    keep = layout.experiment_dir(layout_root, "auto_mlp_1_keep")
    shutil.copytree(layout.experiment_dir(layout_root, "auto_mlp_1"), keep)
    # the same paths again: replaced without --force; one level-2 experiment fewer: auto_mlp_2 goes
    result = run_auto(layout_root, settings=settings(n_level2=1), out=out, report=report)
    assert not layout.experiment_dir(layout_root, "auto_mlp_2").exists()
    assert keep.exists() and (keep / "meta.json").exists()
    assert any("removed auto_mlp_2" in n for n in result.notes)


def test_stack_auto_says_which_experiments_collect_skipped(layout_root):
    path = layout.probs_path(layout_root, "sim_001", 0, "val")
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    lines[1] = ",".join([cells[0], "nan", *cells[2:]])
    path.write_text("\n".join(lines) + "\n")
    result = run_auto(layout_root, settings=settings(n_level2=0), out=None, report=None)
    skipped = [n for n in result.notes if n.startswith("collect skipped")]
    assert skipped and "sim_001" in skipped[0]
