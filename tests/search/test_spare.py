"""Memory handed from the search to its result (stacker.search.spare): arrays carved from it are
views of the memory given, never overlapping; the transforms and buffers made in it give the same
result, bit for bit, as fresh memory; nothing the result returns is a view of it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_backends import comparable, pool

from stacker.blend import transform
from stacker.search import kernel, row_major
from stacker.search.engine import search_arrays
from stacker.search.methods import core as sm
from stacker.search.spare import ALIGN, SpareMemory


def test_arrays_taken_are_disjoint_aligned_views_of_the_memory_given():
    given = [np.zeros(1000, dtype=np.int64), np.zeros((3, 50), dtype=np.int64)]
    unusable = [np.zeros(0), np.zeros((4, 4))[:, ::2]]       # empty, not contiguous: left out
    spare = SpareMemory(given + unusable)
    assert spare.nbytes == 8 * 1000 + 8 * 150
    taken = [spare.take((7, 11)), spare.take((5,), np.float32), spare.take(3), spare.take((9, 9))]
    assert all(t is not None and t.flags.c_contiguous for t in taken)
    assert [t.shape for t in taken] == [(7, 11), (5,), (3,), (9, 9)]
    assert taken[1].dtype == np.float32 and taken[0].dtype == np.float64
    for i, a in enumerate(taken):
        assert any(np.shares_memory(a, g) for g in given)
        assert a.ctypes.data % ALIGN == 0 or a.ctypes.data % a.dtype.alignment == 0
        for b in taken[i + 1:]:
            assert not np.shares_memory(a, b)
    assert spare.take((1000,)) is None                  # no piece left that large
    assert spare.take((0, 5)) is None
    fresh = spare.empty((1000,))
    assert fresh.shape == (1000,) and not any(np.shares_memory(fresh, g) for g in given)
    assert SpareMemory().take(4) is None and SpareMemory().empty((2, 2)).shape == (2, 2)


def test_threads_taking_at_once_get_disjoint_pieces():
    given = np.zeros(64 * 400, dtype=np.uint8)
    spare = SpareMemory([given])
    taken, barrier = [], threading.Barrier(4)

    def grab():
        barrier.wait()
        for _ in range(100):
            piece = spare.take((8,), np.float64)
            if piece is not None:
                taken.append(piece)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = sorted(piece.ctypes.data for piece in taken)
    assert len(taken) == 400 and len(set(starts)) == 400


@pytest.mark.parametrize("blend", ["geo-mean", "mean", "power", "rank"])
def test_a_transform_into_given_memory_is_the_transform(blend):
    oof, *_ = pool(n_rows=80)
    probs = oof[:, 2].astype(np.float32)
    out = np.full(probs.shape, np.nan)
    got = transform(probs, blend, power=2.0, eps=1e-7, out=out)
    assert got is out
    np.testing.assert_array_equal(got, transform(probs, blend, power=2.0, eps=1e-7))
    with pytest.raises(ValueError, match="float64"):
        transform(probs, blend, out=np.empty(probs.shape, dtype=np.float32))


@pytest.mark.skipif(not kernel.available(), reason="numba is not installed")
def test_the_walker_hands_over_only_memory_it_touched_and_goes_on_without_it(monkeypatch):
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    oof, y, fold, _ = pool(n_rows=200)
    from stacker.search.scoring import make_scorer, quantize

    scorer = make_scorer(y, fold, sorted(np.unique(fold)), "lwlrap", blend="geo-mean", power=2.0)
    q, scale = quantize(oof, "geo-mean", max_terms=20, power=2.0, eps=1e-7, rows=scorer.rows,
                        layout="rows")
    scorer.scale = scale
    walker = row_major.RowWalker(q, scorer, n_jobs=2)
    assert walker.hand_over() == []                     # nothing touched yet
    walker.max_bases = 3
    S = walker.member(1) + walker.member(4)
    before = walker.extensions(S, list(range(7)))
    walker.bases_buffer(2)
    handed = walker.hand_over()
    per_row = q[0].size
    assert sum(a.size for a in handed) == 2 * per_row + 2 * per_row     # 2 members, 2 bases
    for a in handed:
        a.fill(-1)                                      # the new owner writes over them
    np.testing.assert_array_equal(walker.member(4), q[4])
    np.testing.assert_array_equal(walker.extensions(S, list(range(7))), before)
    assert not any(np.shares_memory(walker.member(4), a) for a in handed)


@pytest.mark.skipif(not kernel.available(), reason="numba is not installed")
@pytest.mark.parametrize("method", ["greedy", "ges"])
def test_a_result_built_in_the_search_s_memory_equals_one_built_in_fresh_memory(method,
                                                                             monkeypatch):
    """The members' transforms and the prediction buffers made in the walker's pages: the same
    result, bit for bit; the predictions it returns are not views of those pages."""
    monkeypatch.setattr(row_major.RowWalker, "min_parallel", 0)
    oof, y, fold, names = pool(seed=4, n_rows=400)
    options = {"names": names, "method": method, "nested": True, "n_jobs": 2, "device": "cpu",
               "ges_iterations": 8}
    with monkeypatch.context() as patch:
        patch.setattr(sm.Context, "spare_memory", lambda self: SpareMemory())
        fresh = search_arrays(oof, y, fold, **options)
    handed, taken = [], []
    hand_over, take = row_major.RowWalker.hand_over, SpareMemory.take

    def recording_hand_over(self):
        handed.extend(hand_over(self))
        return handed

    def recording_take(self, *args, **kwargs):
        piece = take(self, *args, **kwargs)
        taken.append(piece)
        return piece

    monkeypatch.setattr(row_major.RowWalker, "hand_over", recording_hand_over)
    monkeypatch.setattr(SpareMemory, "take", recording_take)
    result = search_arrays(oof, y, fold, **options)
    assert comparable(result) == comparable(fresh)
    np.testing.assert_array_equal(result.nested_oof, fresh.nested_oof)
    assert handed and any(piece is not None for piece in taken)      # the memory was used
    assert not any(np.shares_memory(result.nested_oof, a) for a in handed)
