"""`stack first-level audio` (the CNN, K-fold) and `stack first-level audio-features` (log-mel
statistics for `stack first-level sklearn`)."""

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

# the audio modules import torch and scipy.signal: imported inside the commands so the CLI starts fast
from stacker import layout
from stacker.cli.common import (
    ProbsFormat,
    RootOption,
    SchedulerOption,
    console,
    err_console,
    frame_table,
    progress_bar,
    user_errors,
    writes_root,
)
from stacker.errors import OptionError, OutputExistsError
from stacker.layout import workspace
from stacker.layout.provenance import refuse_inputs_as_outputs
from stacker.runtime import fold_seed


class Preset(str, Enum):
    fat2019 = "fat2019"
    fast = "fast"


class NoisyLoss(str, Enum):
    plain = "plain"
    lsoft = "lsoft"


class NoisySchedule(str, Enum):
    mixed = "mixed"
    pretrain = "pretrain"


class WindowPool(str, Enum):
    mean = "mean"
    max = "max"


class MetaFormat(str, Enum):
    auto = "auto"
    fat2019 = "fat2019"
    esc50 = "esc50"
    csv = "csv"


def _cache_dir(root: Path, no_cache: bool) -> Optional[Path]:
    return None if no_cache else workspace.spectrograms_dir(root)


def _warn(lines) -> None:
    for line in lines:
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


