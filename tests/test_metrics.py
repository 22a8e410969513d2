"""stacker.metrics against naive references: the DCASE 2019 lwlrap loop, scikit-learn, hand values."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn import metrics as skm

from stacker import compiled, metrics
from stacker.errors import OptionError
from stacker.metrics import (
    METRICS,
    Metric,
    accuracy,
    get_metric,
    log_loss,
    lrap,
    lwlrap,
    mean_average_precision,
    per_class_lwlrap,
    roc_auc,
)
from stacker.metrics_reference import calculate_per_class_lwlrap, reference_lwlrap

# the DCASE 2019 reference lives in stacker.metrics_reference (shared with the benchmark)


def tie_rule_lwlrap(truth, scores) -> float:
    """The documented tie rule, one positive at a time: #{positives >= s} / #{classes >= s}."""
    precisions = []
    for row_truth, row_scores in zip(truth, scores):
        for j in np.flatnonzero(row_truth):
            at_or_above = row_scores >= row_scores[j]
            precisions.append(np.sum(at_or_above & (row_truth > 0)) / np.sum(at_or_above))
    return float(np.mean(precisions))


# ---------------------------------------------------------------- strategies


@st.composite
def labelled_problem(draw, distinct: bool = True):
    """(truth uint8, scores float64) with at least one positive; distinct scores when asked."""
    n_rows = draw(st.integers(1, 12))
    n_classes = draw(st.integers(1, 9))
    shape = (n_rows, n_classes)
    truth = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 1)))
    if not truth.any():
        truth[draw(st.integers(0, n_rows - 1)), draw(st.integers(0, n_classes - 1))] = 1
    if distinct:
        scores = draw(hnp.arrays(np.float64, shape, unique=True,
                                 elements=st.floats(0, 1, allow_nan=False, width=32)))
    else:  # few distinct values: many ties
        scores = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])))
    return truth, scores


# ---------------------------------------------------------------- lwlrap


@settings(max_examples=100, deadline=None)
@given(labelled_problem(distinct=True))
def test_lwlrap_equals_dcase_reference_without_ties(problem):
    truth, scores = problem
    assert lwlrap(truth, scores) == pytest.approx(reference_lwlrap(truth, scores), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labelled_problem(distinct=True))
def test_per_class_lwlrap_equals_dcase_reference_without_ties(problem):
    truth, scores = problem
    got_scores, got_weights = per_class_lwlrap(truth, scores)
    want_scores, want_weights = calculate_per_class_lwlrap(truth, scores)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-12)
    np.testing.assert_allclose(got_weights, want_weights, atol=1e-12)
    assert np.sum(got_scores * got_weights) == pytest.approx(lwlrap(truth, scores), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labelled_problem(distinct=False))
def test_lwlrap_with_ties_follows_the_documented_rule(problem):
    truth, scores = problem
    assert lwlrap(truth, scores) == pytest.approx(tie_rule_lwlrap(truth, scores), abs=1e-12)


def test_constant_scores_earn_positives_over_classes():
    truth = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
    scores = np.full(truth.shape, 0.3)
    # every class ties with every positive: precision = #positives / #classes in each row
    expected = np.mean([1 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4, 3 / 4])
    assert lwlrap(truth, scores) == pytest.approx(expected)
    per_class, weights = per_class_lwlrap(truth, scores)
    np.testing.assert_allclose(per_class, [np.mean([1 / 4, 2 / 4, 3 / 4]), 2.5 / 4, 3 / 4, 0])
    np.testing.assert_allclose(weights, [3 / 6, 2 / 6, 1 / 6, 0])


def test_negative_tied_with_positive_ranks_above_it():
    truth = np.array([[1, 0, 0]])
    assert lwlrap(truth, np.array([[0.5, 0.5, 0.1]])) == pytest.approx(0.5)
    assert lwlrap(truth, np.array([[0.5, 0.4, 0.1]])) == pytest.approx(1.0)
    # a positive tied with another positive loses nothing
    assert lwlrap(np.array([[1, 1, 0]]), np.array([[0.5, 0.5, 0.1]])) == pytest.approx(1.0)


