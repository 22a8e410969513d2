"""Blends against plain-loop twins; zeros in the geometric mean; inputs never modified."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stacker.blend import EPS, arithmetic_mean, geo_mean, power_mean, rank_mean, row_ranks
from stacker.blend import blend_arrays as blend
from stacker.errors import OptionError


def naive_geo_mean(probs, weights=None, eps=EPS):
    """probs: (n_rows, n_models, n_classes); a loop over every cell."""
    n_rows, n_models, n_classes = probs.shape
    w = [1.0] * n_models if weights is None else list(weights)
    out = np.zeros((n_rows, n_classes))
    for r in range(n_rows):
        for c in range(n_classes):
            logs = [w[m] * math.log(min(max(float(probs[r, m, c]), eps), 1.0)) for m in range(n_models)]
            out[r, c] = math.exp(sum(logs) / sum(w))
    return out


def naive_mean(probs, weights=None):
    n_rows, n_models, n_classes = probs.shape
    w = [1.0] * n_models if weights is None else list(weights)
    out = np.zeros((n_rows, n_classes))
    for r in range(n_rows):
        for c in range(n_classes):
            out[r, c] = sum(w[m] * float(probs[r, m, c]) for m in range(n_models)) / sum(w)
    return out


def naive_rank(probs):
    """Ranks by counting: below + half the other ties, scaled by n_classes - 1, then the mean."""
    n_rows, n_models, n_classes = probs.shape
    out = np.zeros((n_rows, n_classes))
    for r in range(n_rows):
        for c in range(n_classes):
            total = 0.0
            for m in range(n_models):
                row = [float(v) for v in probs[r, m]]
                below = sum(v < row[c] for v in row)
                ties = sum(v == row[c] for v in row) - 1
                total += (below + ties / 2) / (n_classes - 1)
            out[r, c] = total / n_models
    return out


def naive_power(probs, k):
    n_rows, n_models, n_classes = probs.shape
    out = np.zeros((n_rows, n_classes))
    for r in range(n_rows):
        for c in range(n_classes):
            out[r, c] = (sum(float(probs[r, m, c]) ** k for m in range(n_models)) / n_models) ** (1 / k)
    return out


@pytest.fixture
def probs():
    rng = np.random.default_rng(3)
    p = rng.random((7, 4, 5)).astype(np.float32)
    p[0, 1, 2] = 0.0                 # a zero in a geometric mean
    p[1, :, 3] = 0.0                 # every model says 0
    p[2, 0, :] = 0.25                # ties within a row, for the rank blend
    return p


def test_geo_mean_matches_naive_twin(probs):
    np.testing.assert_allclose(geo_mean(probs), naive_geo_mean(probs), rtol=1e-12)
    w = [0.5, 2.0, 1.0, 0.0]
    np.testing.assert_allclose(geo_mean(probs, weights=w), naive_geo_mean(probs, w), rtol=1e-12)


def test_geo_mean_with_zeros_is_finite_and_positive(probs):
    out = geo_mean(probs)
    assert np.all(np.isfinite(out)) and np.all(out > 0)
    assert out[1, 3] == pytest.approx(EPS)            # every model 0 -> eps, not 0 or NaN


def test_mean_rank_power_match_naive_twins(probs):
    np.testing.assert_allclose(arithmetic_mean(probs), naive_mean(probs), rtol=1e-12)
    w = [1, 3, 0, 2]
    np.testing.assert_allclose(arithmetic_mean(probs, weights=w), naive_mean(probs, w), rtol=1e-12)
    np.testing.assert_allclose(rank_mean(probs), naive_rank(probs), rtol=1e-12)
    np.testing.assert_allclose(power_mean(probs, power=3.0), naive_power(probs, 3.0), rtol=1e-12)


def test_rank_blend_is_in_unit_interval_and_ranks_within_rows(probs):
    out = rank_mean(probs)
    assert out.min() >= 0 and out.max() <= 1
    ranks = row_ranks(np.array([[0.1, 0.9, 0.5, 0.5]]))
    np.testing.assert_array_equal(ranks, [[0, 3, 1.5, 1.5]])


def test_blends_never_modify_their_input(probs):
    before = probs.copy()
    for method in ("geo-mean", "mean", "rank", "power"):
        blend(probs, method, weights=[1, 2, 3, 4])
    np.testing.assert_array_equal(probs, before)


def test_blend_along_the_fold_axis():
    """Test predictions: (n_folds, n_test, n_classes) combined over axis 0."""
    rng = np.random.default_rng(0)
    test = rng.random((3, 6, 4))
    expected = np.exp(np.log(np.clip(test, EPS, 1)).mean(axis=0))
    np.testing.assert_allclose(geo_mean(test, axis=0), expected, rtol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="median"), "unknown blend 'median'"),
    (dict(method="power", power=0.0), "`power` must be a positive"),
    (dict(method="geo-mean", eps=0.0), "`eps` must be between 0 and 1"),
    (dict(method="mean", weights=[1, -1, 1, 1]), "non-negative"),
    (dict(method="mean", weights=[1, 1]), "expected 4 weights"),
    (dict(method="mean", weights=[0, 0, 0, 0]), "not all 0"),
])
def test_bad_options_raise_option_error(probs, kwargs, message):
    with pytest.raises(OptionError, match=message):
        blend(probs, **kwargs)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.floats(1e-6, 1.0))
def test_identical_models_blend_to_the_model(n_models, n_classes, value):
    p = np.full((2, n_models, n_classes), value)
    for method in ("geo-mean", "mean", "power"):
        np.testing.assert_allclose(blend(p, method), np.full((2, n_classes), value), rtol=1e-9)


# ---------------------------------------------------------------- the Blend type

MEMBERS = ("sim_002", "sim_000", "sim_003")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A simulated layout of 4 experiments, 6 classes, 3 folds, collected."""
    from stacker.layout.collect import collect
    from stacker.simulate import write_simulated_layout

    root = tmp_path_factory.mktemp("pool")
    classes = [f"c{j}" for j in range(6)]
    ids = [f"row_{i:03d}" for i in range(90)]
    labels = [(classes[i % 6],) for i in range(90)]
    write_simulated_layout(root, ids, labels, [i % 3 for i in range(90)], n_experiments=4,
                           n_test=15, classes=classes, seed=3, skills=np.linspace(0.4, 1.0, 4))
    return collect(root)


