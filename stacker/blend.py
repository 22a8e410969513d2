"""Blends of probability arrays: geometric mean, arithmetic mean, row-rank mean and power mean.

Pure numpy, no I/O. Every blend is "a weighted mean of a per-model transform, then the inverse
transform" (:func:`transform` then :func:`finalize`), so the subset search can add the transformed
arrays of its members incrementally and still agree with :func:`blend`:

========== ============================== =====================================
blend       per-model transform t(p)       blend of members, with a = sum_m w_m t_m / sum_m w_m
========== ============================== =====================================
geo-mean    log(clip(p, eps, 1))           exp(a)
mean        p                              a
rank        row rank of p, 0 .. C-1        a / (C - 1), in [0, 1]
power       p ** k                         a ** (1 / k)
========== ============================== =====================================

with weights ``w`` (equal weights when none are given). The weighted sum is divided by the sum of
the weights *after* summing, so integer weights (GES counts) and integer ranks keep exact ties.

Epsilon. A probability of exactly 0 would make the geometric mean 0 (and its log -inf, NaN after
any arithmetic), so one model could veto a class. Probabilities are clipped to ``[EPS, 1]`` first:
``EPS = 1e-7`` is about float32's resolution near 1 (6e-8) and the clip of :func:`metrics.log_loss`,
so a zero counts as a very strong, finite vote against the class.

Rank blend. lwlrap (and lrap) rank the classes *within a row*, so only the order of a model's
scores inside each row matters to them. The rank blend therefore replaces every row by the ranks of
its classes (0 for the lowest, C - 1 for the highest; ties get their average rank), averages
those and divides by C - 1, so the blend lies in [0, 1]. This removes differences of calibration between models (one model's probabilities
all near 0.5, another's spread out) that would let one model dominate a mean.

Per-class weights. ``weights`` may also have shape (n_models, n_classes): column ``c`` weighs the
models for class ``c`` (each column normalised separately), what ``search-subsets --method
per-class`` chooses.

Linear stacker (``LINEAR``). :func:`logit_linear` is not a mean: per class ``c``,
``sigmoid(b_c + sum_m W[m, c] * logit(clip(p_m, eps, 1 - eps)))`` with non-negative ``W``
(``search-subsets --method linear``). :func:`combine` applies either kind.

The :class:`Blend` value type is one chosen blend (members, method, weights / per-class weights /
coefficients and intercepts, power, eps): what the search, ``stack blend``, the submission and the
report pass around. It computes its OOF and test predictions from a collection
(:meth:`Blend.oof`, :meth:`Blend.test`), round-trips through JSON (:meth:`Blend.to_json`,
:meth:`Blend.from_json`) and reads a search record of ``subsets.json`` (:meth:`Blend.from_record`),
the one place that parses weights out of such a record. :func:`oof_blend` / :func:`test_blend`
take the older loose keyword arguments (:meth:`Blend.from_options`).

Inputs are never modified; every function returns a new float64 array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from stacker.errors import LayoutError, OptionError, StackError

if TYPE_CHECKING:
    from stacker.layout import Collection

EPS = 1e-7
BLENDS = ("geo-mean", "mean", "rank", "power")
DEFAULT_POWER = 2.0


def check_blend(method: str, *, power: float = DEFAULT_POWER, eps: float = EPS) -> None:
    """Raise OptionError for an unknown blend, a power <= 0 or an eps outside (0, 1)."""
    if method not in BLENDS:
        raise OptionError(f"unknown blend '{method}'; choose one of: {', '.join(BLENDS)}")
    if method == "power" and not (np.isfinite(power) and power > 0):
        raise OptionError(f"`power` must be a positive number, got {power}")
    if not (0 < eps < 1):
        raise OptionError(f"`eps` must be between 0 and 1 (exclusive), got {eps}")


def row_ranks(probs: np.ndarray) -> np.ndarray:
    """Ranks of the classes within each row (last axis), 0 for the lowest to n_classes - 1;
    ties share their average rank (a multiple of 0.5, so sums of ranks are exact in float64).
    probs: array of shape (..., n_classes)."""
    from scipy.stats import rankdata  # on first use: scipy.stats takes ~0.5 s to import

    return rankdata(np.asarray(probs), method="average", axis=-1) - 1.0


def transform(probs: np.ndarray, method: str = "geo-mean", *, power: float = DEFAULT_POWER,
              eps: float = EPS, out: np.ndarray | None = None) -> np.ndarray:
    """The per-model transform whose weighted mean :func:`finalize` turns into the blend.

    probs: array of shape (..., n_classes) (the last axis must be the classes for ``rank``).
    Returns a new float64 array of the same shape, or ``out`` (float64, that shape) holding it.
    """
    check_blend(method, power=power, eps=eps)
    if out is not None and (out.dtype != np.float64 or out.shape != np.shape(probs)):
        raise ValueError(f"out must be float64 of shape {np.shape(probs)}")
    if method == "rank":
        ranks = row_ranks(np.asarray(probs, dtype=np.float64))
        if out is None:
            return ranks
        out[...] = ranks
        return out
    # one array, every operation in place in it (the same values as new arrays at each
    # operation; each new array of a large pool is memory the system must hand over afresh)
    if out is None:
        p = np.array(probs, dtype=np.float64, copy=True)
    else:
        p = out
        p[...] = probs
    if method == "geo-mean":
        np.clip(p, eps, 1.0, out=p)
        return np.log(p, out=p)
    if method == "mean":
        return p
    np.clip(p, 0.0, None, out=p)
    return np.power(p, power, out=p)


def finalize(mean: np.ndarray, method: str = "geo-mean", *, power: float = DEFAULT_POWER,
             in_place: bool = False) -> np.ndarray:
    """The blend from the weighted mean of :func:`transform` values, shape (..., n_classes)
    (a new array; with ``in_place``, ``mean`` itself, a float64 array, overwritten)."""
    if in_place:
        if method == "geo-mean":
            return np.exp(mean, out=mean)
        if method == "power":
            np.clip(mean, 0.0, None, out=mean)
            return np.power(mean, 1.0 / power, out=mean)
        if method == "rank":
            mean /= max(np.shape(mean)[-1] - 1, 1)
        return mean
    if method == "geo-mean":
        return np.exp(mean)
    if method == "power":
        return np.power(np.clip(mean, 0.0, None), 1.0 / power)
    if method == "rank":
        return mean / max(np.shape(mean)[-1] - 1, 1)
    return np.array(mean, dtype=np.float64, copy=True)


def check_weights(weights: Sequence[float] | None, n_models: int,
                  n_classes: int | None = None) -> np.ndarray:
    """Weights as an array of shape (n_models,) (ones for None), or (n_models, n_classes) for
    per-class weights when ``n_classes`` is given, not normalised. OptionError when a weight is
    negative or not finite, or they are all 0 (in any class column)."""
    if weights is None:
        return np.ones(n_models)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2 and n_classes is not None:
        if w.shape != (n_models, n_classes):
            raise OptionError(f"expected per-class weights of shape ({n_models}, {n_classes}) "
                              f"(models x classes), got {w.shape}")
        with np.errstate(over="ignore"):      # an overflowing sum is refused by _check_sum
            total = w.sum(axis=0)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(total <= 0):
            raise OptionError("per-class weights must be finite, non-negative and not all 0 in "
                              "any class")
        _check_sum(total)
        return w
    if w.shape != (n_models,):
        raise OptionError(f"expected {n_models} weights (one per model), got {w.size}")
    with np.errstate(over="ignore"):          # an overflowing sum is refused by _check_sum
        total = w.sum()
    if not np.all(np.isfinite(w)) or np.any(w < 0) or total <= 0:
        raise OptionError(f"weights must be finite, non-negative and not all 0; got {w.tolist()}")
    _check_sum(total)
    return w


def _check_sum(total) -> None:
    """OptionError when weights, each finite, sum to infinity (1e308 each): the blend would be
    NaN. Only their ratios matter, so the fix is to scale them down."""
    if not np.all(np.isfinite(total)):
        raise OptionError("weights sum to infinity (each is finite but their sum overflows); "
                          "scale them down: only their ratios matter (e.g. divide each by the "
                          "largest)")


def normalised_weights(weights: Sequence[float] | None, n_models: int) -> np.ndarray:
    """Weights of shape (n_models,) summing to 1; equal weights for None."""
    w = check_weights(weights, n_models)
    return w / w.sum()


def blend_arrays(probs: np.ndarray, method: str = "geo-mean", *, weights: Sequence[float] | None = None,
                 axis: int = -2, power: float = DEFAULT_POWER, eps: float = EPS) -> np.ndarray:
    """Blend the models of ``probs`` along ``axis``.

    probs: array whose ``axis`` indexes the models and whose last axis is the classes, e.g.
        (n_rows, n_models, n_classes) with the default ``axis=-2``, or (n_folds, n_test, n_classes)
        with ``axis=0`` to combine fold models.
    weights: shape (n_models,), any non-negative scale (normalised here); None for equal weights;
        or (n_models, n_classes): one weight vector per class (each class normalised separately).
    Returns a float64 array of ``probs``' shape without ``axis``.
    """
    probs = np.asarray(probs)
    if probs.ndim < 2:
        raise ValueError(f"probs must have a models axis and a classes axis, got shape {probs.shape}")
    axis = axis % probs.ndim
    if axis == probs.ndim - 1:
        raise ValueError("axis must index the models, not the classes (the last axis)")
    if probs.shape[axis] == 0:
        raise OptionError("nothing to blend: no model selected")
    w = check_weights(weights, probs.shape[axis], probs.shape[-1])
    t = transform(probs, method, power=power, eps=eps)
    shape = [1] * probs.ndim
    shape[axis] = -1
    if w.ndim == 2:
        shape[-1] = probs.shape[-1]
        mean = np.sum(t * w.reshape(shape), axis=axis) / w.sum(axis=0)
    else:
        mean = np.sum(t * w.reshape(shape), axis=axis) / w.sum()
    return finalize(mean, method, power=power)


LINEAR = "linear"
_LINEAR_NEEDS = ("the linear stacker needs its coefficients and intercepts (from "
                 "`stack search-subsets --method linear`)")


def logit(probs: np.ndarray, *, eps: float = EPS) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [eps, 1 - eps] (a new float64 array)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def check_linear(coef: np.ndarray, intercept: np.ndarray, n_models: int, n_classes: int) -> None:
    """OptionError unless ``coef`` has shape (n_models, n_classes) and is finite and non-negative
    and ``intercept`` has shape (n_classes,) and is finite."""
    if coef.shape != (n_models, n_classes) or intercept.shape != (n_classes,):
        raise OptionError(f"the linear stacker needs coefficients of shape ({n_models}, "
                          f"{n_classes}) and {n_classes} intercepts; got {coef.shape} and "
                          f"{intercept.shape}")
    if not (np.all(np.isfinite(coef)) and np.all(coef >= 0) and np.all(np.isfinite(intercept))):
        raise OptionError("linear stacker coefficients must be finite and non-negative")


def logit_linear(probs: np.ndarray, coef: np.ndarray, intercept: Sequence[float], *,
                 axis: int = -2, eps: float = EPS) -> np.ndarray:
    """The linear stacker: ``sigmoid(intercept[c] + sum_m coef[m, c] * logit(p_m[..., c]))``.

    probs: models along ``axis``, classes last, e.g. (n_rows, n_models, n_classes).
    coef: (n_models, n_classes), non-negative; intercept: (n_classes,).
    Returns a float64 array of ``probs``' shape without ``axis``.
    """
    probs = np.asarray(probs)
    axis = axis % probs.ndim
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64)
    n_models, n_classes = probs.shape[axis], probs.shape[-1]
    check_linear(coef, intercept, n_models, n_classes)
    shape = [1] * probs.ndim
    shape[axis], shape[-1] = n_models, n_classes
    z = intercept + np.sum(logit(probs, eps=eps) * coef.reshape(shape), axis=axis)
    return 0.5 * (1.0 + np.tanh(0.5 * z))          # the sigmoid, without overflow


def combine(probs: np.ndarray, method: str = "geo-mean", *, weights=None,
            intercept: Sequence[float] | None = None, axis: int = -2,
            power: float = DEFAULT_POWER, eps: float = EPS) -> np.ndarray:
    """:func:`blend_arrays`, or :func:`logit_linear` (``weights`` as coefficients) for
    ``LINEAR``."""
    if method == LINEAR:
        if weights is None or intercept is None:
            raise OptionError(_LINEAR_NEEDS)
        return logit_linear(probs, weights, intercept, axis=axis, eps=eps)
    return blend_arrays(probs, method, weights=weights, axis=axis, power=power, eps=eps)


def geo_mean(probs: np.ndarray, *, axis: int = -2, weights: Sequence[float] | None = None,
             eps: float = EPS) -> np.ndarray:
    """Weighted geometric mean along ``axis`` of probabilities clipped to [eps, 1]."""
    return blend_arrays(probs, "geo-mean", weights=weights, axis=axis, eps=eps)


def arithmetic_mean(probs: np.ndarray, *, axis: int = -2,
                    weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted arithmetic mean along ``axis``."""
    return blend_arrays(probs, "mean", weights=weights, axis=axis)