def test_lwlrap_is_the_same_across_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    truth = (rng.random((300, 20)) < 0.1).astype(np.uint8)
    scores = rng.random((300, 20))
    whole = lwlrap(truth, scores)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 7 * 20)  # 7 positives per chunk
    assert lwlrap(truth, scores) == pytest.approx(whole, abs=1e-15)
    assert whole == pytest.approx(reference_lwlrap(truth, scores), abs=1e-12)


def test_lwlrap_on_every_row_labelled_with_ties_and_small_chunks(monkeypatch):
    """The first pass needs no gather when every row has a label; multi-label rows, ties between
    positives and with negatives, chunks cutting through the passes."""
    rng = np.random.default_rng(3)
    truth = (rng.random((200, 12)) < 0.15).astype(np.uint8)
    truth[np.arange(200), rng.integers(12, size=200)] = 1
    scores = rng.integers(0, 4, size=truth.shape) / 4.0
    expected = tie_rule_lwlrap(truth, scores)
    assert lwlrap(truth, scores) == pytest.approx(expected, abs=1e-12)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 5 * 12)
    assert lwlrap(truth, scores) == pytest.approx(expected, abs=1e-12)
    assert lwlrap(truth, scores.astype(np.float32)) == pytest.approx(expected, abs=1e-12)


def _both_paths(monkeypatch, truth, scores):
    """positive_precisions counted with numpy and with the compiled kernel."""
    monkeypatch.setattr(metrics, "COMPILED_FROM", 10**18)
    numpy_path = metrics.positive_precisions(truth, scores)
    monkeypatch.setattr(metrics, "COMPILED_FROM", 0)
    metrics.warm_up()
    assert metrics._compiled_counts(np.asarray(scores), 1)
    return numpy_path, metrics.positive_precisions(truth, scores)


def test_a_metric_never_waits_for_the_compiled_counts_to_load(monkeypatch):
    """Not loaded yet: the counts are numpy's, the kernel loads on a thread of its own (once)."""
    started, release = threading.Event(), threading.Event()
    loaders = []

    def slow_warm_up():
        loaders.append(threading.current_thread())
        started.set()
        release.wait(10)

    monkeypatch.setattr(metrics, "_KERNELS", {})
    monkeypatch.setattr(metrics, "_LOADING", [])
    monkeypatch.setattr(metrics, "warm_up", slow_warm_up)
    monkeypatch.setattr(metrics, "COMPILED_FROM", 0)
    monkeypatch.setattr(compiled, "installed", lambda: True)
    rng = np.random.default_rng(9)
    truth = (rng.random((300, 20)) < 0.2).astype(np.uint8)
    truth[np.arange(300), rng.integers(20, size=300)] = 1
    scores = rng.integers(0, 5, size=truth.shape) / 5.0
    try:
        value = lwlrap(truth, scores)           # returns while the kernel is still loading
        assert started.wait(10) and loaders[0] is not threading.current_thread()
        assert value == pytest.approx(tie_rule_lwlrap(truth, scores), abs=1e-12)
        assert not metrics._compiled_counts(scores, 10**9)
        assert len(metrics._LOADING) == 1        # one loading thread, however many calls
    finally:
        release.set()
        metrics._LOADING[0].join(10)


@pytest.mark.skipif(not compiled.available(), reason="numba is not installed")
@settings(max_examples=60, deadline=None)
@given(labelled_problem(distinct=False), st.sampled_from([np.float64, np.float32]))
def test_compiled_counts_give_the_numpy_precisions_exactly(problem, dtype):
    truth, scores = problem
    with pytest.MonkeyPatch.context() as monkeypatch:
        slow, fast = _both_paths(monkeypatch, truth, scores.astype(dtype))
    for want, got in zip(slow, fast):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not compiled.available(), reason="numba is not installed")