@user_errors
@writes_root("stack first-level audio")
def audio_command(
    meta: Annotated[Path, typer.Option(help="Training metadata CSV (FAT2019 fname,labels; ESC-50 "
                                            "esc50.csv; or any CSV with file and label columns).")],
    audio_dir: Annotated[Path, typer.Option(help="Folder of the training audio files.")],
    name: Annotated[str, typer.Option(help="Experiment name (a folder under ROOT).")],
    test_dir: Annotated[Optional[Path], typer.Option(
        help="Folder of the test audio: every audio file in it, or the files of --test-meta.")] = None,
    test_meta: Annotated[Optional[Path], typer.Option(
        help="CSV listing the test files (first column, or --file-column); their audio is in "
             "--test-dir, else --audio-dir.")] = None,
    preset: Annotated[Preset, typer.Option(help="Spectrogram + network settings: fat2019 (the "
                                                "winners', for a GPU) or fast (CPU).")] = Preset.fast,
    format: Annotated[MetaFormat, typer.Option(help="Metadata format.")] = MetaFormat.auto,
    file_column: Annotated[Optional[str], typer.Option(help="Metadata column with the file "
                                                            "names.")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="Metadata column with the "
                                                             "label(s).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Most epochs per fold (default: the "
                                                       "preset's).")] = None,
    epoch_rows: Annotated[Optional[int], typer.Option(
        help="Rows per training epoch, drawn pass by pass over the training rows (default: every "
             "row once): a fixed size makes --epochs and the patience mean as much training with "
             "or without a noisy set.")] = None,
    patience: Annotated[Optional[int], typer.Option(
        help="Epochs without a better lwlrap on the inner hold-out before a fold stops (default: "
             "the preset's; --epochs or more: every epoch runs and the best is kept).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (crops, augmentation, weights).")] = 0,
    root: RootOption = layout.DEFAULT_ROOT,
    force: Annotated[bool, typer.Option("--force", help="Retrain every fold, replacing what exists.")] = False,
    skip_bad_files: Annotated[bool, typer.Option("--skip-bad-files", help="Skip bad files and rows with a warning "
                                                      "instead of stopping.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the spectrogram cache "
                                                "(.stack/spectrograms under ROOT).")] = False,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda when "
                                                       "present, else cpu).")] = None,
    scheduler: SchedulerOption = None,
    probs_format: Annotated[ProbsFormat, typer.Option(
        help="File format of the predictions: probs.csv or probs.parquet (--format is the "
             "metadata's).")] = ProbsFormat.csv,
    noisy_meta: Annotated[Optional[Path], typer.Option(
        help="Metadata CSV of a noisy set (labels less trusted, e.g. FAT2019 train_noisy.csv): "
             "every fold model also trains on all its rows; they are never scored.")] = None,
    noisy_audio_dir: Annotated[Optional[Path], typer.Option(
        help="Folder of the noisy set's audio (default: --audio-dir).")] = None,
    noisy_loss: Annotated[NoisyLoss, typer.Option(
        help="Loss on noisy rows: lsoft (target beta*y + (1-beta)*prediction) or plain.")
    ] = NoisyLoss.lsoft,
    lsoft_beta: Annotated[float, typer.Option(help="Lsoft's beta, in [0, 1].")] = 0.7,
    noisy_fraction: Annotated[Optional[float], typer.Option(
        help="Expected share of noisy rows in a batch, in [0, 1) (default: their share of the "
             "data).")] = None,
    noisy_schedule: Annotated[NoisySchedule, typer.Option(
        help="mixed: noisy and curated rows in the same batches; pretrain: the noisy rows first, "
             "then a fine-tune on the fold's curated rows.")] = NoisySchedule.mixed,
    noisy_filter: Annotated[Optional[str], typer.Option(
        help="Keep, per fold, the noisy rows whose labels this earlier experiment's fold model "
             "scores at least --noisy-min-score (it must have been trained with --noisy-meta).")
    ] = None,
    noisy_min_score: Annotated[Optional[float], typer.Option(
        help="Per-row lwlrap a noisy row's labels must reach under --noisy-filter.")] = None,
    infer_windows: Annotated[Optional[str], typer.Option(
        help="Inference window widths in frames, comma-separated (e.g. 64,128,256); default: "
             "the training crop.")] = None,
    window_pool: Annotated[WindowPool, typer.Option(
        help="Pooling of each width's windows (then the widths are averaged).")] = WindowPool.mean,
) -> None:
    """Train the audio CNN on every fold.

    Train the audio CNN on every fold of ROOT/folds.csv (with a noisy set if given); write
    out-of-fold, test and per-window predictions."""
    import pandas as pd

    from first_level.audio.dataset import prepare_audio
    from first_level.audio.features import get_preset
    from first_level.audio.metadata import read_metadata
    from first_level.audio.model import MODEL_PRESETS, AudioCNNModel, epoch_notes
    from first_level.runner import SideSet, run_kfold

    layout.check_experiment_name(name)
    if epochs is not None and epochs < 1:
        raise OptionError(f"--epochs must be at least 1, got {epochs}")
    if patience is not None and patience < 1:
        raise OptionError(f"--patience must be at least 1 epoch, got {patience}")
    if epoch_rows is not None and epoch_rows < 2:
        raise OptionError(f"--epoch-rows must be at least 2 (one batch of two rows), got {epoch_rows}")
    widths = _widths(infer_windows)
    noisy_settings = _noisy_settings(noisy_meta, noisy_audio_dir, noisy_loss, lsoft_beta,
                                     noisy_fraction, noisy_schedule, noisy_filter,
                                     noisy_min_score)
    settings = get_preset(preset.value)
    train_meta = read_metadata(meta, format=format.value, file_column=file_column,
                               label_column=label_column)
    tests = None if test_meta is None else read_metadata(
        test_meta, format=format.value, file_column=file_column, require_labels=False)
    with progress_bar("spectrograms") as update:
        data = prepare_audio(root, train_meta, audio_dir, settings, test_dir=test_dir,
                             test_meta=tests, skip_bad=skip_bad_files,
                             cache_dir=_cache_dir(root, no_cache), on_progress=update)
    _warn(data.warnings)
    plan = None
    if noisy_settings is not None:
        plan = _noisy_plan(root, name, noisy_meta, noisy_audio_dir or audio_dir, noisy_settings,
                           settings, data.test_ids, format=format, file_column=file_column,
                           label_column=label_column, skip_bad=skip_bad_files,
                           cache_dir=_cache_dir(root, no_cache), noisy_filter=noisy_filter,
                           min_score=noisy_min_score)
    elif force:
        _remove_noisy_predictions(root, name)
    # the CNN writes one <id>.npy per row: every id a plain file name before any training
    layout.check_window_ids([*data.ids, *data.test_ids], layout.experiment_dir(root, name),
                            source=str(meta))
    model_params = dict(MODEL_PRESETS[preset.value])
    if epochs is not None:
        model_params["epochs"] = epochs
    if epoch_rows is not None:
        model_params["epoch_rows"] = epoch_rows
    if patience is not None:
        model_params["patience"] = patience
    model_params.update(infer_windows=widths, window_pool=window_pool.value)
    probe = AudioCNNModel(**model_params)
    params = {"preset": preset.value, "features": settings.to_dict(), "network": probe.params()}
    audio_meta = {"meta": str(meta), "audio_dir": str(audio_dir),
                  "test_dir": None if test_dir is None else str(test_dir),
                  "test_meta": None if test_meta is None else str(test_meta),
                  "skipped_training_rows": data.skipped}
    side = None
    if plan is not None:
        params["noisy"] = plan.record
        audio_meta.update(noisy_meta=str(noisy_meta),
                          noisy_audio_dir=str(noisy_audio_dir or audio_dir),
                          skipped_noisy_rows=plan.data.skipped)
        side = SideSet(plan.data.specs, plan.data.ids,
                       workspace.noisy_predictions_dir(root, name))

    with progress_bar(f"{name}: folds" + (f" on {scheduler}" if scheduler else "")) as update:
        def make_model(fold: int) -> AudioCNNModel:
            # here, each epoch is a progress note; a cluster's workers cannot reach this console
            return AudioCNNModel(**model_params, seed=fold_seed(seed, fold), device=device,
                                 noisy=None if plan is None else plan.for_fold(fold),
                                 on_epoch=None if scheduler else epoch_notes(update, fold))

        result = run_kfold(root, name, make_model, data.specs, data.ids, data.test_specs,
                           data.test_ids, model=f"audio-cnn:{preset.value}", params=params,
                           seed=seed, force=force, on_progress=update, scheduler=scheduler,
                           format=probs_format.value, side=side,
                           extra_meta={"audio": audio_meta})
    scores = pd.DataFrame({
        "fold": [str(k) for k in result.fold_scores] + ["all"],
        "lwlrap": list(result.fold_scores.values()) + [result.cv["lwlrap"]],
        "status": ["trained" if k in result.trained_folds else "kept" for k in result.fold_scores]
        + [""]})
    console.print(frame_table(scores, title=f"{name} (audio CNN, {preset.value}): CV lwlrap"))
    extra = ", ".join(f"{k} {v:.4f}" for k, v in result.cv.items() if k != "lwlrap" and v is not None)
    console.print(f"wrote {layout.experiment_dir(root, name)}" + (f"; CV {extra}" if extra else ""))


