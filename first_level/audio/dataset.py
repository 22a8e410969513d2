"""Metadata + audio folders -> checked, cached spectrograms for the K-fold runner.

Every problem is found before training: rows of the metadata that are not in folds.csv, labels
outside folds.csv's classes or different from folds.csv's, training rows without a metadata row,
files missing from the audio folder, unreadable or empty audio, test files that are training rows.
Each raises one line naming the file (and the fix), or, with ``skip_bad``, becomes a warning:
a skipped test file is left out of the test set; a skipped training row stays in the layout
(folds.csv needs a prediction for it) with ``None`` as its spectrogram, which
:class:`~first_level.audio.train.AudioCNNModel` leaves out of fitting and predicts as the class
frequencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from first_level.audio.features import MelSettings, load_spectrograms
from first_level.audio.io import AudioError, list_audio_files
from first_level.audio.metadata import AudioMeta, MetadataError
from stacker import layout
from stacker.errors import LayoutError, OptionError

Progress = Callable[[int, int], None]


@dataclass
class AudioData:
    """ids: training ids in folds.csv order; specs: their (n_mels, n_frames) spectrograms (None
    for a skipped file); test_ids / test_specs likewise; warnings: one line per skipped problem."""

    ids: list[str]
    specs: list
    test_ids: list[str]
    test_specs: list
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Problems:
    """Collects bad rows by kind; raises at the first one unless skipping."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.kinds: dict[str, list[str]] = {}

    def add(self, kind: str, message: str, fix: str) -> None:
        if not self.skip:
            raise AudioError(f"{message}; {fix}, or pass `skip_bad_files`")
        self.kinds.setdefault(kind, []).append(message)

    def warnings(self) -> list[str]:
        return [f"skipped {len(items)} {kind}" + (f", e.g. {items[0]}" if items else "")
                for kind, items in self.kinds.items()]


def read_folds_for_audio(root: Path | str) -> layout.Folds:
    if not (Path(root) / layout.FOLDS_FILE).exists():
        raise LayoutError(f"{Path(root) / layout.FOLDS_FILE} is missing; run `stack make-folds "
                          "LABELS.csv --root ROOT` first")
    return layout.read_folds(root)


def prepare_audio(root: Path | str, meta: AudioMeta, audio_dir: Path | str, settings: MelSettings,
                  *, test_dir: Path | str | None = None, test_meta: AudioMeta | None = None,
                  skip_bad: bool = False, cache_dir: Path | str | None = None,
                  on_progress: Progress | None = None) -> AudioData:
    """Check the training rows (folds.csv + ``meta``) and the test set (the files of ``test_dir``
    or the rows of ``test_meta``, found in ``test_dir`` or else ``audio_dir``), then load every
    spectrogram (through the cache). Raises AudioError/MetadataError/LayoutError before any
    training unless ``skip_bad``."""
    folds = read_folds_for_audio(root)
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise OptionError(f"`audio_dir` {audio_dir} is not a folder; pass the folder of the "
                          "training audio")
    problems = Problems(skip_bad)
    rows = _training_rows(folds, meta, problems)
    train_paths = {i: audio_dir / i for i in rows}
    for row_id, path in list(train_paths.items()):
        if not path.is_file():
            problems.add("training files missing from the audio folder",
                         f"{path}: file of training row '{row_id}' is missing",
                         f"put it in {audio_dir} or fix the metadata")
            del train_paths[row_id]
    test_ids, test_paths = _test_rows(folds, audio_dir, test_dir, test_meta, problems)

    ordered = [(i, p) for i, p in train_paths.items()] + list(zip(test_ids, test_paths))
    specs, errors = load_spectrograms([p for _, p in ordered], settings, cache_dir=cache_dir,
                                      skip_bad=skip_bad, on_progress=on_progress)
    by_id_train = {}
    test_specs, kept_test = [], []
    for position, ((row_id, _), spec) in enumerate(zip(ordered, specs)):
        is_test = position >= len(train_paths)
        if position in errors:
            problems.add("unreadable test files" if is_test else "unreadable training files",
                         str(errors[position]).split("; ")[0], "replace the file")
            continue
        if is_test:
            kept_test.append(row_id)
            test_specs.append(spec)
        else:
            by_id_train[row_id] = spec
    ids = [str(i) for i in folds.ids]
    train_specs = [by_id_train.get(i) for i in ids]
    if all(spec is None for spec in train_specs):
        raise AudioError(f"no training file could be read (first row '{ids[0]}'); check "
                         f"`audio_dir` {audio_dir} and the metadata")
    if not kept_test:
        raise AudioError("no test file could be read; check `test_dir` / `test_meta`")
    skipped = [i for i, spec in zip(ids, train_specs) if spec is None]
    warnings = problems.warnings()
    if skipped:
        warnings.append(f"{len(skipped)} training rows have no audio; they are left out of "
                        "training and predicted as the training class frequencies")
    return AudioData(ids=ids, specs=train_specs, test_ids=kept_test, test_specs=test_specs,
                     warnings=warnings, skipped=skipped)


