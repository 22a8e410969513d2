"""What a subset search returns: :class:`SearchResult` and the one builder of it.

A selector (:mod:`stacker.search.methods`) returns a :class:`Selection`: one choice per target
(target 0: every OOF row; target ``1 + i``: every row but fold ``i``'s) and the :class:`Blends` that
turn a choice into predictions. :func:`build_result` scores it the one canonical way: every number
reported (cv, fold_cv, top, by_size, nested) is recomputed from scratch with the blend and the
metric, exactly what ``stack blend`` prints; the fast scores of the search only steered it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stacker.metrics import fold_scores, get_metric
from stacker.search.spare import SpareMemory

if TYPE_CHECKING:
    from stacker.search.problem import Problem


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


# ---------------------------------------------------------------- what a selector returns


class Blends(Protocol):
    """How the choices of one selector predict rows and read in a result."""

    def predict(self, choice, rows=slice(None)) -> np.ndarray:
        """The blend of ``choice`` on ``rows`` of the OOF pool: (n_rows, n_classes)."""

    def describe(self, choice) -> tuple[tuple[str, ...], dict]:
        """(member names, {name: weight}, weights summing to 1)."""

    def combiner(self, choice) -> dict:
        """The entries beyond one weight per member (per-class weights, coefficients), or {}."""


@dataclass(frozen=True)
class Selection:
    """A selector's fit.

    choices: {target: choice}: member counts (subset methods, GES) or a weighted fit.
    n_evaluated: candidates scored. method: the method that ran (auto: the one it chose);
    reason: why, when not asked for. params: what the method adds to the recorded params (its
    backend, or its fixed settings). ranked: {target: Run} with each target's ``top`` list and
    ``by_size`` ({size: (choice, score)}), or None: the fit is the one candidate. blend: how it
    blends when not the config's (linear).
    """

    choices: dict
    blends: Blends
    n_evaluated: int
    method: str
    reason: str = ""
    params: dict = field(default_factory=dict)
    ranked: dict | None = None
    blend: str | None = None
    # memory the search touched and is done with, where the result's buffers are made; None:
    # fresh memory
    spare: SpareMemory | None = field(default=None, repr=False, compare=False)


# ---------------------------------------------------------------- the canonical scores


@dataclass(frozen=True)
class Known:
    """A choice already predicted on every row: its predictions, their metric and, when known,
    each fold's (fold_numbers order)."""

    choice: object
    prediction: np.ndarray
    score: float
    fold_scores: list | None = None

    def with_fold_scores(self, fold_scores: list) -> Known:
        return Known(self.choice, self.prediction, self.score, list(fold_scores))


