"""The row-major pool and its walker (stacker.search.row_major) against naive twins: the quantized
values equal the model-major ones, the bounds equal plain loops, every extension's score equals
the numpy scorer's bit for bit (ties, several bases, candidate lists, threads), and whole searches
equal the numpy path's."""

from __future__ import annotations

import numpy as np
import pytest
from test_backends import comparable, pool

import stacker.search.scoring as scoring
from stacker.search import kernel, row_major
from stacker.search.methods import core as sm
from stacker.search.scoring import make_scorer, quantize

pytestmark = pytest.mark.skipif(not kernel.available(), reason="numba is not installed")


def prepared_rows(metric="lwlrap", blend="geo-mean", **kwargs):
    oof, y, fold, _ = pool(**kwargs)
    scorer = make_scorer(y, fold, sorted(np.unique(fold)), metric, blend=blend, power=2.0)
    q, scale = quantize(oof, blend, max_terms=20, power=2.0, eps=1e-7, rows=scorer.rows,
                        layout="rows")
    scorer.scale = scale
    return q, scorer


@pytest.mark.parametrize("blend", ["geo-mean", "mean", "rank", "power"])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_row_major_quantization_holds_the_model_major_values(blend, n_jobs, monkeypatch):
    oof, y, fold, _ = pool(n_rows=250, n_models=5, votes=blend == "mean")
    rows = np.random.default_rng(1).permutation(len(oof))[:200]
    expected, scale = quantize(oof, blend, max_terms=9, power=2.0, eps=1e-7, rows=rows)
    monkeypatch.setattr(scoring, "QUANTIZE_MIN_VALUES", 1)
    monkeypatch.setattr(scoring, "ROWS_BLOCK_BYTES", 8 * 5 * 9 * 7)      # blocks of 7 rows
    got, got_scale = quantize(oof, blend, max_terms=9, power=2.0, eps=1e-7, rows=rows,
                              n_jobs=n_jobs, layout="rows")
    assert got_scale == scale and got.shape == expected.shape
    assert row_major.is_row_major(got) and not row_major.is_row_major(expected)
    np.testing.assert_array_equal(got, expected)


def test_bounds_and_members_match_plain_loops(monkeypatch):
    q, scorer = prepared_rows(n_rows=40)
    walker = row_major.RowWalker(q, scorer)
    dmin, dmax = walker.bounds()
    k = 0
    for r in range(q.shape[1]):
        for c_p in scorer.row_cols[scorer.row_start[r]:scorer.row_start[r + 1]]:
            for c in range(q.shape[2]):
                differences = [int(q[m, r, c]) - int(q[m, r, c_p]) for m in range(q.shape[0])]
                assert (dmin[k, c], dmax[k, c]) == (min(differences), max(differences))
            k += 1
    monkeypatch.setattr(row_major, "MEMBER_CACHE_BYTES", 1)      # two copies kept
    walker = row_major.RowWalker(q, scorer, n_jobs=2)
    for m in [3, 0, 3, 6, 1, 3]:
        member = walker.member(m)
        assert member.flags.c_contiguous
        np.testing.assert_array_equal(member, q[m])
    assert list(walker._members) == [1, 3]


