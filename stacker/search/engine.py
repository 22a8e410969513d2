"""Subset search: which experiments to blend, chosen on out-of-fold predictions, with nested CV.

``search_subsets(collection, metric=..., blend=..., method=...)`` returns a :class:`SearchResult`:
the chosen members (and weights, for GES), their CV, the top subsets, the best of each size, and the
**nested CV**: for each fold, the selection is repeated on the other folds' rows only and the subset
it picks is scored on the held-out fold; the held-out blends, pooled, give an honest estimate of
what the selected blend scores on new data (the selected CV is optimistic: the same rows chose it).

Methods (:mod:`stacker.search.methods`): ``exhaustive`` (every subset up to ``max_size``; one pass
gives every fold-held-out selection for free), ``greedy`` (forward, with backward pruning), ``beam``
(width ``beam_width``), ``ges`` (Caruana et al. 2004 selection with replacement -> weights) and
``auto`` (exhaustive when its measured cost fits ``time_budget``, else beam, else greedy).
Weighted methods beyond GES (``ges-bagged``, ``cmaes``, ``per-class``, ``linear``) live in
:mod:`stacker.search.methods.weighted`; ``ges_init`` gives GES a sorted initialisation
(:mod:`stacker.search.methods.ges`).

The fast scores steer the search; every number reported (cv, top, by_size, nested) is recomputed
from scratch with :func:`stacker.blend.blend_arrays` and the metric, exactly what ``stack blend`` prints.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

import stacker.search.methods.core as sm
from stacker.blend import DEFAULT_POWER, EPS, check_blend, check_weights, finalize, transform
from stacker.errors import OptionError
from stacker.layout.collect import Collection
from stacker.metrics import check_defined, fold_scores, get_metric
from stacker.runtime import ProgressCallback
from stacker.search.backends import make_walker
from stacker.search.scoring import RankScorer, make_scorer, quantize

METHODS = ("auto", "exhaustive", "greedy", "beam", "ges", "ges-bagged", "cmaes", "per-class",
           "linear")
WEIGHTED_METHODS = METHODS[5:]          # stacker.search.methods.weighted
MAX_EXHAUSTIVE_SUBSETS = 1 << 22
# below this many scored array elements (~1 s of work) starting processes costs more than it saves
PARALLEL_MIN_WORK = 500_000_000
# a batch of candidates (greedy, beam, GES) smaller than this (~30 ms of work) stays in-process
PARALLEL_MIN_BATCH = 20_000_000


@dataclass(frozen=True)
class Candidate:
    """A scored ensemble: members (names), weights summing to 1, CV on every OOF row."""

    members: tuple[str, ...]
    weights: dict
    cv: float

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class SizeScore:
    """The best ensemble of ``size`` members (selected on all rows) and the nested CV of picking
    the best of that size on the other folds."""

    size: int
    members: tuple[str, ...]
    cv: float
    nested_cv: float | None


@dataclass(frozen=True)
class NestedFold:
    """The selection made without fold ``fold`` and its score on that fold's rows."""

    fold: int
    members: tuple[str, ...]
    weights: dict
    cv: float


