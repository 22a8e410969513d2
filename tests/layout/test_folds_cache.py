"""folds.csv parsed once: a warm collect reads the cached Folds (and never imports pandas); any
change to folds.csv or classes.txt is read and validated again."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

from stacker.errors import LayoutError
from stacker.layout import collect, read_folds

collect_module = importlib.import_module("stacker.layout.collect")


def same_folds(a, b) -> None:
    assert (a.id_column, a.labels, a.classes, a.hash) == (b.id_column, b.labels, b.classes, b.hash)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.fold, b.fold)
    assert a.fold.dtype == b.fold.dtype and a.y.dtype == b.y.dtype


def test_warm_collect_uses_the_cached_folds_equal_to_a_fresh_read(small_layout, monkeypatch):
    root = small_layout()
    collect(root, n_jobs=1)
    monkeypatch.setattr(collect_module, "read_folds", lambda root: pytest.fail("folds.csv re-read"))
    warm = collect(root, n_jobs=1)
    same_folds(warm.folds, read_folds(root))


def test_a_changed_folds_file_is_read_and_checked_again(small_layout):
    root = small_layout()
    collect(root, n_jobs=1)
    path = root / "folds.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",x"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LayoutError, match="row 2: fold 'x' is not an integer"):
        collect(root, n_jobs=1)


def test_warm_collect_does_not_import_pandas(small_layout):
    root = small_layout()
    collect(root, n_jobs=1)
    code = (f"import sys; from stacker.layout import collect; collect({str(root)!r}); "
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
