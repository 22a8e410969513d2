"""What `stack auto` writes: the final blend as an experiment, subsets.json, the submission with
its sidecar, and the report, each from what the run holds in memory."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np

from stacker import layout
from stacker.auto.context import OutputPaths, Run
from stacker.auto.settings import BLEND_NAME, MADE_BY
from stacker.errors import OptionError, OutputExistsError
from stacker.layout import provenance, workspace
from stacker.layout.collect import Collection
from stacker.metrics import fold_scores
from stacker.submission import sidecar_path


def owned_outputs(out: Path | str | None) -> set[Path]:
    """The exact files an earlier `stack auto` recorded making: ``out``, its sidecar and the
    report its sidecar names (resolved paths); empty unless the sidecar says stack auto made it.
    The sidecar is read once."""
    if out is None:
        return set()
    try:
        record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not provenance.made_by(record, MADE_BY):
        return set()
    owned = {Path(out).resolve(), sidecar_path(out).resolve()}
    report = record.get("report")
    if isinstance(report, str) and report:
        owned.add(Path(report).resolve())
    return owned


def may_replace(path: Path | str | None, paths: OutputPaths, owned: set[Path]) -> bool:
    """Whether this run may replace ``path``: with ``force``, or when an earlier `stack auto`
    recorded making that exact file (``owned``, :func:`owned_outputs` of ``paths.out``)."""
    return path is not None and (paths.force or Path(path).resolve() in owned)


def check_outputs(paths: OutputPaths, root: Path | str) -> None:
    """Refuse an output that is an input of the run (the template, folds.csv, classes.txt) or a
    file of the layout under ``root``, even with ``force``; refuse to replace a user's file: only
    ``force`` or an earlier `stack auto`'s own outputs."""
    out, report = paths.out, paths.report
    root = Path(root)
    provenance.refuse_inputs_as_outputs(
        {"`out`": out, "`report`": report},
        {"`template`": paths.template, "folds.csv": root / layout.FOLDS_FILE,
         "classes.txt": root / layout.CLASSES_FILE}, root=root)
    owned = owned_outputs(out)
    for path in (out, None if out is None else sidecar_path(out), report):
        if path is not None and Path(path).exists() and not may_replace(path, paths, owned):
            raise OutputExistsError(f"{path} exists and was not written by stack auto (no earlier "
                                    "run's sidecar records that path); pass `force` to replace it "
                                    "or choose another `out`/`report`")
    if out is not None and report is not None and Path(out).resolve() == Path(report).resolve():
        raise OptionError("`out` and `report` are the same file; give each its own path")


def write_experiment(root: Path, name: str, collection: Collection, oof: np.ndarray,
                     test: np.ndarray, meta: dict) -> None:
    """Experiment ``name`` (val rows of each fold from ``oof`` (n_rows, n_classes), ``test``
    (n_test, n_classes) in every fold), staged whole and renamed into place (`run_auto` refused
    one it did not make before any stage ran)."""
    folds = collection.folds
    staging = workspace.staging_dir(root) / f"{name}-{uuid.uuid4().hex[:8]}"
    try:
        for k in collection.fold_numbers:
            rows = folds.rows_of_fold(k)
            layout.write_fold_predictions(staging, name, k, "val", folds.ids[rows], oof[rows],
                                          folds.classes, id_column=folds.id_column)
            layout.write_fold_predictions(staging, name, k, "test", collection.test_ids, test,
                                          folds.classes, id_column=folds.id_column)
        layout.write_meta(staging, name, meta)
        layout.install_experiment(staging, root, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def subsets_record(run: Run) -> dict:
    """subsets.json for the final recipe: what `stack blend --subset best` and the report read."""
    final, everything, metric = run.final, run.everything, run.metric
    blend = final.combination.oof(everything)
    record = dict(final.search or {})
    record.update({
        "method": "auto", "recipe": final.name, "what": final.what, "metric": metric.name,
        "blend": final.blend, "members": list(final.members), "weights": dict(final.weights),
        "cv": float(metric(everything.y, blend)),
        "fold_cv": fold_scores(everything.y, blend, everything.fold, everything.fold_numbers, metric),
        "nested_cv": final.nested_cv, "estimate": run.estimate, "root": str(run.root),
        "fold_hash": everything.folds.hash,
        "candidates": [r.summary() for r in run.recipes],
        "params": {"auto": asdict(run.settings), "tuning": run.tuning}})
    record.setdefault("top", [])
    record.setdefault("by_size", [])
    return record


def as_json(record: dict) -> dict:
    """``record`` as a JSON file of it reads back (lists for tuples, plain floats)."""
    return json.loads(json.dumps(record, sort_keys=True, default=layout.json_default))


def write_outputs(run: Run) -> None:
    """subsets.json, then the submission and its sidecar, then the report (``run.files``)."""
    from stacker.submission import make_submission

    paths, final, everything = run.outputs, run.final, run.everything
    # decided before this run's sidecar replaces the earlier one (check_outputs refused the rest)
    owned = owned_outputs(paths.out)
    own_out, own_report = may_replace(paths.out, paths, owned), may_replace(paths.report, paths, owned)
    run.files = {"layout": run.root, "subsets": workspace.subsets_path(run.root),
                 "state": workspace.auto_state_path(run.root)}
    record = subsets_record(run)
    workspace.write_subsets(run.root, record)
    if paths.out is not None:
        blend_meta = everything.meta.get(BLEND_NAME, {}) if BLEND_NAME in final.members else {}
        blend_parts, gate = blend_meta.get("parts"), blend_meta.get("gate")
        with run.stage("submission") as update:
            make_submission(everything, final.combination, out=paths.out,
                            template=paths.template, force=own_out, metric=run.metric.name,
                            extra={"made_by": MADE_BY, "recipe": final.name,
                                   "nested_cv": final.nested_cv, "holdout_cv": final.holdout_cv,
                                   "estimate": run.estimate,
                                   "report": None if paths.report is None else str(paths.report),
                                   "candidates": [r.summary() for r in run.recipes],
                                   "auto": asdict(run.settings), "tuning": run.tuning,
                                   "blend_parts": blend_parts, "level2_gate": gate})
            update(1, 1)
        run.files["submission"] = Path(paths.out)
        run.files["sidecar"] = sidecar_path(paths.out)
    if paths.report is not None:
        from stacker.report import write_report

        with run.stage("report") as update:
            write_report(run.root, paths.report, force=own_report, collection=everything,
                         record=as_json(record), histories=run.histories, on_progress=update)
        run.files["report"] = Path(paths.report)
