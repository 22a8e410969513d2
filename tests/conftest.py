"""Shared fixtures: fixed seeds, a small simulated layout, and the real data folder (or a skip)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from stacker.simulate import write_simulated_layout

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Every test starts from the same global random state (numpy's legacy RNG and ``random``)."""
    random.seed(0)
    np.random.seed(0)
    yield


def small_labels(n_rows: int, classes, seed: int = 0) -> list[tuple[str, ...]]:
    """1-2 labels per row, every class used at least once."""
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(n_rows):
        chosen = {classes[i % len(classes)]}
        if rng.random() < 0.3:
            chosen.add(classes[int(rng.integers(len(classes)))])
        labels.append(tuple(sorted(chosen)))
    return labels


@pytest.fixture
def small_layout(tmp_path):
    """Factory: ``small_layout(name="layout", **options) -> root`` writes a simulated layout of
    60 rows, 4 classes, 3 folds (0-2) and 3 experiments (sim_000..sim_002, 20 test rows)."""

    def make(name: str = "layout", *, n_rows: int = 60, n_classes: int = 4, n_folds: int = 3,
             n_experiments: int = 3, n_test: int = 20, first_fold: int = 0, seed: int = 0,
             **options) -> Path:
        root = tmp_path / name
        classes = [f"class_{chr(ord('a') + j)}" for j in range(n_classes)]
        ids = [f"row_{i:03d}.wav" for i in range(n_rows)]
        fold = [first_fold + i % n_folds for i in range(n_rows)]
        write_simulated_layout(root, ids, small_labels(n_rows, classes, seed), fold,
                               n_experiments=n_experiments, n_test=n_test, seed=seed, **options)
        return root

    return make


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real public datasets); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA
