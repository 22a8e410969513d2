"""Subset search against a brute-force oracle; planted subsets; nested CV on held-out folds."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from stacker.errors import OptionError
from stacker.metrics import get_metric
from stacker.search.engine import search_arrays, search_subsets
from stacker.simulate import simulated_probs

EPS = 1e-7


# ---------------------------------------------------------------- plain-numpy twins


def twin_blend(probs, method, power=2.0):
    """probs: (n_rows, k, n_classes): the blend written out from its definition."""
    p = probs.astype(np.float64)
    if method == "geo-mean":
        return np.exp(np.log(np.clip(p, EPS, 1.0)).mean(axis=1))
    if method == "mean":
        return p.mean(axis=1)
    if method == "power":
        return ((p ** power).mean(axis=1)) ** (1.0 / power)
    ranks = np.argsort(np.argsort(p, axis=2, kind="stable"), axis=2)   # tie-free data only
    return ranks.mean(axis=1) / (p.shape[2] - 1)


def oracle(oof, y, fold, metric, method, rows=None):
    """Every subset (itertools.combinations) blended and scored from scratch; best first by the
    documented rule: score (12 decimals), then size, then lexicographic members."""
    metric = get_metric(metric)
    if rows is not None:
        oof, y, fold = oof[rows], y[rows], fold[rows]
    n = oof.shape[1]
    found = []
    for k in range(1, n + 1):
        for combo in combinations(range(n), k):
            score = metric(y, twin_blend(oof[:, list(combo)], method))
            found.append((combo, score))
    found.sort(key=lambda item: (-round(metric.sign() * item[1], 12), len(item[0]), item[0]))
    return found


def labels(n_rows, n_classes, rng):
    y = np.zeros((n_rows, n_classes), dtype=np.uint8)
    y[np.arange(n_rows), rng.integers(n_classes, size=n_rows)] = 1
    extra = np.flatnonzero(rng.random(n_rows) < 0.3)
    y[extra, rng.integers(n_classes, size=len(extra))] = 1
    return y


def random_pool(n_rows=240, n_models=6, n_classes=6, n_folds=3, seed=0, zeros=True):
    rng = np.random.default_rng(seed)
    y = labels(n_rows, n_classes, rng)
    skills = rng.uniform(0.2, 1.2, size=n_models)
    oof = np.stack([simulated_probs(y, skill=s, rng=rng) for s in skills], axis=1)
    if zeros:
        oof[rng.random(oof.shape) < 0.03] = 0.0
    fold = np.arange(n_rows) % n_folds
    return oof, y, fold, [f"m{i}" for i in range(n_models)]


def members_of(combo, names):
    return tuple(names[i] for i in combo)


# ---------------------------------------------------------------- exhaustive vs oracle


@pytest.mark.parametrize("metric, method", [
    ("lwlrap", "geo-mean"), ("lwlrap", "mean"), ("lwlrap", "power"), ("lrap", "geo-mean"),
    ("roc_auc", "geo-mean"), ("log_loss", "mean"),
])
def test_exhaustive_equals_brute_force_oracle(metric, method):
    # the generic path calls scikit-learn per class: a smaller pool keeps it quick
    oof, y, fold, names = random_pool(seed=1, n_models=6 if metric.endswith("lrap") else 4)
    expected = oracle(oof, y, fold, metric, method)
    result = search_arrays(oof, y, fold, names=names, metric=metric, blend=method,
                           method="exhaustive", top=len(expected), nested=False, n_jobs=1)
    assert result.members == members_of(expected[0][0], names)
    assert result.cv == pytest.approx(expected[0][1], abs=1e-9)
    # the whole ranking of all subsets, in order, with the same scores
    assert [c.members for c in result.top] == [members_of(c, names) for c, _ in expected]
    np.testing.assert_allclose([c.cv for c in result.top], [s for _, s in expected], atol=1e-9)
    for entry in result.by_size:
        best = next(item for item in expected if len(item[0]) == entry.size)
        assert entry.members == members_of(best[0], names)
        assert entry.cv == pytest.approx(best[1], abs=1e-9)


def test_exhaustive_rank_blend_equals_oracle_on_tie_free_data():
    oof, y, fold, names = random_pool(seed=2, zeros=False)
    expected = oracle(oof, y, fold, "lwlrap", "rank")
    result = search_arrays(oof, y, fold, names=names, blend="rank", method="exhaustive",
                           top=len(expected), nested=False, n_jobs=1)
    assert [c.members for c in result.top] == [members_of(c, names) for c, _ in expected]
    np.testing.assert_allclose([c.cv for c in result.top], [s for _, s in expected], atol=1e-9)


def test_exhaustive_keeps_exact_ties_like_the_oracle():
    """Probabilities in steps of 1/8 (kNN-like votes): many exact ties inside rows."""
    rng = np.random.default_rng(4)
    y = labels(200, 5, rng)
    oof = np.stack([np.clip(np.round((0.4 * y + rng.random(y.shape) * 0.7) * 8) / 8, 0, 1)
                    for _ in range(5)], axis=1)
    fold = np.arange(200) % 4
    names = [f"knn{i}" for i in range(5)]
    for method in ("mean", "geo-mean"):
        expected = oracle(oof, y, fold, "lwlrap", method)
        result = search_arrays(oof, y, fold, names=names, blend=method, method="exhaustive",
                               top=len(expected), nested=False, n_jobs=1)
        assert [c.members for c in result.top] == [members_of(c, names) for c, _ in expected]
        np.testing.assert_allclose([c.cv for c in result.top], [s for _, s in expected], atol=1e-9)


def test_nested_exhaustive_equals_oracle_per_held_out_fold():
    oof, y, fold, names = random_pool(seed=5)
    result = search_arrays(oof, y, fold, names=names, method="exhaustive", n_jobs=1)
    pooled = np.empty(y.shape)
    for entry in result.nested_folds:
        best = oracle(oof, y, fold, "lwlrap", "geo-mean", rows=fold != entry.fold)[0][0]
        assert entry.members == members_of(best, names)
        held = fold == entry.fold
        pooled[held] = twin_blend(oof[held][:, list(best)], "geo-mean")
        assert entry.cv == pytest.approx(get_metric("lwlrap")(y[held], pooled[held]), abs=1e-12)
    assert result.nested_cv == pytest.approx(get_metric("lwlrap")(y, pooled), abs=1e-12)


def test_max_size_limits_the_subsets():
    oof, y, fold, names = random_pool(seed=6)
    expected = [item for item in oracle(oof, y, fold, "lwlrap", "geo-mean") if len(item[0]) <= 2]
    result = search_arrays(oof, y, fold, names=names, method="exhaustive", max_size=2,
                           top=100, nested=False, n_jobs=1)
    assert len(result.top) == 6 + 15
    assert [c.members for c in result.top] == [members_of(c, names) for c, _ in expected]


# ---------------------------------------------------------------- planted best subset


def planted_pool(seed=0):
    """Three good models with independent noise (their blend is clearly best) among five weak
    models that share one noise (blending them does not help)."""
    rng = np.random.default_rng(seed)
    y = labels(400, 8, rng)
    shared = rng.normal(size=y.shape)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    weak = [sigmoid(0.3 * (2.0 * y - 1) + rng.normal(0, 0.3, y.shape) + 1.5 * shared - 1.5)
            for _ in range(5)]
    good = [sigmoid(1.3 * (2.0 * y - 1) + rng.normal(0, 1.6, y.shape) - 1.5) for _ in range(3)]
    models = weak[:2] + [good[0]] + weak[2:4] + [good[1]] + [weak[4]] + [good[2]]
    oof = np.stack(models, axis=1).astype(np.float32)
    names = [f"exp_{i}" for i in range(oof.shape[1])]
    return oof, y, np.arange(400) % 4, names, ("exp_2", "exp_5", "exp_7")


@pytest.mark.parametrize("method", ["exhaustive", "greedy", "beam"])
def test_methods_find_the_planted_subset(method):
    oof, y, fold, names, planted = planted_pool()
    result = search_arrays(oof, y, fold, names=names, method=method, nested=False, n_jobs=1)
    assert result.members == planted


def test_ges_puts_its_weight_on_the_planted_subset():
    oof, y, fold, names, planted = planted_pool()
    result = search_arrays(oof, y, fold, names=names, method="ges", nested=False, n_jobs=1)
    assert set(planted) <= set(result.members)
    assert sum(result.weights[m] for m in planted) >= 0.8
    assert sum(result.weights.values()) == pytest.approx(1.0)
    # the weighted geo-mean of the chosen bag is what was scored
    idx = [names.index(m) for m in result.members]
    w = np.array([result.weights[m] for m in result.members])
    manual = np.exp((np.log(np.clip(oof[:, idx], EPS, 1)) * w[None, :, None]).sum(axis=1))
    assert result.cv == pytest.approx(get_metric("lwlrap")(y, manual), abs=1e-12)


def test_parallel_runs_equal_serial_runs(monkeypatch):
    monkeypatch.setattr("stacker.search.methods.workers.PARALLEL_MIN_WORK", 0)   # processes even for small work
    monkeypatch.setattr("stacker.search.methods.workers.PARALLEL_MIN_BATCH", 0)
    oof, y, fold, names, _ = planted_pool(seed=1)
    for method in ("ges", "beam", "greedy"):
        one = search_arrays(oof, y, fold, names=names, method=method, n_jobs=1, ges_iterations=15)
        two = search_arrays(oof, y, fold, names=names, method=method, n_jobs=2, ges_iterations=15)
        assert (one.members, one.weights, one.cv, one.nested_cv) == (two.members, two.weights,
                                                                     two.cv, two.nested_cv)
        assert [f.members for f in one.nested_folds] == [f.members for f in two.nested_folds]


# ---------------------------------------------------------------- nested CV


def noise_pool(n_models=12, seed=0):
    """Models that know nothing: selection can only fit noise."""
    rng = np.random.default_rng(seed)
    y = labels(150, 5, rng)
    oof = rng.random((150, n_models, 5)).astype(np.float32)
    return oof, y, np.arange(150) % 3, [f"noise_{i}" for i in range(n_models)]


def test_nested_cv_exposes_an_overfit_selection_and_uses_held_out_folds_only(monkeypatch):
    monkeypatch.setattr("stacker.search.methods.workers.PARALLEL_MIN_WORK", 0)
    oof, y, fold, names = noise_pool()
    result = search_arrays(oof, y, fold, names=names, method="exhaustive", n_jobs=2)
    serial = search_arrays(oof, y, fold, names=names, method="exhaustive", n_jobs=1)
    assert (result.members, result.cv, result.nested_cv) == (serial.members, serial.cv,
                                                             serial.nested_cv)
    assert result.cv - result.nested_cv > 0.02          # the selected CV is optimistic
    assert result.gap_warning() is not None
    lwlrap = get_metric("lwlrap")
    for entry in result.nested_folds:
        train = fold != entry.fold
        again = search_arrays(oof[train], y[train], fold[train], names=names,
                              method="exhaustive", nested=False, n_jobs=1)
        assert again.members == entry.members
        held = fold == entry.fold
        idx = [names.index(m) for m in entry.members]
        assert entry.cv == pytest.approx(lwlrap(y[held], twin_blend(oof[held][:, idx], "geo-mean")),
                                         abs=1e-12)
    # what a fold's own rows hold does not change the subset chosen without it
    changed = oof.copy()
    changed[fold == 0] = np.random.default_rng(9).random(changed[fold == 0].shape)
    other = search_arrays(changed, y, fold, names=names, method="exhaustive", n_jobs=1)
    assert other.nested_folds[0].members == result.nested_folds[0].members


def test_nested_greedy_repeats_the_selection_without_each_fold():
    oof, y, fold, names, _ = planted_pool(seed=2)
    result = search_arrays(oof, y, fold, names=names, method="greedy", n_jobs=1)
    for entry in result.nested_folds:
        train = fold != entry.fold
        again = search_arrays(oof[train], y[train], fold[train], names=names, method="greedy",
                              nested=False, n_jobs=1)
        assert again.members == entry.members
    assert result.nested_cv is not None and not math.isnan(result.nested_cv)
    assert all(s.nested_cv is not None for s in result.by_size[:3])


# ---------------------------------------------------------------- auto, options, collections


def test_auto_says_what_it_chose():
    oof, y, fold, names = random_pool(seed=7)
    fits = search_arrays(oof, y, fold, names=names, n_jobs=1, nested=False)
    assert fits.method == "exhaustive" and fits.method_reason.startswith("auto chose exhaustive")
    beyond = search_arrays(oof, y, fold, names=names, n_jobs=1, nested=False, time_budget=0)
    assert beyond.method in ("beam", "greedy") and "exceed" in beyond.method_reason


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="random"), "unknown method 'random'"),
    (dict(max_size=0), "`max_size` must be at least 1"),
    (dict(metric="f1"), "unknown metric 'f1'"),
    (dict(blend="median"), "unknown blend 'median'"),
    (dict(top=0), "`top` must be at least 1"),
])
def test_bad_options(kwargs, message):
    oof, y, fold, names = random_pool(n_models=3)
    with pytest.raises(OptionError, match=message):
        search_arrays(oof, y, fold, names=names, n_jobs=1, **kwargs)


def test_search_does_not_modify_its_input():
    oof, y, fold, names = random_pool(n_models=4)
    before = oof.copy()
    search_arrays(oof, y, fold, names=names, method="ges", n_jobs=1, ges_iterations=5)
    np.testing.assert_array_equal(oof, before)


def test_search_subsets_on_a_collection_pool(tmp_path):
    from stacker.layout.collect import collect
    from stacker.simulate import write_simulated_layout

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "d"]
    row_labels = [(classes[i % 4],) for i in range(80)]
    write_simulated_layout(tmp_path, [f"r{i}" for i in range(80)], row_labels,
                           [i % 4 for i in range(80)], n_experiments=4, n_test=10,
                           skills=[0.3, 0.5, 0.4, 0.6], seed=int(rng.integers(100)))
    collection = collect(tmp_path)
    result = search_subsets(collection, pool=["sim_000", "sim_002", "sim_003"], n_jobs=1)
    assert set(result.members) <= {"sim_000", "sim_002", "sim_003"}
    assert result.pool == ("sim_000", "sim_002", "sim_003")
    record = result.to_json()
    for needed in ("method", "metric", "blend", "members", "weights", "cv", "nested_cv", "top",
                   "by_size", "params", "created"):
        assert needed in record


def test_search_on_the_mapped_pool_equals_search_on_a_copy(small_layout):
    from stacker.layout.collect import collect

    root = small_layout(n_experiments=5, n_rows=90)
    collect(root, n_jobs=1)
    mapped = collect(root, n_jobs=1)
    assert not mapped.oof.flags.writeable and mapped.select(mapped.names) is mapped
    copied = collect(root, use_cache=False, n_jobs=1)
    for method in ("greedy", "ges"):
        a = search_subsets(mapped, method=method, n_jobs=1)
        b = search_subsets(copied, method=method, n_jobs=1)
        assert (a.members, a.weights, a.cv, a.nested_cv) == (b.members, b.weights, b.cv, b.nested_cv)