def _widths(text: Optional[str]) -> tuple[int, ...]:
    """--infer-windows '64,128' -> (64, 128); OptionError naming the bad entry."""
    if text is None:
        return ()
    parts = [part.strip() for part in text.split(",")]
    for part in parts:
        if not (part.isdigit() and int(part) > 0):
            raise OptionError(f"--infer-windows: '{part}' is not a width in frames; pass positive "
                              "whole numbers separated by commas, e.g. 64,128,256")
    if len(set(parts)) != len(parts):
        raise OptionError(f"--infer-windows: '{text}' repeats a width; name each width once")
    return tuple(int(part) for part in parts)


def _noisy_settings(noisy_meta, noisy_audio_dir, loss, beta, fraction, schedule, noisy_filter,
                    min_score):
    """The NoisySettings of the noisy options (None without --noisy-meta, which they need)."""
    from first_level.audio.noisy import NoisySettings

    if noisy_meta is None:
        given = [flag for flag, value in (("--noisy-audio-dir", noisy_audio_dir),
                                          ("--noisy-fraction", fraction),
                                          ("--noisy-filter", noisy_filter),
                                          ("--noisy-min-score", min_score)) if value is not None]
        if given:
            raise OptionError(f"{given[0]} needs --noisy-meta CSV (the noisy set's metadata)")
        return None
    return NoisySettings(loss=loss.value, lsoft_beta=beta, fraction=fraction,
                         schedule=schedule.value)


