"""read_probs opens a prediction file once, on its fast path and on the strict one (a file from
Excel: a byte-order mark and a trailing comma), and both give the values the file holds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from stacker import layout
from stacker.errors import LayoutError

_OPENS: dict = {"on": False, "paths": []}


def _hook(event: str, args) -> None:
    if _OPENS["on"] and event == "open" and isinstance(args[0], (str, os.PathLike)):
        _OPENS["paths"].append(Path(os.fsdecode(args[0])).resolve())


sys.addaudithook(_hook)     # a hook cannot be removed: it records only while a test traces


def opens(path: Path, read) -> tuple[int, object]:
    _OPENS.update(on=True, paths=[])
    try:
        value = read(path)
    finally:
        _OPENS["on"] = False
    return _OPENS["paths"].count(path.resolve()), value


@pytest.mark.parametrize("excel", [False, True])
def test_read_probs_opens_the_file_once(tmp_path, excel):
    path = tmp_path / "probs.csv"
    text = "fname,a,b\nx1,0.25,0.5\nx2,1,0\n"
    if excel:
        text = "\ufeff" + text.replace("\n", ",\n")
    path.write_bytes(text.encode("utf-8"))
    count, probs = opens(path, layout.read_probs)
    assert count == 1
    assert probs.id_column == "fname" and probs.columns == ("a", "b")
    np.testing.assert_array_equal(probs.values, [[0.25, 0.5], [1, 0]])


def test_a_bad_file_is_still_named_after_one_open(tmp_path):
    path = tmp_path / "probs.csv"
    path.write_bytes(b"fname,a,b\nx1,0.25\nx2,1,0\n")
    _OPENS.update(on=True, paths=[])
    try:
        with pytest.raises(LayoutError, match="line 2 has 2 fields"):
            layout.read_probs(path)
    finally:
        _OPENS["on"] = False
    assert _OPENS["paths"].count(path.resolve()) == 1