def _training_rows(folds: layout.Folds, meta: AudioMeta, problems: Problems) -> list[str]:
    """The folds.csv ids that have a usable metadata row (checked against folds.csv's labels)."""
    classes = set(folds.classes)
    labels_of = dict(zip(folds.ids, folds.labels))
    usable = []
    for row_number, (row_id, labels) in enumerate(zip(meta.ids, meta.labels), start=2):
        where = f"{meta.path}: row {row_number} ('{row_id}')"
        if row_id not in labels_of:
            problems.add("metadata rows not in folds.csv", f"{where} is not in folds.csv",
                         "remove the row or rebuild folds.csv from this file with "
                         "`stack make-folds`")
            continue
        unknown = [name for name in labels if name not in classes]
        if unknown:
            problems.add("rows with labels outside folds.csv's classes",
                         f"{where}: label '{unknown[0]}' is not a class of folds.csv "
                         f"({some_names(folds.classes)})", "fix the label or rebuild folds.csv")
            continue
        if set(labels) != set(labels_of[row_id]):
            raise MetadataError(f"{where}: labels '{','.join(labels)}' differ from folds.csv's "
                                f"'{','.join(labels_of[row_id])}'; rebuild folds.csv from this "
                                "metadata with `stack make-folds`")
        usable.append(row_id)
    in_meta = set(meta.ids)
    for row_id in folds.ids:
        if row_id not in in_meta:
            problems.add("folds.csv rows without a metadata row",
                         f"{folds.path}: row '{row_id}' has no row in {meta.path}",
                         "add it to the metadata or rebuild folds.csv")
    return usable


def _test_rows(folds: layout.Folds, audio_dir: Path, test_dir, test_meta: AudioMeta | None,
               problems: Problems) -> tuple[list[str], list[Path]]:
    if test_dir is None and test_meta is None:
        raise OptionError("no test set: pass `test_dir` DIR (its audio files) or `test_meta` CSV")
    folder = Path(test_dir) if test_dir is not None else audio_dir
    if test_meta is not None:
        test_ids = [str(i) for i in test_meta.ids]
    else:
        test_ids = list_audio_files(folder)
        if not test_ids:
            raise AudioError(f"{folder}: no audio files (.wav, .flac, .ogg, ...) in the test "
                             "folder; pass the folder that holds the test clips")
    training = set(folds.ids)
    overlap = [i for i in test_ids if i in training]
    if overlap:
        raise LayoutError(f"test file '{overlap[0]}' is also a training row of folds.csv "
                          f"({len(overlap)} such files); the test set must not overlap training")
    kept, paths = [], []
    for row_id in test_ids:
        path = folder / row_id
        if not path.is_file():
            problems.add("test files missing", f"{path}: test file '{row_id}' is missing",
                         f"put it in {folder} or fix the test metadata")
            continue
        kept.append(row_id)
        paths.append(path)
    return kept, paths


def some_names(names, limit: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def read_audio_features(meta: AudioMeta | None, audio_dir: Path | str, settings: MelSettings, *,
                        skip_bad: bool = False, cache_dir: Path | str | None = None,
                        on_progress: Progress | None = None
                        ) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Spectrograms of the rows of ``meta`` (or of every audio file of ``audio_dir``):
    (ids, specs, warnings); with ``skip_bad`` bad files are dropped and named in the warnings."""
    audio_dir = Path(audio_dir)
    ids = [str(i) for i in meta.ids] if meta is not None else list_audio_files(audio_dir)
    if not ids:
        raise AudioError(f"{audio_dir}: no audio files (.wav, .flac, .ogg, ...) in the folder")
    problems = Problems(skip_bad)
    present = []
    for row_id in ids:
        if (audio_dir / row_id).is_file():
            present.append(row_id)
        else:
            problems.add("files missing", f"{audio_dir / row_id}: file of row '{row_id}' is "
                         "missing", f"put it in {audio_dir} or fix the metadata")
    specs, errors = load_spectrograms([audio_dir / i for i in present], settings,
                                      cache_dir=cache_dir, skip_bad=skip_bad,
                                      on_progress=on_progress)
    kept_ids, kept = [], []
    for position, (row_id, spec) in enumerate(zip(present, specs)):
        if position in errors:
            problems.add("unreadable files", str(errors[position]).split("; ")[0],
                         "replace the file")
        else:
            kept_ids.append(row_id)
            kept.append(spec)
    if not kept:
        raise AudioError(f"no file of {audio_dir} could be read")
    return kept_ids, kept, problems.warnings()
