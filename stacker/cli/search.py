"""`stack search-subsets`: choose the experiments to blend, with the nested-CV estimate."""

from enum import Enum
from typing import Annotated, Optional

import numpy as np
import typer

from stacker import layout
from stacker.blend import DEFAULT_POWER, EPS
from stacker.cli.common import (
    RootOption,
    check_budget,
    console,
    err_console,
    load_collection,
    metric_option,
    progress_bar,
    rows_table,
    user_errors,
    writes_root,
)
from stacker.layout import workspace
from stacker.search.config import CmaesConfig, GesConfig, SearchConfig, WalkConfig
from stacker.search.engine import preload_kernels, search_subsets
from stacker.search.result import SearchResult
from stacker.search.subsets import resolve_subset


class BlendChoice(str, Enum):
    geo_mean = "geo-mean"
    mean = "mean"
    rank = "rank"
    power = "power"


class MethodChoice(str, Enum):
    auto = "auto"
    exhaustive = "exhaustive"
    greedy = "greedy"
    beam = "beam"
    ges = "ges"
    ges_bagged = "ges-bagged"
    cmaes = "cmaes"
    per_class = "per-class"
    linear = "linear"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def show_result(result: SearchResult, top: int) -> None:
    """Print the top subsets, the curve by size and the chosen ensemble."""
    if result.method_reason.startswith("auto"):
        console.print(result.method_reason, highlight=False)
    rows = [{"rank": i + 1, "members": ", ".join(c.members), "size": c.size, "cv": c.cv}
            for i, c in enumerate(result.top[:top])]
    console.print(rows_table(rows, ("rank", "members", "size", "cv"),
                             title=f"Top {len(rows)} ({result.method}, {result.blend}, "
                                   f"{result.metric})"))
    curve = [{"size": s.size, "cv": s.cv, "nested cv": _fmt(s.nested_cv),
              "members": ", ".join(s.members)} for s in result.by_size]
    console.print(rows_table(curve, ("size", "cv", "nested cv", "members"),
                             title="Best subset of each size (selected CV, nested CV)"))
    weights = ", ".join(f"{m} ({result.weights[m]:.3f})" for m in result.members)
    console.print(f"chosen: {len(result.members)} member(s): {weights}", highlight=False)
    std = float(np.std(result.fold_cv)) if result.fold_cv else float("nan")
    console.print(f"selected CV {result.cv:.4f} (fold std {std:.4f}); nested CV "
                  f"{_fmt(result.nested_cv)}"
                  + ("" if result.gap is None else f"; gap {result.gap:+.4f}"), highlight=False)
    warning = result.gap_warning()
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    backend = result.params.get("backend")
    console.print(f"{result.n_evaluated:,} candidate(s) scored in {result.seconds:.1f} s"
                  + (f" ({backend})" if backend else ""), highlight=False)


@user_errors
@writes_root("stack search-subsets")
def search_subsets_command(
    root: RootOption = layout.DEFAULT_ROOT,
    metric: metric_option("Metric to maximise (lwlrap and lrap take the fast path)") = "lwlrap",
    blend: Annotated[BlendChoice, typer.Option(help="How members are blended.")] = BlendChoice.geo_mean,
    power: Annotated[float, typer.Option(help="Exponent k of the power blend.")] = DEFAULT_POWER,
    method: Annotated[MethodChoice, typer.Option(help="Search method; auto picks exhaustive when "
                                                      "it fits --time-budget. Weighted: ges, "
                                                      "ges-bagged, cmaes, per-class, linear "
                                                      "(logit stacker).")] = MethodChoice.auto,
    max_size: Annotated[Optional[int], typer.Option(help="Largest subset (default: all).")] = None,
    top: Annotated[int, typer.Option(help="How many subsets to list.")] = 10,
    beam_width: Annotated[int, typer.Option(help="Width of the beam search.")] = 5,
    nested: Annotated[bool, typer.Option("--nested/--no-nested", help="Repeat the selection with "
                                         "each fold held out (honest estimate).")] = True,
    seed: Annotated[int, typer.Option(help="Seed of ges-bagged and cmaes; every method is "
                                           "deterministic for a seed.")] = 0,
    n_jobs: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    subset: Annotated[Optional[str], typer.Option(help="The pool: NAME,NAME,... (default: all "
                                                       "experiments).")] = None,
    eps: Annotated[float, typer.Option(help="Clip of probabilities for the geo-mean.")] = EPS,
    ges_iterations: Annotated[int, typer.Option(help="Steps of GES (ensemble selection).")] = 50,
    time_budget: Annotated[float, typer.Option(help="Seconds auto allows an exhaustive "
                                                    "search.")] = 60.0,
    ges_init: Annotated[int, typer.Option(help="Start GES from the N best single models "
                                               "(sorted initialisation; 0: empty).")] = 0,
    ges_bags: Annotated[int, typer.Option(help="Runs of ges-bagged, each on a random half of "
                                               "the models.")] = 8,
    cmaes_evaluations: Annotated[int, typer.Option(help="Evaluations of each CMA-ES run.")] = 600,
    device: Annotated[str, typer.Option(help="Where lwlrap/lrap candidates are scored: auto "
                                             "(CUDA when present), cpu (compiled kernel) or "
                                             "cuda (cuda:N); the result is the same.")] = "auto",
) -> None:
    """Search the subset of experiments that blends best.

    Search the subsets of experiments whose blend scores best on the OOF rows; writes
    <root>/.stack/subsets.json for `stack blend --subset best`."""
    check_budget(time_budget)
    # the settings are checked (metric, blend, sizes) before anything is read or drawn
    config = SearchConfig(
        metric=metric, blend=blend.value, power=power, eps=eps, method=method.value,
        max_size=max_size, top=top, nested=nested, seed=seed, n_jobs=n_jobs,
        time_budget=time_budget, device=device, walk=WalkConfig(beam_width=beam_width),
        ges=GesConfig(iterations=ges_iterations, init=ges_init, bags=ges_bags),
        cmaes=CmaesConfig(evaluations=cmaes_evaluations))
    collection = load_collection(root)
    # numba loads while the pool is checked and quantized (numpy releases the GIL there; reading
    # the pool is Python's work, and the two took turns: 0.6 s instead of 0.07 s for 200 models)
    preload_kernels(config)
    pool = resolve_subset(root, subset, collection.names)
    with progress_bar("searching subsets") as update:
        result = search_subsets(collection, pool=pool, config=config, on_progress=update)
    show_result(result, top)
    record = result.to_json()
    record["root"] = str(root)
    record["fold_hash"] = collection.folds.hash
    out = workspace.write_subsets(root, record)
    console.print(f"written {out}", highlight=False)