def _noisy_plan(root, name, noisy_meta, noisy_audio_dir, noisy_settings, mel_settings, test_ids, *,
                format, file_column, label_column, skip_bad, cache_dir, noisy_filter, min_score):
    """Read and check the noisy set, and which of its rows each fold trains on."""
    from first_level.audio.metadata import read_metadata
    from first_level.audio.noisy_data import prepare_noisy
    from first_level.audio.noisy_filter import plan_noisy

    folds = layout.read_folds(root)
    table = read_metadata(noisy_meta, format=format.value, file_column=file_column,
                          label_column=label_column)
    with progress_bar("noisy spectrograms") as update:
        data = prepare_noisy(folds, table, noisy_audio_dir, mel_settings, test_ids=test_ids,
                             skip_bad=skip_bad, cache_dir=cache_dir, on_progress=update)
    _warn(data.warnings)
    return plan_noisy(root, folds, data, noisy_settings, name=name, noisy_filter=noisy_filter,
                      noisy_min_score=min_score)


def _remove_noisy_predictions(root: Path, name: str) -> None:
    """Under --force without a noisy set: an earlier run's noisy predictions no longer belong."""
    import shutil

    folder = workspace.noisy_predictions_dir(root, name)
    if folder.is_dir():
        shutil.rmtree(folder)


@user_errors
def audio_features_command(
    audio_dir: Annotated[Path, typer.Option(help="Folder of the audio files.")],
    out: Annotated[Path, typer.Option(help="Output feature CSV (id column first).")],
    meta: Annotated[Optional[Path], typer.Option(help="Metadata CSV naming the files (default: "
                                                      "every audio file of --audio-dir).")] = None,
    preset: Annotated[Preset, typer.Option(help="Spectrogram settings.")] = Preset.fast,
    format: Annotated[MetaFormat, typer.Option(help="Metadata format.")] = MetaFormat.auto,
    file_column: Annotated[Optional[str], typer.Option(help="Metadata column with the file "
                                                            "names.")] = None,
    root: Annotated[Path, typer.Option(help="Layout root; the spectrogram cache lives in "
                                            "its folder .stack/spectrograms.")] = layout.DEFAULT_ROOT,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the spectrogram cache.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    skip_bad_files: Annotated[bool, typer.Option("--skip-bad-files", help="Leave bad files out with a warning "
                                                      "instead of stopping.")] = False,
) -> None:
    """Write log-mel statistics of every file as features.

    Write log-mel statistics (per mel band: mean, std, min, max, delta |mean| and std) of every
    file as a feature CSV for `stack first-level sklearn`."""
    import numpy as np
    import pandas as pd

    from first_level.audio.dataset import read_audio_features
    from first_level.audio.features import get_preset, logmel_statistics, statistics_names
    from first_level.audio.metadata import read_metadata

    refuse_inputs_as_outputs({"`out`": out}, {"`meta`": meta}, root=root)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it or choose another --out")
    settings = get_preset(preset.value)
    table = None if meta is None else read_metadata(meta, format=format.value,
                                                    file_column=file_column, require_labels=False)
    with progress_bar("spectrograms") as update:
        ids, specs, warnings = read_audio_features(table, audio_dir, settings,
                                                   skip_bad=skip_bad_files,
                                                   cache_dir=_cache_dir(root, no_cache),
                                                   on_progress=update)
    _warn(warnings)
    values = np.stack([logmel_statistics(s) for s in specs])
    frame = pd.DataFrame(values, columns=statistics_names(settings.n_mels))
    frame.insert(0, table.file_column if table is not None else "fname", ids)
    layout.atomic_write_text(out, frame.to_csv(index=False, float_format="%.6g"))
    console.print(f"wrote {out}: {len(ids)} rows x {values.shape[1]} features ({preset.value} "
                  f"preset, {settings.n_mels} mels)")

