"""How the search's large arrays get their memory: small pages, or transparent huge pages when
they come faster right now.

Every value of the quantized pool is written once, right away, and a step of greedy, beam or GES
then reads the row-major pool a few strips of each row at a time, all over its gigabytes. With
small pages each strip read is a TLB miss and a page walk; with 2 MB pages the pool's pages fit
the TLB. On bench_scale's pool (2 GB of high parts) nested greedy's steps took 1.5-1.9 s with
huge pages against 2.4 s without, and the 2 GB were touched in 0.3 s against 0.9-1.1.

But a huge page is not always cheap to get. On the virtual machines we measure (THP on
"madvise"), the guest's free memory in large blocks is often memory the host has taken back, and
touching it costs a host fault per small page: 2 GB of huge pages took 1.9 to 4.9 s to touch
in some runs, against 0.8-0.95 s for small pages. So the choice is measured, for each array, on
its own first pages: :func:`empty_for_scans` advises huge pages, touches the first 16 MB, touches
16 MB of small pages beside it, and keeps huge pages only where they came faster (the rest
advised back to small pages). Both touches take a few milliseconds; the values are the same
either way.
"""

from __future__ import annotations

import mmap
import sys
import time

import numpy as np

PROBE_BYTES = 16 * 1024 * 1024      # touched in each kind of page to choose
HUGE_PAGE = 2 * 1024 * 1024
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)
_MADV_NOHUGEPAGE = getattr(mmap, "MADV_NOHUGEPAGE", None)
_libc = None


def small_pages_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` without numpy's advice to back it with transparent huge pages.

    On the shared machines we measured (THP on "madvise", a virtual machine) the first touch of a
    640 MB array took 0.07 s or 1.2-1.4 s with huge pages (memory the host has to back again),
    0.24-0.55 s without, run after run; the quantize of bench_peers' 200 models took 0.88-0.93 s
    against 0.29-0.41 s. The advice is numpy's process-wide setting: put back at once."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)       # numpy 2 / numpy 1
    multiarray = getattr(core, "multiarray", None)
    toggle = getattr(multiarray, "_set_madvise_hugepage", None)
    if toggle is None:
        return np.empty(shape, dtype=dtype)
    previous = toggle(False)
    try:
        return np.empty(shape, dtype=dtype)
    finally:
        toggle(previous)


def advise(flat: np.ndarray, start: int, stop: int, advice: int) -> bool:
    """madvise(``advice``) on the whole pages of bytes start:stop of the uint8 array ``flat``;
    False where the system has no madvise or refuses."""
    global _libc
    if not sys.platform.startswith("linux") or advice is None:
        return False
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    base = flat.ctypes.data
    first = -(-(base + start) // mmap.PAGESIZE) * mmap.PAGESIZE
    last = (base + stop) // mmap.PAGESIZE * mmap.PAGESIZE
    return last > first and _libc.madvise(first, last - first, advice) == 0


def huge_pages_faster(flat: np.ndarray, probe: int) -> bool:
    """Touch the first ``probe`` bytes of ``flat`` (advised huge pages) and as many bytes of
    fresh small pages: True when the huge pages took less time."""
    small = small_pages_empty(probe, np.uint8)
    start = time.perf_counter()
    small.fill(0)
    small_s = time.perf_counter() - start
    del small
    start = time.perf_counter()
    flat[:probe].fill(0)
    huge_s = time.perf_counter() - start
    return huge_s < small_s


def empty_for_scans(shape, dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` to be written once and read all over (the row-major
    pool): in transparent huge pages when they came faster than small pages on its first
    :data:`PROBE_BYTES` (the rest advised back to small pages otherwise); small pages where the
    system gives no choice or the array is small."""
    out = small_pages_empty(shape, dtype)
    flat = out.reshape(-1).view(np.uint8)
    if flat.nbytes < 8 * PROBE_BYTES or not advise(flat, 0, flat.nbytes, _MADV_HUGEPAGE):
        return out
    # (the probe's pages start at the first huge page boundary: those before are small pages)
    head = -flat.ctypes.data % HUGE_PAGE
    if not huge_pages_faster(flat[head:], PROBE_BYTES):
        advise(flat, head + PROBE_BYTES, flat.nbytes, _MADV_NOHUGEPAGE)
    return out