@pytest.mark.parametrize("metric, blend, votes", [
    ("lwlrap", "geo-mean", False), ("lrap", "mean", False), ("lwlrap", "mean", True)])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_extensions_are_bit_identical_to_the_numpy_scorer(metric, blend, votes, n_jobs,
                                                          monkeypatch):
    """Bases from empty (every class contested) to large (few contested), one base (the models
    split between threads) and three (the bases split), candidate lists of any order."""
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    q, scorer = prepared_rows(metric, blend, votes=votes, n_rows=400)
    walker = row_major.RowWalker(q, scorer, n_jobs=n_jobs)
    bases = [(0,) * 7, (0, 0, 0, 3, 0, 2, 1), (4, 1, 2, 3, 2, 5, 3)]
    sums = [sm.ensemble_sum(q, b) for b in bases]
    candidates = [list(range(q.shape[0])), [6, 2, 0], [5]]
    for chosen in ([0], [1], [0, 1, 2]):
        parts = walker.extensions_many([sums[g] for g in chosen], [candidates[g] for g in chosen])
        for g, part in zip(chosen, parts):
            expected = np.array([scorer.evaluate(sums[g] + q[j], sum(bases[g]) + 1)
                                 for j in candidates[g]])
            np.testing.assert_array_equal(scorer.outputs_from_fold_sums(part), expected)
    stacked = walker.bases_buffer(3)
    stacked[:] = np.stack(sums)
    again = walker.extensions_stacked(stacked, candidates)
    for part, direct in zip(again, walker.extensions_many(sums, candidates)):
        np.testing.assert_array_equal(part, direct)


def test_the_bases_buffers_alternate():
    q, scorer = prepared_rows(n_rows=30)
    walker = row_major.RowWalker(q, scorer)
    first = walker.bases_buffer(2)
    second = walker.bases_buffer(3)
    assert not np.shares_memory(first, second) and second.shape == (3,) + q.shape[1:]
    assert np.shares_memory(walker.bases_buffer(1), first)      # the first one again
    grown = walker.bases_buffer(4)                                 # larger than it was: a new one
    assert not np.shares_memory(grown, second) and len(grown) == 4
    assert np.shares_memory(walker.bases_buffer(2), first)


@pytest.mark.parametrize("method", ["greedy", "beam", "ges"])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_searches_on_the_row_major_pool_equal_the_numpy_path(method, n_jobs, monkeypatch):
    from stacker.search.engine import search_arrays

    oof, y, fold, names = pool(seed=11, n_models=7)
    options = {"names": names, "method": method, "nested": True, "n_jobs": n_jobs,
               "ges_iterations": 12, "device": "cpu"}
    with monkeypatch.context() as patch:
        patch.setattr(kernel, "available", lambda: False)
        reference = search_arrays(oof, y, fold, **options)
    assert reference.params["backend"].startswith("numpy")
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    used = []
    real = row_major.RowWalker.extensions_stacked

    def recording(self, starts, lists, formed_from=None, **options):
        used.append(formed_from is not None)
        return real(self, starts, lists, formed_from, **options)

    monkeypatch.setattr(row_major.RowWalker, "extensions_stacked", recording)
    result = search_arrays(oof, y, fold, **options)
    assert used and result.params["backend"] == "numba"
    assert any(used)                    # bases formed by the kernel
    assert comparable(result) == comparable(reference)


def test_the_preload_loads_the_row_major_kernels_for_the_methods_that_use_them(monkeypatch):
    from stacker.search import engine
    from stacker.search.config import SearchConfig

    asked = []
    monkeypatch.setattr(kernel, "preload", lambda row_major=False: asked.append(row_major))
    for method in ("ges", "greedy", "beam", "exhaustive", "auto"):
        engine.preload_kernels(SearchConfig(method=method, device="cpu"))
    assert asked == [True, True, True, False, False]


@pytest.mark.parametrize("metric, blend, votes", [
    ("lwlrap", "geo-mean", False), ("lrap", "mean", False), ("lwlrap", "mean", True)])
def test_whole_sums_score_as_the_numpy_scorer_scores_them(metric, blend, votes):
    q, scorer = prepared_rows(metric, blend, votes=votes, n_rows=300)
    walker = row_major.RowWalker(q, scorer)
    for counts in [(1, 0, 0, 0, 0, 0, 0), (0, 2, 0, 1, 0, 0, 3), (1,) * 7]:
        S = sm.ensemble_sum(q, counts, walker.member)
        got = scorer.outputs_from_fold_sums(walker.score_sums(S)[None])[0]
        np.testing.assert_array_equal(got, scorer.evaluate(S, sum(counts)))
    ctx = sm.Context(q=q, scorer=scorer, walker=walker)
    ensembles = [(0, 1, 1, 0, 0, 0, 0), (2, 0, 0, 0, 0, 1, 0)]
    expected = [scorer.evaluate_targets(sm.ensemble_sum(q, e), sum(e), [0, 2]) for e in ensembles]
    np.testing.assert_array_equal(sm.Evaluator(ctx).sets(ensembles, [0, 2]), np.array(expected))


