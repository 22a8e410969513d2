"""`stack search-subsets` and `stack blend` from the command line, and the issue's acceptance test:
collect -> search -> blend, then an independent script scores the chosen blend from the CSV files."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stacker.cli.app import app
from stacker.simulate import write_simulated_layout

runner = CliRunner()
EPS = 1e-7


def stack(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_layout(root: Path, *, n_experiments=6, skills=None, n_rows=240, n_classes=6, seed=0):
    rng = np.random.default_rng(seed)
    classes = [f"class_{j}" for j in range(n_classes)]
    labels = []
    for i in range(n_rows):
        row = {classes[i % n_classes]}
        if rng.random() < 0.3:
            row.add(classes[int(rng.integers(n_classes))])
        labels.append(tuple(sorted(row)))
    skills = np.linspace(0.2, 0.7, n_experiments) if skills is None else skills
    write_simulated_layout(root, [f"clip_{i:04d}.wav" for i in range(n_rows)], labels,
                           [i % 4 for i in range(n_rows)], n_experiments=n_experiments,
                           n_test=40, classes=classes, seed=seed, skills=skills)
    return root


# ---------------------------------------------------------------- an independent scorer


def read_csv_rows(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, {row[0]: [float(v) for v in row[1:]] for row in reader}


def naive_lwlrap(truth: list[list[int]], scores: list[list[float]]) -> float:
    """Mean over positives of #positives at or above / #classes at or above."""
    precisions = []
    for labels, row in zip(truth, scores):
        for c, positive in enumerate(labels):
            if positive:
                above = [j for j, s in enumerate(row) if s >= row[c]]
                precisions.append(sum(labels[j] for j in above) / len(above))
    return sum(precisions) / len(precisions)


def naive_geo_mean(vectors: list[list[float]]) -> list[float]:
    return [math.exp(sum(math.log(min(max(v[j], EPS), 1.0)) for v in vectors) / len(vectors))
            for j in range(len(vectors[0]))]


def independent_scores(root: Path, members: list[str]):
    """OOF lwlrap of the geo-mean of ``members`` and their test blend, from the CSV files only."""
    with open(root / "folds.csv", newline="") as handle:
        folds = list(csv.DictReader(handle))
    id_column = next(iter(folds[0]))
    classes = [line for line in (root / "classes.txt").read_text().splitlines() if line]
    oof = {m: {} for m in members}
    tests = {m: [] for m in members}
    for m in members:
        for k in sorted({row["fold"] for row in folds}):
            header, rows = read_csv_rows(root / m / f"fold_{k}" / "val" / "probs.csv")
            order = [header[1:].index(c) for c in classes]
            oof[m].update({i: [v[j] for j in order] for i, v in rows.items()})
            header, rows = read_csv_rows(root / m / f"fold_{k}" / "test" / "probs.csv")
            tests[m].append({i: [v[header[1:].index(c)] for c in classes] for i, v in rows.items()})
    truth = [[int(c in row["labels"].split(",")) for c in classes] for row in folds]
    blended = [naive_geo_mean([oof[m][row[id_column]] for m in members]) for row in folds]
    test_ids = list(tests[members[0]][0])
    test = {i: naive_geo_mean([naive_geo_mean([fold[i] for fold in tests[m]]) for m in members])
            for i in test_ids}
    return naive_lwlrap(truth, blended), test, classes


# ---------------------------------------------------------------- acceptance