def blend_kinds(n_classes=6):
    """The old keyword arguments of oof_blend/test_blend, one set per kind of blend."""
    rng = np.random.default_rng(7)
    per_class = rng.random((len(MEMBERS), n_classes)) + 0.05
    return {
        "geo-mean": dict(blend="geo-mean"),
        "geo-mean weighted": dict(blend="geo-mean", weights=[0.5, 0.3, 0.2]),
        "geo-mean eps": dict(blend="geo-mean", weights=[3, 1, 1], eps=1e-3),
        "mean": dict(blend="mean", weights=[1, 3, 0]),
        "rank": dict(blend="rank", weights=[0.2, 0.2, 0.6]),
        "power": dict(blend="power", weights=[2, 1, 1], power=3.5),
        "per-class": dict(blend="geo-mean", weights=per_class),
        "per-class mean": dict(blend="mean", weights=per_class),
        "linear": dict(blend="linear", weights=per_class * 0.7, intercept=rng.normal(size=n_classes)),
    }


@pytest.mark.parametrize("kind", list(blend_kinds()))
def test_blend_is_bit_identical_to_the_loose_keyword_blend(pool, kind):
    """Blend.oof / Blend.test compute exactly what oof_blend / test_blend computed for the same
    options: the same combine() on the same arrays (old formulas written out below)."""
    from stacker.blend import Blend, combine, oof_blend, test_blend

    options = blend_kinds()[kind]
    chosen = Blend.from_options(MEMBERS, **options)
    idx = pool.index(MEMBERS)
    extra = {k: v for k, v in options.items() if k in ("power", "eps")}
    old_oof = combine(pool.oof[:, idx], options["blend"], weights=options.get("weights"),
                      intercept=options.get("intercept"), **extra)
    per_member = geo_mean(pool.test[:, :, idx], axis=0, eps=options.get("eps", EPS))
    old_test = combine(per_member, options["blend"], weights=options.get("weights"),
                       intercept=options.get("intercept"), axis=1, **extra)
    np.testing.assert_array_equal(chosen.oof(pool), old_oof)
    np.testing.assert_array_equal(chosen.test(pool), old_test)
    np.testing.assert_array_equal(oof_blend(pool, list(MEMBERS), **options), old_oof)
    np.testing.assert_array_equal(test_blend(pool, list(MEMBERS), **options), old_test)
    assert chosen.oof(pool).shape == (len(pool.ids), len(pool.classes))
    assert chosen.test(pool).shape == (len(pool.test_ids), len(pool.classes))


@pytest.mark.parametrize("kind", list(blend_kinds()))
def test_blend_json_round_trip(kind):
    import json

    from stacker.blend import Blend

    chosen = Blend.from_options(MEMBERS, **blend_kinds()[kind])
    record = json.loads(json.dumps(chosen.to_json()))
    again = Blend.from_json(record)
    assert again == chosen and hash(again) == hash(chosen)
    assert again.to_json() == chosen.to_json()


