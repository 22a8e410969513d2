"""`stack report`: one self-contained HTML page on where an ensemble stands.

Sections: the leaderboard, the correlation of the experiments' OOF predictions, the subset-search
curve (best CV by subset size, selected and nested, from ``<root>/.stack/subsets.json``; after
`stack auto`, its candidate recipes instead), per-class lwlrap of the searched blend (or the
submission) against the best single model, and the level-2 learning curves
(``<experiment>/fold_<k>/history.json``). A section whose input is absent or unreadable says so in
the page instead of failing the report.

Every figure is a PNG drawn with matplotlib's Agg canvas (no pyplot, so no global backend state)
and embedded as a base64 data URI: the file opens anywhere, offline, with nothing beside it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stacker import layout
from stacker.blend import Blend
from stacker.errors import LayoutError, OutputExistsError, StackError
from stacker.layout import provenance
from stacker.layout.collect import Collection, collect
from stacker.layout.workspace import read_subsets, subsets_path
from stacker.leaderboard import leaderboard, oof_correlation
from stacker.metrics import get_metric, per_class_lwlrap
from stacker.runtime import ProgressCallback

HISTORY_FILE = "history.json"
HISTORY_KEYS = ("epoch", "train_loss", "val_loss")


# ---------------------------------------------------------------- data behind the sections


def subset_curve(result: dict) -> pd.DataFrame:
    """subsets.json's ``by_size`` as a frame: columns size, cv, nested_cv (nan where absent),
    sorted by size. LayoutError when the list is missing or malformed."""
    rows = result.get("by_size")
    if not isinstance(rows, list) or not rows:
        raise LayoutError("has no 'by_size' list; run `stack search-subsets` again")
    try:
        frame = pd.DataFrame([{"size": int(r["size"]), "cv": float(r["cv"]),
                               "nested_cv": float("nan") if r.get("nested_cv") is None
                               else float(r["nested_cv"])} for r in rows])
    except (KeyError, TypeError, ValueError):
        raise LayoutError("'by_size' entries need size and cv numbers; run `stack search-subsets` "
                          "again") from None
    return frame.sort_values("size", kind="stable").reset_index(drop=True)


def auto_candidates(result: dict) -> pd.DataFrame | None:
    """`stack auto`'s candidate recipes from subsets.json's ``candidates``: columns recipe, what,
    cv, nested_cv, holdout_cv, chosen (the submission's recipe); None when the last search was
    not `stack auto`'s. LayoutError for an entry without name, cv and nested_cv."""
    records = result.get("candidates")
    if not isinstance(records, list) or not records:
        return None
    rows = []
    for record in records:
        try:
            rows.append({"recipe": str(record["name"]), "what": str(record.get("what", "")),
                         "cv": float(record["cv"]), "nested_cv": float(record["nested_cv"]),
                         "holdout_cv": float(record.get("holdout_cv", np.nan)),
                         "chosen": record["name"] == result.get("recipe")})
        except (KeyError, TypeError, ValueError):
            raise LayoutError("'candidates' entries need a name, cv and nested_cv; run `stack auto` "
                              "again") from None
    return pd.DataFrame(rows)


def best_single(collection: Collection, board: pd.DataFrame) -> str:
    """The best level-1 experiment of the leaderboard (the best of any level if there is none)."""
    level1 = board[board.level == 1]
    return str((level1 if len(level1) else board).experiment.iloc[0])


def searched_blend(collection: Collection, result: dict) -> np.ndarray:
    """The OOF blend of a subsets.json record (:meth:`stacker.blend.Blend.from_record`: its
    members, blend method, power, eps and weights): array of shape (n_rows, n_classes).
    LayoutError when a member is not collected."""
    return Blend.from_record(result, collection.classes).oof(collection)


def per_class_comparison(y: np.ndarray, blended: np.ndarray, single: np.ndarray,
                         classes: Sequence[str]) -> pd.DataFrame:
    """Per-class lwlrap of two (n_rows, n_classes) score arrays: columns class, weight, blend,
    single, gain (blend - single), in class order."""
    blend_scores, weights = per_class_lwlrap(y, blended)
    single_scores, _ = per_class_lwlrap(y, single)
    return pd.DataFrame({"class": list(classes), "weight": weights, "blend": blend_scores,
                         "single": single_scores, "gain": blend_scores - single_scores})


def _history_frame(entries: list) -> pd.DataFrame:
    """One fold's learning curves as a frame; ValueError when the entries lack a column."""
    frame = pd.DataFrame(entries)
    missing = [key for key in HISTORY_KEYS if key not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"entries lack '{missing[0] if missing else 'epoch'}'")
    return frame


def read_histories(root: Path | str, names: Sequence[str]) -> tuple[dict, list[str]]:
    """Learning curves of the experiments that have ``fold_<k>/history.json``.

    Returns ({name: {fold: DataFrame with columns epoch, train_loss, val_loss[, val_score, lr,
    seed]}}, problems): one line per unreadable file, which is left out.
    """
    curves: dict[str, dict[int, pd.DataFrame]] = {}
    problems = []
    for name in names:
        for k in layout.list_fold_numbers(root, name):
            path = layout.experiment_dir(root, name) / f"fold_{k}" / HISTORY_FILE
            if not path.exists():
                continue
            try:
                frame = _history_frame(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as error:
                problems.append(f"{path}: {error}; expected a list of {{epoch, train_loss, "
                                "val_loss, val_score, lr}}")
                continue
            curves.setdefault(name, {})[k] = frame
    return curves, problems


# ---------------------------------------------------------------- figures


# Figures are laid out in inches at PX_PER_INCH CSS pixels per inch (the page's width is
# PAGE_INCHES, its 1,100 px max-width less a margin) and rendered at SCALE times that resolution,
# so they stay sharp on dense screens and shrink with a narrower window (img max-width: 100%).
PX_PER_INCH = 90
PAGE_INCHES = 12.0
SCALE = 2
LABEL_SIZE = 10          # points: about 12 px on the page at full width
SUBMISSION = "#2ca02c"   # green: the submission (or the searched blend), in every chart
OTHERS = "#6baed6"       # blue: everything else (level 1, the best single model, other recipes)
LEVEL2 = "#d62728"       # red: level-2+ experiments in the leaderboard


def _png(fig: Figure) -> str:
    """The figure as an <img> tag holding a base64 PNG data URI, shown at its laid-out width."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=PX_PER_INCH * SCALE, bbox_inches="tight")
    png = buffer.getvalue()
    width = int.from_bytes(png[16:20], "big") // SCALE     # the IHDR chunk: width, then height
    data = base64.b64encode(png).decode("ascii")
    # a chart laid out page-wide fills the page (its tight crop is a little narrower)
    wide = ' class="wide"' if fig.get_figwidth() >= PAGE_INCHES else ""
    return f'<img alt="figure"{wide} width="{width}" src="data:image/png;base64,{data}">'


def _legend_above(ax, *args, ncol: int = 3) -> None:
    """The legend in a row above the axes, never over the data."""
    ax.legend(*args, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=ncol, frameon=False,
              fontsize=LABEL_SIZE, borderaxespad=0.2)


def _score_limits(ax, values: np.ndarray, label: str, *, floor: float | None = None) -> None:
    """The score axis around ``values`` (scores in [0, 1] stay there), labelled with where it
    starts when that is not 0, so bars that start there are not read as lengths from 0."""
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    pad = max(0.01, (high - low) * 0.3)
    start = low - pad if floor is None else max(floor, low - pad)
    ax.set_xlim(start, min(high + pad, 1.0) if high <= 1 else high + pad)
    start = ax.get_xlim()[0]
    where = f"; the axis starts at {start:.3f}, not 0" if abs(start) > 1e-9 else ""
    ax.set_xlabel(label + where, fontsize=LABEL_SIZE + 1)
    ax.tick_params(labelsize=LABEL_SIZE)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def _bar_height(n: int) -> float:
    return 1.3 + 0.32 * n


def _leaderboard_figure(board: pd.DataFrame, metric: str) -> Figure:
    from matplotlib.patches import Patch

    n = len(board)
    fig = Figure(figsize=(PAGE_INCHES, _bar_height(n)))
    ax = fig.add_subplot()
    order = board.iloc[::-1]
    colors = [LEVEL2 if level > 1 else OTHERS for level in order.level]
    ax.barh(range(n), order.cv, xerr=order.fold_std, color=colors, error_kw={"lw": 1.2})
    ax.set_yticks(range(n), order.experiment, fontsize=LABEL_SIZE)
    _score_limits(ax, board.cv.to_numpy(), f"CV {metric} (bars: overall OOF; whiskers: std over folds)")
    _legend_above(ax, [Patch(color=OTHERS), Patch(color=LEVEL2)], ["level 1", "level 2+"])
    return fig


def _candidates_figure(frame: pd.DataFrame, metric: str) -> Figure:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(frame)
    fig = Figure(figsize=(PAGE_INCHES, _bar_height(n)))
    ax = fig.add_subplot()
    order = frame.iloc[::-1]
    # one colour meaning: green is the submission; every bar is a nested CV, every tick a CV
    colors = [SUBMISSION if chosen else OTHERS for chosen in order.chosen]
    ax.barh(range(n), order.nested_cv, color=colors, edgecolor=["black" if c else "none"
                                                                 for c in order.chosen])
    # clip_on=False: a CV at the axis's end (1.0) is drawn over the frame, not hidden by it
    ax.plot(order.cv, range(n), "k|", markersize=14, markeredgewidth=2, clip_on=False, zorder=5)
    ax.set_yticks(range(n), order.recipe, fontsize=LABEL_SIZE)
    for label, chosen in zip(ax.get_yticklabels(), order.chosen):
        if chosen:
            label.set_fontweight("bold")
    values = np.concatenate([frame.cv.to_numpy(), frame.nested_cv.to_numpy()])
    _score_limits(ax, values, f"{metric}: bars nested CV (the honest estimate), ticks CV")
    _legend_above(ax, [Patch(color=OTHERS), Patch(facecolor=SUBMISSION, edgecolor="black"),
                       Line2D([], [], color="black", marker="|", linestyle="none", markersize=12,
                              markeredgewidth=2)],
                  ["nested CV", "nested CV of the submission", "CV (selected on every fold)"])
    return fig


def _correlation_figure(corr: pd.DataFrame) -> Figure:
    n = len(corr)
    size = min(11.0, 3.0 + 0.75 * n)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot()
    vmin = min(0.0, float(corr.min().min()))
    image = ax.imshow(corr.to_numpy(), cmap="viridis", vmin=vmin, vmax=1)
    ticks = LABEL_SIZE if n <= 20 else 7
    ax.set_xticks(range(n), corr.columns, rotation=90, fontsize=ticks)
    ax.set_yticks(range(n), corr.index, fontsize=ticks)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                value = corr.iat[i, j]
                dark = (value - vmin) / (1 - vmin) < 0.5       # viridis: dark below its middle
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=LABEL_SIZE,
                        color="white" if dark else "black")
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("Pearson correlation of OOF probabilities", fontsize=LABEL_SIZE + 1)
    bar.ax.tick_params(labelsize=LABEL_SIZE)
    return fig


def _curve_figure(curve: pd.DataFrame, metric: str, chosen: int | None) -> Figure:
    fig = Figure(figsize=(PAGE_INCHES, 4.5))
    ax = fig.add_subplot()
    ax.plot(curve["size"], curve.cv, "o-", color=OTHERS, label="best subset of this size (selected on CV)")
    if curve.nested_cv.notna().any():
        ax.plot(curve["size"], curve.nested_cv, "s--", color="black",
                label="nested CV (selection re-done per fold)")
    if chosen is not None:
        ax.axvline(chosen, color=SUBMISSION, linestyle=":", lw=2, label=f"chosen size {chosen}")
    ax.set_xlabel("subset size (models blended)", fontsize=LABEL_SIZE + 1)
    start = ax.get_ylim()[0]          # where the autoscaled axis starts, a little below the lowest
    ax.set_ylabel(f"CV {metric} (the axis starts at {start:.3f}, not 0)" if abs(start) > 1e-9
                  else f"CV {metric}", fontsize=LABEL_SIZE + 1)
    ax.set_xticks(curve["size"])
    ax.tick_params(labelsize=LABEL_SIZE)
    ax.grid(alpha=0.3)
    _legend_above(ax)
    return fig


def _per_class_figure(table: pd.DataFrame, single_name: str, blend_name: str = "searched blend") -> Figure:
    n = len(table)
    order = table.sort_values("gain", kind="stable")
    fig = Figure(figsize=(PAGE_INCHES, 1.3 + 0.3 * n))
    ax = fig.add_subplot()
    y = np.arange(n)
    ax.barh(y - 0.2, order.single, height=0.4, label=f"best single model: {single_name}", color=OTHERS)
    ax.barh(y + 0.2, order.blend, height=0.4, label=blend_name, color=SUBMISSION)
    ax.set_yticks(y, order["class"], fontsize=LABEL_SIZE if n <= 40 else 7)
    _score_limits(ax, np.concatenate([order.single.to_numpy(), order.blend.to_numpy()]),
                  "per-class lwlrap (classes sorted by the blend's gain, largest at the top)",
                  floor=0.0)
    ax.set_xlim(ax.get_xlim()[0], 1.0)
    ax.set_ylim(-0.7, n - 0.3)
    _legend_above(ax, ncol=2)
    return fig


def _history_figure(name: str, folds: dict[int, pd.DataFrame]) -> Figure:
    has_score = any("val_score" in f.columns for f in folds.values())
    fig = Figure(figsize=(PAGE_INCHES if has_score else PAGE_INCHES * 0.6, 3.8))
    axes = fig.subplots(1, 2 if has_score else 1, squeeze=False)[0]
    for index, (k, frame) in enumerate(sorted(folds.items())):
        color = f"C{index % 10}"
        groups = frame.groupby("seed") if "seed" in frame.columns else [(None, frame)]
        for s, (seed, part) in enumerate(groups):
            label = f"fold {k}" if s == 0 else None
            axes[0].plot(part.epoch, part.train_loss, "-", color=color, alpha=0.8, label=label)
            axes[0].plot(part.epoch, part.val_loss, "--", color=color, alpha=0.8)
            if has_score and "val_score" in part.columns:
                axes[1].plot(part.epoch, part.val_score, "-", color=color, alpha=0.8)
    axes[0].set_title(f"{name}: loss (solid train, dashed early-stopping rows)", fontsize=LABEL_SIZE)
    if has_score:
        axes[1].set_title(f"{name}: score on the early-stopping rows", fontsize=LABEL_SIZE)
    for ax in axes:
        ax.set_xlabel("epoch", fontsize=LABEL_SIZE)
        ax.tick_params(labelsize=LABEL_SIZE - 1)
        ax.grid(alpha=0.3)
    # colour: the fold; the legend beside the last panel, outside the curves
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
                    fontsize=LABEL_SIZE - 1)
    return fig


# ---------------------------------------------------------------- the page


@dataclass
class Report:
    """html: the page; notes: one line per section left empty or file left out (also in the page)."""

    html: str
    notes: list[str] = field(default_factory=list)
    n_images: int = 0


def _table(frame: pd.DataFrame, float_format: str = "{:.4f}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    floats = [frame[c].dtype.kind == "f" for c in frame.columns]
    rows = []
    for values in frame.itertuples(index=False):
        cells = "".join(f"<td class=num>{float_format.format(v)}</td>" if is_float
                        else f"<td>{html.escape(str(v))}</td>" for v, is_float in zip(values, floats))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 2em; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; } img.wide { width: 100%; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5em .8em; }
.meta { color: #666; font-size: .85em; }
"""


class _Page:
    """The sections of the page as they are built, the notes they raised and the figures drawn."""

    def __init__(self):
        self.parts: list[str] = []
        self.notes: list[str] = []
        self.images = 0

    def section(self, title: str, *body: str) -> None:
        self.parts.append(f"<section><h2>{html.escape(title)}</h2>{''.join(body)}</section>")

    def note(self, text: str) -> str:
        """The note as HTML, recorded for Report.notes."""
        self.notes.append(text)
        return _note(text)

    def figure(self, fig: Figure) -> str:
        self.images += 1
        return _png(fig)


def build_report(root: Path | str = layout.DEFAULT_ROOT, *, metric: str = "lwlrap",
                 collection: Collection | None = None, record: dict | None = None,
                 histories: Mapping[str, Mapping[int, list]] | None = None,
                 on_progress: ProgressCallback | None = None) -> Report:
    """Collect ``root`` (unless ``collection`` is given) and build the page.

    record: the subsets.json content (read from ``root`` when None); histories: {experiment:
    {fold: its history.json entries}} a caller holds already (the others are read from ``root``):
    a command that has just written them passes them instead of reading them back.
    Raises LayoutError only when the layout itself cannot be collected; every other missing input
    becomes a note in its section.
    """
    root = Path(root)
    scorer = get_metric(metric)
    if collection is None:
        collection = collect(root, on_progress=on_progress)
    page = _Page()
    single = _leaderboard_section(page, collection, scorer)
    _correlation_section(page, collection)
    try:
        result = read_subsets(root) if record is None else record
    except LayoutError as error:
        missing = page.note(str(error))
        page.section("Subset search", missing)
        page.section(_PER_CLASS_TITLE, missing)
    else:
        where = subsets_path(root)
        candidates = _candidates_section(page, result, scorer, where)
        if candidates is None or result.get("by_size"):   # `stack auto`: its recipes instead
            _curve_section(page, result, scorer, where)
        _per_class_section(page, collection, result, single, where)
    _history_section(page, root, collection, histories or {})
    return Report(html=_page_html(root, collection, scorer, page.parts), notes=page.notes,
                  n_images=page.images)


_PER_CLASS_TITLE = "Per-class lwlrap: searched blend vs best single model"
_PER_CLASS_AUTO_TITLE = "Per-class lwlrap: the submission vs best single model"


def _leaderboard_section(page: _Page, collection: Collection, scorer) -> str:
    """The leaderboard and the experiments collect skipped; returns the best single model."""
    board = leaderboard(collection, scorer)
    shown = board.drop(columns=[c for c in board.columns if c.startswith("fold_")
                                and c not in ("fold_mean", "fold_std")])
    body = [page.figure(_leaderboard_figure(board, scorer.name)), _table(shown)]
    if collection.skipped:
        body.append(page.note(f"{len(collection.skipped)} experiment(s) skipped by collect: "
                              + " | ".join(collection.skipped)))
    page.section(f"Leaderboard ({scorer.name}, {'higher' if scorer.greater_is_better else 'lower'} "
                 "is better)", *body)
    return best_single(collection, board)


def _correlation_section(page: _Page, collection: Collection) -> None:
    title = "Correlation of the experiments' OOF predictions"
    if collection.n_models >= 2:
        page.section(title, "<p>Models that disagree (lower correlation) at a similar score blend "
                     "best.</p>", page.figure(_correlation_figure(oof_correlation(collection))))
    else:
        page.section(title, page.note("only one experiment: no correlation to show"))


def _candidates_section(page: _Page, result: dict, scorer, where: Path) -> pd.DataFrame | None:
    """`stack auto`'s candidate recipes, when the last search was its; returns them (or None)."""
    title = "stack auto: the candidate recipes"
    try:
        candidates = auto_candidates(result)
    except LayoutError as error:
        page.section(title, page.note(f"{where}: {error}"))
        return None
    if candidates is not None:
        estimate = result.get("estimate")
        page.section(title,
                     f"<p>The submission is <b>{html.escape(str(result.get('recipe')))}</b>. "
                     "Nested CV is the honest estimate: each choice repeated without the fold "
                     "it is scored on.</p>",
                     f"<p>{html.escape(str(estimate))}</p>" if estimate else "",
                     _written_as(result, candidates),
                     page.figure(_candidates_figure(candidates,
                                                    str(result.get("metric", scorer.name)))),
                     _table(candidates))
    return candidates


def _written_as(result: dict, candidates: pd.DataFrame) -> str:
    """Which experiment of the leaderboard the submission is, and why its CV there is the nested
    CV rather than the recipe's CV in the chart (its OOF holds the nested predictions)."""
    members, cv = list(result.get("members") or []), result.get("cv")
    chosen = candidates[candidates.chosen]
    if len(members) != 1 or cv is None or chosen.empty:
        return ""
    name, row = html.escape(members[0]), chosen.iloc[0]
    if abs(float(cv) - row.nested_cv) > 5e-5:
        return f"<p>In the leaderboard the submission is the experiment <b>{name}</b> (CV {float(cv):.4f}).</p>"
    return (f"<p>In the leaderboard the submission is the experiment <b>{name}</b>: its out-of-fold "
            f"predictions are the recipe's nested ones, so its CV there ({float(cv):.4f}) is the "
            f"nested CV, not the CV of the selections made on every fold ({row.cv:.4f}).</p>")


def _curve_section(page: _Page, result: dict, scorer, where: Path) -> None:
    """The best score by subset size, with the chosen subset."""
    title = "Subset search: best score by subset size"
    members = list(result["members"])
    summary = (f"<p>Chosen by {html.escape(str(result.get('method', '?')))} search with the "
               f"{html.escape(str(result.get('blend', 'geo-mean')))} blend: "
               f"<b>{html.escape(', '.join(members))}</b>; CV "
               f"{_fmt(result.get('cv'))}, nested CV {_fmt(result.get('nested_cv'))}.</p>")
    try:
        curve = subset_curve(result)
    except LayoutError as error:
        page.section(title, summary, page.note(f"{where}: {error}"))
        return
    page.section(title, summary,
                 page.figure(_curve_figure(curve, str(result.get("metric", scorer.name)),
                                           len(members))),
                 _table(curve))


def _per_class_section(page: _Page, collection: Collection, result: dict, single: str,
                       where: Path) -> None:
    """Per-class lwlrap of the searched blend (after `stack auto`: the submission) against the
    best single model."""
    title = _PER_CLASS_AUTO_TITLE if result.get("recipe") else _PER_CLASS_TITLE
    try:
        blended = searched_blend(collection, result)
    except StackError as error:      # a member gone, or a blend name this version lacks
        page.section(title, page.note(f"{where}: {error}"))
        return
    single_probs = collection.oof[:, collection.index([single])[0]]
    table = per_class_comparison(collection.y, blended, single_probs, collection.classes)
    overall = (f"<p>lwlrap of the blend {(table.blend * table.weight).sum():.4f} vs "
               f"{html.escape(single)} {(table.single * table.weight).sum():.4f}; the blend "
               f"is better on {(table.gain > 0).sum()} of {len(table)} classes, worse on "
               f"{(table.gain < 0).sum()}.</p>")
    # after `stack auto` the record is its submission's recipe, not one subset search
    name = f"the submission: {result['recipe']}" if result.get("recipe") else "searched blend"
    page.section(title, overall, page.figure(_per_class_figure(table, single, name)),
                 _table(table.sort_values("gain", ascending=False, kind="stable")))


def _history_section(page: _Page, root: Path, collection: Collection,
                     known: Mapping[str, Mapping[int, list]]) -> None:
    """The level-2 learning curves of every experiment that has them (``known``: held already)."""
    curves, problems = read_histories(root, [n for n in collection.names if n not in known])
    held = {name: {k: _history_frame(entries) for k, entries in folds.items()}
            for name, folds in known.items() if name in collection.names}
    curves = {n: curves.get(n) or held[n] for n in collection.names if n in curves or n in held}
    body = [page.note(p) for p in problems]
    for name, folds in curves.items():
        body.append(page.figure(_history_figure(name, folds)))
    if not curves:
        body.append(page.note("no level-2 learning curves (no <experiment>/fold_<k>/history.json); "
                              "run `stack train` to make some"))
    if curves:
        body.insert(0, "<p>Each fold model's early-stopping rows are a held-out part of its "
                       "training rows (meta.json <code>early_stopping: inner-holdout</code>), or, "
                       "with <code>--early-stop-on-fold</code>, the fold it predicts. With "
                       "<code>refit</code> the predictions come from a fresh net trained on every "
                       "training row for the best epoch count.</p>")
    page.section("Level-2 learning curves", *body)


def _page_html(root: Path, collection: Collection, scorer, parts: Sequence[str]) -> str:
    """The whole HTML document around the sections."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"<h1>Stacking report</h1><p class=meta>root {html.escape(str(root.resolve()))} · "
              f"metric {scorer.name} · {collection.n_models} experiments, {len(collection.ids)} "
              f"rows, {len(collection.test_ids)} test rows, {len(collection.classes)} classes, "
              f"{len(collection.fold_numbers)} folds · made {created} by `stack report`</p>")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f'<meta name="generator" content="stack report --root {html.escape(str(root))} '
            f'--metric {scorer.name}"><title>Stacking report: {html.escape(root.name)}</title>'
            f"<style>{_STYLE}</style></head><body>{header}{''.join(parts)}</body></html>\n")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def write_report(root: Path | str, out: Path | str, *, metric: str = "lwlrap", force: bool = False,
                 collection: Collection | None = None, record: dict | None = None,
                 histories: Mapping[str, Mapping[int, list]] | None = None,
                 on_progress: ProgressCallback | None = None) -> Report:
    """Build the report (:func:`build_report`) and write it to ``out`` atomically;
    OutputExistsError unless ``force``."""
    out = Path(out)
    provenance.check_replaceable(out, root)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists; pass `force` to replace it or `out` another path")
    report = build_report(root, metric=metric, collection=collection, record=record,
                          histories=histories, on_progress=on_progress)
    layout.atomic_write_text(out, report.html)
    return report
