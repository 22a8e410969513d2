"""`stack blend`: blend the chosen experiments on the test set and write the submission."""

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from stacker import layout
from stacker.blend import EPS, Blend
from stacker.cli.common import (
    RootOption,
    check_input_file,
    check_metric,
    console,
    frame_table,
    load_collection,
    user_errors,
    writes_root,
)
from stacker.errors import OptionError
from stacker.layout.workspace import read_subsets, subsets_path
from stacker.metrics import get_metric
from stacker.search.subsets import resolve_subset

SAME_CV = 1e-9   # the search's CV and this blend's, when they are the same blend of the same files


def _nested_cv_of_search(search: dict | None, spec: str, blend: str, weighted: bool, eps: float,
                         metric: str, own_cv: float) -> tuple[float | None, str]:
    """The nested CV the search measured, when it measured exactly this blend; else a reason.
    own_cv: this blend's CV on the OOF rows, which must be the search's own (hand-edited
    weights, or retrained members, make another blend)."""
    if search is None or spec != "best":
        return None, "no nested CV: the subset was not chosen by `stack search-subsets`"
    weights = list(search.get("weights", {}).values())
    equal = len(set(round(w, 12) for w in weights)) <= 1
    if search.get("blend") != blend or (not weighted and not equal):
        how = f"{'weighted ' if not equal else ''}{search.get('blend')}"
        return None, f"no nested CV: the search measured a {how} blend, not this one"
    if search.get("metric") != metric:
        return None, f"no nested CV: the search used {search.get('metric')}, not {metric}"
    if blend == "geo-mean" and search.get("eps") != eps:
        return None, f"no nested CV: the search used eps {search.get('eps')}, not {eps}"
    searched = search.get("cv")
    if isinstance(searched, (int, float)) and not abs(float(searched) - own_cv) <= SAME_CV:
        return None, (f"no nested CV: this blend's CV {own_cv:.6f} is not the search's "
                      f"{float(searched):.6f}, so its weights or members changed since `stack "
                      "search-subsets` (edited by hand, or retrained); run it again for a nested CV")
    return search.get("nested_cv"), ""


@user_errors
@writes_root("stack blend")
def blend_command(
    geo_mean: Annotated[bool, typer.Option("--geo-mean", help="Geometric mean of the members.")] = False,
    mean: Annotated[bool, typer.Option("--mean", help="Arithmetic mean.")] = False,
    rank: Annotated[bool, typer.Option("--rank", help="Mean of within-row class ranks.")] = False,
    weights: Annotated[bool, typer.Option("--weights", help="The weights (and blend) of the last "
                                          "search, e.g. from --method ges.")] = False,
    root: RootOption = layout.DEFAULT_ROOT,
    subset: Annotated[Optional[str], typer.Option(help="best (the last search's choice), all, or "
                                                       "NAME,NAME,...; default best when a search "
                                                       "exists, else all.")] = None,
    template: Annotated[Optional[Path], typer.Option(help="Submission template, e.g. "
                                                          "sample_submission.csv.")] = None,
    out: Annotated[Path, typer.Option(help="Submission file to write.")] = Path("submission.csv"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out (and its .json) if they "
                                                 "exist.")] = False,
    eps: Annotated[float, typer.Option(help="Clip of probabilities for geometric means.")] = EPS,
    metric: Annotated[Optional[str], typer.Option(help="Metric of the printed CV (default: the "
                                                       "search's, else lwlrap).")] = None,
) -> None:
    """Blend experiments and write the submission.

    Blend the chosen experiments: print their CV on the OOF rows and write the submission in
    the template's shape, with a sidecar <out>.json of the parameters."""
    import pandas as pd

    from stacker.submission import check_outputs, make_submission, sidecar_path
    flags = {"geo-mean": geo_mean, "mean": mean, "rank": rank, "weights": weights}
    chosen = [name for name, on in flags.items() if on]
    if len(chosen) != 1:
        raise OptionError("pass exactly one of --geo-mean, --mean, --rank, --weights")
    check_metric(metric)
    check_input_file(template, "--template")
    check_outputs(out, force=force, inputs=[template, root / layout.FOLDS_FILE,
                                            root / layout.CLASSES_FILE], root=root)
    collection = load_collection(root)
    search = read_subsets(root) if subsets_path(root).exists() else None
    spec = subset if subset is not None else ("best" if search is not None else "all")
    members = resolve_subset(root, spec, collection.names)
    if weights:
        if search is None or spec.strip() != "best":
            raise OptionError("--weights uses the members and weights of the last "
                              "`stack search-subsets`; run it first and use --subset best")
        # the search's members, blend, weights and power; the clip is this command's --eps
        chosen_blend = replace(Blend.from_record(search, collection.classes,
                                                 path=subsets_path(root)), eps=eps)
    else:
        chosen_blend = Blend(tuple(members), chosen[0], eps=eps)
    blend = chosen_blend.method
    metric = metric or (search.get("metric") if search else None) or "lwlrap"
    own_cv = get_metric(metric)(collection.y, chosen_blend.oof(collection))
    nested_cv, why = _nested_cv_of_search(search, spec.strip(), blend, weights, eps, metric, own_cv)
    extra = {"subset": spec, "nested_cv": nested_cv}
    if search is not None and spec.strip() == "best":
        extra["search"] = {k: search.get(k) for k in ("method", "metric", "blend", "cv",
                                                      "nested_cv", "created")}
    record = make_submission(collection, chosen_blend, out=out, template=template, force=force,
                             metric=metric, extra=extra)
    table = pd.DataFrame({"member": members, "weight": list(record["weights"].values()),
                          "level": [collection.level(m) for m in members]})
    kind = ("linear stacker (weight: mean coefficient)" if blend == "linear" else
            f"per-class {blend} blend (weight: mean over classes)" if "class_weights" in record
            else f"{blend} blend")
    console.print(frame_table(table, title=f"{kind} of {len(members)} experiment(s)"))
    std = pd.Series(record["fold_cv"]).std(ddof=0)
    console.print(f"CV on OOF rows ({record['metric']}): {record['cv']:.6f} (fold std {std:.4f})",
                  highlight=False)
    if nested_cv is not None:
        console.print(f"nested CV (from the subset search): {nested_cv:.6f}", highlight=False)
    else:
        console.print(why, highlight=False)
    if template is None:
        shown = ", ".join(collection.classes[:4]) + (", ..." if len(collection.classes) > 4 else "")
        console.print(f"no --template: the columns follow classes.txt's order ({shown}) and the "
                      "rows the layout's test ids; pass --template sample_submission.csv for the "
                      "template's order", highlight=False)
    console.print(f"written {record['submission']} ({record['n_test']} rows x "
                  f"{len(collection.classes) + 1} columns) and {sidecar_path(out)}", highlight=False)