def test_near_sums_equal_sums_from_scratch():
    q, scorer = prepared_rows(n_rows=50)
    member = lambda m: q[m]
    known = ((1, 2, 0, 0, 1, 0, 0), sm.ensemble_sum(q, (1, 2, 0, 0, 1, 0, 0)))
    for counts in [(1, 2, 0, 0, 1, 0, 0), (0, 2, 0, 0, 1, 0, 0), (1, 1, 0, 1, 1, 0, 0),
                   (1, 2, 0, 0, 1, 2, 0), (1, 0, 0, 0, 1, 0, 0)]:
        np.testing.assert_array_equal(sm.near_sum(counts, known, member),
                                      sm.ensemble_sum(q, counts))
    assert sm.near_sum((0, 1, 0, 0, 1, 1, 0), known, member) is None      # three picks apart


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("held_out", [False, True])
def test_bases_the_kernel_forms_are_the_sums_python_forms(n_jobs, held_out, monkeypatch):
    """held_out: bases 1 to 3 selections with a fold held out (as nested GES's): that fold's
    sums are not computed (zero), the outputs read are the same, every row is still formed."""
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    q, scorer = prepared_rows(n_rows=200)
    walker = row_major.RowWalker(q, scorer, n_jobs=n_jobs)
    parents = np.stack([sm.ensemble_sum(q, (1, 0, 0, 2, 0, 0, 0)), sm.ensemble_sum(q, (0,) * 7)])
    wanted = [(1, 0, 0, 2, 0, 1, 0), (0, 0, 0, 0, 0, 0, 0), (1, 0, 0, 2, 0, 0, 0), (0, 3, 1, 0, 0, 0, 0)]
    plan = [(0, 5), (1, -1), (0, -1), None]
    candidates = [list(range(7)), [1, 2], [6], [0, 3]]
    targets = [[0], [1], [2], [scorer.n_folds]] if held_out else [[0]] * 4
    read = [scorer.folds_read(t) for t in targets]
    assert walker.fuses(len(wanted), 1)
    starts = walker.bases_buffer(len(wanted))
    starts[3] = sm.ensemble_sum(q, wanted[3])
    parts = walker.extensions_stacked(starts, candidates, (parents, plan),
                                      read=read if held_out else None)
    for g, counts in enumerate(wanted):
        np.testing.assert_array_equal(starts[g], sm.ensemble_sum(q, counts))
        expected = [scorer.evaluate(starts[g] + q[j], sum(counts) + 1) for j in candidates[g]]
        got = scorer.outputs_from_fold_sums(parts[g])
        np.testing.assert_array_equal(got[:, targets[g]], np.array(expected)[:, targets[g]])
        assert (parts[g][:, ~read[g]] == 0).all() and (parts[g][:, read[g]] != 0).any()
        assert (held_out and g > 0) == (not read[g].all())
    n_folds = scorer.n_folds
    assert scorer.folds_read([0]).all() and scorer.folds_read([2, 3]).all()
    np.testing.assert_array_equal(scorer.folds_read([1 + n_folds - 1]), np.arange(n_folds) < n_folds - 1)


