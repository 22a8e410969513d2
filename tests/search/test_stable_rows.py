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
    # several bases on threads: each base's state as alone
    other = sm.ensemble_sum(q, (0, 1, 0, 0, 2, 0, 0))
    for together, alone in zip(walker.stable.bases(np.stack([S, other, S]), n_jobs=2),
                               walker.stable.bases(other[None])):
        np.testing.assert_array_equal(together[1], alone[0])
        np.testing.assert_array_equal(together[0], together[2])


@pytest.mark.parametrize("metric, blend, votes", [
    ("lwlrap", "geo-mean", False), ("lrap", "mean", False), ("lwlrap", "mean", True)])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_settled_rows_keep_scores_bit_identical(metric, blend, votes, n_jobs, monkeypatch):
    """Bases of growing size settle more and more rows (checked: some but not all), and every
    candidate's score stays that of the numpy scorer, bit for bit, in the settled-row pass and in
    the dense pass (every row computed) alike."""
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
    stable = kernel.extensions_many(walker, sums, candidates, "stable")
    dense = kernel.extensions_many(walker, sums, candidates, "dense")
    for base, S, cands, part, every_row in zip(bases, sums, candidates, stable, dense):
        expected = np.array([scorer.evaluate(S + q[j], sum(base) + 1) for j in cands])
        np.testing.assert_array_equal(scorer.outputs_from_fold_sums(part), expected)
        np.testing.assert_array_equal(scorer.outputs_from_fold_sums(every_row), expected)
    assert walker.stable.settled > 0


def test_threaded_quantization_is_identical(monkeypatch):
    import stacker.search.scoring as scoring

    oof, *_ = pool(n_rows=200, n_models=5)
    one, scale = quantize(oof, "geo-mean", max_terms=9, power=2.0, eps=1e-7)
    monkeypatch.setattr(scoring, "QUANTIZE_MIN_VALUES", 1)
    two, scale_two = quantize(oof, "geo-mean", max_terms=9, power=2.0, eps=1e-7, n_jobs=2)
    assert scale == scale_two
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("forced", [None, "dense", "stable"])     # timed choice, or one pass
@pytest.mark.parametrize("method", ["greedy", "ges", "beam"])
def test_search_is_identical_whichever_pass_scores_the_steps(method, forced, monkeypatch):
    """The model-major pool's passes (auto's; greedy, beam and GES run row-major on the CPU)."""
    import stacker.search.methods.core as core
    from stacker.search.engine import search_arrays

    monkeypatch.setattr(core, "row_major_likely", lambda config: False)

    oof, y, fold, names = pool(seed=7, n_models=6)
    options = {"names": names, "method": method, "nested": True, "n_jobs": 2, "ges_iterations": 9,
               "device": "cpu"}
    with monkeypatch.context() as patch:
        patch.setattr(kernel, "available", lambda: False)
        reference = search_arrays(oof, y, fold, **options)
    monkeypatch.setattr(kernel.KernelWalker, "min_parallel", 0)
    used = []
    real = kernel.extensions_many

    def recording(walker, bases, candidates, pass_name="stable"):
        used.append(pass_name)
        return real(walker, bases, candidates, pass_name)

    monkeypatch.setattr(kernel, "extensions_many", recording)
    if forced:
        monkeypatch.setattr(kernel.KernelWalker, "choose_pass", lambda self, n_bases: forced)
    result = search_arrays(oof, y, fold, **options)
    assert set(used) == ({forced} if forced else {"dense", "stable"})
    assert comparable(result) == comparable(reference)


def test_the_walker_runs_the_pass_it_measured_faster_and_probes_the_other():
    q, scorer = prepared("lwlrap", "geo-mean", n_rows=50)
    walker = kernel.KernelWalker(q, scorer)
    assert walker.choose_pass(1) == "dense"            # one base: always dense
    assert walker.choose_pass(2) == "dense"            # nothing measured: each pass once
    walker._cost["dense", 2] = 2e-9
    assert walker.choose_pass(2) == "stable"
    walker._cost["stable", 2] = 1e-9
    walker._calls = 1
    assert walker.choose_pass(2) == "stable"           # the faster
    walker._calls = walker.PROBE_EVERY
    assert walker.choose_pass(2) == "dense"            # the other, measured again
    assert walker.choose_pass(3) == "dense"            # each number of bases measured apart
    assert walker.choose_pass(1) == "dense"
    with pytest.raises(ValueError, match="unknown pass"):
        kernel.extensions_many(walker, [np.zeros(q.shape[1:], dtype=np.int64)], [[0]], "walk")


def test_a_pass_is_timed_only_once_its_kernels_are_loaded(monkeypatch):
    """The first call of a pass loads its kernels (numba's cache, or a compile): a toy call runs
    first, so that load is not taken for what the pass costs."""
    q, scorer = prepared("lwlrap", "geo-mean", n_rows=50)
    walker = kernel.KernelWalker(q, scorer)
    warmed = []
    monkeypatch.setattr(kernel, "warm_up", warmed.append)
    S = np.zeros(q.shape[1:], dtype=np.int64)
    for _ in range(3):
        walker.extensions_many([S, S + q[0]], [[1, 2], [3]])
    assert warmed == ["dense", "stable"]
    monkeypatch.undo()
    kernel.warm_up("dense")         # the toy pool runs (its scores are not looked at)
    kernel.warm_up("stable")


def test_preload_loads_the_kernels_once_on_a_background_thread(monkeypatch):
    from stacker.search import stable_rows
    from stacker.search.backends import compiled_path_likely
    from stacker.search.config import SearchConfig
    from stacker.search.engine import preload_kernels

    monkeypatch.setattr(kernel, "_PRELOADING", None)
    calls = []
    monkeypatch.setattr(kernel, "warm_up", calls.append)
    preload_kernels(SearchConfig(metric="lwlrap", device="cpu"))
    thread = kernel._PRELOADING
    preload_kernels(SearchConfig(metric="lwlrap", device="cpu"))     # once per process
    assert kernel._PRELOADING is thread and thread.name == "stack-kernels"
    thread.join(30)
    assert calls == ["dense"]
    assert stable_rows._compile()                                    # and the real one loads
    # no compiled path, no preload: another metric, or a GPU
    monkeypatch.setattr(kernel, "_PRELOADING", None)
    preload_kernels(SearchConfig(metric="roc_auc", device="cpu"))
    assert kernel._PRELOADING is None
    assert compiled_path_likely("lrap", "cpu") and not compiled_path_likely("lwlrap", "cuda")