def test_collect_search_blend_scores_like_an_independent_script(tmp_path):
    root = make_layout(tmp_path / "layout")
    assert stack("collect", "--root", root).exit_code == 0
    searched = stack("search-subsets", "--root", root, "--metric", "lwlrap", "--n-jobs", 1)
    assert searched.exit_code == 0, searched.output
    assert "auto chose exhaustive" in searched.output
    assert "nested CV" in searched.output
    chosen = json.loads((root / ".stack" / "subsets.json").read_text())
    members = chosen["members"]
    # a template in another row and column order than the layout
    classes = [line for line in (root / "classes.txt").read_text().splitlines() if line]
    header, test_rows = read_csv_rows(root / "sim_000" / "fold_0" / "test" / "probs.csv")
    template_ids = sorted(test_rows, reverse=True)
    template_classes = classes[::-1]
    template = tmp_path / "sample_submission.csv"
    with open(template, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fname", *template_classes])
        writer.writerows([[i] + [0] * len(classes) for i in template_ids])
    out = tmp_path / "sub.csv"
    blended = stack("blend", "--geo-mean", "--root", root, "--template", template, "--out", out)
    assert blended.exit_code == 0, blended.output

    cv, test, classes = independent_scores(root, members)
    printed = float(re.search(r"CV on OOF rows \(lwlrap\): ([0-9.]+)", blended.output).group(1))
    assert printed == pytest.approx(cv, abs=1e-6)                      # printed with 6 decimals
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["cv"] == pytest.approx(cv, abs=1e-9)
    assert chosen["cv"] == pytest.approx(cv, abs=1e-9)                 # the search's own CV
    assert sidecar["members"] == members and sidecar["blend"] == "geo-mean"
    assert sidecar["nested_cv"] == chosen["nested_cv"]
    assert f"{chosen['nested_cv']:.6f}" in blended.output
    written_header, written = read_csv_rows(out)
    assert written_header == ["fname", *template_classes]
    assert list(written) == template_ids
    for i in template_ids:
        expected = [test[i][classes.index(c)] for c in template_classes]
        np.testing.assert_allclose(written[i], expected, rtol=2e-6)


# ---------------------------------------------------------------- refusals


def test_blend_refuses_an_existing_output_without_force(tmp_path):
    root = make_layout(tmp_path / "layout", n_experiments=3)
    out = tmp_path / "sub.csv"
    out.write_text("keep me\n")
    result = stack("blend", "--mean", "--root", root, "--out", out)
    assert result.exit_code == 1
    assert "exists; pass --force" in result.output and "Traceback" not in result.output
    assert out.read_text() == "keep me\n"
    assert stack("blend", "--mean", "--root", root, "--out", out, "--force").exit_code == 0
    assert out.read_text().startswith("fname,")


def test_blend_refuses_a_template_of_other_ids(tmp_path):
    root = make_layout(tmp_path / "layout", n_experiments=2)
    template = tmp_path / "t.csv"
    template.write_text("fname,class_0,class_1,class_2,class_3,class_4,class_5\nother.wav,0,0,0,0,0,0\n")
    result = stack("blend", "--rank", "--root", root, "--template", template,
                   "--out", tmp_path / "s.csv")
    assert result.exit_code == 1
    assert "not the layout's test ids" in result.output
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("flags, message", [
    ([], "pass exactly one of"),
    (["--mean", "--rank"], "pass exactly one of"),
    (["--weights"], "run it first"),
    (["--geo-mean", "--subset", "sim_000,nope"], "'nope'"),
])
def test_blend_option_errors(tmp_path, flags, message):
    root = make_layout(tmp_path / "layout", n_experiments=2)
    result = stack("blend", *flags, "--root", root, "--out", tmp_path / "s.csv")
    assert result.exit_code == 1
    assert message in result.output


def test_search_option_errors(tmp_path):
    root = make_layout(tmp_path / "layout", n_experiments=2)
    result = stack("search-subsets", "--root", root, "--max-size", 0)
    assert result.exit_code == 1 and "--max-size must be at least 1" in result.output
    result = stack("search-subsets", "--root", root, "--subset", "sim_000,ghost")
    assert result.exit_code == 1 and "'ghost'" in result.output


# ---------------------------------------------------------------- GES weights, warnings, pools


def test_ges_weights_flow_into_the_blend(tmp_path):
    root = make_layout(tmp_path / "layout", n_experiments=4)
    result = stack("search-subsets", "--root", root, "--method", "ges", "--no-nested",
                   "--ges-iterations", 12, "--n-jobs", 1)
    assert result.exit_code == 0, result.output
    chosen = json.loads((root / ".stack" / "subsets.json").read_text())
    assert chosen["method"] == "ges" and chosen["nested_cv"] is None
    assert sum(chosen["weights"].values()) == pytest.approx(1.0)
    out = tmp_path / "s.csv"
    blended = stack("blend", "--weights", "--root", root, "--out", out)
    assert blended.exit_code == 0, blended.output
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["weights"] == pytest.approx(chosen["weights"])
    assert sidecar["cv"] == pytest.approx(chosen["cv"], abs=1e-12)


def test_search_warns_when_selection_overfits(tmp_path):
    """Pure-noise experiments: the best of many subsets is luck, and the nested CV says so."""
    root = make_layout(tmp_path / "layout", n_experiments=9, skills=[0.0] * 9, n_rows=120)
    result = stack("search-subsets", "--root", root, "--n-jobs", 1)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "overfits" in result.output
    chosen = json.loads((root / ".stack" / "subsets.json").read_text())
    assert chosen["cv"] > chosen["nested_cv"]


def test_search_pool_and_blend_of_named_subset(tmp_path):
    root = make_layout(tmp_path / "layout", n_experiments=4)
    result = stack("search-subsets", "--root", root, "--subset", "sim_001,sim_003",
                   "--method", "greedy", "--top", 2, "--n-jobs", 1)
    assert result.exit_code == 0, result.output
    chosen = json.loads((root / ".stack" / "subsets.json").read_text())
    assert set(chosen["members"]) <= {"sim_001", "sim_003"}
    assert chosen["pool"] == ["sim_001", "sim_003"]
    out = tmp_path / "s.csv"
    named = stack("blend", "--geo-mean", "--root", root, "--subset", "sim_000,sim_002", "--out", out)
    assert named.exit_code == 0, named.output
    assert "no nested CV: the subset was not chosen" in named.output
    assert json.loads(Path(f"{out}.json").read_text())["members"] == ["sim_000", "sim_002"]