class _Scores:
    """The metric of blended choices on the problem's rows; whole-pool scores are cached."""

    def __init__(self, problem: Problem, blends: Blends, spare=None):
        self.problem, self.blends = problem, blends
        # where the prediction buffers are made: the search's spare memory, or fresh memory
        self._spare = SpareMemory() if spare is None else spare
        self._full: dict = {}
        self._fold_rows = None          # each fold's row indices (fold_numbers order)
        self._local = threading.local()  # each thread's prediction buffers

    def full(self, choice) -> float:
        """The metric on every row (choice: hashable counts)."""
        if choice not in self._full:
            self._full[choice] = self._score(choice)
        return self._full[choice]

    def _score(self, choice) -> float:
        """The metric of ``choice`` on every row."""
        return self.problem.metric(self.problem.y, self._predict_full(choice))

    def _predict_full(self, choice) -> np.ndarray:
        """``choice`` blended on every row; blends that take ``out`` predict into this thread's
        buffer (scored at once, then reused: no new memory for each choice)."""
        if not getattr(self.blends, "predicts_into", False):
            return self.blends.predict(choice)
        return self.blends.predict(choice, out=self._buffer("full", len(self.problem.y)))

    def prefetch(self, choices: list) -> None:
        """:meth:`full` of ``choices`` on two threads (numpy releases the GIL in the blends and
        the metric; each score is computed exactly as :meth:`full` computes it alone)."""
        todo = [c for c in dict.fromkeys(choices) if c not in self._full]
        if len(todo) < 4 or not hasattr(self.blends, "warm"):
            return                            # (blends without ``warm`` are scored one by one)
        self.blends.warm(todo)                # shared caches filled before the threads start
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2) as pool:
            self._full.update(zip(todo, pool.map(self._score, todo)))

    def pooled(self, fold_choices: list, out: np.ndarray | None = None, held: bool = True,
               known: Known | None = None) -> tuple[float, list, np.ndarray]:
        """Each fold's rows blended by its own choice (fold_choices[i] for fold_numbers[i]):
        (the metric of the pooled predictions, each fold's score (an empty list without
        ``held``: the folds' metrics not computed), the pooled (n_rows, n_classes), written into
        ``out`` when given).

        known: a choice already predicted on every row (blends whose predictions are row by
        row, ``row_wise``): the folds that made that choice take its rows (and its fold scores,
        when it has them), the same numbers; when every fold made it, the pooled predictions
        are that prediction itself (not copied) and their metric its score."""
        p = self.problem
        if known is not None and not getattr(self.blends, "row_wise", False):
            known = None
        if known is not None and all(choice == known.choice for choice in fold_choices):
            if out is not None:
                np.copyto(out, known.prediction)
            pooled = known.prediction if out is None else out
            if held and known.fold_scores is None:
                known = known.with_fold_scores(self._fold_metrics(known.prediction))
            return known.score, (list(known.fold_scores) if held else []), pooled
        pooled = np.empty(p.y.shape, dtype=np.float64) if out is None else out
        scores = []
        into = getattr(self.blends, "predicts_into", False)
        for i, (choice, rows) in enumerate(zip(fold_choices, self.fold_rows())):
            if known is not None and choice == known.choice:
                pooled[rows] = known.prediction[rows]
                if held:
                    scores.append(known.fold_scores[i] if known.fold_scores is not None
                                  else p.metric(p.y[rows], pooled[rows]))
                continue
            # each fold's predictions into this thread's buffer of that many rows (reused: no
            # fresh memory for every fold of every choice)
            predicted = (self.blends.predict(choice, rows, out=self._buffer("fold", len(rows)))
                         if into else self.blends.predict(choice, rows))
            pooled[rows] = predicted
            if held:
                scores.append(p.metric(p.y[rows], predicted))
        return p.metric(p.y, pooled), scores, pooled

    def _fold_metrics(self, prediction: np.ndarray) -> list:
        """The metric of ``prediction`` on each fold's rows (fold_numbers order)."""
        p = self.problem
        return [p.metric(p.y[rows], prediction[rows]) for rows in self.fold_rows()]

    def sizes(self, items: list, known: Known | None = None) -> list:
        """For each (choice, fold_choices or None): (the choice's score on every row, the
        nested score of the fold choices pooled, or None), on two threads. The choice is
        predicted once, into the thread's buffer (``known``'s choice: its prediction and score),
        and its rows serve the folds that made the same choice (:meth:`pooled`'s ``known``);
        the whole-row scores are cached as :meth:`full`'s."""
        if not items:
            return []
        n_rows = len(self.problem.y)
        row_wise = getattr(self.blends, "row_wise", False)
        if not row_wise:
            known = None

        def score(item):
            choice, fold_choices = item
            p = self.problem
            if known is not None and choice == known.choice:
                prediction, full = known.prediction, known.score
            else:
                prediction = self._predict_full(choice)
                full = p.metric(p.y, prediction)
            if fold_choices is None:
                return full, None
            if row_wise and all(c == choice for c in fold_choices):
                return full, full           # (pooled, they are the prediction itself)
            nested = self.pooled(fold_choices, out=self._buffer("pooled", n_rows), held=False,
                                 known=Known(choice, prediction, full))[0]
            return full, nested

        if len(items) < 2 or not hasattr(self.blends, "warm"):
            results = [score(item) for item in items]
        else:
            self.blends.warm([c for choice, folds in items for c in [choice, *(folds or [])]])
            self.fold_rows()                    # (computed before the threads share them)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=2) as pool:
                results = list(pool.map(score, items))
        for (choice, _), (full, _) in zip(items, results):
            self._full.setdefault(choice, full)
        return results

    def fold_rows(self) -> list:
        """Each fold's row indices, in fold_numbers order."""
        if self._fold_rows is None:
            p = self.problem
            self._fold_rows = [np.flatnonzero(p.fold == k) for k in p.fold_numbers]
        return self._fold_rows

    def _buffer(self, use: str, n_rows: int) -> np.ndarray:
        """This thread's float64 (n_rows, n_classes) buffer for ``use`` (``"full"``: a choice
        scored on every row; ``"pooled"``: pooled predictions; ``"fold"``: one fold's), made on
        first use and reused after."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        key = (use, n_rows)
        if key not in buffers:
            buffers[key] = self._spare.empty((n_rows, self.problem.y.shape[1]), np.float64)
        return buffers[key]


def _ranked_choices(runs: dict | None, top: int) -> list:
    """Every choice :func:`_ranked` scores."""
    if runs is None:
        return []
    main = runs[0]
    return ([counts for counts, _ in main.top[:top]]
            + [counts for counts, _ in main.by_size.values()]
            + [counts for run in runs.values() for counts, _ in run.by_size.values()])


def _ranked(scores: _Scores, runs: dict, top: int, known: Known | None = None
            ) -> tuple[list, list]:
    """The top list and the best of each size of target 0, with the nested CV of picking the
    best of a size when every fold's selection has one."""
    describe = scores.blends.describe
    n_folds = len(scores.problem.fold_numbers)
    main = runs[0]
    # each size's best with the nested CV of picking the best of that size (when every fold's
    # selection has one), two at a time: the best predicted once, its rows reused for the
    # folds that chose it too
    nested_sets = {size: [runs[1 + i].by_size[size][0] for i in range(n_folds)]
                   for size in main.by_size
                   if len(runs) > 1 and all(size in runs[1 + i].by_size for i in range(n_folds))}
    sizes = list(main.by_size)
    scored = scores.sizes([(main.by_size[size][0], nested_sets.get(size)) for size in sizes],
                          known=known)
    nested = {size: result[1] for size, result in zip(sizes, scored)}
    scores.prefetch([counts for counts, _ in main.top[:top]])
    top_list = []
    for counts, _ in main.top[:top]:
        members, weights = describe(counts)
        top_list.append(Candidate(members=members, weights=weights, cv=scores.full(counts)))
    by_size = [SizeScore(size=size, members=describe(counts)[0], cv=scores.full(counts),
                         nested_cv=nested.get(size))
               for size, (counts, _) in main.by_size.items()]
    return top_list, by_size