@dataclass(frozen=True)
class SearchResult:
    method: str
    method_reason: str
    metric: str
    blend: str
    power: float
    eps: float
    members: tuple[str, ...]
    weights: dict
    cv: float
    fold_cv: list
    nested_cv: float | None
    nested_folds: list
    top: list
    by_size: list
    pool: tuple[str, ...]
    n_evaluated: int
    seconds: float
    params: dict = field(default_factory=dict)
    # per-class weights or the linear stacker: {"class_weights": {name: [per class]}} or
    # {"coef": {name: [per class]}, "intercept": [per class]}, plus "classes" (their order)
    combiner: dict = field(default_factory=dict)
    # (n_rows, n_classes): each fold's rows blended by the selection made without that fold (the
    # predictions the nested CV scores); None without nesting. Not part of subsets.json.
    nested_oof: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def gap(self) -> float | None:
        """How much better the selected CV is than the nested CV (positive = optimistic)."""
        if self.nested_cv is None or math.isnan(self.nested_cv):
            return None
        return get_metric(self.metric).sign() * (self.cv - self.nested_cv)

    def gap_warning(self) -> str | None:
        """A sentence when the gap is large: over 0.01, or over twice the std of the fold scores."""
        gap = self.gap
        if gap is None:
            return None
        std = float(np.std(self.fold_cv)) if self.fold_cv else 0.0
        if gap > 0.01 or (std > 0 and gap > 2 * std):
            return (f"selected CV {self.cv:.4f} is {gap:.4f} better than the nested CV "
                    f"{self.nested_cv:.4f} (fold std {std:.4f}): the selection overfits the OOF "
                    "rows; expect the nested CV on new data, or prefer a smaller subset")
        return None

    def to_json(self) -> dict:
        """The content of ``<root>/.stack/subsets.json`` (keys of :mod:`stacker.search.subsets`)."""
        return {
            "method": self.method, "method_reason": self.method_reason, "metric": self.metric,
            "blend": self.blend, "power": self.power, "eps": self.eps,
            "members": list(self.members), "weights": dict(self.weights),
            "cv": self.cv, "fold_cv": list(self.fold_cv), "nested_cv": self.nested_cv,
            "nested_folds": [{"fold": f.fold, "members": list(f.members), "weights": f.weights,
                              "cv": f.cv} for f in self.nested_folds],
            "top": [{"members": list(c.members), "size": c.size, "weights": c.weights, "cv": c.cv}
                    for c in self.top],
            "by_size": [{"size": s.size, "members": list(s.members), "cv": s.cv,
                         "nested_cv": s.nested_cv} for s in self.by_size],
            "pool": list(self.pool), "n_evaluated": self.n_evaluated, "seconds": self.seconds,
            "params": dict(self.params), **self.combiner,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def search_subsets(collection: Collection, *, pool: Sequence[str] | None = None, **options) -> SearchResult:
    """Search the experiments of ``collection`` (or only ``pool``, a list of names); see
    :func:`search_arrays` for the options."""
    names = list(collection.names if pool is None else pool)
    idx = collection.index(names)
    # the whole pool is passed as it is (a memory-mapped view after `stack collect`), not copied
    oof = collection.oof if idx == list(range(collection.n_models)) else collection.oof[:, idx]
    result = search_arrays(oof, collection.y, collection.fold,
                           names=names, fold_numbers=collection.fold_numbers, **options)
    if result.combiner:
        result = replace(result, combiner={**result.combiner, "classes": list(collection.classes)})
    return result


def search_arrays(oof: np.ndarray, y: np.ndarray, fold: np.ndarray, *, names: Sequence[str],
                  fold_numbers: Sequence[int] | None = None, metric: str = "lwlrap",
                  blend: str = "geo-mean", method: str = "auto", max_size: int | None = None,
                  top: int = 10, beam_width: int = 5, nested: bool = True, seed: int = 0,
                  n_jobs: int = 2, power: float = DEFAULT_POWER, eps: float = EPS,
                  prune: bool = True, patience: int = 2, ges_iterations: int = 50,
                  time_budget: float = 60.0, ges_init: int = 0, ges_bags: int = 8,
                  cmaes_evaluations: int = 600, device: str = "auto",
                  on_progress: ProgressCallback | None = None) -> SearchResult:
    """Choose the members of a blend on out-of-fold predictions.

    oof: array of shape (n_rows, n_models, n_classes); y: (n_rows, n_classes); fold: (n_rows,).
    names: one per model. max_size: the largest subset (default: every model). top: how many
    subsets to list. nested: repeat the selection with each fold held out (nested CV).
    n_jobs: threads of the compiled kernel (lwlrap/lrap on the CPU), or processes of the numpy
    scorer, for the exhaustive search and for large batches of candidates of greedy, beam and GES
    (their nested selections run in lockstep, sharing candidates and passes over the rows). time_budget: seconds
    ``auto`` allows the exhaustive search (estimated from measured scoring speed). seed: recorded;
    every method is deterministic (ties are broken by a fixed rule).
    ges_init: start GES (and the GES inside ges-bagged, cmaes, per-class) from the best
    ``ges_init`` single models. ges_bags: runs of ges-bagged. cmaes_evaluations: the budget of
    each CMA-ES run (one per target).
    device: auto, cpu or cuda (cuda:N): where lwlrap/lrap candidates are scored (the compiled
    kernel on the CPU, torch on CUDA; see :mod:`stacker.search.backends`); every device gives
    the same result.
    on_progress: ``on_progress(done, total)`` as the work advances.
    """
    started = time.perf_counter()
    scorer_metric = get_metric(metric)
    check_blend(blend, power=power, eps=eps)
    oof = np.asarray(oof)
    names = list(names)
    n_models = oof.shape[1] if oof.ndim == 3 else 0
    if oof.ndim != 3 or n_models != len(names) or n_models == 0:
        raise OptionError(f"need oof of shape (n_rows, n_models, n_classes) with one name per "
                          f"model; got shape {oof.shape} and {len(names)} name(s)")
    if method not in METHODS:
        raise OptionError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    # min and max propagate NaN (and the comparisons then fail): no pool-sized temporary
    if oof.size and not (np.min(oof) >= 0 and np.max(oof) <= 1):
        raise OptionError("oof must hold probabilities in [0, 1] (no NaN); check the experiments "
                          "with `stack collect`")
    check_defined(scorer_metric, y, fold, sorted(np.unique(fold)) if fold_numbers is None
                  else fold_numbers)
    max_size = n_models if max_size is None else int(max_size)
    if max_size < 1:
        raise OptionError(f"`max_size` must be at least 1, got {max_size}")
    max_size = min(max_size, n_models)
    for option, value in (("`top`", top), ("`beam_width`", beam_width), ("ges iterations", ges_iterations),
                          ("`ges_bags`", ges_bags), ("`cmaes_evaluations`", cmaes_evaluations)):
        if value < 1:
            raise OptionError(f"{option} must be at least 1, got {value}")
    if ges_init < 0:
        raise OptionError(f"`ges_init` must be 0 or more, got {ges_init}")
    fold = np.asarray(fold)
    fold_numbers = sorted(int(k) for k in np.unique(fold)) if fold_numbers is None else list(fold_numbers)
    nested = nested and len(fold_numbers) > 1
    params = dict(metric=scorer_metric.name, blend=blend, power=power, eps=eps, method=method,
                  max_size=max_size, top=top, beam_width=beam_width, nested=nested, seed=seed,
                  n_jobs=n_jobs, prune=prune, patience=patience, ges_iterations=ges_iterations,
                  time_budget=time_budget, ges_init=ges_init, device=device)
    if method in WEIGHTED_METHODS:
        from stacker.search.methods import weighted

        with threadpool_limits(1):          # one thread: the same sums, so the same result
            fields = weighted.search_weighted(
                oof, y, fold, fold_numbers, names, method=method, metric=scorer_metric,
                blend=blend, power=power, eps=eps, nested=nested, seed=seed, max_size=max_size,
                ges_iterations=ges_iterations, ges_init=ges_init, ges_bags=ges_bags,
                cmaes_evaluations=cmaes_evaluations, on_progress=on_progress)
        params.update(weighted.settings(method, ges_bags=ges_bags,
                                        cmaes_evaluations=cmaes_evaluations))
        return SearchResult(method=method, method_reason=f"asked for {method}",
                            metric=scorer_metric.name, power=power, eps=eps, pool=tuple(names),
                            seconds=time.perf_counter() - started, params=params, **fields)

    scorer = make_scorer(y, fold, fold_numbers, scorer_metric, blend=blend, power=power)
    max_terms = max(max_size, ges_iterations + ges_init) if method in ("ges", "auto") else max_size
    q, scale = quantize(oof, blend, max_terms=max_terms, power=power, eps=eps, rows=scorer.rows)
    scorer.scale = scale
    n_jobs = max(1, min(int(n_jobs), os.cpu_count() or 1))
    walker, backend = make_walker(q, scorer, device, n_jobs)
    ctx = sm.Context(q=q, scorer=scorer, walker=walker)
    del q          # ctx holds it; the worker pool may swap it for its memory-mapped twin
    targets = list(range(1 + len(fold_numbers))) if nested else [0]

    reason = ""
    if method == "auto":
        method, reason = _choose_method(ctx, max_size, beam_width, len(targets), n_jobs, time_budget)
    if method == "exhaustive":
        total = sm.n_subsets(n_models, max_size)
        if n_models > 62 or total > MAX_EXHAUSTIVE_SUBSETS:
            raise OptionError(f"exhaustive search over {n_models} models up to size {max_size} is "
                              f"{total:,} subsets (limit {MAX_EXHAUSTIVE_SUBSETS:,}); lower "
                              "`max_size` or use `method` greedy, beam or ges")
        runs = _exhaustive(ctx, max_size, targets, top, n_jobs, on_progress)
        n_evaluated = runs[0].n_evaluated
    else:
        settings = {"greedy": dict(max_size=max_size, prune=prune, patience=patience),
                    "beam": dict(max_size=max_size, width=beam_width, patience=patience),
                    "ges": dict(iterations=ges_iterations, max_size=max_size)}[method]
        if method == "ges" and ges_init:
            from stacker.search.methods.ges import sorted_init

            settings["init"] = sorted_init(sm.Evaluator(ctx), targets, ges_init, max_size=max_size)
        steps = ges_iterations if method == "ges" else max_size
        runs, n_evaluated = _run_selections(ctx, method, settings, targets, steps, n_jobs,
                                            on_progress)

    result = _report(oof, np.asarray(y), fold, fold_numbers, names, runs, scorer_metric, blend,
                     power, eps, top)
    params["method"] = method
    params["backend"] = backend
    return SearchResult(method=method, method_reason=reason or f"asked for {method}",
                        metric=scorer_metric.name, blend=blend, power=power, eps=eps,
                        pool=tuple(names), n_evaluated=n_evaluated,
                        seconds=time.perf_counter() - started, params=params, **result)


# ---------------------------------------------------------------- choosing a method


def _time_one_evaluation(ctx: sm.Context, repeats: int = 9) -> float:
    """Seconds for one candidate (an array addition and a score), measured over different
    members (median), times 1.3: processes running side by side share the memory bandwidth."""
    if ctx.walker is not None:
        # the compiled and torch paths score a batch at a time: time one batch per candidate
        batch = list(range(ctx.n_models)) * max(1, 32 // ctx.n_models)
        ctx.walker.extensions(ctx.q[0], batch[:4])            # warm up (compile, transfer)
        start = time.perf_counter()
        ctx.walker.extensions(ctx.q[0], batch)
        return 1.3 * (time.perf_counter() - start) / len(batch)
    S = np.empty(ctx.q.shape[1:], dtype=np.int64)
    times = []
    for r in range(repeats):
        other = ctx.q[r % ctx.n_models]
        start = time.perf_counter()
        np.add(ctx.q[0], other, out=S)
        ctx.scorer.evaluate(S, 2)
        times.append(time.perf_counter() - start)
    return 1.3 * float(np.median(times))


def _choose_method(ctx, max_size, beam_width, n_targets, n_jobs, budget) -> tuple[str, str]:
    n = ctx.n_models
    per = _time_one_evaluation(ctx)
    total = sm.n_subsets(n, max_size)
    exhaustive_s = total * per / n_jobs
    if n <= 62 and total <= MAX_EXHAUSTIVE_SUBSETS and exhaustive_s <= budget:
        return "exhaustive", (f"auto chose exhaustive: {total:,} subsets x {per * 1e3:.2f} ms / "
                              f"{n_jobs} process(es) ~ {exhaustive_s:.0f} s, within the "
                              f"{budget:.0f} s budget")
    depth = min(max_size, 15)
    # the nested selections run in lockstep: with a fast scorer they share most candidates
    shared = min(n_targets, 2) if isinstance(ctx.scorer, RankScorer) else n_targets
    beam_s = shared * beam_width * n * depth * per / n_jobs
    if beam_s <= budget:
        return "beam", (f"auto chose beam (width {beam_width}): exhaustive would score {total:,} "
                        f"subsets (~{exhaustive_s:.0f} s > {budget:.0f} s budget); beam ~ "
                        f"{beam_s:.0f} s")
    return "greedy", (f"auto chose greedy with backward pruning: exhaustive ~{exhaustive_s:.0f} s "
                      f"and beam ~{beam_s:.0f} s exceed the {budget:.0f} s budget")


# ---------------------------------------------------------------- running the methods


_WORKER: sm.Context | None = None


def _init_worker(q_path: str, scorer) -> None:
    global _WORKER
    # one BLAS thread per process: the processes already use every core
    threadpool_limits(1)
    _WORKER = sm.Context(q=np.load(q_path, mmap_mode="r"), scorer=scorer)


def _worker_exhaustive(chunk, max_size, nested):
    return sm.run_exhaustive_chunk(_WORKER, chunk, max_size, nested)


def _worker_extend(base, candidates, targets):
    return sm.score_extensions(_WORKER, base, candidates, targets)


class _Workers:
    """A process pool whose workers memory-map the quantized arrays (no copy per process)."""

    def __init__(self, ctx: sm.Context, n_jobs: int):
        self._dir = tempfile.TemporaryDirectory(prefix="stack-search-", ignore_cleanup_errors=True)
        path = str(Path(self._dir.name) / "q.npy")
        np.save(path, ctx.q)
        # the parent reads the same mapped file as the workers: its in-memory copy (8 bytes per
        # value of the pool) is freed before any worker is forked
        ctx.q = np.load(path, mmap_mode="r")
        self.pool = ProcessPoolExecutor(max_workers=n_jobs, initializer=_init_worker,
                                        initargs=(path, ctx.scorer))

    def __enter__(self):
        return self.pool

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._dir.cleanup()


def _exhaustive(ctx, max_size, targets, top, n_jobs, on_progress) -> dict:
    n = ctx.n_models
    chunks = sm.exhaustive_chunks(n, max_size)
    total = sm.n_subsets(n, max_size)
    done = 0
    parts = []
    if on_progress:
        on_progress(0, total)
    nested = len(targets) > 1
    if ctx.walker is not None:
        parts = _walk_exhaustive(ctx, max_size, nested, n_jobs, total, on_progress)
    elif n_jobs > 1 and len(chunks) > 1 and total * ctx.q[0].size >= PARALLEL_MIN_WORK:
        with _Workers(ctx, n_jobs) as pool:
            futures = [pool.submit(_worker_exhaustive, chunk, max_size, len(targets) > 1) for chunk in chunks]
            for future in as_completed(futures):
                parts.append(future.result())
                done += len(parts[-1][0])
                if on_progress:
                    on_progress(done, total)
    else:
        for chunk in chunks:
            parts.append(sm.run_exhaustive_chunk(ctx, chunk, max_size, len(targets) > 1))
            done += len(parts[-1][0])
            if on_progress:
                on_progress(done, total)
    masks = np.concatenate([p[0] for p in parts])
    scores = np.concatenate([p[1] for p in parts])
    return {t: sm.exhaustive_run(masks, scores, t, n, top if t == 0 else 1) for t in targets}


def _walk_exhaustive(ctx, max_size, nested, n_jobs, total, on_progress) -> list:
    """The exhaustive search on ctx.walker: chunks of about equal work, run on ``n_jobs``
    threads by the compiled kernel (it releases the GIL), in turn on a torch device."""
    n = ctx.n_models
    if getattr(ctx.walker, "name", "") != "numba":
        groups = sm.exhaustive_chunks(n, max_size, prefix_len=1)
        n_jobs = 1
    else:
        chunks = sm.exhaustive_chunks(n, max_size)
        sizes = [sm.chunk_size(chunk, n, max_size) for chunk in chunks]
        n_groups = min(len(chunks), 8 * n_jobs)
        groups, load = [[] for _ in range(n_groups)], [0] * n_groups
        for i in sorted(range(len(chunks)), key=lambda i: -sizes[i]):
            g = load.index(min(load))
            groups[g] += chunks[i]
            load[g] += sizes[i]
        groups = [g for g in groups if g]
    parts, done = [], 0
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(sm.run_exhaustive_chunk, ctx, group, max_size, nested)
                   for group in groups]
        for future in as_completed(futures):
            parts.append(future.result())
            done += len(parts[-1][0])
            if on_progress:
                on_progress(min(done, total), total)
    return parts


class _ParallelEvaluator(sm.Evaluator):
    """Splits a large batch of candidates between the worker processes."""

    def __init__(self, ctx, pool, n_jobs):
        super().__init__(ctx)
        self.pool, self.n_jobs = pool, n_jobs

    def extend(self, base, candidates, targets):
        if len(candidates) * self.ctx.q[0].size < PARALLEL_MIN_BATCH:
            return super().extend(base, candidates, targets)
        self.n_evaluated += len(candidates)
        parts = np.array_split(np.asarray(candidates), self.n_jobs)
        futures = [self.pool.submit(_worker_extend, base, part.tolist(), targets)
                   for part in parts if len(part)]
        return np.concatenate([f.result() for f in futures])


def _run_selections(ctx, method, settings, targets, steps, n_jobs, on_progress):
    """Run ``method`` for every target in lockstep. Returns ({target: Run}, candidates scored)."""
    done = [0]

    def tick(k):
        done[0] += k
        if on_progress:
            on_progress(min(done[0], steps), steps)

    if on_progress:
        on_progress(0, steps)
    # the compiled and torch paths split large batches themselves (threads, the device)
    parallel = (ctx.walker is None and n_jobs > 1
                and ctx.n_models * ctx.q[0].size >= PARALLEL_MIN_BATCH)
    if parallel:
        with _Workers(ctx, n_jobs) as pool:
            evaluator = _ParallelEvaluator(ctx, pool, n_jobs)
            runs = getattr(sm, method)(evaluator, targets, tick=tick, **settings)
    else:
        evaluator = sm.Evaluator(ctx)
        runs = getattr(sm, method)(evaluator, targets, tick=tick, **settings)
    if on_progress:
        on_progress(steps, steps)
    return runs, evaluator.n_evaluated


# ---------------------------------------------------------------- reporting (canonical scores)


def _report(oof, y, fold, fold_numbers, names, runs, metric, blend, power, eps, top) -> dict:
    transforms: dict = {}
    full_scores: dict = {}

    def blended(counts, rows=slice(None)):
        """:func:`stacker.blend.blend_arrays` of the members (integer counts as weights: blend() divides
        by their sum last, which keeps exact ties), the same operations in the same order, with
        each member's transform computed once for the whole report."""
        idx = [m for m, c in enumerate(counts) if c]
        for m in idx:
            if m not in transforms:
                transforms[m] = transform(oof[:, m], blend, power=power, eps=eps)
        t = np.stack([transforms[m][rows] for m in idx], axis=-2)      # (rows, members, classes)
        w = check_weights([counts[m] for m in idx], len(idx))
        return finalize(np.sum(t * w.reshape(1, -1, 1), axis=-2) / w.sum(), blend, power=power)

    def full_score(counts):
        if counts not in full_scores:
            full_scores[counts] = metric(y, blended(counts))
        return full_scores[counts]

    def describe(counts):
        idx = [m for m, c in enumerate(counts) if c]
        total = sum(counts)
        return tuple(names[m] for m in idx), {names[m]: counts[m] / total for m in idx}

    def nested_pooled(choice_of_fold) -> tuple[float, list, np.ndarray]:
        pooled = np.empty(y.shape, dtype=np.float64)
        held = []
        for i, k in enumerate(fold_numbers):
            rows = fold == k
            pooled[rows] = blended(choice_of_fold(i), rows)
            held.append(metric(y[rows], pooled[rows]))
        return metric(y, pooled), held, pooled

    main = runs[0]
    members, weights = describe(main.best)
    chosen = blended(main.best)
    cv = metric(y, chosen)
    fold_cv = fold_scores(y, chosen, fold, fold_numbers, metric)
    nested_cv, nested_folds, nested_oof = None, [], None
    if len(runs) > 1:
        nested_cv, held, nested_oof = nested_pooled(lambda i: runs[1 + i].best)
        for i, k in enumerate(fold_numbers):
            fm, fw = describe(runs[1 + i].best)
            nested_folds.append(NestedFold(fold=k, members=fm, weights=fw, cv=held[i]))
    top_list = []
    for counts, _ in main.top[:top]:
        tm, tw = describe(counts)
        top_list.append(Candidate(members=tm, weights=tw, cv=full_score(counts)))
    by_size = []
    for size, (counts, _) in main.by_size.items():
        nested_size = None
        if len(runs) > 1 and all(size in runs[1 + i].by_size for i in range(len(fold_numbers))):
            nested_size, _, _ = nested_pooled(lambda i: runs[1 + i].by_size[size][0])  # noqa: B023 (called at once)
        by_size.append(SizeScore(size=size, members=describe(counts)[0],
                                 cv=full_score(counts), nested_cv=nested_size))
    return dict(members=members, weights=weights, cv=cv, fold_cv=fold_cv, nested_cv=nested_cv,
                nested_folds=nested_folds, top=top_list, by_size=by_size, nested_oof=nested_oof)
