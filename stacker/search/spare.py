"""Memory a finished search hands on to its result: the pages it touched, carved into new arrays.

Once the selection is made, the walker's member copies and bases (hundreds of MB on a large pool)
are done with, and the result then needs arrays of the same size: every member's transform and
its prediction buffers. Made in fresh memory, each of their pages is a page fault (on the
virtual machines we measure, 0.4-0.55 s a GiB at best), while the walker's pages are freed
beside them; made in the walker's pages, they cost no fault and no unmapping.

An array taken here is a view of the walker's memory: it must not outlive the result's building
(nothing the result returns is one), or it keeps all of that memory alive.
"""

from __future__ import annotations

import math
import threading

import numpy as np

ALIGN = 64          # bytes: every array taken starts on a cache line


class SpareMemory:
    """Touched memory to make arrays in: the C-contiguous ``arrays`` given (their values are
    overwritten), each cut in consecutive pieces. Threads may take at once."""

    def __init__(self, arrays=()):
        self._free = [np.asarray(a).reshape(-1).view(np.uint8) for a in arrays
                      if a is not None and a.size and a.flags.c_contiguous]
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """The bytes not taken yet."""
        return sum(len(block) for block in self._free)

    def take(self, shape, dtype=np.float64) -> np.ndarray | None:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` in spare memory, or
        None when no piece left is that large."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in np.atleast_1d(shape))
        need = math.prod(shape) * dtype.itemsize
        if need == 0:
            return None
        with self._lock:
            for i, block in enumerate(self._free):
                if len(block) >= need and block.ctypes.data % max(dtype.alignment, 1) == 0:
                    self._free[i] = block[min(len(block), -(-need // ALIGN) * ALIGN):]
                    return block[:need].view(dtype).reshape(shape)
        return None

    def empty(self, shape, dtype=np.float64) -> np.ndarray:
        """:meth:`take`, or ``np.empty`` when no spare piece is large enough."""
        taken = self.take(shape, dtype)
        return np.empty(shape, dtype=dtype) if taken is None else taken
