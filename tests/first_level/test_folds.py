"""Iterative stratification, groups, the labels CSV reader and `stack make-folds`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from first_level.folds import iterative_stratification, make_folds, read_label_table
from stacker import layout
from stacker.cli.app import app
from stacker.errors import LayoutError, OptionError, OutputExistsError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def random_labels(seed: int, n_rows: int = 150, n_classes: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = (rng.random((n_rows, n_classes)) < rng.uniform(0.02, 0.4, n_classes)).astype(np.uint8)
    return y


def per_fold(y, fold, n_folds):
    return np.stack([y[fold == k].sum(axis=0) for k in range(n_folds)])


def naive_fold_counts(y, fold, n_folds):
    """The per-fold class counts by plain loops (reference for the vectorised table)."""
    table = [[0] * y.shape[1] for _ in range(n_folds)]
    for row, k in zip(y, fold):
        for c, v in enumerate(row):
            table[k][c] += int(v)
    return np.array(table)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("n_folds", [3, 5])
def test_every_class_in_every_fold_where_possible(seed, n_folds):
    y = random_labels(seed, n_rows=int(np.random.default_rng(seed).integers(20, 160)))
    fold = iterative_stratification(y, n_folds, seed=seed)
    assert fold.shape == (len(y),) and set(fold.tolist()) == set(range(n_folds))
    counts = per_fold(y, fold, n_folds)
    np.testing.assert_array_equal(counts, naive_fold_counts(y, fold, n_folds))
    possible = y.sum(axis=0) >= n_folds
    assert (counts[:, possible] > 0).all()


def test_fold_sizes_and_class_counts_are_balanced():
    rng = np.random.default_rng(0)
    y = (rng.random((1000, 20)) < 0.08).astype(np.uint8)
    fold = iterative_stratification(y, 5, seed=0)
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 0.05 * len(y) / 5 + 2
    counts = per_fold(y, fold, 5)
    # each class is within one row of its share in every fold (what stratification promises)
    assert np.abs(counts - y.sum(axis=0) / 5).max() <= 1.0 + 1e-9


def test_stratification_beats_a_random_split():
    y = random_labels(3, n_rows=400, n_classes=15)
    strat = per_fold(y, iterative_stratification(y, 5, seed=0), 5)
    rand = per_fold(y, np.random.default_rng(0).permutation(np.arange(400) % 5), 5)
    share = y.sum(axis=0) / 5
    assert np.abs(strat - share).sum() < 0.5 * np.abs(rand - share).sum()


def test_deterministic_for_a_seed():
    y = random_labels(1)
    a = iterative_stratification(y, 5, seed=7)
    np.testing.assert_array_equal(a, iterative_stratification(y, 5, seed=7))
    assert not np.array_equal(a, iterative_stratification(y, 5, seed=8))


@pytest.mark.parametrize("seed", range(10))
def test_groups_never_split(seed):
    rng = np.random.default_rng(seed)
    y = random_labels(seed, n_rows=200)
    groups = rng.integers(0, 30, size=200).astype(str)
    fold = iterative_stratification(y, 5, groups=groups, seed=seed)
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1
    group_has = np.stack([y[groups == g].max(axis=0) for g in np.unique(groups)])
    possible = group_has.sum(axis=0) >= 5   # the class is held by >= n_folds groups
    assert (per_fold(y, fold, 5)[:, possible] > 0).all()


def test_rows_without_labels_and_too_few_units():
    y = np.zeros((10, 2), dtype=np.uint8)
    y[:4, 0] = 1
    fold = iterative_stratification(y, 2, seed=0)
    assert np.bincount(fold).tolist() == [5, 5]
    with pytest.raises(OptionError, match="cannot fill 5 folds"):
        iterative_stratification(y, 5, groups=["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"])
    with pytest.raises(OptionError, match="at least 2"):
        iterative_stratification(y, 1)


# ---------------------------------------------------------------- reading and writing


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_reads_fat2019_style_labels(tmp_path):
    path = write_csv(tmp_path / "train.csv", 'fname,labels\na.wav,"Bark,Cat"\nb.wav,Cat\nc.wav,\n')
    table = read_label_table(path)
    assert table.ids.tolist() == ["a.wav", "b.wav", "c.wav"]
    assert table.labels == (("Bark", "Cat"), ("Cat",), ())
    assert table.classes == ("Bark", "Cat")


@pytest.mark.parametrize("text, options, error, match", [
    ("fname,labels\na,x\na,y\n", {}, LayoutError, "id 'a' appears 2 times"),
    ("fname,label\na,x\n", {}, OptionError, "no column 'labels' for `label_column`"),
    ("fname,labels,spk\na,x,\n", {"group_column": "spk"}, LayoutError, "row 2: column 'spk' is empty"),
    ("fname,labels\na,\nb,\n", {}, LayoutError, "no label at all"),
    ("fname,labels\n,x\n", {}, LayoutError, "row 2: the id"),
])
def test_bad_labels_files(tmp_path, text, options, error, match):
    with pytest.raises(error, match=match):
        read_label_table(write_csv(tmp_path / "l.csv", text), **options)


def test_refuses_to_replace_folds_in_use(tmp_path):
    labels = write_csv(tmp_path / "l.csv", "id,labels\n" + "".join(
        f"r{i},{'ab'[i % 2]}\n" for i in range(20)))
    root = tmp_path / "root"
    first = make_folds(labels, root, n_folds=4, seed=0)
    with pytest.raises(OutputExistsError, match=r"folds.csv exists; new folds would replace it"):
        make_folds(labels, root, n_folds=5, seed=0)      # no experiment yet: still the user's file
    make_folds(labels, root, n_folds=5, seed=0, force=True)
    folds = layout.read_folds(root)
    layout.write_meta(root, "exp", {"fold_hash": folds.hash})
    (root / "exp" / "fold_0").mkdir()
    make_folds(labels, root, n_folds=5, seed=0)          # the same folds again: nothing changes
    with pytest.raises(OutputExistsError, match=r"used by 1 experiment\(s\) \(exp\)"):
        make_folds(labels, root, n_folds=4, seed=0)
    again = make_folds(labels, root, n_folds=4, seed=0, force=True)
    assert again.invalidated == ("exp",)
    assert layout.read_folds(root).hash == layout.fold_hash(first.table.ids, first.fold)


def test_make_folds_cli_on_fsdd_speakers(tmp_path):
    meta = SHARED_DATA / "fsdd" / "meta.csv"
    if not meta.exists():
        pytest.skip("../shared/data/fsdd is absent")
    result = CliRunner().invoke(app, ["make-folds", str(meta), "--label-column", "label",
                                      "--group-column", "speaker", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Rows of each class per fold" in result.output
    folds = layout.read_folds(tmp_path)
    assert folds.classes == tuple(str(d) for d in range(10)) and folds.n_folds == 5
    assert (tmp_path / "classes.txt").exists()
    speakers = read_label_table(meta, label_column="label", group_column="speaker").groups
    fold_of = dict(zip(folds.ids, folds.fold))
    for s in set(speakers):
        ids = read_label_table(meta, label_column="label").ids[speakers == s]
        assert len({fold_of[i] for i in ids}) == 1


def test_make_folds_cli_fat2019_and_errors(tmp_path):
    train = SHARED_DATA / "fat2019" / "train_curated.csv"
    if not train.exists():
        pytest.skip("../shared/data/fat2019 is absent")
    runner = CliRunner()
    result = runner.invoke(app, ["make-folds", str(train), "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folds = layout.read_folds(tmp_path)
    assert len(folds.classes) == 80 and (per_fold(folds.y, folds.fold, 5) > 0).all()
    sizes = np.bincount(folds.fold)
    assert sizes.max() - sizes.min() < 0.03 * len(folds.ids)
    bad = runner.invoke(app, ["make-folds", str(train), "--label-column", "nope",
                              "--root", str(tmp_path)])
    assert bad.exit_code == 1 and "no column 'nope'" in bad.output and "Traceback" not in bad.output


def _numbered_labels(tmp_path: Path) -> Path:
    rows = [f"c{i},\"label_{i % 12},label_{(i * 7) % 12}\"" for i in range(60)]
    path = tmp_path / "train.csv"
    path.write_text("fname,labels\n" + "\n".join(rows) + "\n")
    return path


def test_classes_txt_is_in_natural_order_not_text_order(tmp_path):
    """label_2 before label_10: a notebook's arrays follow the competition's numbering."""
    made = make_folds(_numbered_labels(tmp_path), tmp_path / "p", n_folds=3)
    assert layout.read_classes_file(tmp_path / "p") == tuple(f"label_{i}" for i in range(12))
    # the folds themselves are the same as with text order (only classes.txt's order changed)
    table = read_label_table(tmp_path / "train.csv")
    assert np.array_equal(made.fold, iterative_stratification(table.y, 3, seed=0))


def test_classes_txt_follows_the_templates_class_columns(tmp_path):
    order = [f"label_{i}" for i in (3, 1, 0, 2, 4, 5, 6, 7, 8, 9, 11, 10)] + ["label_unused"]
    template = tmp_path / "sample_submission.csv"
    template.write_text("fname," + ",".join(order) + "\nt0," + ",".join("0.5" for _ in order) + "\n")
    result = CliRunner().invoke(app, ["make-folds", str(_numbered_labels(tmp_path)), "--n-folds", "3",
                                      "--template", str(template), "--root", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert layout.read_classes_file(tmp_path / "p") == tuple(order)
    wrong = tmp_path / "other.csv"
    wrong.write_text("fname,a,b\nt0,0.5,0.5\n")
    result = CliRunner().invoke(app, ["make-folds", str(tmp_path / "train.csv"), "--template",
                                      str(wrong), "--root", str(tmp_path / "q")])
    assert result.exit_code == 1
    assert "is not a class column of the template" in result.output and "--template" in result.output
    assert not (tmp_path / "q" / "folds.csv").exists()
