"""The test-time blend and the submission file in the template's exact shape.

Test predictions: each experiment has one test prediction per fold model (``Collection.test``,
shape (n_folds, n_test, n_models, n_classes)). They are combined per experiment by a geometric
mean over the fold models (as the FAT2019 winners did), then the experiments are blended with the
chosen :class:`stacker.blend.Blend`, exactly as their OOF predictions were when the CV was measured.
Level-2 experiments are ordinary experiments here.

Submission: the template (e.g. Kaggle's ``sample_submission.csv``) fixes the id column name, the
row order and the class columns and their order; its ids must be exactly the layout's test ids and
its class columns exactly the layout's classes. Without a template: the layout's test-id order, the
folds.csv id column name and the folds class order. The file is written atomically, never over an
existing file unless ``force``, with a sidecar ``<out>.json`` recording how it was made.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from stacker import layout
from stacker.blend import Blend
from stacker.errors import OutputExistsError, TemplateError
from stacker.layout import provenance, reading
from stacker.layout.collect import Collection
from stacker.metrics import fold_scores, get_metric


@dataclass(frozen=True)
class Template:
    """The shape of a submission: id column name, ids in row order, class columns in order."""

    id_column: str
    ids: np.ndarray
    classes: tuple[str, ...]
    path: Path | None = None


def default_template(collection: Collection) -> Template:
    """The layout's own shape: folds.csv's id column, the test-id order, the folds class order."""
    return Template(id_column=collection.folds.id_column, ids=np.asarray(collection.test_ids),
                    classes=tuple(collection.classes))


def read_template(path: Path | str, test_ids: Sequence[str], classes: Sequence[str]) -> Template:
    """Read a submission template and check it against the layout's test ids and classes."""
    path = Path(path)
    if not path.is_file():
        raise TemplateError(f"{path}: template file not found; pass `template` pointing at a CSV "
                            "like sample_submission.csv")
    fmt = reading.sniff_text(path, what="template")
    with open(path, newline="", encoding=fmt.encoding) as handle:
        header = next(csv.reader(handle), [])
    if fmt.trailing_comma:
        header = header[:-1]
    if len(header) < 2:
        raise TemplateError(f"{path}: the header must be <id>,<class 1>,...; found "
                            f"{','.join(header) or 'nothing'}")
    try:
        frame = pd.read_csv(path, dtype={header[0]: str}, usecols=[0], keep_default_na=False,
                            encoding=fmt.encoding)
    except UnicodeDecodeError as error:
        raise reading.not_utf8(path, error, what="template") from None
    except pd.errors.ParserError as error:
        raise TemplateError(f"{path}: malformed CSV ({str(error).strip().splitlines()[0]}); every "
                            "row needs the header's fields") from None
    ids = frame.iloc[:, 0].to_numpy(dtype=str)
    template_classes = header[1:]
    duplicated = pd.Index(ids)[pd.Index(ids).duplicated()]
    if len(duplicated):
        raise TemplateError(f"{path}: id '{duplicated[0]}' appears more than once; each test id "
                            "must have one row")
    known = set(map(str, test_ids))
    extra = [i for i in ids if i not in known]
    missing = sorted(known - set(ids))
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"{len(extra)} id(s) not among the layout's test ids, e.g. '{extra[0]}'")
        if missing:
            parts.append(f"{len(missing)} layout test id(s) missing, e.g. '{missing[0]}'")
        raise TemplateError(f"{path}: template ids are not the layout's test ids ("
                            + "; ".join(parts) + "); use the template of this test set or "
                            "re-run the first-level models on it")
    dup_classes = [c for c in template_classes if template_classes.count(c) > 1]
    if dup_classes:
        raise TemplateError(f"{path}: class column '{dup_classes[0]}' appears twice; keep one")
    unknown = [c for c in template_classes if c not in set(classes)]
    absent = [c for c in classes if c not in set(template_classes)]
    if unknown or absent:
        detail = (f"column '{unknown[0]}' is not a class of folds.csv" if unknown
                  else f"class '{absent[0]}' has no column")
        raise TemplateError(f"{path}: template classes are not the layout's classes ({detail}); "
                            "the template must have one column per class of folds.csv")
    return Template(id_column=header[0], ids=ids, classes=tuple(template_classes), path=path)


def sidecar_path(out: Path | str) -> Path:
    return Path(f"{out}.json")