@pytest.mark.parametrize("method", ["greedy", "beam", "ges", "exhaustive", "auto"])
@pytest.mark.parametrize("where", ["positive row", "row without a positive"])
@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.25])
def test_values_outside_0_1_are_refused_by_every_method(method, where, bad):
    """The row-major methods leave the check to the quantizer (one pass less over the pool): it
    and subset_context still read every row, with or without a positive label."""
    from stacker.errors import OptionError
    from stacker.search.engine import search_arrays

    oof, y, fold, names = pool(seed=5, n_models=4, n_rows=120)
    rows = np.flatnonzero(y.any(axis=1) if where == "positive row" else ~y.any(axis=1))
    oof = oof.copy()
    oof[rows[len(rows) // 2], 2, 1] = bad
    with pytest.raises(OptionError, match=r"probabilities in \[0, 1\]"):
        search_arrays(oof, y, fold, names=names, method=method, device="cpu", max_size=3)


@pytest.mark.parametrize("metric, blend, votes", [
    ("lwlrap", "geo-mean", False), ("lrap", "mean", False), ("lwlrap", "mean", True),
    ("lwlrap", "power", False), ("lwlrap", "rank", False)])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_placer_s_bounds_and_models_alone_equal_the_walker_s_own(metric, blend, votes,
                                                                     n_jobs, monkeypatch):
    """What the Placer computes from each block as the quantizer puts it in place (blocks of 7
    rows, threads; the rows gathered, clipped, scaled and rounded by its kernels for every
    blend but rank) equals the model-major quantizer's values and the separate passes: the bounds kernel, and the extensions of the
    empty base, bit for bit; members read from the pool equal the pool's values."""
    monkeypatch.setattr(scoring, "QUANTIZE_MIN_VALUES", 1)
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    oof, y, fold, _ = pool(votes=votes, n_rows=400)
    scorer = make_scorer(y, fold, sorted(np.unique(fold)), metric, blend=blend, power=2.0)
    monkeypatch.setattr(scoring, "ROWS_BLOCK_BYTES", 8 * oof.shape[1] * oof.shape[2] * 7)
    placed = row_major.Placer(scorer, oof.shape[1], oof.shape[2])
    q, scale = quantize(oof, blend, max_terms=20, power=2.0, eps=1e-7, rows=scorer.rows,
                        layout="rows", n_jobs=n_jobs, place=placed)
    expected, _ = quantize(oof, blend, max_terms=20, power=2.0, eps=1e-7, rows=scorer.rows)
    np.testing.assert_array_equal(q, expected)
    scorer.scale = scale
    plain = row_major.RowWalker(q, scorer, n_jobs=n_jobs)

    def source(m, out):
        scoring.quantize_model(oof, m, blend, scale=scale, power=2.0, eps=1e-7,
                               rows=scorer.rows, out=out)

    walker = row_major.RowWalker(q, scorer, n_jobs=n_jobs, placed=placed, source=source)
    for got, want in zip(walker.bounds(), plain.bounds()):
        np.testing.assert_array_equal(got, want)
    candidates = [[3, 0, 6], list(range(7))]
    empty = np.zeros((2,) + q.shape[1:], dtype=np.int64)
    for got, want in zip(walker.extensions_stacked(empty, candidates, empty=[True, True]),
                         plain.extensions_stacked(empty, candidates)):
        np.testing.assert_array_equal(got, want)
    for m in [5, 2, 5]:
        np.testing.assert_array_equal(walker.member(m), q[m])


def test_the_models_alone_answer_only_when_every_base_is_empty():
    q, scorer = prepared_rows(n_rows=60)
    walker = row_major.RowWalker(q, scorer)          # no Placer: nothing precomputed
    assert walker.single_sums() is None
    placed = row_major.Placer(scorer, q.shape[0], q.shape[2])
    placed(np.empty_like(q.transpose(1, 2, 0)), q.transpose(1, 0, 2).astype(np.float64),
           0, q.shape[1])
    walker = row_major.RowWalker(q, scorer, placed=placed)
    bases = np.stack([np.zeros(q.shape[1:], dtype=np.int64), sm.ensemble_sum(q, (0, 2) + (0,) * 5)])
    parts = walker.extensions_stacked(bases, [[1, 4], [1, 4]], empty=[True, False])
    expected = [scorer.evaluate(bases[1] + q[j], 3) for j in [1, 4]]
    np.testing.assert_array_equal(scorer.outputs_from_fold_sums(parts[1]), np.array(expected))


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("cache_bytes", [row_major.MEMBER_CACHE_BYTES, 1])
def test_a_set_without_each_member_scores_as_that_set_alone(n_jobs, cache_bytes, monkeypatch):
    """Greedy's pruning: one pass for every member dropped (the copies side by side in the
    cache, or one by one when they do not fit) equals each smaller set scored alone."""
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    monkeypatch.setattr(row_major, "MEMBER_CACHE_BYTES", cache_bytes)
    q, scorer = prepared_rows(n_rows=300)
    walker = row_major.RowWalker(q, scorer, n_jobs=n_jobs)
    counts = (1, 0, 3, 1, 0, 2, 1)
    S = sm.ensemble_sum(q, counts)
    drops = [0, 2, 3, 5, 6]
    got = walker.score_without(S, drops, [counts[m] for m in drops])
    for j, m in enumerate(drops):
        smaller = tuple(0 if i == m else c for i, c in enumerate(counts))
        np.testing.assert_array_equal(got[j], walker.score_sums(sm.ensemble_sum(q, smaller)))
    ctx = sm.Context(q=q, scorer=scorer, walker=walker)
    smaller = [tuple(0 if i == m else c for i, c in enumerate(counts)) for m in drops]
    np.testing.assert_array_equal(sm.Evaluator(ctx).sets_without(counts, drops, [0, 2]),
                                  sm.Evaluator(sm.Context(q=q, scorer=scorer)).sets(smaller, [0, 2]))


def test_pruning_sums_formed_from_known_sums_are_the_sums_from_zero(monkeypatch):
    """Greedy's pruning after the steps: each set's sum is formed in the walker's scratch (an
    idle buffer of bases) from a base of the last step or the set pruned before, never
    overwriting those bases; every score equals the numpy evaluator's."""
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    q, scorer = prepared_rows(n_rows=300)
    walker = row_major.RowWalker(q, scorer, n_jobs=2)
    walker.max_bases = 2
    ev = sm.Evaluator(sm.Context(q=q, scorer=scorer, walker=walker))
    plain = sm.Evaluator(sm.Context(q=q, scorer=scorer))
    steps = [[((0,) * 7, [0, 1, 2, 3, 4, 5, 6], [0, 1])],
             [((0, 1, 0, 0, 0, 0, 0), [0, 2, 3, 4, 5, 6], [0]),
              ((0, 0, 0, 1, 0, 0, 0), [0, 1, 2, 4, 5, 6], [1])],
             [((0, 1, 0, 0, 1, 0, 0), [0, 2, 3, 5, 6], [0]),
              ((0, 1, 0, 1, 0, 0, 0), [0, 2, 4, 5, 6], [1])],
             [((0, 1, 0, 0, 1, 0, 1), [0, 2, 3, 5], [0]),
              ((1, 1, 0, 1, 0, 0, 0), [2, 4, 5, 6], [1])]]
    for requests in steps:
        ev.extend_many(requests)
    bases = {base: ev._previous_sums[base].copy() for base, _, _ in steps[-1]}
    for counts, target in [((0, 1, 0, 0, 1, 1, 1), 0), ((0, 1, 0, 0, 1, 0, 1), 0),
                           ((0, 0, 0, 0, 1, 0, 1), 0), ((1, 1, 1, 1, 0, 0, 0), 1),
                           ((1, 0, 1, 1, 0, 0, 0), 1), ((3, 0, 2, 0, 0, 0, 0), 1)]:
        drops = [m for m, c in enumerate(counts) if c]
        smaller = [tuple(0 if i == m else c for i, c in enumerate(counts)) for m in drops]
        np.testing.assert_array_equal(ev.sets_without(counts, drops, [target]),
                                      plain.sets(smaller, [target]))
        np.testing.assert_array_equal(ev._formed[1], sm.ensemble_sum(q, counts))
    assert any(ev._formed[1] is view or np.shares_memory(ev._formed[1], view)
               for view in walker._buffers if view is not None)     # the scratch: a buffer
    for base, S in bases.items():                   # the last step's bases are untouched
        np.testing.assert_array_equal(ev._previous_sums[base], S)


@pytest.mark.parametrize("votes", [False, True])
def test_extensions_of_many_bases_are_bit_identical(votes, monkeypatch):
    """Bases of every size (few or many contested classes, one or two of them, contested
    positives): each of the kernel's accumulation forms against the numpy scorer."""
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    q, scorer = prepared_rows(votes=votes, n_rows=300)
    walker = row_major.RowWalker(q, scorer, n_jobs=2)
    rng = np.random.default_rng(5)
    for size in [1, 2, 3, 5, 8, 13, 19]:
        counts = tuple(np.bincount(rng.integers(0, 7, size), minlength=7))
        S = sm.ensemble_sum(q, counts)
        part = walker.extensions(S, list(range(7)))
        expected = np.array([scorer.evaluate(S + q[j], size + 1) for j in range(7)])
        np.testing.assert_array_equal(scorer.outputs_from_fold_sums(part), expected)


def high_parts_walker(oof, scorer, blend, shift, n_jobs=1):
    """The pool as high parts ``q >> shift`` (its Placer, source and exact_row as subset_context
    makes them) and the int64 pool it stands for."""
    placed = row_major.Placer(scorer, oof.shape[1], oof.shape[2], shift=shift)
    q, scale = quantize(oof, blend, max_terms=20, power=2.0, eps=1e-7, rows=scorer.rows,
                        layout="rows", n_jobs=n_jobs, place=placed)
    scorer.scale = scale

    def source(m, out):
        scoring.quantize_model(oof, m, blend, scale=scale, power=2.0, eps=1e-7,
                               rows=scorer.rows, out=out)

    def exact_row(r, out):
        scoring.quantize_row(oof, int(scorer.rows[r]), blend, scale=scale, power=2.0, eps=1e-7,
                             out=out)

    walker = row_major.RowWalker(q, scorer, n_jobs=n_jobs, placed=placed, source=source,
                                 exact_row=exact_row)
    values, _ = quantize(oof, blend, max_terms=20, power=2.0, eps=1e-7, rows=scorer.rows,
                         layout="rows")
    return walker, q, values


@pytest.mark.parametrize("blend", ["geo-mean", "mean", "rank", "power"])
def test_a_row_quantized_alone_holds_the_pool_s_values(blend):
    oof, y, fold, _ = pool(n_rows=90, n_models=5, votes=blend == "mean")
    values, scale = quantize(oof, blend, max_terms=9, power=2.0, eps=1e-7, layout="rows")
    out = np.empty((oof.shape[2], oof.shape[1]), dtype=np.int64)
    for r in [0, 17, 89]:
        scoring.quantize_row(oof, r, blend, scale=scale, power=2.0, eps=1e-7, out=out)
        np.testing.assert_array_equal(out, values[:, r].T)


@pytest.mark.parametrize("shift", ["least", 44])
def test_the_high_parts_pool_holds_shifted_values_and_the_values_own_bounds(shift):
    oof, y, fold, _ = pool(n_rows=200)
    scorer = make_scorer(y, fold, sorted(np.unique(fold)), "lwlrap", blend="geo-mean", power=2.0)
    if shift == "least":
        shift = row_major.high_shift(scoring.transform_bound("geo-mean", 9, 1e-7)
                                     * scoring.quantize_scale("geo-mean", 9, eps=1e-7,
                                                              max_terms=20))
        assert 20 < shift < 30
    walker, q, values = high_parts_walker(oof, scorer, "geo-mean", shift)
    assert q.dtype == np.int32 and walker.shift == shift
    np.testing.assert_array_equal(q, values >> shift)
    plain = row_major.RowWalker(values, scorer)
    for got, want in zip(walker.bounds(), plain.bounds()):
        np.testing.assert_array_equal(got, want)
    empty = np.zeros((1,) + q.shape[1:], dtype=np.int64)
    np.testing.assert_array_equal(walker.extensions_stacked(empty, [list(range(7))],
                                                            empty=[True])[0],
                                  plain.extensions_stacked(empty, [list(range(7))])[0])
    for m in [4, 1]:
        np.testing.assert_array_equal(walker.member(m), values[m])


def test_the_shift_keeps_the_high_parts_and_their_differences_in_int32():
    for largest in [0, 1, 2.0 ** 20, 34.5 * 2.0 ** 51, 2.0 ** 62 - 1]:
        shift = row_major.high_shift(largest)
        top = int(np.ceil(largest)) >> shift
        assert top < 2 ** 30 and (shift == 0 or top >= 2 ** 29)
        assert 2 * top + 1 < 2 ** 31


@pytest.mark.parametrize("votes", [False, True])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_extensions_on_high_parts_are_bit_identical_where_the_values_decide(votes, n_jobs,
                                                                           monkeypatch):
    """A shift so large that many comparisons need the row's values (the walker stops, reads
    them and goes on from the same positive and base): every base size, one base and many,
    the same scores as the int64 pool's walker, bit for bit."""
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    oof, y, fold, _ = pool(votes=votes, n_rows=300)
    scorer = make_scorer(y, fold, sorted(np.unique(fold)), "lwlrap", blend="geo-mean", power=2.0)
    walker, q, values = high_parts_walker(oof, scorer, "geo-mean", 46, n_jobs=n_jobs)
    plain = row_major.RowWalker(values, scorer, n_jobs=n_jobs)
    rng = np.random.default_rng(5)
    bases = [tuple(np.bincount(rng.integers(0, 7, size), minlength=7))
             for size in [1, 2, 3, 5, 8, 13, 19]]
    sums = [sm.ensemble_sum(values, counts) for counts in bases]
    for chosen in ([0], [3], list(range(len(bases)))):
        got = walker.extensions_many([sums[g] for g in chosen], [list(range(7))] * len(chosen))
        want = plain.extensions_many([sums[g] for g in chosen], [list(range(7))] * len(chosen))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert walker.unsure_rows > 0


@pytest.mark.parametrize("method", ["greedy", "beam", "ges"])
def test_searches_on_high_parts_equal_searches_on_the_values(method, monkeypatch):
    """Whole searches (kernel-formed bases, nested targets) with a shift that leaves the values
    to decide often select as the int64 pool does."""
    from stacker.search.engine import search_arrays

    oof, y, fold, names = pool(seed=11, n_models=7)
    options = {"names": names, "method": method, "nested": True, "n_jobs": 2,
               "ges_iterations": 12, "device": "cpu"}
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    with monkeypatch.context() as patch:
        patch.setattr(row_major.Placer, "__init__", _int64_placer)
        reference = search_arrays(oof, y, fold, **options)
    walkers = []
    real_init = row_major.RowWalker.__init__

    def recording(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        walkers.append(self)

    monkeypatch.setattr(row_major.RowWalker, "__init__", recording)
    monkeypatch.setattr(row_major, "high_shift", lambda largest: 45)
    result = search_arrays(oof, y, fold, **options)
    assert walkers and walkers[0].q.dtype == np.int32 and walkers[0].unsure_rows > 0
    assert comparable(result) == comparable(reference)


_real_placer_init = row_major.Placer.__init__


def _int64_placer(self, scorer, n_models, n_classes, **_):
    _real_placer_init(self, scorer, n_models, n_classes)


@pytest.mark.parametrize("n_bases", [1, 2, 3, 6])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("nested", [False, True])
def test_each_base_and_fold_is_one_thread_s_and_the_threads_share_them_evenly(n_bases, threads,
                                                                              nested):
    """Every (base, fold) pair is one thread's; the pairs read are scored, the others only
    formed (nested: base g > 0 a selection with fold g - 1 held out, as GES's are)."""
    q, scorer = prepared_rows(n_rows=500)
    walker = row_major.RowWalker(q, scorer, n_jobs=threads)
    read = None
    wanted = np.ones((n_bases, scorer.n_folds), dtype=bool)
    if nested:
        wanted = np.array([scorer.folds_read([g % (1 + scorer.n_folds)]) for g in range(n_bases)])
        read = list(wanted)
    parts = walker._parts(n_bases, q.shape[0], threads, read)
    takes = np.stack([take for take, _ in parts])
    assert all(models == (0, q.shape[0]) for _, models in parts)
    np.testing.assert_array_equal((takes != row_major.OTHERS).sum(axis=0),
                                  np.ones((n_bases, scorer.n_folds)))
    np.testing.assert_array_equal((takes == row_major.SCORED).any(axis=0), wanted)
    positives = np.bincount(scorer.row_fold, minlength=scorer.n_folds)
    loads = [((take == row_major.SCORED) * positives).sum() for take in takes]
    assert len(parts) == threads and max(loads) <= (sum(loads) / threads + positives.max())


@pytest.mark.parametrize("n_jobs", [2, 3])
def test_one_base_formed_by_the_kernel_on_threads_is_the_sum_python_forms(n_jobs, monkeypatch):
    """One base (its folds shared by the threads): the kernel forms each row once and scores
    every candidate as the numpy scorer does."""
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    q, scorer = prepared_rows(n_rows=200)
    walker = row_major.RowWalker(q, scorer, n_jobs=n_jobs)
    parents = np.stack([sm.ensemble_sum(q, (1, 0, 0, 2, 0, 0, 0))])
    assert walker.fuses(1, 1)
    starts = walker.bases_buffer(1)
    parts = walker.extensions_stacked(starts, [list(range(7))], (parents, [(0, 4)]))
    counts = (1, 0, 0, 2, 1, 0, 0)
    np.testing.assert_array_equal(starts[0], sm.ensemble_sum(q, counts))
    expected = [scorer.evaluate(starts[0] + q[j], 5) for j in range(7)]
    np.testing.assert_array_equal(scorer.outputs_from_fold_sums(parts[0]), np.array(expected))


def test_units_and_diff_compare_high_parts_as_the_values_compare():
    """``(d << shift) >= x`` exactly when ``d >= units(x, shift)``, for int32 differences ``d``
    and any int64 ``x`` (huge ones clamp to int32's range without changing an answer), compiled
    and in Python, with an int32 and an int64 pool."""
    numba = pytest.importorskip("numba")
    from stacker.search import intrinsics

    @numba.njit
    def compiled(ds, xs, shift, like):
        out = np.empty((xs.size, ds.size), dtype=np.bool_)
        for i in range(xs.size):
            u = intrinsics.units(xs[i], shift, like)
            for j in range(ds.size):
                out[i, j] = intrinsics.diff(ds[j], np.int64(0), like) >= u
        return out

    rng = np.random.default_rng(3)
    for shift in [0, 1, 7, 22, 33]:
        top = min(2 ** 30, 2 ** 62 >> shift)     # the values stay below 2**62 (high_shift)
        ds = np.concatenate([rng.integers(-top, top, 300), [0, 1, -1, top - 1, -top]])
        near = (ds[:40].astype(object) << shift) + rng.integers(-3, 4, 40).astype(object)
        xs = np.array([int(v) for v in near] + [0, 2 ** 62, -2 ** 62, min(2 ** 31 << shift, 2 ** 62)],
                      dtype=np.int64)
        truth = (ds[None, :].astype(object) << shift) >= xs[:, None].astype(object)
        for dtype in [np.int32, np.int64]:
            like = np.zeros(1, dtype=dtype)
            np.testing.assert_array_equal(compiled(ds.astype(dtype), xs, shift, like), truth)
            python = np.array([[intrinsics.diff(dtype(d), 0, like)
                                >= intrinsics.units(x, shift, like) for d in ds] for x in xs])
            np.testing.assert_array_equal(python, truth)
            assert intrinsics.diff(dtype(5), dtype(7), like).dtype == dtype
