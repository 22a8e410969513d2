"""The settled-row pass of greedy/beam/GES (stacker.search.stable_rows) against naive twins: its
margins and base state computed with plain loops, its scores bit-identical to the numpy scorer on
bases where most rows are settled, and the threaded quantization identical to one thread."""

from __future__ import annotations

import numpy as np
import pytest
from test_backends import comparable, pool, prepared

from stacker.search import kernel
from stacker.search.methods import core as sm
from stacker.search.scoring import quantize

pytestmark = pytest.mark.skipif(not kernel.available(), reason="numba is not installed")


def naive_state(S, scorer):
    """gap_below, gap_above of each row-major positive, with loops."""
    below, above = [], []
    for r in range(len(S)):
        for c in scorer.row_cols[scorer.row_start[r]:scorer.row_start[r + 1]]:
            lower = [S[r, c] - S[r, k] for k in range(S.shape[1]) if S[r, k] < S[r, c]]
            upper = [S[r, k] - S[r, c] for k in range(S.shape[1]) if k != c and S[r, k] >= S[r, c]]
            below.append(min(lower, default=np.iinfo(np.int64).max))
            above.append(min(upper, default=np.iinfo(np.int64).max))
    return np.array(below), np.array(above)


@pytest.mark.parametrize("votes", [False, True])
def test_margins_and_base_state_match_their_naive_twins(votes):
    q, scorer = prepared("lwlrap", "geo-mean", votes=votes, n_rows=60)
    walker = kernel.KernelWalker(q, scorer)
    up, down = walker.stable.margins()
    for m in range(q.shape[0]):
        k = 0
        for r in range(q.shape[1]):
            for c in scorer.row_cols[scorer.row_start[r]:scorer.row_start[r + 1]]:
                assert up[m, k] == q[m, r].max() - q[m, r, c]
                assert down[m, k] == q[m, r, c] - q[m, r].min()
                k += 1
    S = sm.ensemble_sum(q, (2, 0, 1, 0, 3, 0, 1))
    below, above, value = walker.stable.bases(S[None])
    expected_below, expected_above = naive_state(S, scorer)
    np.testing.assert_array_equal(below[0], expected_below)
    np.testing.assert_array_equal(above[0], expected_above)
    hits, at_or_above = scorer.counts(S)
    np.testing.assert_array_equal(value[0], hits / at_or_above * scorer.row_weight)


@pytest.mark.parametrize("metric, blend, votes", [
    ("lwlrap", "geo-mean", False), ("lrap", "mean", False), ("lwlrap", "mean", True)])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_settled_rows_keep_scores_bit_identical(metric, blend, votes, n_jobs, monkeypatch):
    """Bases of growing size settle more and more rows (checked: some but not all), and every
    candidate's score stays that of the numpy scorer, bit for bit."""
    monkeypatch.setattr(kernel.KernelWalker, "min_parallel", 0)
    q, scorer = prepared(metric, blend, votes=votes, n_rows=400)
    walker = kernel.KernelWalker(q, scorer, n_jobs=n_jobs)
    up, down = walker.stable.margins()
    bases = [(0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 3, 0, 2, 1), (4, 1, 2, 3, 2, 5, 3)]
    sums = [sm.ensemble_sum(q, b) for b in bases]
    settled = []
    for S in sums:
        below, above, _ = walker.stable.bases(S[None])
        settled.append(np.mean((up < below[0]) & (down <= above[0])))
    assert 0 < max(settled) < 1
    candidates = [list(range(q.shape[0])), [6, 2, 0], [5]]
    for base, S, cands, part in zip(bases, sums, candidates,
                                    walker.extensions_many(sums, candidates)):
        expected = np.array([scorer.evaluate(S + q[j], sum(base) + 1) for j in cands])
        np.testing.assert_array_equal(scorer.outputs_from_fold_sums(part), expected)


def test_threaded_quantization_is_identical(monkeypatch):
    import stacker.search.scoring as scoring

    oof, *_ = pool(n_rows=200, n_models=5)
    one, scale = quantize(oof, "geo-mean", max_terms=9, power=2.0, eps=1e-7)
    monkeypatch.setattr(scoring, "QUANTIZE_MIN_VALUES", 1)
    two, scale_two = quantize(oof, "geo-mean", max_terms=9, power=2.0, eps=1e-7, n_jobs=2)
    assert scale == scale_two
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("min_settled", [0.0, 1.01])     # always the settled-row pass / the walk
@pytest.mark.parametrize("method", ["greedy", "ges", "beam"])
def test_search_is_identical_whichever_pass_scores_the_steps(method, min_settled, monkeypatch):
    from stacker.search.engine import search_arrays

    oof, y, fold, names = pool(seed=7, n_models=6)
    options = {"names": names, "method": method, "nested": True, "n_jobs": 2, "ges_iterations": 9,
               "device": "cpu"}
    with monkeypatch.context() as patch:
        patch.setattr(kernel, "available", lambda: False)
        reference = search_arrays(oof, y, fold, **options)
    monkeypatch.setattr(kernel.KernelWalker, "MIN_SETTLED", min_settled)
    monkeypatch.setattr(kernel.KernelWalker, "min_parallel", 0)
    calls = {"walk": 0}
    real = kernel.walk_extensions_many

    def counting(*args):
        calls["walk"] += 1
        return real(*args)

    monkeypatch.setattr(kernel, "walk_extensions_many", counting)
    result = search_arrays(oof, y, fold, **options)
    assert (calls["walk"] > 0) == (min_settled > 1)
    assert comparable(result) == comparable(reference)
