"""The noisy set's metadata + audio folder -> checked spectrograms and labels (folds.csv classes).

A noisy row is refused (one line naming the file and row; with ``skip_bad`` a warning, and the row
is left out) when its id is also a curated row of folds.csv or a test file, when it has no label
or a label outside folds.csv's classes, when its audio is missing or unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from first_level.audio.dataset import Problems, some_names
from first_level.audio.features import MelSettings, load_spectrograms
from first_level.audio.io import AudioError
from first_level.audio.metadata import AudioMeta
from first_level.audio.noisy import noisy_hash
from stacker import layout
from stacker.errors import OptionError


@dataclass
class NoisyData:
    """ids: the kept noisy rows, in metadata order; specs: their (n_mels, n_frames) spectrograms;
    y: (n_noisy, n_classes) uint8 in folds.csv class order; hash: their content hash;
    warnings / skipped: one line per skipped problem / the ids left out."""

    ids: list[str]
    specs: list
    y: np.ndarray
    hash: str
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def prepare_noisy(folds: layout.Folds, meta: AudioMeta, audio_dir: Path | str,
                  settings: MelSettings, *, test_ids=(), skip_bad: bool = False,
                  cache_dir: Path | str | None = None, on_progress=None) -> NoisyData:
    """Check the noisy rows of ``meta`` against folds.csv (``folds``) and the test ids, then load
    their spectrograms (through the cache). Raises AudioError/OptionError before any training
    unless ``skip_bad``."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise OptionError(f"`noisy_audio_dir` {audio_dir} is not a folder; pass the folder of "
                          "the noisy audio")
    problems = Problems(skip_bad)
    curated, tests = set(map(str, folds.ids)), set(map(str, test_ids))
    column = {name: j for j, name in enumerate(folds.classes)}
    rows: list[tuple[str, tuple[str, ...]]] = []
    for row_number, (row_id, labels) in enumerate(zip(meta.ids, meta.labels), start=2):
        row_id = str(row_id)
        where = f"{meta.path}: row {row_number} ('{row_id}')"
        unknown = [name for name in labels if name not in column]
        if row_id in curated:
            problems.add("noisy rows that are curated rows", f"{where} is also a curated row "
                         "of folds.csv", "a clip is curated or noisy, not both: remove it from "
                         "one of the two")
        elif row_id in tests:
            problems.add("noisy rows that are test files", f"{where} is also a test file",
                         "remove it from the noisy metadata")
        elif not labels:
            problems.add("noisy rows without a label", f"{where} has no label",
                         "label it or remove the row")
        elif unknown:
            problems.add("noisy rows with labels outside folds.csv's classes",
                         f"{where}: label '{unknown[0]}' is not a class of folds.csv "
                         f"({some_names(folds.classes)})", "fix the label or remove the row")
        elif not (audio_dir / row_id).is_file():
            problems.add("noisy files missing from the audio folder",
                         f"{audio_dir / row_id}: file of noisy row '{row_id}' is missing",
                         f"put it in {audio_dir} or fix the noisy metadata")
        else:
            rows.append((row_id, labels))
    specs, errors = load_spectrograms([audio_dir / i for i, _ in rows], settings,
                                      cache_dir=cache_dir, skip_bad=skip_bad,
                                      on_progress=on_progress)
    kept_ids, kept_specs, kept_labels = [], [], []
    for position, ((row_id, labels), spec) in enumerate(zip(rows, specs)):
        if position in errors:
            problems.add("unreadable noisy files", str(errors[position]).split("; ")[0],
                         "replace the file")
            continue
        kept_ids.append(row_id)
        kept_specs.append(spec)
        kept_labels.append(labels)
    if not kept_ids:
        raise AudioError(f"{meta.path}: no noisy row could be used; check `noisy_audio_dir` "
                         f"{audio_dir} and the noisy metadata")
    y = np.zeros((len(kept_ids), len(folds.classes)), dtype=np.uint8)
    for i, labels in enumerate(kept_labels):
        y[i, [column[name] for name in labels]] = 1
    kept = set(kept_ids)
    skipped = [str(i) for i in meta.ids if str(i) not in kept]
    return NoisyData(ids=kept_ids, specs=kept_specs, y=y, hash=noisy_hash(kept_ids, y, kept_specs),
                     warnings=problems.warnings(), skipped=skipped)