def check_outputs(out: Path | str, *, force: bool, inputs: Sequence[Path | str | None] = (),
                  root: Path | str | None = None) -> None:
    """OutputExistsError when the submission or its sidecar exists and ``force`` is not set, or
    (even with ``force``) when either is one of the command's ``inputs`` (the template, folds.csv)
    or a file of the layout under ``root`` (an experiment's probs, ``.stack/``:
    :func:`~stacker.layout.provenance.check_replaceable`): ``force`` replaces earlier outputs,
    never what the command reads nor the layout's own files."""
    provenance.refuse_inputs_as_outputs(
        {"`out`": Path(out), "the sidecar of `out`": sidecar_path(out)},
        {str(source): source for source in inputs if source is not None}, root=root)
    for path in (Path(out), sidecar_path(out)):
        if path.exists() and not force:
            raise OutputExistsError(f"{path} exists; pass `force` to overwrite it or choose "
                                    "another `out`")


def write_submission(out: Path | str, template: Template, test_ids: Sequence[str],
                     classes: Sequence[str], probs: np.ndarray, *, force: bool = False) -> Path:
    """Write ``probs`` (n_test, n_classes), rows in ``test_ids`` order and columns in ``classes``
    order, as a CSV in the template's row order and column order."""
    check_outputs(out, force=force, inputs=[template.path])
    row_of = {str(i): r for r, i in enumerate(test_ids)}
    col_of = {c: j for j, c in enumerate(classes)}
    rows = np.array([row_of[str(i)] for i in template.ids], dtype=np.int64)
    cols = np.array([col_of[c] for c in template.classes], dtype=np.int64)
    frame = pd.DataFrame(np.asarray(probs)[rows][:, cols], columns=list(template.classes))
    frame.insert(0, template.id_column, template.ids)
    return layout.atomic_write_text(out, frame.to_csv(index=False, float_format=layout.PROB_FORMAT))


def _inputs(collection: Collection, template) -> list:
    """The files a submission is made from, which ``force`` must never replace."""
    root = Path(collection.root)
    return [template, root / layout.FOLDS_FILE, root / layout.CLASSES_FILE]


def make_submission(collection: Collection, blend: Blend, *, out: Path | str,
                    template: Path | str | None = None, force: bool = False,
                    metric: str = "lwlrap", extra: dict | None = None) -> dict:
    """Apply ``blend`` to the test set, write the submission and its sidecar ``<out>.json``.

    Returns the sidecar's record: members, weights (:meth:`Blend.summary_weights`), blend, eps,
    power, metric, cv (the same blend of the members' OOF predictions), fold_cv, the template,
    n_test, the per-class weights or the linear stacker's coefficients and intercepts, and ``extra``.
    """
    members = list(blend.members)
    scorer = get_metric(metric)
    check_outputs(out, force=force, inputs=_inputs(collection, template), root=collection.root)
    shape = (default_template(collection) if template is None
             else read_template(template, collection.test_ids, collection.classes))
    oof = blend.oof(collection)
    cv = scorer(collection.y, oof)
    fold_cv = fold_scores(collection.y, oof, collection.fold, collection.fold_numbers, scorer)
    written = write_submission(out, shape, collection.test_ids, collection.classes,
                               blend.test(collection), force=force)
    record = {
        "submission": str(written), "root": str(collection.root),
        "members": members, "weights": blend.summary_weights(),
        "blend": blend.method, "eps": blend.eps, "power": blend.power, "metric": scorer.name,
        "cv": cv, "fold_cv": fold_cv, "fold_hash": collection.folds.hash,
        "template": None if template is None else str(template),
        "id_column": shape.id_column, "n_test": int(len(shape.ids)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(_per_class_record(blend))
    record.update(extra or {})
    layout.atomic_write_json(sidecar_path(out), record)
    return record


def _per_class_record(blend: Blend) -> dict:
    """The sidecar's ``class_weights`` or ``coef`` + ``intercept`` ({member: [per class]}); {}
    for one weight per member."""
    record: dict = {}
    if blend.class_weights is not None:
        record["class_weights"] = dict(zip(blend.members, map(list, blend.class_weights)))
    if blend.coef is not None:
        record["coef"] = dict(zip(blend.members, map(list, blend.coef)))
        record["intercept"] = list(blend.intercept)
    return record
