"""`stack report`: a self-contained HTML page whose every figure is a real PNG, also in a browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from stacker.cli.app import app
from stacker.errors import LayoutError, OutputExistsError
from stacker.layout.collect import collect
from stacker.metrics import per_class_lwlrap
from stacker.report import (
    build_report,
    per_class_comparison,
    read_histories,
    searched_blend,
    subset_curve,
    write_report,
)
from stacker.simulate import write_simulated_layout

CLASSES = [f"class_{j:02d}" for j in range(8)]


def _layout(root: Path, *, n_rows: int = 120, n_experiments: int = 4, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = [f"clip_{i:04d}.wav" for i in range(n_rows)]
    labels = [tuple(sorted({CLASSES[i % len(CLASSES)], CLASSES[int(rng.integers(len(CLASSES)))]}))
              for i in range(n_rows)]
    return write_simulated_layout(root, ids, labels, [i % 4 for i in range(n_rows)],
                                  n_experiments=n_experiments, n_test=30, classes=CLASSES,
                                  seed=seed, skills=np.linspace(0.6, 1.4, n_experiments))


def _write_search(root: Path, members, **extra) -> None:
    result = {"method": "exhaustive", "metric": "lwlrap", "blend": "geo-mean", "members": members,
              "cv": 0.9, "nested_cv": 0.88,
              "by_size": [{"size": s, "cv": 0.8 + 0.02 * s, "nested_cv": None if s == 4 else 0.79 + 0.01 * s}
                          for s in range(1, 5)]}
    result.update(extra)
    (root / ".stack").mkdir(exist_ok=True)
    (root / ".stack" / "subsets.json").write_text(json.dumps(result))


def _write_history(root: Path, name: str, folds=range(4)) -> None:
    for k in folds:
        entries = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.1 / (e + 1) + 0.01 * e,
                    "val_score": 0.7 + 0.02 * e + 0.01 * k, "lr": 1e-3, "seed": s}
                   for s in (0, 1) for e in range(6)]
        (root / name / f"fold_{k}" / "history.json").write_text(json.dumps(entries))


@pytest.fixture
def full_layout(tmp_path):
    root = tmp_path / "layout"
    names = _layout(root)
    _write_search(root, names[1:])
    _write_history(root, names[-1])
    return root


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _check_self_contained(page: str) -> list[bytes]:
    """Every img is a PNG data URI; nothing refers to another file or host. Returns the PNGs."""
    parser = _Tags()
    parser.feed(page)
    pngs = []
    for tag, attrs in parser.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for key in ("src", "href", "srcset"):
            value = attrs.get(key)
            if value is None:
                continue
            assert tag == "img" and key == "src", f"<{tag} {key}={value[:40]}>"
            prefix = "data:image/png;base64,"
            assert value.startswith(prefix)
            data = base64.b64decode(value[len(prefix):], validate=True)
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            image = imread(io.BytesIO(data), format="png")
            assert image.shape[0] > 50 and image.shape[1] > 50
            pngs.append(data)
    assert "url(" not in page and "@import" not in page
    return pngs


def test_full_report_is_self_contained_with_every_section(full_layout):
    report = build_report(full_layout)
    pngs = _check_self_contained(report.html)
    assert len(pngs) == report.n_images == 5      # leaderboard, correlation, curve, per class, curves
    assert report.notes == []
    for heading in ("Leaderboard", "Correlation", "Subset search", "Per-class lwlrap",
                    "Level-2 learning curves"):
        assert heading in report.html
    assert "sim_001, sim_002, sim_003" in report.html
    for name in ("sim_000", "sim_003", "class_07"):
        assert name in report.html


def test_absent_inputs_are_said_in_the_page(tmp_path):
    root = tmp_path / "bare"
    _layout(root, n_experiments=1)
    report = build_report(root)
    assert len(_check_self_contained(report.html)) == report.n_images == 1
    # the missing search is said in both sections that need it, and listed once
    assert report.html.count('class="note"') == 4 and len(report.notes) == 3
    assert "subsets.json" in report.html and "search-subsets" in report.html
    assert "history.json" in report.html and "only one experiment" in report.html


def test_unreadable_inputs_become_notes_not_failures(full_layout):
    _write_search(full_layout, ["sim_001", "not_an_experiment"], by_size="oops")
    (full_layout / "sim_000" / "fold_0" / "history.json").write_text("{broken")
    (full_layout / "sim_000" / "fold_1" / "history.json").write_text('[{"epoch": 1}]')
    report = build_report(full_layout)
    _check_self_contained(report.html)
    text = " ".join(report.notes)
    assert "by_size" in text and "not_an_experiment" in text
    assert "sim_000/fold_0/history.json" in text and "'train_loss'" in text
    assert report.n_images == 3                    # leaderboard, correlation, sim_003's curves


def test_an_unknown_blend_name_is_a_note(full_layout):
    _write_search(full_layout, ["sim_001", "sim_002"], blend="median-of-wizards")
    report = build_report(full_layout)
    assert any("median-of-wizards" in n for n in report.notes) and report.n_images == 4


def test_searched_blend_is_the_plain_geometric_mean(full_layout):
    collection = collect(full_layout)
    oof = collection.oof.astype(np.float64)
    naive = np.exp(np.log(np.clip(oof[:, 1:], 1e-7, 1)).mean(axis=1))
    result = {"members": ["sim_001", "sim_002", "sim_003"]}
    np.testing.assert_allclose(searched_blend(collection, result), naive, rtol=1e-6)
    weighted = {"members": ["sim_001", "sim_003"], "weights": {"sim_001": 1, "sim_003": 3}}
    naive = np.exp(0.25 * np.log(np.clip(oof[:, 1], 1e-7, 1)) + 0.75 * np.log(np.clip(oof[:, 3], 1e-7, 1)))
    np.testing.assert_allclose(searched_blend(collection, weighted), naive, rtol=1e-6)
    with pytest.raises(LayoutError, match="nope"):
        searched_blend(collection, {"members": ["nope"]})


def test_per_class_comparison_matches_the_metric(full_layout):
    collection = collect(full_layout)
    a, b = collection.oof[:, 3], collection.oof[:, 0]
    table = per_class_comparison(collection.y, a, b, collection.classes)
    scores, weights = per_class_lwlrap(collection.y, a)
    np.testing.assert_allclose(table.blend, scores)
    np.testing.assert_allclose(table.gain, scores - per_class_lwlrap(collection.y, b)[0])
    assert table["class"].tolist() == CLASSES and abs(table.weight.sum() - 1) < 1e-9


def test_subset_curve_sorts_and_keeps_missing_nested_as_nan():
    curve = subset_curve({"by_size": [{"size": 2, "cv": 0.5}, {"size": 1, "cv": 0.4, "nested_cv": 0.3}]})
    assert curve["size"].tolist() == [1, 2] and curve.nested_cv.isna().tolist() == [False, True]
    for bad in ({}, {"by_size": []}, {"by_size": [{"cv": 1}]}, {"by_size": [{"size": 1, "cv": "x"}]}):
        with pytest.raises(LayoutError, match="search-subsets"):
            subset_curve(bad)


def test_read_histories_groups_by_fold(full_layout):
    curves, problems = read_histories(full_layout, ["sim_000", "sim_003"])
    assert problems == [] and list(curves) == ["sim_003"] and sorted(curves["sim_003"]) == [0, 1, 2, 3]
    assert len(curves["sim_003"][2]) == 12 and {"seed", "val_score"} <= set(curves["sim_003"][2].columns)


def test_write_report_refuses_to_overwrite(full_layout, tmp_path):
    out = tmp_path / "r.html"
    write_report(full_layout, out)
    with pytest.raises(OutputExistsError, match="`force`"):
        write_report(full_layout, out)
    out.write_text("old")
    write_report(full_layout, out, force=True)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_the_report_file_is_readable_by_others_like_any_new_file(full_layout, tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the result must get the usual umask mode."""
    import os

    out = write_report(full_layout, tmp_path / "shared.html") and tmp_path / "shared.html"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_cli_report(full_layout, tmp_path):
    out = tmp_path / "report.html"
    runner = CliRunner()
    result = runner.invoke(app, ["report", "--root", str(full_layout), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 figures" in result.output and out.exists()
    again = runner.invoke(app, ["report", "--root", str(full_layout), "--out", str(out)])
    assert again.exit_code == 1 and "--force" in again.output and "Traceback" not in again.output
    missing = runner.invoke(app, ["report", "--root", str(tmp_path / "nothing"), "--out",
                                  str(tmp_path / "x.html")])
    assert missing.exit_code == 1 and "folds.csv" in missing.output


# ---------------------------------------------------------------- a real browser

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).exists()),
                None)
