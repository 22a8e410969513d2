"""One search configuration: what :func:`stacker.search.engine.search_arrays` is asked to do.

:class:`SearchConfig` holds the settings every method shares (metric, blend, nesting, sizes,
seed, workers, device) and one part per method family: :class:`WalkConfig` (greedy and beam),
:class:`GesConfig` (GES, its variants, and the GES start of cmaes and per-class) and
:class:`CmaesConfig`. It checks itself when made. :meth:`SearchConfig.from_options` builds it from
the keyword names of ``search_subsets(collection, **options)`` (``ges_iterations``, ``beam_width``,
...), and :meth:`SearchConfig.params` gives the ``params`` a result records (``subsets.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from stacker.blend import DEFAULT_POWER, EPS, check_blend
from stacker.errors import OptionError
from stacker.metrics import Metric, get_metric

METHODS = ("auto", "exhaustive", "greedy", "beam", "ges", "ges-bagged", "cmaes", "per-class",
           "linear")
# the methods that score only extensions of bases and whole sets: on the CPU their pool is laid
# out row-major (stacker.search.row_major; the exhaustive walk, and auto, need it model-major)
ROW_MAJOR_METHODS = ("greedy", "beam", "ges")


@dataclass(frozen=True)
class WalkConfig:
    """greedy and beam: stop ``patience`` steps after the last new best; greedy's backward
    pruning; the beam's width. (``auto`` sizes its beam estimate with ``beam_width`` too.)"""

    patience: int = 2
    prune: bool = True
    beam_width: int = 5


@dataclass(frozen=True)
class GesConfig:
    """GES: ``iterations`` steps, started from the ``init`` best single models (0: empty);
    ``bags`` runs of ges-bagged. cmaes and per-class start from this GES."""

    iterations: int = 50
    init: int = 0
    bags: int = 8


@dataclass(frozen=True)
class CmaesConfig:
    """The budget of each CMA-ES run (one per target)."""

    evaluations: int = 600


# search_subsets' keyword names of the method parts -> (part, field)
_PART_OPTIONS = {"patience": ("walk", "patience"), "prune": ("walk", "prune"),
                 "beam_width": ("walk", "beam_width"), "ges_iterations": ("ges", "iterations"),
                 "ges_init": ("ges", "init"), "ges_bags": ("ges", "bags"),
                 "cmaes_evaluations": ("cmaes", "evaluations")}
_PARTS = {"walk": WalkConfig, "ges": GesConfig, "cmaes": CmaesConfig}


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of a subset search.

    metric: a name or a :class:`stacker.metrics.Metric` (kept as the Metric). method: one of
    :data:`METHODS`. max_size: the largest subset (None: every model). top: how many subsets to
    list. nested: repeat the selection with each fold held out (nested CV). seed: of ges-bagged
    and cmaes (every method is deterministic for a seed). n_jobs: threads of the compiled kernel
    or processes of the numpy scorer. time_budget: seconds ``auto`` allows the exhaustive search.
    device: auto, cpu or cuda (cuda:N), checked where candidates are scored
    (:mod:`stacker.search.backends`).
    """

    metric: str | Metric = "lwlrap"
    blend: str = "geo-mean"
    power: float = DEFAULT_POWER
    eps: float = EPS
    method: str = "auto"
    max_size: int | None = None
    top: int = 10
    nested: bool = True
    seed: int = 0
    n_jobs: int = 2
    time_budget: float = 60.0
    device: str = "auto"
    walk: WalkConfig = field(default_factory=WalkConfig)
    ges: GesConfig = field(default_factory=GesConfig)
    cmaes: CmaesConfig = field(default_factory=CmaesConfig)

    def __post_init__(self):
        object.__setattr__(self, "metric", get_metric(self.metric))
        check_blend(self.blend, power=self.power, eps=self.eps)
        if self.method not in METHODS:
            raise OptionError(f"unknown method '{self.method}'; choose one of: {', '.join(METHODS)}")
        if self.max_size is not None and int(self.max_size) < 1:
            raise OptionError(f"`max_size` must be at least 1, got {int(self.max_size)}")
        for option, value in (("`top`", self.top), ("`beam_width`", self.walk.beam_width),
                              ("ges iterations", self.ges.iterations),
                              ("`ges_bags`", self.ges.bags),
                              ("`cmaes_evaluations`", self.cmaes.evaluations)):
            if value < 1:
                raise OptionError(f"{option} must be at least 1, got {value}")
        if self.ges.init < 0:
            raise OptionError(f"`ges_init` must be 0 or more, got {self.ges.init}")

    @classmethod
    def from_options(cls, **options) -> SearchConfig:
        """The config of ``search_subsets``' keyword options (``metric``, ``method``,
        ``ges_iterations``, ``beam_width``, ...); the defaults are those of the fields."""
        own = {f.name for f in fields(cls)} - set(_PARTS)
        top: dict = {}
        parts: dict = {name: {} for name in _PARTS}
        for name, value in options.items():
            if name in _PART_OPTIONS:
                part, key = _PART_OPTIONS[name]
                parts[part][key] = value
            elif name in own:
                top[name] = value
            else:
                raise TypeError(f"unknown search option '{name}'")
        return cls(**top, **{name: _PARTS[name](**values) for name, values in parts.items()})

    def params(self, *, max_size: int, nested: bool) -> dict:
        """The ``params`` of a result (``subsets.json``), with the max_size and nesting the
        data allowed; the methods add their own entries (the backend, fixed settings)."""
        return dict(metric=self.metric.name, blend=self.blend, power=self.power, eps=self.eps,
                    method=self.method, max_size=max_size, top=self.top,
                    beam_width=self.walk.beam_width, nested=nested, seed=self.seed,
                    n_jobs=self.n_jobs, prune=self.walk.prune, patience=self.walk.patience,
                    ges_iterations=self.ges.iterations, time_budget=self.time_budget,
                    ges_init=self.ges.init, device=self.device)
