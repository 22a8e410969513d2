"""Subset search: which experiments to blend, chosen on out-of-fold predictions, with nested CV.

``search_subsets(collection, metric=..., blend=..., method=...)`` (or ``config=SearchConfig(...)``,
:mod:`stacker.search.config`) returns a :class:`SearchResult`: the chosen members (and weights),
their CV, the top subsets, the best of each size, and the **nested CV**: for each fold, the
selection is repeated on the other folds' rows only and the subset it picks is scored on the
held-out fold; the held-out blends, pooled, give an honest estimate of what the selected blend
scores on new data (the selected CV is optimistic: the same rows chose it).

Methods (:mod:`stacker.search.methods`, one selector each): ``exhaustive`` (every subset up to
``max_size``; one pass gives every fold-held-out selection for free), ``greedy`` (forward, with
backward pruning), ``beam`` (width ``beam_width``), ``ges`` (Caruana et al. 2004 selection with
replacement -> weights; ``ges_init`` gives it a sorted initialisation) and ``auto`` (exhaustive
when its measured cost fits ``time_budget``, else beam, else greedy); the weighted methods
``ges-bagged``, ``cmaes``, ``per-class`` and ``linear``.

The fast scores steer the search; every number reported (cv, top, by_size, nested) is recomputed
from scratch with :func:`stacker.blend.blend_arrays` and the metric, exactly what ``stack blend``
prints (:func:`stacker.search.result.build_result`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from stacker.errors import OptionError
from stacker.layout.collect import Collection
from stacker.runtime import ProgressCallback
from stacker.search.config import METHODS, ROW_MAJOR_METHODS, SearchConfig
from stacker.search.methods import SELECTORS, WEIGHTED_METHODS
from stacker.search.problem import prepare
from stacker.search.result import SearchResult, build_result

__all__ = ["METHODS", "WEIGHTED_METHODS", "SearchConfig", "SearchResult", "search_arrays",
           "search_subsets"]


def search_subsets(collection: Collection, *, pool: Sequence[str] | None = None,
                   config: SearchConfig | None = None,
                   on_progress: ProgressCallback | None = None, **options) -> SearchResult:
    """Search the experiments of ``collection`` (or only ``pool``, a list of names) with
    ``config``, or with ``options`` (the keyword names of :meth:`SearchConfig.from_options`)."""
    names = list(collection.names if pool is None else pool)
    idx = collection.index(names)
    # the whole pool is passed as it is (a memory-mapped view after `stack collect`), not copied
    oof = collection.oof if idx == list(range(collection.n_models)) else collection.oof[:, idx]
    result = search_arrays(oof, collection.y, collection.fold, names=names,
                           fold_numbers=collection.fold_numbers, config=config,
                           on_progress=on_progress, **options)
    if result.combiner:
        result = replace(result, combiner={**result.combiner, "classes": list(collection.classes)})
    return result


def search_arrays(oof: np.ndarray, y: np.ndarray, fold: np.ndarray, *, names: Sequence[str],
                  fold_numbers: Sequence[int] | None = None, config: SearchConfig | None = None,
                  on_progress: ProgressCallback | None = None, **options) -> SearchResult:
    """Choose the members of a blend on out-of-fold predictions.

    oof: array of shape (n_rows, n_models, n_classes); y: (n_rows, n_classes); fold: (n_rows,).
    names: one per model. fold_numbers: the folds in order (default: those of ``fold``).
    config: every setting (:class:`SearchConfig`); or ``options``, its keyword names (metric,
    blend, method, max_size, top, beam_width, nested, seed, n_jobs, power, eps, prune, patience,
    ges_iterations, time_budget, ges_init, ges_bags, cmaes_evaluations, device), not both.
    on_progress: ``on_progress(done, total)`` as the work advances.
    """
    started = time.perf_counter()
    if config is None:
        config = SearchConfig.from_options(**options)
    elif options:
        raise OptionError(f"pass either a SearchConfig or search options, not both (got "
                          f"{', '.join(sorted(options))})")
    preload_kernels(config)
    from stacker.search.methods.core import row_major_likely

    # the search's threads are its parallelism: BLAS's own threads (the metric's small
    # products) only spun beside them (bench_scale's nested greedy: 3.8-4.1 s against 4.7-5.2,
    # a second less of system time)
    with threadpool_limits(1):
        # the row-major quantizer checks the values it reads (one pass less over the pool)
        deferred = config.method in ROW_MAJOR_METHODS and row_major_likely(config)
        problem = prepare(oof, y, fold, names=names, config=config, fold_numbers=fold_numbers,
                          on_progress=on_progress, check_range=not deferred)
        return build_result(problem, SELECTORS[config.method].select(problem), started=started)


def preload_kernels(config: SearchConfig) -> None:
    """Start loading the compiled kernels in the background when ``config``'s search will use
    them (:func:`stacker.search.kernel.preload`): call it before reading the pool."""
    from stacker.search.backends import compiled_path_likely

    if compiled_path_likely(config.metric, config.device):
        from stacker.search import kernel

        kernel.preload(row_major=config.method in ROW_MAJOR_METHODS)
