"""`stack search-subsets --device`: the same subsets on every device, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stacker.cli.app import app
from stacker.simulate import write_simulated_layout


def stack(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def make_layout(root, *, n_experiments, n_rows=200, n_classes=6, seed=0):
    rng = np.random.default_rng(seed)
    classes = [f"class_{j}" for j in range(n_classes)]
    labels = [tuple(sorted({classes[i % n_classes], classes[int(rng.integers(n_classes))]}))
              for i in range(n_rows)]
    write_simulated_layout(root, [f"clip_{i:04d}.wav" for i in range(n_rows)], labels,
                           [i % 4 for i in range(n_rows)], n_experiments=n_experiments,
                           n_test=20, classes=classes, seed=seed,
                           skills=np.linspace(0.2, 0.7, n_experiments))
    return root


def test_device_cpu_and_auto_choose_the_same_subsets(tmp_path):
    root = make_layout(tmp_path / "layout", n_experiments=5)
    records = []
    for device in ("cpu", "auto"):
        result = stack("search-subsets", "--root", root, "--device", device, "--n-jobs", 1)
        assert result.exit_code == 0, result.output
        records.append(json.loads((root / ".stack" / "subsets.json").read_text()))
    assert records[0]["params"]["device"] == "cpu"
    assert records[0]["params"]["backend"] in ("numba", "numpy (numba is not installed)")
    for key in ("members", "cv", "nested_cv", "top", "by_size"):
        assert records[0][key] == records[1][key]


@pytest.mark.parametrize("device, message", [("tpu", "unknown device 'tpu'"),
                                             ("cuda", "no CUDA device")])
def test_bad_device_is_a_one_line_error(tmp_path, monkeypatch, device, message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = make_layout(tmp_path / "layout", n_experiments=2)
    result = stack("search-subsets", "--root", root, "--device", device)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