def test_compiled_counts_with_nan_unlabelled_rows_and_many_labels(monkeypatch):
    rng = np.random.default_rng(5)
    truth = (rng.random((400, 30)) < 0.2).astype(np.uint8)
    truth[:40] = 0                                  # rows without a positive
    scores = rng.integers(0, 6, size=truth.shape).astype(np.float64)
    scores[50, :] = np.nan                          # a row of nan, a nan positive alone
    truth[51] = 0
    truth[51, 4] = 1
    scores[51, 4] = np.nan
    scores[52, truth[52] > 0] = np.nan              # nan positives among several
    with np.errstate(invalid="ignore", divide="ignore"):
        slow, fast = _both_paths(monkeypatch, truth, scores)
    for want, got in zip(slow, fast):
        np.testing.assert_array_equal(got, want)
    assert np.isfinite(fast[2]).sum() < len(fast[2])
    monkeypatch.setattr(metrics, "COMPILED_FROM", 0)
    assert lwlrap(truth[60:], scores[60:]) == pytest.approx(tie_rule_lwlrap(truth[60:], scores[60:]),
                                                            abs=1e-12)
    # a strided or integer matrix is counted by numpy
    assert not metrics._compiled_counts(scores[:, ::2], 10**9)
    assert not metrics._compiled_counts(np.nan_to_num(scores).astype(np.int64), 10**9)


def test_lwlrap_is_nan_without_any_positive_and_ignores_unlabelled_rows():
    assert np.isnan(lwlrap(np.zeros((3, 4)), np.random.default_rng(0).random((3, 4))))
    rng = np.random.default_rng(2)
    truth = (rng.random((50, 6)) < 0.3).astype(np.uint8)
    scores = rng.random((50, 6))
    truth[:10] = 0  # rows with no label
    keep = truth.any(axis=1)
    for fn in (lwlrap, lrap, roc_auc, mean_average_precision, accuracy):
        assert fn(truth, scores) == pytest.approx(fn(truth[keep], scores[keep])), fn.__name__


def test_metrics_do_not_change_their_inputs():
    rng = np.random.default_rng(3)
    truth = (rng.random((20, 5)) < 0.4).astype(np.uint8)
    scores = rng.random((20, 5))
    before = (truth.copy(), scores.copy())
    for metric in METRICS.values():
        metric(truth, scores)
    np.testing.assert_array_equal(truth, before[0])
    np.testing.assert_array_equal(scores, before[1])


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="one shape"):
        lwlrap(np.zeros((3, 4)), np.zeros((3, 5)))


# ---------------------------------------------------------------- the other metrics


@settings(max_examples=100, deadline=None)
@given(labelled_problem(distinct=False))
def test_lrap_equals_sklearn_when_every_row_has_a_label(problem):
    truth, scores = problem
    truth = truth.copy()
    truth[~truth.any(axis=1), 0] = 1
    assert lrap(truth, scores) == pytest.approx(
        skm.label_ranking_average_precision_score(truth, scores), abs=1e-12)


def test_lrap_ignores_rows_without_labels_where_sklearn_counts_them_as_one():
    truth = np.array([[1, 0, 0], [0, 0, 0]])
    scores = np.array([[0.1, 0.5, 0.9], [0.3, 0.2, 0.1]])
    assert lrap(truth, scores) == pytest.approx(1 / 3)
    assert skm.label_ranking_average_precision_score(truth, scores) == pytest.approx((1 / 3 + 1) / 2)


def _multilabel(seed=4, n_rows=80, n_classes=6):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n_rows, n_classes)) < 0.3).astype(np.uint8)
    truth[np.arange(n_classes), np.arange(n_classes)] = 1  # every class has a positive
    truth[n_classes:2 * n_classes, :] = 0  # ... and a negative
    truth[np.arange(n_classes, 2 * n_classes), (np.arange(n_classes) + 1) % n_classes] = 1
    truth[~truth.any(axis=1), -1] = 1  # every row has a label (sklearn counts unlabelled rows)
    scores = np.clip(0.5 * truth + rng.random(truth.shape) * 0.7, 0, 1)
    return truth, scores


