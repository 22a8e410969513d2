"""`stack demo`: the whole method, end to end, on the embedded synthetic dataset.

Stages (each a library call of the project, each reporting progress):

1. generate the dataset (:mod:`first_level.synth`) and make stratified folds;
2. first level: log-mel spectrograms, the audio CNN, and scikit-learn models on log-mel statistics,
   each trained K-fold into the standard layout;
3. the second level through :func:`stacker.auto.run_auto`, the code of `stack auto`: first-level
   recipes, a short Optuna tuning with a fold held out, honest level-2 MLPs, the final recipe by
   nested CV, the submission and the report;
4. every experiment and the chosen recipes scored on the held-out test labels.

Workdir::

    <workdir>/demo.json         the settings of the run (a second run with the same settings resumes)
    <workdir>/data/             the generated dataset (train/, test/, train.csv, test_labels.csv, ...)
    <workdir>/predictions/      the prediction layout: folds.csv, one folder per experiment, .stack/
    <workdir>/submission.csv    the final blend's test predictions, in sample_submission.csv's shape
    <workdir>/report.html       `stack report` of the layout
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from first_level import synth
from first_level.audio.dataset import prepare_audio
from first_level.audio.features import MelSettings, logmel_statistics
from first_level.audio.metadata import read_metadata
from first_level.audio.model import AudioCNNModel, epoch_notes
from first_level.folds import make_folds
from first_level.runner import run_kfold
from first_level.sklearn_models import SklearnFoldModel
from stacker import layout
from stacker.auto import BLEND_NAME, AutoSettings, run_auto
from stacker.blend import Blend
from stacker.errors import LayoutError, OutputExistsError
from stacker.layout.collect import Collection, collect
from stacker.leaderboard import leaderboard
from stacker.metrics import lwlrap
from stacker.runtime import Laps, Stage, fold_seed, quiet_stage

DEMO_FILE = "demo.json"


@dataclass(frozen=True)
class DemoSettings:
    """Everything a demo run depends on (recorded in demo.json)."""

    n_train: int
    n_test: int
    n_folds: int
    clip_seconds: float
    mel: dict
    cnn: dict
    sklearn: dict                      # experiment name -> (estimator, params)
    tune_trials: int
    level2: dict                       # MLPParams overrides
    level2_seeds: tuple[int, ...]
    seed: int = 0
    quick: bool = False
    n_level2: int = 3


def demo_settings(*, quick: bool = False, seed: int = 0) -> DemoSettings:
    """The full run (6.5 minutes on a busy 2-core machine, 4 minutes of CPU) or the quick one
    (under a minute)."""
    # 32 mel bands and a 48-frame crop keep the CNN's cost per clip ~15x below the 'fast' preset
    mel = dict(sample_rate=16000, n_mels=32, n_fft=512, hop_length=320, fmin=20.0)
    sklearn = {
        "stats_logreg": ("logreg", {"C": 0.05, "max_iter": 500}),
        "stats_extratrees": ("et", {"n_estimators": 150, "min_samples_leaf": 2}),
        "stats_knn": ("knn", {"n_neighbors": 15}),
        "stats_mlp": ("mlp", {"hidden_layer_sizes": [128], "alpha": 1e-2, "max_iter": 200}),
    }
    if quick:
        return DemoSettings(
            n_train=240, n_test=60, n_folds=3, clip_seconds=1.5, mel=mel,
            cnn=dict(channels=(8, 16, 32), crop_frames=48, batch_size=16, epochs=12, lr=3e-3,
                     patience=4, mixup_alpha=0.0, freq_mask=4, time_mask=6, dropout=0.1),
            sklearn={k: sklearn[k] for k in ("stats_logreg", "stats_extratrees", "stats_knn")},
            tune_trials=2, level2=dict(hidden=64, bottleneck=16, lr=1e-2, batch_size=32,
                                      max_epochs=60, patience=10),
            level2_seeds=(seed,), seed=seed, quick=True, n_level2=2)
    return DemoSettings(
        n_train=1600, n_test=400, n_folds=5, clip_seconds=1.5, mel=mel,
        cnn=dict(channels=(8, 16, 32, 64), crop_frames=48, batch_size=32, epochs=14, lr=3e-3,
                 patience=4, mixup_alpha=0.2, freq_mask=4, time_mask=8, dropout=0.2),
        sklearn=sklearn, tune_trials=8,
        level2=dict(hidden=128, bottleneck=32, lr=3e-3, batch_size=64, max_epochs=80, patience=10),
        level2_seeds=(seed, seed + 1), seed=seed)


@dataclass
class DemoResult:
    """What the demo made and measured.

    models: one row per experiment: experiment, level, cv (lwlrap), test (held-out lwlrap).
    """

    workdir: Path
    models: pd.DataFrame
    best_single: str
    first_level_subset: list[str]
    first_level_subset_cv: float
    first_level_subset_nested_cv: float | None
    first_level_subset_test: float
    level2_cv: dict[str, float]
    level2_inputs: dict[str, list[str]]
    final_members: list[str]
    final_cv: float
    final_nested_cv: float | None
    final_test: float
    best_single_cv: float
    best_single_test: float
    files: dict[str, Path]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    final_recipe: str = ""
    estimate: str = ""

    @property
    def blend_beats_single(self) -> bool:
        return self.final_cv > self.best_single_cv


def _check_workdir(workdir: Path, settings: DemoSettings, force: bool) -> None:
    """A workdir is the demo's own when it holds demo.json; the same settings resume there."""
    marker = workdir / DEMO_FILE
    wanted = json.loads(json.dumps(asdict(settings)))
    if marker.exists():
        if json.loads(marker.read_text(encoding="utf-8")) != wanted and not force:
            raise OutputExistsError(f"{marker}: this workdir holds a demo run with other settings "
                                    "(--quick or --seed); use another --workdir or pass --force")
    elif workdir.exists() and any(workdir.iterdir()) and not force:
        raise OutputExistsError(f"{workdir} exists and is not a demo workdir (no {DEMO_FILE}); "
                                "use another --workdir or pass --force")
    layout.atomic_write_json(marker, wanted)


