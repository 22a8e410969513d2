"""The report's blends of count ensembles (CountBlends.predict: each member's transform once, the
members added one by one) against stacker.blend.blend_arrays, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from test_backends import pool

from stacker.blend import blend_arrays
from stacker.search.config import SearchConfig
from stacker.search.methods.core import CountBlends
from stacker.search.problem import prepare


@pytest.mark.parametrize("blend", ["geo-mean", "mean", "rank", "power"])
def test_count_blends_are_blend_arrays_bit_for_bit(blend):
    oof, y, fold, names = pool(seed=5, n_models=9)
    problem = prepare(oof, y, fold, names=names, config=SearchConfig(blend=blend))
    blends = CountBlends(problem)
    rows = fold == 1
    for counts in [(0, 0, 1, 0, 0, 0, 0, 0, 0), (3, 1, 0, 2, 5, 1, 0, 7, 1), (1,) * 9]:
        idx = [m for m, c in enumerate(counts) if c]
        weights = [counts[m] for m in idx]
        expected = blend_arrays(oof[:, idx], blend, weights=weights)
        np.testing.assert_array_equal(blends.predict(counts), expected)
        np.testing.assert_array_equal(blends.predict(counts, rows),
                                      blend_arrays(oof[rows][:, idx], blend, weights=weights))
        buffer = np.full(expected.shape, np.nan)        # a reused buffer: the same values
        assert blends.predict(counts, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, expected)


@pytest.mark.parametrize("n_jobs", [1, 2, 5])
def test_transforms_warmed_on_threads_are_each_member_s_own(n_jobs):
    from stacker.blend import transform

    oof, y, fold, names = pool(seed=6, n_models=7)
    problem = prepare(oof, y, fold, names=names, config=SearchConfig(blend="geo-mean"))
    blends = CountBlends(problem)
    blends.warm([(1, 0, 1, 0, 0, 0, 0), (0, 0, 2, 1, 0, 0, 1)], n_jobs=n_jobs)
    assert sorted(blends._transforms) == [0, 2, 3, 6]
    for m, t in blends._transforms.items():
        np.testing.assert_array_equal(t, transform(oof[:, m], "geo-mean"))


def test_sizes_scored_on_two_threads_equal_each_scored_alone():
    """Each size's best scored on every row and its nested CV (the fold choices pooled), two at
    a time with the best's rows reused for the folds that chose it (and a known choice's
    prediction reused): the numbers of scoring each alone, whichever folds (none, some, all)
    chose the best."""
    from stacker.search.result import Known, _Scores

    oof, y, fold, names = pool(seed=7, n_models=6)
    problem = prepare(oof, y, fold, names=names, config=SearchConfig(blend="geo-mean"))
    folds = problem.fold_numbers
    rng = np.random.default_rng(3)

    def some():
        c = tuple(int(c) for c in rng.integers(0, 3, 6))
        return c if any(c) else (1,) + c[1:]

    items = []
    for agree in [0, 1, len(folds) - 1, len(folds)]:
        best = some()
        items.append((best, [best if i < agree else some() for i in range(len(folds))]))
    items.append((some(), None))
    blends = CountBlends(problem)
    prediction = blends.predict(items[2][0])
    known = Known(items[2][0], prediction, problem.metric(y, prediction))
    for given in [None, known]:             # (a known choice: its prediction and score)
        scores = _Scores(problem, CountBlends(problem))
        got = scores.sizes(items, known=given)
        for (best, fold_choices), (full, nested) in zip(items, got):
            alone = _Scores(problem, CountBlends(problem))
            assert full == alone.full(best) == scores.full(best)
            assert nested == (None if fold_choices is None else alone.pooled(fold_choices)[0])
    # without the folds' own metrics: the same pooled score and predictions
    sets = items[1][1]
    with_folds = _Scores(problem, CountBlends(problem)).pooled(sets)
    without = _Scores(problem, CountBlends(problem)).pooled(sets, held=False)
    assert without[0] == with_folds[0] and without[1] == [] and len(with_folds[1]) == len(folds)
    np.testing.assert_array_equal(without[2], with_folds[2])


@pytest.mark.parametrize("blend", ["geo-mean", "mean", "rank", "power"])
def test_a_known_choice_s_rows_and_fold_scores_are_those_the_folds_would_compute(blend):
    """CountBlends are row-wise (a choice predicted on some rows is its prediction on every row,
    on those rows, bit for bit), so pooled() takes a known choice's rows and fold scores for
    the folds that chose it: the same pooled predictions, scores and fold scores."""
    from stacker.metrics import fold_scores
    from stacker.search.result import Known, _Scores

    oof, y, fold, names = pool(seed=8, n_models=5, n_rows=301)
    problem = prepare(oof, y, fold, names=names, config=SearchConfig(blend=blend))
    blends = CountBlends(problem)
    assert blends.row_wise
    main, other = (1, 0, 2, 0, 1), (0, 1, 1, 0, 0)
    prediction = blends.predict(main)
    for rows in _Scores(problem, blends).fold_rows():
        np.testing.assert_array_equal(blends.predict(main, rows), prediction[rows])
    score = problem.metric(y, prediction)
    per_fold = fold_scores(y, prediction, fold, problem.fold_numbers, problem.metric)
    n = len(problem.fold_numbers)
    for fold_choices in [[main] * n, [other] * n, [main, other] * (n // 2) + [main] * (n % 2)]:
        plain = _Scores(problem, CountBlends(problem)).pooled(fold_choices)
        for known in [Known(main, prediction, score, per_fold), Known(main, prediction, score)]:
            got = _Scores(problem, CountBlends(problem)).pooled(fold_choices, known=known)
            assert got[0] == plain[0] and got[1] == plain[1]
            np.testing.assert_array_equal(got[2], plain[2])


def test_rows_added_on_threads_are_numpy_s_addition():
    from stacker.search.methods import core

    rng = np.random.default_rng(1)
    a, b = (rng.integers(-2**60, 2**60, (301, 7)) for _ in range(2))
    for n_jobs in [1, 2, 3]:
        out = np.empty_like(a)
        core.ADD_ROWS_MIN_VALUES, saved = 1, core.ADD_ROWS_MIN_VALUES
        try:
            core.add_rows(a, b, out, n_jobs)
        finally:
            core.ADD_ROWS_MIN_VALUES = saved
        np.testing.assert_array_equal(out, a + b)


def test_blends_that_are_not_row_wise_are_pooled_fold_by_fold():
    """Without ``row_wise`` no prediction on every row stands for a fold's: a size whose every
    fold made its choice is still pooled from the folds' own predictions."""
    from stacker.search.result import Known, _Scores

    class FoldShifted(CountBlends):
        row_wise = False                     # a fold's prediction depends on its rows

        def predict(self, counts, rows=slice(None), out=None):
            predicted = super().predict(counts, rows, out=out)
            if not isinstance(rows, slice):
                predicted[:, 0] += (np.asarray(rows) % 2) * 0.5    # class 0 moved up
            return predicted

    oof, y, fold, names = pool(seed=9, n_models=5, n_rows=300)
    problem = prepare(oof, y, fold, names=names, config=SearchConfig(blend="mean"))
    choice = (1, 1, 0, 1, 0)
    folds = [choice] * len(problem.fold_numbers)
    scores = _Scores(problem, FoldShifted(problem))
    prediction = FoldShifted(problem).predict(choice)
    known = Known(choice, prediction, problem.metric(y, prediction))
    (full, nested), = scores.sizes([(choice, folds)], known=known)
    assert full == _Scores(problem, FoldShifted(problem)).full(choice)
    assert nested == _Scores(problem, FoldShifted(problem)).pooled(folds)[0] != full
    assert scores.pooled(folds, known=known)[0] == nested
