"""Test-time blends and the submission file: the template's exact shape, refusals, sidecar."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stacker.blend import Blend, oof_blend
from stacker.blend import test_blend as blend_of_test  # not named test_*: pytest would collect it
from stacker.errors import OutputExistsError, TemplateError
from stacker.layout.collect import collect
from stacker.metrics import lwlrap
from stacker.simulate import write_simulated_layout
from stacker.submission import make_submission, read_template

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EPS = 1e-7


def layout_of(root: Path, *, n_rows=60, classes=("a", "b", "c", "d"), test_ids=None, n_exp=3,
              seed=0):
    classes = list(classes)
    ids = [f"row_{i:03d}" for i in range(n_rows)]
    labels = [(classes[i % len(classes)],) for i in range(n_rows)]
    write_simulated_layout(root, ids, labels, [i % 3 for i in range(n_rows)], n_experiments=n_exp,
                           n_test=12, classes=classes, test_ids=test_ids, seed=seed,
                           skills=np.linspace(0.4, 1.0, n_exp))
    return collect(root)


def write_template(path: Path, ids, classes, id_column="fname"):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([id_column, *classes])
        for i in ids:
            writer.writerow([i] + [0] * len(classes))
    return path


def test_submission_matches_the_real_fat2019_template(tmp_path):
    """Layout test ids = sample_submission.csv's fnames in a shuffled order, classes in another
    order: the written file has the template's header, ids and row order."""
    fat = SHARED_DATA / "fat2019"
    template = fat / "sample_submission.csv"
    if not template.exists() or not (fat / "train_curated.csv").exists():
        pytest.skip("../shared/data/fat2019 is absent")
    with open(template, newline="") as handle:
        header = next(csv.reader(handle))
    template_ids = pd.read_csv(template, dtype={header[0]: str}, usecols=[0]).iloc[:, 0].tolist()
    curated = pd.read_csv(fat / "train_curated.csv").head(90)
    rng = np.random.default_rng(0)
    layout_classes = list(rng.permutation(header[1:]))
    write_simulated_layout(tmp_path / "fat", curated.fname.tolist(),
                           [tuple(v.split(",")) for v in curated.labels],
                           [i % 3 for i in range(len(curated))], n_experiments=2,
                           classes=layout_classes, test_ids=list(rng.permutation(template_ids)))
    collection = collect(tmp_path / "fat")
    assert list(collection.test_ids) != template_ids          # the layout's order differs
    out = tmp_path / "submission.csv"
    make_submission(collection, Blend(["sim_000", "sim_001"]), out=out, template=template)
    written = pd.read_csv(out, dtype={header[0]: str})
    assert list(written.columns) == header
    assert written[header[0]].tolist() == template_ids
    probs = blend_of_test(collection, ["sim_000", "sim_001"])
    rows = [list(collection.test_ids).index(i) for i in template_ids]
    cols = [collection.classes.index(c) for c in header[1:]]
    np.testing.assert_allclose(written[header[1:]].to_numpy(), probs[rows][:, cols], rtol=1e-6)


def test_test_blend_is_fold_geo_mean_then_member_blend(tmp_path):
    collection = layout_of(tmp_path / "l")
    members = ["sim_002", "sim_000"]
    idx = [collection.names.index(m) for m in members]
    per_member = []
    for m in idx:
        logs = sum(np.log(np.clip(collection.test[f, :, m].astype(np.float64), EPS, 1))
                   for f in range(len(collection.fold_numbers)))
        per_member.append(np.exp(logs / len(collection.fold_numbers)))
    geo = np.exp((np.log(per_member[0]) + np.log(per_member[1])) / 2)
    np.testing.assert_allclose(blend_of_test(collection, members), geo, rtol=1e-12)
    mean = (per_member[0] * 3 + per_member[1] * 1) / 4
    np.testing.assert_allclose(blend_of_test(collection, members, blend="mean", weights=[3, 1]),
                               mean, rtol=1e-12)