def run_demo(workdir: Path | str, *, quick: bool = False, seed: int = 0, force: bool = False,
             settings: DemoSettings | None = None, stage: Stage | None = None) -> DemoResult:
    """Run every stage in ``workdir``; see the module docstring.

    stage: a :data:`~stacker.runtime.Stage`, entered once per stage (the CLI passes
    :func:`stacker.cli.common.progress_bar`; the CNN's stage also gets a note per epoch).
    force: regenerate the dataset and retrain every experiment instead of resuming.
    settings: sizes and models (default: :func:`demo_settings` of ``quick`` and ``seed``).
    """
    stage = stage or quiet_stage
    workdir = Path(workdir)
    settings = settings or demo_settings(quick=quick, seed=seed)
    seed = settings.seed
    _check_workdir(workdir, settings, force)
    data_dir, root = workdir / "data", workdir / "predictions"
    laps = Laps()
    lap, seconds = laps.lap, laps.seconds
    notes: list[str] = []

    # ---- 1. the dataset and the folds
    with stage(f"dataset: {settings.n_train} + {settings.n_test} synthetic clips") as update:
        dataset = _dataset(data_dir, settings, force, update)
    with stage(f"folds: {settings.n_folds}-fold iterative stratification") as update:
        make_folds(dataset.train_csv, root, n_folds=settings.n_folds, seed=seed, force=force)
        update(1, 1)
    lap("dataset")

    # ---- 2. first level
    mel = MelSettings(**settings.mel)
    with stage("log-mel spectrograms") as update:
        audio = prepare_audio(root, read_metadata(dataset.train_csv, format="fat2019"),
                              dataset.train_dir, mel, test_dir=dataset.test_dir,
                              cache_dir=workdir / "cache", on_progress=update)
    stats = np.stack([logmel_statistics(s) for s in audio.specs])
    test_stats = np.stack([logmel_statistics(s) for s in audio.test_specs])
    lap("spectrograms")
    for name, (estimator, params) in settings.sklearn.items():
        with stage(f"first level: {name} ({estimator} on log-mel statistics)") as update:
            run_kfold(root, name, lambda k, e=estimator, p=params: SklearnFoldModel(
                          e, p, fold_seed(seed, k), threads=1),
                      stats, audio.ids, test_stats, audio.test_ids, model=f"sklearn:{estimator}",
                      params={"estimator": estimator, "params": params, "features": settings.mel},
                      seed=seed, force=force, on_progress=update)
        lap("sklearn")
    with stage("first level: cnn_logmel (audio CNN on log-mel crops)") as update:
        cnn_params = {"features": settings.mel, "network": AudioCNNModel(**settings.cnn).params()}
        run_kfold(root, "cnn_logmel", lambda k: AudioCNNModel(
                      **settings.cnn, seed=fold_seed(seed, k), device="cpu", num_threads=None,
                      on_epoch=epoch_notes(update, k)),
                  audio.specs, audio.ids, audio.test_specs, audio.test_ids, model="audio-cnn:demo",
                  params=cnn_params, seed=seed, force=force, on_progress=update)
    lap("cnn")

    # ---- 3. the second level: the same code as `stack auto`
    level1_names = [*settings.sklearn, "cnn_logmel"]
    level1 = _collect_own(root, level1_names, stage)
    submission, report = workdir / "submission.csv", workdir / "report.html"
    auto = run_auto(root, settings=auto_settings(settings), template=dataset.sample_submission,
                    out=submission, report=report, force=True, stage=stage, collection=level1)
    notes.extend(auto.notes)
    laps.add(auto.seconds)

    # ---- 4. every recipe and experiment scored on the held-out test labels
    collection = collect(root)
    blend = [n for n in collection.names if n == BLEND_NAME]
    everything = collection.select([*level1_names, *auto.level2, *blend])
    truth_ids, truth = _test_truth(dataset)
    test_scores = {name: _test_score(everything, Blend((name,)), truth_ids, truth)
                   for name in everything.names}
    recipes = {r.name: r for r in auto.recipes}
    first = recipes.get("first-level subset", recipes["best single"])
    final = auto.final
    board = leaderboard(everything, "lwlrap")
    board["test"] = [test_scores[n] for n in board.experiment]
    level1_board = board[board.level == 1]
    best = str(level1_board.experiment.iloc[0])
    lap("held-out scores")
    return DemoResult(
        workdir=workdir, models=board[["experiment", "level", "cv", "test"]].reset_index(drop=True),
        best_single=best, first_level_subset=list(first.members), first_level_subset_cv=first.cv,
        first_level_subset_nested_cv=first.nested_cv,
        first_level_subset_test=_test_score(everything, first.combination, truth_ids, truth),
        level2_cv={n: v["cv"] for n, v in auto.level2.items()},
        level2_inputs={n: v["inputs"] for n, v in auto.level2.items()},
        final_members=list(final.members), final_cv=final.cv, final_nested_cv=final.nested_cv,
        final_test=_test_score(everything, final.combination, truth_ids, truth),
        best_single_cv=float(level1_board.cv.iloc[0]), best_single_test=test_scores[best],
        files={"dataset": data_dir, "layout": root, **{k: v for k, v in auto.files.items()
                                                     if k != "layout"}},
        seconds=seconds, notes=notes, final_recipe=final.name, estimate=auto.estimate)


