"""`stack demo`: the whole pipeline end to end on the synthetic dataset."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from first_level import synth
from stacker import layout
from stacker.cli import demo_pipeline as demo
from stacker.cli.app import app
from stacker.errors import OutputExistsError
from stacker.layout.collect import collect
from stacker.metrics import lwlrap

_DEMO_SETTINGS = demo.demo_settings


def tiny_settings(seed: int = 0) -> demo.DemoSettings:
    """The quick run shrunk to seconds: 3 folds (stack auto holds one out of tuning), one-epoch CNN,
    two sklearn models."""
    quick = _DEMO_SETTINGS(quick=True, seed=seed)
    return replace(quick, n_train=60, n_test=16, n_folds=3,
                   cnn={**quick.cnn, "channels": (4, 8), "epochs": 1},
                   sklearn={k: quick.sklearn[k] for k in ("stats_logreg", "stats_knn")},
                   tune_trials=1, level2={**quick.level2, "max_epochs": 8, "patience": 3})


def _naive_geo_mean(arrays, weights=None):
    """exp(sum_i w_i log clip(p_i)) with plain numpy: arrays is a list of same-shape arrays."""
    w = np.ones(len(arrays)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    logs = [np.log(np.clip(np.asarray(a, dtype=np.float64), 1e-7, 1)) for a in arrays]
    return np.exp(sum(wi * li for wi, li in zip(w, logs)))


def test_tiny_demo_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "demo_settings", lambda quick=False, seed=0: tiny_settings(seed))
    workdir = tmp_path / "run"
    result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir), "--quick"])
    assert result.exit_code == 0, result.output
    for text in ("final blend", "best single model", "first-level subset", "cnn_logmel",
                 "stats_logreg", "stats_knn", "auto_mlp_1", "submission", "report.html"):
        assert text in result.output, text
    # the submission appears once, with its CV, nested CV and held-out test: auto_blend (the
    # final blend written as an experiment) has no row of its own with a second CV
    scored = [line for line in result.output.splitlines()
              if "│" in line and re.search(r"\d\.\d{4}", line)]      # the table's scored rows
    assert not any("auto_blend" in line.split("│")[1] for line in scored)
    assert len([line for line in scored if "final blend" in line]) == 1

    # every experiment the table shows is in the layout, and the files are where it says
    root = workdir / "predictions"
    collection = collect(root)
    assert {"cnn_logmel", "stats_logreg", "stats_knn", "auto_mlp_1"} <= set(collection.names)
    assert collection.folds.n_folds == 3 and len(collection.ids) == 60
    page = (workdir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)

    # the submission is the geometric mean of the chosen members' fold-model geometric means
    search = json.loads((root / ".stack" / "subsets.json").read_text())
    members = search["members"]
    weights = [search["weights"].get(m, 0.0) for m in members] if search.get("weights") else None
    per_member = []
    for name in members:
        folds = [layout.read_probs(layout.probs_path(root, name, k, "test"))
                 for k in collection.fold_numbers]
        frames = [pd.DataFrame(f.values, index=f.ids, columns=f.columns) for f in folds]
        per_member.append(_naive_geo_mean([f.to_numpy() for f in frames]))
    expected = pd.DataFrame(_naive_geo_mean(per_member, weights), index=frames[0].index,
                            columns=frames[0].columns)
    submission = pd.read_csv(workdir / "submission.csv")
    template = pd.read_csv(workdir / "data" / "sample_submission.csv")
    assert list(submission.columns) == list(template.columns)
    assert submission.fname.tolist() == template.fname.tolist()
    got = submission.set_index("fname")
    np.testing.assert_allclose(got.to_numpy(), expected.loc[got.index, got.columns].to_numpy(),
                               rtol=1e-4, atol=1e-6)

    # the held-out score in the table is lwlrap of that submission against test_labels.csv
    ids, labels = synth.read_labels(workdir / "data" / "test_labels.csv")
    truth = layout.labels_to_matrix(labels, list(template.columns[1:]))
    held_out = lwlrap(truth, got.loc[ids].to_numpy())
    final_row = next(line for line in result.output.splitlines() if "submission" in line
                     and re.search(r"\d\.\d{4}", line))
    cv, nested, test = (float(x) for x in re.findall(r"\d\.\d{4}", final_row)[:3])
    # the CSV keeps 7 significant digits, which may tie a pair of scores the table did not
    assert abs(test - held_out) < 2e-3 and 0 < nested <= 1 and 0 < cv <= 1


def test_a_second_run_resumes_the_first_level(tmp_path):
    settings = tiny_settings()
    first = demo.run_demo(tmp_path / "run", settings=settings)
    probs = layout.probs_path(tmp_path / "run" / "predictions", "cnn_logmel", 0, "val")
    stamp = probs.stat().st_mtime_ns
    second = demo.run_demo(tmp_path / "run", settings=settings)
    assert probs.stat().st_mtime_ns == stamp            # kept, not retrained
    assert second.models.set_index("experiment").cv.round(6).to_dict() == \
        first.models.set_index("experiment").cv.round(6).to_dict()
    assert second.final_members == first.final_members and second.final_cv == first.final_cv


def test_refuses_a_folder_that_is_not_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not a demo workdir"):
        demo.run_demo(foreign, settings=tiny_settings())
    assert (foreign / "notes.txt").read_text() == "keep me"
    other = tmp_path / "other"
    other.mkdir()
    (other / demo.DEMO_FILE).write_text(json.dumps({"seed": 5}))
    with pytest.raises(OutputExistsError, match="other settings"):
        demo.run_demo(other, settings=tiny_settings())
    result = CliRunner().invoke(app, ["demo", "--workdir", str(foreign), "--quick"])
    assert result.exit_code == 1 and "--force" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_quick_demo_blend_beats_the_best_single_model(tmp_path):
    workdir = tmp_path / "quick"
    result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir), "--quick"])
    assert result.exit_code == 0, result.output
    gain_row = next(line for line in result.output.splitlines() if "blend - best single" in line)
    assert float(re.findall(r"[+-]\d\.\d{4}", gain_row)[0]) > 0, result.output
    assert (workdir / "submission.csv").exists() and (workdir / "report.html").exists()
    names = collect(workdir / "predictions").names
    assert {"cnn_logmel", "stats_logreg", "stats_extratrees", "stats_knn", "auto_mlp_1"} <= set(names)