def test_without_template_layout_order_and_sidecar(tmp_path):
    collection = layout_of(tmp_path / "l")
    before = collection.test.copy()
    out = tmp_path / "sub.csv"
    record = make_submission(collection, Blend(["sim_000", "sim_001"], "mean", weights=[1, 3]),
                             out=out)
    np.testing.assert_array_equal(collection.test, before)
    written = pd.read_csv(out, dtype={"fname": str})
    assert list(written.columns) == ["fname", *collection.classes]
    assert written.fname.tolist() == list(collection.test_ids)
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["members"] == ["sim_000", "sim_001"]
    assert sidecar["weights"] == {"sim_000": 0.25, "sim_001": 0.75}
    assert sidecar["blend"] == "mean" and sidecar["eps"] == EPS
    expected = lwlrap(collection.y, oof_blend(collection, ["sim_000", "sim_001"], blend="mean",
                                              weights=[1, 3]))
    assert sidecar["cv"] == pytest.approx(expected, abs=1e-12) == record["cv"]


def test_existing_output_is_refused_unless_force(tmp_path):
    collection = layout_of(tmp_path / "l")
    out = tmp_path / "sub.csv"
    out.write_text("mine\n")
    with pytest.raises(OutputExistsError, match="`force`"):
        make_submission(collection, Blend(["sim_000"]), out=out)
    assert out.read_text() == "mine\n"
    make_submission(collection, Blend(["sim_000"]), out=out, force=True)
    assert out.read_text().startswith("fname,")
    other = tmp_path / "other.csv"
    Path(f"{other}.json").write_text("{}")                    # a sidecar alone is also kept
    with pytest.raises(OutputExistsError, match="other.csv.json"):
        make_submission(collection, Blend(["sim_000"]), out=other)
    assert not other.exists()


@pytest.mark.parametrize("change, message", [
    (lambda ids, cls: (ids[:-1], cls), "1 layout test id\\(s\\) missing"),
    (lambda ids, cls: (ids + ["intruder"], cls), "'intruder'"),
    (lambda ids, cls: (ids + ids[:1], cls), "appears more than once"),
    (lambda ids, cls: (ids, cls[:-1]), "class 'd' has no column"),
    (lambda ids, cls: (ids, cls + ["zebra"]), "column 'zebra' is not a class"),
])
def test_a_template_that_does_not_fit_is_refused(tmp_path, change, message):
    collection = layout_of(tmp_path / "l")
    ids, classes = change(list(collection.test_ids), list(collection.classes))
    template = write_template(tmp_path / "template.csv", ids, classes)
    with pytest.raises(TemplateError, match=message):
        read_template(template, collection.test_ids, collection.classes)
    with pytest.raises(TemplateError):
        make_submission(collection, Blend(["sim_000"]), out=tmp_path / "sub.csv", template=template)
    assert not (tmp_path / "sub.csv").exists()


def test_template_order_and_id_column_are_kept(tmp_path):
    collection = layout_of(tmp_path / "l")
    ids = list(reversed(collection.test_ids))
    classes = ["d", "b", "a", "c"]
    template = write_template(tmp_path / "t.csv", ids, classes, id_column="clip")
    make_submission(collection, Blend(["sim_001"]), out=tmp_path / "s.csv", template=template)
    written = pd.read_csv(tmp_path / "s.csv", dtype={"clip": str})
    assert list(written.columns) == ["clip", *classes]
    assert written["clip"].tolist() == ids
    probs = blend_of_test(collection, ["sim_001"])
    np.testing.assert_allclose(written[classes].to_numpy(),
                               probs[::-1][:, [collection.classes.index(c) for c in classes]],
                               rtol=1e-6)


def test_missing_template_file(tmp_path):
    collection = layout_of(tmp_path / "l")
    with pytest.raises(TemplateError, match="template file not found"):
        make_submission(collection, Blend(["sim_000"]), out=tmp_path / "s.csv",
                        template=tmp_path / "nope.csv")