def rank_mean(probs: np.ndarray, *, axis: int = -2,
              weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean along ``axis`` of the within-row class ranks (scaled to [0, 1])."""
    return blend_arrays(probs, "rank", weights=weights, axis=axis)


def power_mean(probs: np.ndarray, *, power: float = DEFAULT_POWER, axis: int = -2,
               weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted power mean ``(sum w p**k) ** (1/k)`` along ``axis``."""
    return blend_arrays(probs, "power", weights=weights, axis=axis, power=power)


def _tuples(array: np.ndarray | None):
    """A float64 array as (nested) tuples of Python floats, or None."""
    if array is None:
        return None
    return tuple(float(v) for v in array) if array.ndim == 1 else tuple(_tuples(r) for r in array)


def _check_parts(members: tuple, method: str, *, weights, class_weights, coef, intercept,
                 power: float, eps: float) -> None:
    """OptionError unless the parts of a :class:`Blend` (float64 arrays or None) make one."""
    k = len(members)
    if method == LINEAR:
        if coef is None or intercept is None:
            raise OptionError(_LINEAR_NEEDS)
        if weights is not None or class_weights is not None:
            raise OptionError("the linear stacker has coefficients, not weights; give `coef` and "
                              "`intercept` only")
        n_classes = intercept.size if intercept.ndim == 1 else (coef.shape[-1] if coef.ndim else 0)
        check_linear(coef, intercept, k, n_classes)
        return
    check_blend(method, power=power, eps=eps)
    if coef is not None or intercept is not None:
        raise OptionError(f"only the linear stacker has coefficients and intercepts, not the "
                          f"{method} blend")
    if weights is not None and class_weights is not None:
        raise OptionError("give `weights` (one per member) or `class_weights` (members x classes), "
                          "not both")
    if k == 0:
        raise OptionError("nothing to blend: no model selected")
    if class_weights is None:
        check_weights(weights, k)
    elif class_weights.ndim != 2:
        raise OptionError(f"expected per-class weights of shape ({k}, n_classes) (models x "
                          f"classes), got {class_weights.shape}")
    else:
        check_weights(class_weights, k, class_weights.shape[1])



@dataclass(frozen=True)
class Blend:
    """A blend of experiments: which ones, how they combine, with what weights.

    members: experiment names, in the order of the weights. method: one of :data:`BLENDS`, or
    :data:`LINEAR` for the logit stacker. At most one of ``weights`` (one per member, any
    non-negative scale; None for equal weights) and ``class_weights`` (members x classes, each
    class's column normalised separately); the linear stacker has ``coef`` (members x classes,
    non-negative) and ``intercept`` (one per class) instead. ``power``: the exponent of the power
    mean; ``eps``: the clip of probabilities for logs (module docstring). ``class_bias`` (one
    per class, or None): a shift of each class's logit after the members are combined,
    ``sigmoid(logit(blend) + class_bias)`` (fitted inside the nesting by
    :mod:`stacker.search.class_bias`).

    Values are stored as tuples of floats, so a Blend is hashable and compares by value; build it
    from arrays or lists alike. OptionError (the messages of :func:`check_blend`,
    :func:`check_weights`, :func:`check_linear`) when the parts do not make a blend.
    """

    members: tuple[str, ...]
    method: str = "geo-mean"
    weights: tuple[float, ...] | None = None
    class_weights: tuple[tuple[float, ...], ...] | None = None
    coef: tuple[tuple[float, ...], ...] | None = None
    intercept: tuple[float, ...] | None = None
    power: float = DEFAULT_POWER
    eps: float = EPS
    class_bias: tuple[float, ...] | None = None

    def __post_init__(self):
        if isinstance(self.members, str):
            raise OptionError(f"`members` must be a list of experiment names, got '{self.members}'")
        members = tuple(self.members)
        arrays = {key: None if getattr(self, key) is None
                  else np.asarray(getattr(self, key), dtype=np.float64)
                  for key in ("weights", "class_weights", "coef", "intercept")}
        _check_parts(members, self.method, power=float(self.power), eps=float(self.eps), **arrays)
        set_ = object.__setattr__           # frozen: normalise once, here
        set_(self, "members", members)
        for key, array in arrays.items():
            set_(self, key, _tuples(array))
        set_(self, "power", float(self.power))
        set_(self, "eps", float(self.eps))
        if self.class_bias is not None:
            bias = np.asarray(self.class_bias, dtype=np.float64)
            if bias.ndim != 1 or not np.all(np.isfinite(bias)):
                raise OptionError("`class_bias` must be one finite number per class")
            set_(self, "class_bias", _tuples(bias))

    @classmethod
    def from_options(cls, members: Sequence[str], *, blend: str = "geo-mean", weights=None,
                     intercept: Sequence[float] | None = None, power: float = DEFAULT_POWER,
                     eps: float = EPS) -> "Blend":
        """The Blend of the older keyword arguments (:func:`oof_blend`, :func:`test_blend`):
        ``weights`` of shape (k,), (k, n_classes) for per-class weights, or the linear
        stacker's coefficients with ``blend="linear"`` and ``intercept``; an ``intercept`` of
        another blend is ignored, as :func:`combine` ignores it."""
        if blend == LINEAR:
            return cls(tuple(members), LINEAR, coef=weights, intercept=intercept, power=power,
                       eps=eps)
        per_class = weights is not None and np.ndim(weights) == 2
        return cls(tuple(members), blend, weights=None if per_class else weights,
                   class_weights=weights if per_class else None, power=power, eps=eps)

    @property
    def matrix(self) -> np.ndarray | None:
        """The weights :func:`combine` takes: (k,) weights, (k, n_classes) per-class weights or
        coefficients, or None for equal weights (a new float64 array)."""
        values = self.coef if self.coef is not None else (
            self.class_weights if self.class_weights is not None else self.weights)
        return None if values is None else np.array(values, dtype=np.float64)

    @property
    def per_class(self) -> bool:
        """Whether the weights differ by class (per-class weights or the linear stacker)."""
        return self.class_weights is not None or self.coef is not None

    def summary_weights(self) -> dict[str, float]:
        """One weight per member summing to 1, for display: the weights, or the mean over
        classes of per-class weights or coefficients."""
        w = np.ones(len(self.members)) if self.matrix is None else self.matrix
        summary = w if w.ndim == 1 else w.mean(axis=1)
        return {m: float(x) for m, x in zip(self.members, summary / summary.sum())}

    def combine(self, probs: np.ndarray, *, axis: int = -2) -> np.ndarray:
        """This blend of ``probs``, whose ``axis`` indexes the members (in order) and whose last
        axis is the classes, e.g. (n_rows, k, n_classes): a float64 array without ``axis``."""
        out = combine(probs, self.method, weights=self.matrix, intercept=self.intercept,
                      axis=axis, power=self.power, eps=self.eps)
        if self.class_bias is None:
            return out
        if len(self.class_bias) != out.shape[-1]:
            raise OptionError(f"the blend's class bias has {len(self.class_bias)} values for "
                              f"{out.shape[-1]} classes")
        # sigmoid(logit(p) + b): the per-class shift fitted inside the nesting (search.class_bias)
        z = logit(out, eps=self.eps) + np.asarray(self.class_bias)
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def oof(self, collection: Collection) -> np.ndarray:
        """The blend of the members' OOF predictions, shape (n_rows, n_classes), folds.csv
        order. LayoutError names a member the collection lacks."""
        return self.combine(collection.oof[:, collection.index(self.members)])

    def test(self, collection: Collection) -> np.ndarray:
        """Test predictions, shape (n_test, n_classes) in ``collection.test_ids`` order: per
        member the geometric mean of its fold models, then the members blended (as :meth:`oof`)."""
        idx = collection.index(self.members)
        per_member = geo_mean(collection.test[:, :, idx], axis=0, eps=self.eps)  # (n_test, k, C)
        return self.combine(per_member, axis=1)

    def to_json(self) -> dict:
        """A JSON-ready record: members, method, power, eps and the weights that are set
        (``weights``, ``class_weights``, or ``coef`` and ``intercept``), lists in members order.
        :meth:`from_json` reads it back to an equal Blend."""
        record: dict = {"members": list(self.members), "method": self.method}
        for key in ("weights", "intercept", "class_bias"):
            if getattr(self, key) is not None:
                record[key] = list(getattr(self, key))
        for key in ("class_weights", "coef"):
            if getattr(self, key) is not None:
                record[key] = [list(row) for row in getattr(self, key)]
        record.update(power=self.power, eps=self.eps)
        return record

    @classmethod
    def from_json(cls, record: dict, *, path=None) -> "Blend":
        """The Blend of a :meth:`to_json` record; LayoutError (naming ``path``) when it is not one."""
        if not isinstance(record, dict) or not isinstance(record.get("members"), list):
            raise LayoutError("is not a blend record (no list of members)", path=path)
        keys = ("weights", "class_weights", "coef", "intercept")
        try:
            return cls(tuple(record["members"]), record.get("method", "geo-mean"),
                       **{k: record.get(k) for k in keys},
                       power=record.get("power", DEFAULT_POWER), eps=record.get("eps", EPS),
                       class_bias=record.get("class_bias"))
        except (TypeError, ValueError) as error:
            if isinstance(error, StackError):
                raise
            raise LayoutError(f"is not a blend record ({error})", path=path) from None

    @classmethod
    def from_record(cls, record: dict, classes: Sequence[str], *, path=None) -> "Blend":
        """The blend of a search record (``<root>/.stack/subsets.json``, ``SearchResult.to_json()``,
        the keys of :mod:`stacker.search.subsets`): its members, ``blend`` (geo-mean when
        absent), ``power``, ``eps``, and ``weights`` ({name: weight}; equal weights when absent or
        empty), ``class_weights`` or ``coef`` + ``intercept`` ({name: [one per class]}, for the
        record's ``classes``), and ``class_bias`` (one per class) when present. ``path`` (the record's file) names it in errors.

        LayoutError when per-class lists are for other classes than ``classes`` or miss a member;
        OptionError when the parts do not make a blend.
        """
        try:
            return cls._from_record(record, classes, path=path)
        except OptionError as error:
            if path is None:
                raise
            raise OptionError(f"{path}: {error}; run `stack search-subsets` again or fix the "
                              "file") from None

    @classmethod
    def _from_record(cls, record: dict, classes: Sequence[str], *, path=None) -> "Blend":
        members = tuple(record["members"])
        options = {key: float(record[key]) for key in ("power", "eps")
                   if record.get(key) is not None}
        if record.get("class_bias") is not None:
            options["class_bias"] = [float(b) for b in record["class_bias"]]
        method = record.get("blend") or "geo-mean"
        table = record.get("coef") or record.get("class_weights")
        if table is None:
            weights = record.get("weights")
            if not (isinstance(weights, dict) and weights):
                return cls(members, method, **options)
            return cls(members, method, weights=[float(weights.get(m, 0.0)) for m in members],
                       **options)
        matrix = _per_class_table(record, table, members, classes, path)
        if "coef" in record:
            return cls(members, method, coef=matrix,
                       intercept=[float(b) for b in record["intercept"]], **options)
        return cls(members, method, class_weights=matrix, **options)


def _per_class_table(record: dict, table: dict, members: Sequence[str], classes: Sequence[str],
                     path) -> np.ndarray:
    """The (k, n_classes) matrix of a record's per-class lists (``class_weights`` or ``coef``)."""
    where = "the per-class weights" if "class_weights" in record else "the linear stacker"
    if list(record.get("classes") or []) != list(classes):
        raise LayoutError(f"{where} of the last search are for other classes than folds.csv's; "
                          "run `stack search-subsets` again", path=path)
    missing = [m for m in members if m not in table]
    if missing:
        raise LayoutError(f"{where} of the last search have no entry for '{missing[0]}'; use "
                          "--subset best or run `stack search-subsets` again", path=path)
    wrong = [len(table[m]) for m in members if len(table[m]) != len(classes)]
    if wrong:
        raise LayoutError(f"{where} of the last search hold {wrong[0]} values per member, "
                          f"not one per class ({len(classes)}); run `stack search-subsets` again",
                          path=path)
    return np.array([[float(v) for v in table[m]] for m in members])


def oof_blend(collection: Collection, members: Sequence[str], *, blend: str = "geo-mean",
              weights=None, intercept: Sequence[float] | None = None,
              power: float = DEFAULT_POWER, eps: float = EPS) -> np.ndarray:
    """:meth:`Blend.oof` of the blend of these keyword arguments (:meth:`Blend.from_options`):
    shape (n_rows, n_classes), folds.csv order."""
    return Blend.from_options(members, blend=blend, weights=weights, intercept=intercept,
                              power=power, eps=eps).oof(collection)


def test_blend(collection: Collection, members: Sequence[str], *, blend: str = "geo-mean",
               weights=None, intercept: Sequence[float] | None = None,
               power: float = DEFAULT_POWER, eps: float = EPS) -> np.ndarray:
    """:meth:`Blend.test` of the blend of these keyword arguments (:meth:`Blend.from_options`):
    shape (n_test, n_classes) in ``collection.test_ids`` order."""
    return Blend.from_options(members, blend=blend, weights=weights, intercept=intercept,
                              power=power, eps=eps).test(collection)


test_blend.__test__ = False  # a library function named test_*: pytest must not collect it
