"""stacker.layout.provenance: the rules every writer applies before it replaces, resumes or removes."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from stacker import layout
from stacker.errors import OutputExistsError
from stacker.layout import provenance

MADE = {"fold_hash": "f1", "classes": ["a", "b"], "data_hash": "d1", "model": "m", "params": {"p": 1},
        "seed": 0}


def test_the_same_set_up_may_resume():
    provenance.check_resumable(MADE, dict(MADE), where="x/meta.json", name="e")


@pytest.mark.parametrize("change, message", [
    ({"fold_hash": "f2"}, "x/meta.json: experiment 'e' was made on other folds (fold_hash f1, folds.csv "
                          "has f2); pass `force` to retrain every fold or choose another `name`"),
    ({"classes": ["b", "a"]}, "x/meta.json: experiment 'e' was made with other classes; pass `force` "
                              "to retrain it or choose another `name`"),
    ({"data_hash": "d2"}, "x/meta.json: experiment 'e' was made on other input data (data_hash d1, the "
                          "data given now has d2); resuming would mix folds trained on both. Pass "
                          "`force` to retrain every fold or choose another `name`"),
    ({"model": "n"}, 'x/meta.json: experiment \'e\' was made with model "m", not "n"; pass `force` to '
                     "retrain it or choose another `name`"),
    ({"params": {"p": 2}}, "made with params {\"p\": 1}, not {\"p\": 2}"),
    ({"seed": 1}, "made with seed 0, not 1"),
])
def test_another_set_up_is_refused_naming_what_differs(change, message):
    with pytest.raises(OutputExistsError) as error:
        provenance.check_resumable(MADE, {**MADE, **change}, where="x/meta.json", name="e")
    assert message in str(error.value)


def test_what_the_run_does_not_know_is_not_compared():
    provenance.check_resumable(MADE, {**MADE, "data_hash": None}, where="x", name="e")
    provenance.check_resumable(MADE, {"model": "m"}, where="x", name="e")
    older = {k: v for k, v in MADE.items() if k not in ("fold_hash", "classes")}
    provenance.check_resumable(older, MADE, where="x", name="e")


@pytest.mark.parametrize("meta, missing", [
    ({"level": 1, "notes": "mine"}, "records no model, params, seed, data_hash"),
    ({"model": "m"}, "records no params, seed, data_hash"),
    ({k: v for k, v in MADE.items() if k != "seed"}, "records no seed,"),
    ({**MADE, "data_hash": None}, "records no data_hash,"),
])
def test_a_meta_json_that_does_not_record_the_set_up_cannot_be_resumed(meta, missing):
    with pytest.raises(OutputExistsError, match=missing):
        provenance.check_resumable(meta, MADE, where="x", name="e")


def test_an_experiment_without_meta_cannot_be_resumed():
    with pytest.raises(OutputExistsError, match="exists without meta.json, so it cannot be resumed"):
        provenance.check_resumable({}, MADE, where="x", name="e")


def test_made_on_folds_counts_the_unknown_as_made_on_them():
    assert provenance.made_on_folds({"fold_hash": "f1"}, "f1")
    assert not provenance.made_on_folds({"fold_hash": "f1"}, "f2")
    assert provenance.made_on_folds({}, "f2")
    assert provenance.made_on_folds({"fold_hash": "f1"}, None)


def test_a_new_experiment_replaces_one_only_with_force(tmp_path):
    provenance.check_new_experiment(tmp_path, "e", force=False)
    (tmp_path / "e").mkdir()
    provenance.check_new_experiment(tmp_path, "e", force=True)
    with pytest.raises(OutputExistsError, match=r"experiment 'e' already exists under .*; choose "
                                                r"another `name` or pass `force` to replace it"):
        provenance.check_new_experiment(tmp_path, "e", force=False)
    with pytest.raises(OutputExistsError, match="; use another$"):
        provenance.check_new_experiment(tmp_path, "e", force=False, fix="use another")


def test_a_command_removes_only_what_it_made(tmp_path):
    layout.write_meta(tmp_path, "mine", provenance.stamped({provenance.MADE_BY: "stack auto"}))
    layout.write_meta(tmp_path, "theirs", {"model": "x"})
    assert provenance.experiment_made_by(tmp_path, "mine", "stack auto")
    assert not provenance.experiment_made_by(tmp_path, "theirs", "stack auto")
    provenance.check_own_experiment(tmp_path, "mine", "stack auto")
    with pytest.raises(OutputExistsError, match="was not made by stack auto"):
        provenance.check_own_experiment(tmp_path, "theirs", "stack auto")
    assert not provenance.remove_own_experiment(tmp_path, "theirs", "stack auto")
    assert provenance.remove_own_experiment(tmp_path, "mine", "stack auto")
    assert not (tmp_path / "mine").exists() and (tmp_path / "theirs").exists()


def test_stamped_records_when_to_the_second_in_utc():
    meta = provenance.stamped({"model": "m"})
    assert meta["model"] == "m" and list(meta) == ["model", "created"]
    created = datetime.fromisoformat(meta["created"])
    assert created.utcoffset().total_seconds() == 0 and created.microsecond == 0
    json.dumps(meta)


def test_check_replaceable_names_the_owner_of_every_layout_file(small_layout):
    """`force` never replaces a file of the layout: experiments, folds.csv, classes.txt, .stack/."""
    from stacker.errors import OutputExistsError
    from stacker.layout.provenance import check_replaceable

    root = small_layout()
    cases = {root / "sim_000" / "fold_1" / "test" / "probs.csv": "experiment 'sim_000'",
             root / "sim_000" / "notes.csv": "experiment 'sim_000'",
             root / "new" / "fold_0" / "val" / "probs.csv": "experiment 'new'",
             root / "folds.csv": "`stack make-folds`",
             root / "classes.txt": "`stack make-folds`",
             root / ".stack" / "best_params.json": "`stack tune`",
             root / ".stack" / "cache" / "x.npy": "`stack collect`"}
    for path, owner in cases.items():
        with pytest.raises(OutputExistsError, match=owner.replace("(", r"\(")):
            check_replaceable(path, root)
    (root / "subs").mkdir()                       # a plain folder of the user's: not an experiment
    for fine in (root / "submission.csv", root / "subs" / "s.csv", root.parent / "s.csv"):
        check_replaceable(fine, root)
