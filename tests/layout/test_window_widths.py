"""windows.csv: each per-window row's width, written and read back."""

import numpy as np
import pytest

from stacker import layout
from stacker.errors import LayoutError


def test_window_widths_round_trip_in_runs(tmp_path):
    widths = {"a.wav": np.array([8, 8, 8, 24]), "b.wav": np.array([8, 24, 24])}
    path = layout.write_window_widths(tmp_path, "exp", 0, "val", widths, id_column="fname")
    assert path.read_text().splitlines() == [
        "fname,width,windows", "a.wav,8,3", "a.wav,24,1", "b.wav,8,1", "b.wav,24,2"]
    back = layout.read_window_widths(tmp_path, "exp", 0, "val")
    assert back.keys() == widths.keys()
    for key in widths:
        np.testing.assert_array_equal(back[key], widths[key])
    assert layout.read_window_widths(tmp_path, "exp", 1, "val") is None


@pytest.mark.parametrize("text, message", [
    ("fname,size,windows\na,8,1\n", "expected <id>,width,windows"),
    ("fname,width,windows\na,8,0\n", "line 2"),
    ("fname,width,windows\na,x,1\n", "line 2"),
])
def test_malformed_window_widths_are_named(tmp_path, text, message):
    folder = layout.fold_dir(tmp_path, "exp", 0, "test")
    folder.mkdir(parents=True)
    (folder / layout.WIDTHS_FILE).write_text(text)
    with pytest.raises(LayoutError, match=message):
        layout.read_window_widths(tmp_path, "exp", 0, "test")