def test_roc_auc_and_map_equal_sklearn_macro():
    truth, scores = _multilabel()
    assert roc_auc(truth, scores) == pytest.approx(skm.roc_auc_score(truth, scores, average="macro"))
    assert mean_average_precision(truth, scores) == pytest.approx(
        skm.average_precision_score(truth, scores, average="macro"))


def test_roc_auc_skips_classes_without_both_kinds_of_row():
    truth, scores = _multilabel()
    truth = np.hstack([truth, np.zeros((len(truth), 1), np.uint8)])  # a class never present
    scores = np.hstack([scores, np.full((len(truth), 1), 0.2)])
    assert roc_auc(truth, scores) == pytest.approx(
        skm.roc_auc_score(truth[:, :-1], scores[:, :-1], average="macro"))


def test_log_loss_single_label_equals_sklearn():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=40)
    truth = np.eye(4, dtype=np.uint8)[labels]
    scores = rng.random((40, 4)) + 0.05
    scores /= scores.sum(axis=1, keepdims=True)
    assert log_loss(truth, scores) == pytest.approx(skm.log_loss(labels, scores, labels=range(4)))


def test_log_loss_multi_label_is_mean_binary_cross_entropy():
    truth = np.array([[1, 0], [1, 1]])
    scores = np.array([[0.8, 0.3], [0.6, 0.9]])
    expected = -np.mean([np.log(0.8), np.log(0.7), np.log(0.6), np.log(0.9)])
    assert log_loss(truth, scores) == pytest.approx(expected)
    assert not get_metric("log_loss").greater_is_better


def test_accuracy_is_top1_hit_rate():
    truth = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [1.0, 0.0, 0.0]])
    assert accuracy(truth, scores) == pytest.approx(2 / 3)  # the unlabelled row is ignored


# ---------------------------------------------------------------- the registry


def test_registry_holds_the_six_metrics_by_name():
    assert list(METRICS) == ["lwlrap", "lrap", "roc_auc", "map", "log_loss", "accuracy"]
    truth, scores = _multilabel()
    assert get_metric("lwlrap")(truth, scores) == lwlrap(truth, scores)
    assert get_metric(METRICS["map"]) is METRICS["map"]


def test_unknown_metric_is_an_option_error_listing_the_names():
    with pytest.raises(OptionError, match="unknown metric 'f1'; choose one of: lwlrap, lrap, "
                                          "roc_auc, map, log_loss, accuracy"):
        get_metric("f1")


def test_is_better_and_sign_follow_the_direction():
    up, down = get_metric("lwlrap"), get_metric("log_loss")
    assert up.is_better(0.9, 0.8) and not up.is_better(0.8, 0.9)
    assert down.is_better(0.2, 0.3) and not down.is_better(0.3, 0.2)
    assert up.is_better(0.1, float("nan")) and not up.is_better(float("nan"), 0.1)
    assert up.sign() == 1.0 and down.sign() == -1.0


@pytest.mark.parametrize("name", sorted(METRICS))
def test_is_defined_answers_what_the_metric_of_perfect_predictions_says(name):
    """The shortcut a metric declares (lwlrap, lrap, accuracy: any positive label) gives the
    rule itself, the metric of y_true against itself being a number, on labels with no
    positive, one, unlabelled rows and a class with every row positive."""
    metric = METRICS[name]
    rng = np.random.default_rng(3)
    cases = [np.zeros((6, 4)), np.eye(4)[[0]], np.ones((5, 3)),
             (rng.random((30, 5)) < 0.2).astype(float), np.eye(5)[[1, 1, 1]],
             np.vstack([np.zeros((3, 4)), np.eye(4)[[2]]])]
    for y in cases:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = bool(np.isfinite(metric(y, y.astype(np.float64))))
            slow = Metric(name, metric.fn, metric.greater_is_better)       # no shortcut
            assert metric.is_defined(y) == expected == slow.is_defined(y), (name, y)
