"""How work runs, shared by both levels: seeds per fold, torch's thread count, the progress types
(their one home) and the stopwatch of a staged run."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

import numpy as np

ProgressCallback = Callable[[int, int], None]
"""``on_progress(done, total)``: library functions report progress through it; the CLI draws bars."""

Stage = Callable[[str], ContextManager[Callable[..., None]]]
"""``stage(description)`` returns a context manager that yields an ``update(done, total=None,
note=None)`` (a :data:`ProgressCallback` that also takes ``note``, what the current unit is doing;
None leaves the count, the total or the note as they were), entered once per stage of a long run.
:func:`stacker.progress.show_progress` draws it; :func:`quiet_stage` shows nothing."""


@contextmanager
def quiet_stage(description: str) -> Iterator[Callable[..., None]]:
    """The :data:`Stage` that shows nothing (library callers that pass no progress)."""
    yield lambda done=None, total=None, note=None: None


class Laps:
    """Seconds per named stage of a run: ``lap(name)`` adds the time since the previous lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._clock
        self._clock = now

    def add(self, seconds: dict[str, float]) -> None:
        """Add another run's laps (timed by it) and start the next lap now."""
        for name, value in seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + value
        self._clock = time.perf_counter()


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
