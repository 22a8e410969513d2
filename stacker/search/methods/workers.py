"""Worker processes of the numpy scorer: the exhaustive search's chunks and the large batches of
candidates of greedy, beam and GES (the compiled and torch paths use threads or the device)."""

from __future__ import annotations

import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from stacker.search.methods.core import Context, Evaluator, score_extensions
from stacker.search.problem import Problem

# below this many scored array elements (~1 s of work) starting processes costs more than it saves
PARALLEL_MIN_WORK = 500_000_000
# a batch of candidates (greedy, beam, GES) smaller than this (~30 ms of work) stays in-process
PARALLEL_MIN_BATCH = 20_000_000

_WORKER: Context | None = None


def _init_worker(q_path: str, scorer) -> None:
    global _WORKER
    # one BLAS thread per process: the processes already use every core
    threadpool_limits(1)
    _WORKER = Context(q=np.load(q_path, mmap_mode="r"), scorer=scorer)


def _in_worker(function, *args):
    return function(_WORKER, *args)


class Workers:
    """A process pool whose workers memory-map the quantized arrays (no copy per process)."""

    def __init__(self, ctx: Context, n_jobs: int):
        self._dir = tempfile.TemporaryDirectory(prefix="stack-search-", ignore_cleanup_errors=True)
        path = str(Path(self._dir.name) / "q.npy")
        np.save(path, ctx.q)
        # the parent reads the same mapped file as the workers: its in-memory copy (8 bytes per
        # value of the pool) is freed before any worker is forked
        ctx.q = np.load(path, mmap_mode="r")
        self.pool = ProcessPoolExecutor(max_workers=n_jobs, initializer=_init_worker,
                                        initargs=(path, ctx.scorer))

    def submit(self, function, *args):
        """A future of ``function(worker's context, *args)`` (``function``: module level)."""
        return self.pool.submit(_in_worker, function, *args)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._dir.cleanup()


class ParallelEvaluator(Evaluator):
    """Splits a large batch of candidates between the worker processes."""

    def __init__(self, ctx: Context, workers: Workers, n_jobs: int):
        super().__init__(ctx)
        self.workers, self.n_jobs = workers, n_jobs

    def extend(self, base, candidates, targets):
        if len(candidates) * self.ctx.q[0].size < PARALLEL_MIN_BATCH:
            return super().extend(base, candidates, targets)
        self.n_evaluated += len(candidates)
        parts = np.array_split(np.asarray(candidates), self.n_jobs)
        futures = [self.workers.submit(score_extensions, base, part.tolist(), targets)
                   for part in parts if len(part)]
        return np.concatenate([f.result() for f in futures])


def run_lockstep(ctx: Context, problem: Problem, search: Callable, steps: int,
                 settings: dict) -> tuple[dict, int]:
    """``search(evaluator, targets, tick=..., **settings)`` (greedy, beam or GES) for every target
    in lockstep, reporting ``steps`` of progress. Returns ({target: Run}, candidates scored)."""
    done = [0]

    def tick(k):
        done[0] += k
        problem.progress(min(done[0], steps), steps)

    problem.progress(0, steps)
    # the compiled and torch paths split large batches themselves (threads, the device)
    parallel = (ctx.walker is None and ctx.n_jobs > 1
                and ctx.n_models * ctx.q[0].size >= PARALLEL_MIN_BATCH)
    if parallel:
        with Workers(ctx, ctx.n_jobs) as workers:
            evaluator = ParallelEvaluator(ctx, workers, ctx.n_jobs)
            runs = search(evaluator, problem.targets, tick=tick, **settings)
    else:
        evaluator = Evaluator(ctx)
        runs = search(evaluator, problem.targets, tick=tick, **settings)
    problem.progress(steps, steps)
    return runs, evaluator.n_evaluated