def test_blend_fields_by_kind():
    from stacker.blend import Blend

    kinds = blend_kinds()
    assert Blend.from_options(MEMBERS, **kinds["mean"]).weights == (1.0, 3.0, 0.0)
    per_class = Blend.from_options(MEMBERS, **kinds["per-class"])
    assert per_class.weights is None and np.shape(per_class.class_weights) == (3, 6)
    linear = Blend.from_options(MEMBERS, **kinds["linear"])
    assert linear.method == "linear" and np.shape(linear.coef) == (3, 6)
    assert len(linear.intercept) == 6 and linear.per_class and not Blend(MEMBERS).per_class
    assert Blend(MEMBERS).summary_weights() == pytest.approx({m: 1 / 3 for m in MEMBERS})
    assert Blend(MEMBERS[:2], weights=[1, 3]).summary_weights() == {"sim_002": 0.25, "sim_000": 0.75}


def search_record(classes, kind):
    """A subsets.json record as SearchResult.to_json() writes it, for one kind of weights."""
    rng = np.random.default_rng(1)
    table = {m: list(rng.random(len(classes)) + 0.1) for m in MEMBERS}
    record = {"method": kind, "metric": "lwlrap", "blend": "geo-mean", "power": 2.0, "eps": 1e-7,
              "members": list(MEMBERS), "weights": {"sim_002": 0.5, "sim_000": 0.25, "sim_003": 0.25}}
    if kind == "per-class":
        record.update(class_weights=table, classes=list(classes))
    if kind == "linear":
        record.update(blend="linear", coef=table, intercept=list(rng.normal(size=len(classes))),
                      classes=list(classes))
    return record


@pytest.mark.parametrize("kind", ["ges", "per-class", "linear"])
def test_from_record_reads_a_search_record(pool, kind):
    from stacker.blend import Blend
    from stacker.search.subsets import searched_weights

    record = search_record(pool.classes, kind)
    chosen = Blend.from_record(record, pool.classes)
    assert chosen.members == MEMBERS and chosen.method == record["blend"]
    matrix = np.array([record.get("coef", record.get("class_weights", {})).get(m, 0) for m in MEMBERS])
    if kind == "ges":
        assert chosen.weights == (0.5, 0.25, 0.25)
    else:
        np.testing.assert_array_equal(chosen.matrix, matrix)
    if kind == "linear":
        assert chosen.intercept == tuple(record["intercept"])
    assert Blend.from_record({"members": ["sim_001"]}, pool.classes) == Blend(("sim_001",))
    weights, intercept = searched_weights(record, MEMBERS, pool.classes)   # the older reader
    np.testing.assert_array_equal(chosen.matrix, weights)
    assert (intercept is None) == (chosen.intercept is None)
    if intercept is not None:
        np.testing.assert_array_equal(chosen.intercept, intercept)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(classes=r["classes"][::-1]), "for other classes than folds.csv's"),
    (lambda r: r["class_weights"].pop("sim_000"), "have no entry for 'sim_000'"),
    (lambda r: r["class_weights"].update(sim_000=[1.0, 2.0]), "hold 2 values per member"),
])
def test_from_record_refuses_a_stale_per_class_record(pool, change, message):
    from stacker.blend import Blend
    from stacker.errors import LayoutError

    record = search_record(pool.classes, "per-class")
    change(record)
    with pytest.raises(LayoutError, match=message):
        Blend.from_record(record, pool.classes, path="subsets.json")


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="median"), "unknown blend 'median'"),
    (dict(method="power", power=0.0), "`power` must be a positive"),
    (dict(eps=1.5), "`eps` must be between 0 and 1"),
    (dict(weights=[1, -1, 1]), "non-negative"),
    (dict(weights=[1, 1]), "expected 3 weights"),
    (dict(weights=[0, 0, 0]), "not all 0"),
    (dict(class_weights=[[1, 0], [0, 0], [1, 0]]), "not all 0 in any class"),
    (dict(class_weights=[1, 1, 1]), "models x classes"),
    (dict(weights=[1, 1, 1], class_weights=[[1], [1], [1]]), "not both"),
    (dict(method="linear"), "needs its coefficients and intercepts"),
    (dict(method="linear", coef=[[1, -1]] * 3, intercept=[0, 0]), "finite and non-negative"),
    (dict(method="linear", coef=[[1, 1]] * 3, intercept=[0, 0, 0]), "coefficients of shape"),
    (dict(coef=[[1]] * 3, intercept=[0]), "only the linear stacker"),
])
def test_a_blend_that_cannot_be_is_an_option_error(kwargs, message):
    from stacker.blend import Blend

    with pytest.raises(OptionError, match=message):
        Blend(MEMBERS, **kwargs)


def test_nothing_to_blend_and_not_a_record():
    from stacker.blend import Blend
    from stacker.errors import LayoutError

    with pytest.raises(OptionError, match="nothing to blend"):
        Blend(())
    with pytest.raises(LayoutError, match="not a blend record"):
        Blend.from_json({"method": "mean"})
    with pytest.raises(LayoutError, match="not a blend record"):
        Blend.from_json({"members": ["a"], "weights": ["x"]})