def build_result(problem: Problem, selection: Selection, *, started: float) -> SearchResult:
    """The SearchResult of ``selection`` (``started``: its time.perf_counter() at the start)."""
    p, config, blends = problem, problem.config, selection.blends
    main = selection.choices[0]
    if hasattr(blends, "warm"):         # every member's transform at once, on two threads
        blends.warm(list(selection.choices.values()) + _ranked_choices(selection.ranked,
                                                                       config.top))
    members, weights = blends.describe(main)
    chosen = blends.predict(main)
    cv = p.metric(p.y, chosen)
    fold_cv = fold_scores(p.y, chosen, p.fold, p.fold_numbers, p.metric)
    nested_cv, nested_folds, nested_oof = None, [], None
    if len(selection.choices) > 1:
        # (the folds that chose the selection itself: its rows and fold scores)
        nested_cv, held, nested_oof = _Scores(p, blends, selection.spare).pooled(
            [selection.choices[1 + i] for i in range(len(p.fold_numbers))],
            known=Known(main, chosen, cv, fold_cv))
        for i, k in enumerate(p.fold_numbers):
            fm, fw = blends.describe(selection.choices[1 + i])
            nested_folds.append(NestedFold(fold=k, members=fm, weights=fw, cv=held[i]))
    if selection.ranked is None:
        top = [Candidate(members=members, weights=weights, cv=cv)]
        by_size = [SizeScore(size=len(members), members=members, cv=cv, nested_cv=None)]
    else:
        # (the selection itself is usually the best of its size: its prediction serves there)
        top, by_size = _ranked(_Scores(p, blends, selection.spare), selection.ranked, config.top,
                               known=Known(main, chosen, cv))
    params = config.params(max_size=p.max_size, nested=p.nested)
    params["method"] = selection.method
    params.update(selection.params)
    return SearchResult(
        method=selection.method, method_reason=selection.reason or f"asked for {selection.method}",
        metric=p.metric.name, blend=selection.blend or config.blend, power=config.power,
        eps=config.eps, members=members, weights=weights, cv=cv, fold_cv=fold_cv,
        nested_cv=nested_cv, nested_folds=nested_folds, top=top, by_size=by_size,
        pool=tuple(p.names), n_evaluated=selection.n_evaluated,
        seconds=time.perf_counter() - started, params=params, combiner=blends.combiner(main),
        nested_oof=nested_oof)
