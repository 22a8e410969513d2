"""`stack search-subsets --method ges-bagged|cmaes|per-class|linear` then `stack blend --weights`:
the saved record reproduces exactly the blend the search scored, on the OOF rows and the test set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli_search_blend import make_layout, read_csv_rows, stack

from stacker.layout.collect import collect
from stacker.metrics import lwlrap

EPS = 1e-7


def naive_test_blend(root: Path, chosen: dict) -> dict:
    """The record's blend of the test predictions, written out from the CSV files: per member the
    geo-mean of its fold models, then per class the weighted geo-mean or the logit stacker."""
    collection = collect(root)
    classes = list(collection.classes)
    members = chosen["members"]
    per_member = {}
    for m in members:
        folds = []
        for k in collection.fold_numbers:
            header, rows = read_csv_rows(root / m / f"fold_{k}" / "test" / "probs.csv")
            order = [header[1:].index(c) for c in classes]
            folds.append({i: np.array(v)[order] for i, v in rows.items()})
        per_member[m] = {i: np.exp(np.mean([np.log(np.clip(f[i], EPS, 1)) for f in folds], axis=0))
                         for i in folds[0]}
    out = {}
    for i in per_member[members[0]]:
        if chosen["blend"] == "linear":
            z = np.array(chosen["intercept"], dtype=np.float64)
            for m in members:
                p = np.clip(per_member[m][i], EPS, 1 - EPS)
                z = z + np.array(chosen["coef"][m]) * np.log(p / (1 - p))
            out[i] = 1 / (1 + np.exp(-z))
        else:
            table = chosen.get("class_weights") or {m: [chosen["weights"][m]] * len(classes)
                                                    for m in members}
            W = np.array([table[m] for m in members])
            logs = np.array([np.log(np.clip(per_member[m][i], EPS, 1)) for m in members])
            out[i] = np.exp((W * logs).sum(axis=0) / W.sum(axis=0))
    return out


@pytest.mark.parametrize("method", ["per-class", "linear", "cmaes", "ges-bagged"])
def test_blend_of_the_saved_record_is_the_blend_the_search_scored(tmp_path, method):
    root = make_layout(tmp_path / "layout", n_experiments=4, n_rows=320)
    result = stack("search-subsets", "--root", root, "--method", method, "--n-jobs", 1,
                   "--cmaes-evaluations", 150, "--ges-bags", 3)
    assert result.exit_code == 0, result.output
    assert "nested CV" in result.output
    chosen = json.loads((root / ".stack" / "subsets.json").read_text())
    assert chosen["method"] == method and chosen["nested_cv"] is not None
    if method == "per-class":
        assert set(chosen["class_weights"]) == set(chosen["members"])
        assert chosen["classes"] == [f"class_{j}" for j in range(6)]
    if method == "linear":
        assert chosen["blend"] == "linear" and len(chosen["intercept"]) == 6
    out = tmp_path / "s.csv"
    blended = stack("blend", "--weights", "--root", root, "--out", out)
    assert blended.exit_code == 0, blended.output
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["cv"] == pytest.approx(chosen["cv"], abs=1e-12)       # the OOF blend
    assert sidecar["nested_cv"] == chosen["nested_cv"]
    _, written = read_csv_rows(out)
    expected = naive_test_blend(root, chosen)
    for i, row in written.items():
        np.testing.assert_allclose(row, expected[i], rtol=2e-6, atol=1e-9)


def test_a_stale_per_class_record_is_refused_in_one_line(tmp_path):
    root = make_layout(tmp_path / "layout", n_experiments=3, n_rows=320)
    assert stack("search-subsets", "--root", root, "--method", "per-class", "--n-jobs", 1,
                 "--no-nested").exit_code == 0
    path = root / ".stack" / "subsets.json"
    chosen = json.loads(path.read_text())
    chosen["classes"] = chosen["classes"][::-1]
    path.write_text(json.dumps(chosen))
    result = stack("blend", "--weights", "--root", root, "--out", tmp_path / "s.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "other classes" in result.output and "subsets.json" in result.output


def test_per_class_refusal_is_one_line(tmp_path):
    root = make_layout(tmp_path / "layout", n_experiments=3, n_rows=40)
    result = stack("search-subsets", "--root", root, "--method", "per-class", "--n-jobs", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "positives per class" in result.output and "use --method ges" in result.output


def test_report_uses_the_per_class_blend(tmp_path):
    from stacker.report import searched_blend

    root = make_layout(tmp_path / "layout", n_experiments=3, n_rows=320)
    assert stack("search-subsets", "--root", root, "--method", "linear", "--n-jobs", 1,
                 "--no-nested").exit_code == 0
    chosen = json.loads((root / ".stack" / "subsets.json").read_text())
    collection = collect(root)
    assert lwlrap(collection.y, searched_blend(collection, chosen)) == pytest.approx(chosen["cv"],
                                                                                      abs=1e-12)
