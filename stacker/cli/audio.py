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
) -> None:
    """Train the audio CNN on every fold.

    Train the audio CNN on every fold of ROOT/folds.csv; write out-of-fold, test and
    per-window predictions."""
    import pandas as pd

    from first_level.audio.dataset import prepare_audio
    from first_level.audio.features import get_preset
    from first_level.audio.metadata import read_metadata
    from first_level.audio.model import MODEL_PRESETS, AudioCNNModel, epoch_notes
    from first_level.runner import run_kfold

    layout.check_experiment_name(name)
    if epochs is not None and epochs < 1:
        raise OptionError(f"--epochs must be at least 1, got {epochs}")
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
    # the CNN writes one <id>.npy per row: every id a plain file name before any training
    layout.check_window_ids([*data.ids, *data.test_ids], layout.experiment_dir(root, name),
                            source=str(meta))
    model_params = dict(MODEL_PRESETS[preset.value])
    if epochs is not None:
        model_params["epochs"] = epochs
    probe = AudioCNNModel(**model_params)
    params = {"preset": preset.value, "features": settings.to_dict(), "network": probe.params()}

    with progress_bar(f"{name}: folds" + (f" on {scheduler}" if scheduler else "")) as update:
        def make_model(fold: int) -> AudioCNNModel:
            # here, each epoch is a progress note; a cluster's workers cannot reach this console
            return AudioCNNModel(**model_params, seed=fold_seed(seed, fold), device=device,
                                 on_epoch=None if scheduler else epoch_notes(update, fold))

        result = run_kfold(root, name, make_model, data.specs, data.ids, data.test_specs,
                           data.test_ids, model=f"audio-cnn:{preset.value}", params=params,
                           seed=seed, force=force, on_progress=update, scheduler=scheduler,
                           format=probs_format.value,
                           extra_meta={"audio": {"meta": str(meta), "audio_dir": str(audio_dir),
                                                 "test_dir": None if test_dir is None else str(test_dir),
                                                 "test_meta": None if test_meta is None else str(test_meta),
                                                 "skipped_training_rows": data.skipped}})
    scores = pd.DataFrame({
        "fold": [str(k) for k in result.fold_scores] + ["all"],
        "lwlrap": list(result.fold_scores.values()) + [result.cv["lwlrap"]],
        "status": ["trained" if k in result.trained_folds else "kept" for k in result.fold_scores]
        + [""]})
    console.print(frame_table(scores, title=f"{name} (audio CNN, {preset.value}): CV lwlrap"))
    extra = ", ".join(f"{k} {v:.4f}" for k, v in result.cv.items() if k != "lwlrap" and v is not None)
    console.print(f"wrote {layout.experiment_dir(root, name)}" + (f"; CV {extra}" if extra else ""))


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

