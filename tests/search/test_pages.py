"""The memory of the search's large arrays (stacker.search.pages): huge pages kept only where they
were measured faster than small pages, the rest advised back; the arrays are ordinary arrays
either way, and the quantized pool holds the same values."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from stacker.search import pages, scoring


@pytest.mark.parametrize("faster", [True, False])
def test_huge_pages_are_kept_only_where_they_came_faster(faster, monkeypatch):
    calls = []
    probes = []
    monkeypatch.setattr(pages, "advise", lambda flat, a, b, advice: calls.append((a, b, advice))
                        or True)

    def probe(flat, size):
        probes.append((flat.ctypes.data, size))
        return faster

    monkeypatch.setattr(pages, "huge_pages_faster", probe)
    n = 10 * pages.PROBE_BYTES // 8
    out = pages.empty_for_scans((n,), np.int64)
    assert out.shape == (n,) and out.dtype == np.int64 and out.flags.c_contiguous
    start, size = probes[0]
    assert start % pages.HUGE_PAGE == 0 and size == pages.PROBE_BYTES
    assert calls[0] == (0, out.nbytes, pages._MADV_HUGEPAGE)
    if faster:
        assert len(calls) == 1
    else:                       # the rest after the probed huge pages back to small pages
        head = start - out.ctypes.data
        assert calls[1] == (head + pages.PROBE_BYTES, out.nbytes, pages._MADV_NOHUGEPAGE)
    out[:] = 7
    assert out[-1] == 7


def test_small_arrays_and_systems_without_advice_get_small_pages(monkeypatch):
    probes = []
    monkeypatch.setattr(pages, "huge_pages_faster", lambda *a: probes.append(a) or True)
    out = pages.empty_for_scans((3, 4), np.int32)
    assert out.shape == (3, 4) and not probes
    monkeypatch.setattr(pages, "advise", lambda *a: False)
    out = pages.empty_for_scans((10 * pages.PROBE_BYTES // 4,), np.int32)
    assert out.size == 10 * pages.PROBE_BYTES // 4 and not probes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")
def test_the_probe_touches_both_kinds_of_pages_and_the_advice_is_accepted():
    flat = pages.small_pages_empty(4 * pages.PROBE_BYTES, np.uint8)
    if not pages.advise(flat, 0, flat.nbytes, pages._MADV_HUGEPAGE):
        pytest.skip("this kernel takes no huge-page advice (no transparent huge pages)")
    assert pages.advise(flat, 0, flat.nbytes, pages._MADV_NOHUGEPAGE)
    assert not pages.advise(flat, 10, 20, pages._MADV_HUGEPAGE)        # no whole page
    flat[:] = 1
    assert isinstance(pages.huge_pages_faster(flat, pages.PROBE_BYTES), bool)
    assert not flat[:pages.PROBE_BYTES].any() and flat[pages.PROBE_BYTES:].all()


def test_small_pages_empty_puts_numpy_s_huge_page_advice_back():
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None)
    if not hasattr(multiarray, "_get_madvise_hugepage"):
        pytest.skip("this numpy has no huge-page advice setting")
    before = multiarray._get_madvise_hugepage()
    array = scoring.small_pages_empty((3, 4, 5), np.int64)
    assert array.shape == (3, 4, 5) and array.dtype == np.int64
    assert multiarray._get_madvise_hugepage() == before


@pytest.mark.parametrize("faster", [True, False])
def test_the_row_major_pool_holds_the_same_values_in_either_kind_of_page(faster, monkeypatch):
    from test_backends import pool

    oof, *_ = pool(n_rows=300, n_models=5)
    expected, _ = scoring.quantize(oof, "geo-mean", max_terms=9, power=2.0, eps=1e-7)
    monkeypatch.setattr(pages, "PROBE_BYTES", 4096)      # the pool is then large enough
    monkeypatch.setattr(pages, "huge_pages_faster", lambda flat, size: faster)
    got, _ = scoring.quantize(oof, "geo-mean", max_terms=9, power=2.0, eps=1e-7, layout="rows")
    np.testing.assert_array_equal(got, expected)
