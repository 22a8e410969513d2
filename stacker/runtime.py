"""How work runs, shared by both levels: seeds per fold, torch's thread count, progress callbacks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

ProgressCallback = Callable[[int, int], None]
"""``on_progress(done, total)``: library functions report progress through it; the CLI draws bars."""


def fold_seed(seed: int, fold: int) -> int:
    """A distinct, reproducible seed for each (seed, fold) pair (first-level and level-2 models)."""
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads, restored afterwards; None leaves torch's setting alone.

    Our nets are small: on a small shared machine two OpenMP threads that wait on each other cost
    ten times the CPU of one (measured on 2 cores), so callers pass 1 or a few.
    """
    if n is None:
        yield
        return
    import torch  # on first use: importing this module stays light

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