# Appended to a copy of the report: once every image has loaded, write how many images the page has
# and how many decoded to a picture with a width into the DOM, where --dump-dom shows it.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
  var out = document.createElement('pre'); out.id = 'probe';
  out.textContent = 'IMAGES ' + imgs.length + ' RENDERED ' + ok.length;
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_every_image_renders_in_headless_chromium(full_layout, tmp_path):
    report = build_report(full_layout)
    page = tmp_path / "probe.html"
    page.write_text(report.html.replace("</body>", PROBE + "</body>"))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r"IMAGES (\d+) RENDERED (\d+)", done.stdout)
    assert found, f"no probe output; chromium said: {done.stderr[-2000:]}"
    assert int(found.group(1)) == report.n_images == 5
    assert int(found.group(2)) == 5


# Once laid out: the page's left and right margins (the first heading's distance from each edge
# of the window) and whether anything is wider than the window (a horizontal scroll bar).
MARGINS = """<script>
window.addEventListener('load', function () {
  var h = document.querySelector('h1').getBoundingClientRect();
  var out = document.createElement('pre');
  out.textContent = 'WIDTH ' + window.innerWidth + ' LEFT ' + Math.round(h.left) + ' RIGHT ' +
    Math.round(window.innerWidth - h.right) + ' SCROLL ' + document.documentElement.scrollWidth;
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [800, 1400])
def test_the_page_has_margins_in_a_narrow_and_a_wide_window(full_layout, tmp_path, width):
    page = tmp_path / "margins.html"
    page.write_text(build_report(full_layout).html.replace("</body>", MARGINS + "</body>"))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
               f"--window-size={width},2000", "--virtual-time-budget=10000", "--dump-dom",
               page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r"WIDTH (\d+) LEFT (-?\d+) RIGHT (-?\d+) SCROLL (\d+)", done.stdout)
    assert found, f"no probe output; chromium said: {done.stderr[-2000:]}"
    window, left, right, scroll = map(int, found.groups())
    assert window == width
    assert left >= 24 and right >= 24, (left, right)        # 2em of padding at the least
    assert abs(left - right) <= 2                           # centred
    assert scroll <= width                                  # nothing wider than the window


# ---------------------------------------------------------------- what the figures show


def _candidates():
    import pandas as pd

    names = ["best single", "first-level GES", "final linear", "final blend"]
    return pd.DataFrame({"recipe": names, "what": "", "cv": [0.80, 0.84, 0.86, 1.0],
                         "nested_cv": [0.80, 0.82, 0.83, 0.85], "holdout_cv": 0.8,
                         "chosen": [False, False, False, True]})


def _figures(full_layout):
    """Every chart of the report but the heatmap: {name: figure}."""
    import pandas as pd

    from stacker import report as rep
    from stacker.leaderboard import leaderboard

    collection = collect(full_layout)
    board = leaderboard(collection)
    table = rep.per_class_comparison(collection.y, collection.oof[:, 1], collection.oof[:, 0],
                                     collection.classes)
    curve = pd.DataFrame({"size": [1, 2, 3], "cv": [0.8, 0.84, 0.85], "nested_cv": [0.79, 0.8, 0.8]})
    histories, _ = read_histories(full_layout, collection.names)
    figures = {"leaderboard": rep._leaderboard_figure(board, "lwlrap"),
               "candidates": rep._candidates_figure(_candidates(), "lwlrap"),
               "per class": rep._per_class_figure(table, collection.names[0]),
               "curve": rep._curve_figure(curve, "lwlrap", 2),
               "history": rep._history_figure(*next(iter(histories.items())))}
    return figures


def test_legends_lie_outside_the_data(full_layout):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for name, fig in _figures(full_layout).items():
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert legends, name
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                inside = ax.get_window_extent(renderer)
                overlap = min(box.x1, inside.x1) - max(box.x0, inside.x0), \
                    min(box.y1, inside.y1) - max(box.y0, inside.y0)
                assert min(overlap) <= 0, f"{name}: the legend covers the axes"


def test_the_submission_has_its_own_colour_and_its_cv_tick_is_not_clipped():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from stacker import report as rep

    fig = rep._candidates_figure(_candidates(), "lwlrap")
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    colors = [tuple(bar.get_facecolor()[:3]) for bar in ax.patches]
    from matplotlib.colors import to_rgb

    # bars drawn bottom-up: the submission (last recipe) is the top bar, and the only green one
    assert colors.count(to_rgb(rep.SUBMISSION)) == 1 and colors[0] == to_rgb(rep.SUBMISSION)
    ticks = [line for line in ax.lines if line.get_marker() == "|"]
    assert ticks and not ticks[0].get_clip_on()          # the CV of 1.0 sits on the frame, drawn
    assert ax.get_xlim()[1] >= 1.0
    labels = {t.get_text(): t.get_fontweight() for t in ax.get_yticklabels()}
    assert labels["final blend"] == "bold" and labels["best single"] == "normal"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["nested CV", "nested CV of the submission", "CV (selected on every fold)"]


def test_score_axes_say_where_they_start(full_layout):
    figures = _figures(full_layout)
    for name in ("leaderboard", "candidates", "per class"):
        ax = figures[name].axes[0]
        start = ax.get_xlim()[0]
        assert start > 0 and f"the axis starts at {start:.3f}, not 0" in ax.get_xlabel(), name
    ax = figures["curve"].axes[0]           # the curve's score axis is its y axis
    start = ax.get_ylim()[0]
    assert 0 < start < 0.79 and f"the axis starts at {start:.3f}, not 0" in ax.get_ylabel()


def test_charts_use_the_page_width_and_heatmap_labels_are_readable(full_layout):
    from stacker import report as rep

    figures = _figures(full_layout)
    for name in ("leaderboard", "candidates", "per class", "curve", "history"):
        assert figures[name].get_figwidth() == rep.PAGE_INCHES, name
    corr = rep._correlation_figure(rep.oof_correlation(collect(full_layout)))
    texts = [t for t in corr.axes[0].texts]
    assert texts and min(t.get_fontsize() for t in texts) >= 10
    report = build_report(full_layout)
    tags = re.findall(r'<img alt="figure"( class="wide")? width="(\d+)"', report.html)
    assert len(tags) == report.n_images and max(int(w) for _, w in tags) <= 1100
    # leaderboard, curve, per class and the learning curves fill the page; the square heatmap not
    assert [bool(wide) for wide, _ in tags] == [True, False, True, True, True]
    assert "img.wide { width: 100%; }" in report.html


def test_after_stack_auto_the_per_class_chart_names_the_submission(full_layout, monkeypatch):
    from stacker import report as rep

    drawn = []
    real = rep._per_class_figure
    monkeypatch.setattr(rep, "_per_class_figure", lambda *a: drawn.append(a[2:]) or real(*a))
    record = json.loads((full_layout / ".stack" / "subsets.json").read_text())
    build_report(full_layout, record=record)
    build_report(full_layout, record={**record, "recipe": "final blend"})
    assert drawn == [("searched blend",), ("the submission: final blend",)]


def test_after_stack_auto_its_recipes_replace_the_size_curve_and_the_submission_is_named(full_layout):
    """README: after `stack auto` the report shows its candidate recipes where a plain search
    shows the curve by subset size; the submission's experiment is named, with why its
    leaderboard CV is the nested CV and not the recipe's CV in the chart."""
    record = json.loads((full_layout / ".stack" / "subsets.json").read_text())
    plain = build_report(full_layout, record=record).html
    assert "Subset search: best score by subset size" in plain and "candidate recipes" not in plain
    assert "Per-class lwlrap: searched blend vs best single model" in plain
    auto = {**record, "by_size": [], "recipe": "final blend", "members": ["sim_003"],
            "weights": {"sim_003": 1.0}, "cv": 0.85,
            "candidates": [{"name": "best single", "cv": 0.8, "nested_cv": 0.8},
                           {"name": "final blend", "cv": 0.9, "nested_cv": 0.85}]}
    report = build_report(full_layout, record=auto)
    page = report.html
    assert "Subset search" not in page and "no curve" not in page and report.notes == []
    assert "stack auto: the candidate recipes" in page
    assert ("In the leaderboard the submission is the experiment <b>sim_003</b>: its out-of-fold "
            "predictions are the recipe's nested ones, so its CV there (0.8500) is the nested CV, "
            "not the CV of the selections made on every fold (0.9000).") in page
    assert "Per-class lwlrap: the submission vs best single model" in page
    other = build_report(full_layout, record={**auto, "cv": 0.87}).html   # not the nested CV
    assert "the experiment <b>sim_003</b> (CV 0.8700).</p>" in other and "nested ones" not in other
    with_curve = build_report(full_layout, record={**auto, "by_size": record["by_size"]}).html
    assert "Subset search: best score by subset size" in with_curve