def auto_settings(settings: DemoSettings) -> AutoSettings:
    """The demo's second level as `stack auto` settings: a fixed number of tuning trials, so a run
    is reproducible to the bit."""
    return AutoSettings(metric="lwlrap", time_budget=3600.0, seed=settings.seed,
                        n_level2=settings.n_level2, max_seeds=len(settings.level2_seeds),
                        level2_params=dict(settings.level2), n_trials=settings.tune_trials)


def _dataset(data_dir: Path, settings: DemoSettings, force: bool, update) -> synth.SynthDataset:
    """Generate the dataset, or reuse the one there when it was made with the same parameters."""
    paths = synth.dataset_paths(data_dir)
    if paths.meta.exists() and not force:
        made = json.loads(paths.meta.read_text(encoding="utf-8"))
        keys = ("seed", "n_train", "n_test", "clip_seconds", "sample_rate")
        wanted = (settings.seed, settings.n_train, settings.n_test, settings.clip_seconds,
                  settings.mel["sample_rate"])
        if tuple(made.get(k) for k in keys) == wanted:
            update(1, 1)
            return paths
    return synth.generate_dataset(data_dir, n_train=settings.n_train, n_test=settings.n_test,
                                  seed=settings.seed, clip_seconds=settings.clip_seconds,
                                  sample_rate=settings.mel["sample_rate"], force=True,
                                  on_progress=update)


def _collect_own(root: Path, names: list[str], stage) -> Collection:
    """The experiments this run made, and only those (a stale folder in the layout is ignored);
    LayoutError with collect's reason when one of them is not valid."""
    with stage("collect") as update:
        collection = collect(root, on_progress=update)
    missing = [n for n in names if n not in collection.names]
    if missing:
        reasons = [r for r in collection.skipped if f"'{missing[0]}'" in r]
        raise LayoutError(f"experiment '{missing[0]}' of the demo is not valid: "
                          f"{reasons[0] if reasons else 'not found'}; rerun with --force")
    return collection.select(names)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _test_truth(dataset: synth.SynthDataset):
    ids, labels = synth.read_labels(dataset.test_labels_csv)
    return ids, labels


def _test_score(collection: Collection, blend: Blend, truth_ids, truth_labels) -> float:
    """lwlrap on the held-out test labels of the test predictions of ``blend`` (a recipe's
    :attr:`~stacker.auto.Recipe.combination`)."""
    probs = blend.test(collection)
    position = {i: p for p, i in enumerate(collection.test_ids)}
    rows = [position[i] for i in truth_ids]
    y = layout.labels_to_matrix(truth_labels, collection.classes)
    return lwlrap(y, probs[rows])
