"""The demo's audio set as a benchmark layout: its first level, with the held-out test labels.

``build_audio_layout(workdir)`` runs `stack demo`'s pipeline in ``workdir`` (the synthetic FAT2019-
style clips of ``first_level.synth``: 1,600 train + 400 test clips, 5 folds; log-mel statistics
for four scikit-learn models and the audio CNN; it resumes when ``workdir`` holds a finished run
of the same settings) and returns its layout, ``<workdir>/predictions``, with
``test_labels.csv`` (id,labels) written beside folds.csv in the form that
``benchmarks.mulan_layout.read_test_labels`` reads. The demo's own second level runs too (its
experiments stay in the layout; benchmarks read the level-1 experiments only).

    PYTHONPATH=. .venv/bin/python benchmarks/audio_layout.py --workdir /tmp/stack_audio
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from benchmarks.mulan_layout import ID_COLUMN, TEST_LABELS_FILE  # noqa: E402

AUDIO = "audio"                 # the set's name in bench_peers


def build_audio_layout(workdir: Path | str, *, seed: int = 0) -> Path:
    """The demo's layout in ``workdir`` (built or resumed), with its test labels; see the module
    docstring."""
    from first_level import synth
    from stacker import layout
    from stacker.cli.demo_pipeline import run_demo

    workdir = Path(workdir)
    root = workdir / "predictions"
    if not (root / TEST_LABELS_FILE).exists():
        run_demo(workdir, seed=seed)
        ids, labels = synth.read_labels(synth.dataset_paths(workdir / "data").test_labels_csv)
        frame = pd.DataFrame({ID_COLUMN: ids, "labels": [",".join(v) for v in labels]})
        layout.atomic_write_text(root / TEST_LABELS_FILE, frame.to_csv(index=False))
    return root


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_audio_layout(args.workdir, seed=args.seed))


if __name__ == "__main__":
    main()
