"""Simulated first-level experiments: noisy probabilities around known labels, in the standard layout.

For tests, benchmarks and trying the commands without models. Each experiment gets its own skill
(how far the true classes stand above the rest) so the leaderboard has something to rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from stacker import layout


def simulated_probs(y: np.ndarray, *, skill: float, rng: np.random.Generator,
                    shared_noise: np.ndarray | None = None) -> np.ndarray:
    """Probabilities for labels ``y`` (n_rows, n_classes): sigmoid(skill * y + noise), float32.

    shared_noise: a (n_rows, n_classes) component added to every model, to make them correlated.
    """
    noise = rng.normal(0.0, 1.0, size=y.shape)
    if shared_noise is not None:
        noise = 0.6 * noise + 0.8 * shared_noise
    logits = skill * (2.0 * y - 1.0) + noise - 1.5
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def write_simulated_layout(root: Path | str, ids: Sequence[str], labels: Sequence[Sequence[str]],
                           fold: Sequence[int], *, classes: Sequence[str] | None = None,
                           id_column: str = "fname", **experiments) -> list[str]:
    """Write folds.csv and simulated experiments under ``root``; returns their names.

    experiments: the keywords of :func:`write_simulated_experiments` (n_experiments, n_test,
    seed, skills, test_ids).
    """
    layout.write_folds(root, ids, labels, fold, id_column=id_column, classes=classes)
    return write_simulated_experiments(root, **experiments)


def write_simulated_experiments(root: Path | str, *, n_experiments: int = 5, n_test: int = 200,
                                seed: int = 0, skills: Sequence[float] | None = None,
                                test_ids: Sequence[str] | None = None) -> list[str]:
    """Write ``n_experiments`` simulated experiments (``sim_000``, ...) on ``<root>/folds.csv``,
    one per skill of ``skills`` when given; returns their names. Test rows: ``test_ids``, or
    ``n_test`` rows named ``test_00000``, ..."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    folds = layout.read_folds(root)
    if test_ids is None:
        test_ids = [f"test_{i:05d}" for i in range(n_test)]
    test_y = (rng.random((len(test_ids), len(folds.classes))) < 0.05).astype(np.uint8)
    shared = rng.normal(size=folds.y.shape)
    shared_test = rng.normal(size=test_y.shape)
    if skills is None:
        skills = np.linspace(1.0, 2.5, n_experiments)
    names = []
    for e, skill in enumerate(skills):
        name = f"sim_{e:03d}"
        oof = simulated_probs(folds.y, skill=skill, rng=rng, shared_noise=shared)
        for k in folds.fold_numbers:
            rows = folds.rows_of_fold(k)
            layout.write_fold_predictions(root, name, k, "val", folds.ids[rows], oof[rows],
                                          folds.classes, id_column=folds.id_column)
            test = simulated_probs(test_y, skill=skill, rng=rng, shared_noise=shared_test)
            layout.write_fold_predictions(root, name, k, "test", test_ids, test, folds.classes,
                                          id_column=folds.id_column)
        layout.write_meta(root, name, {"model": "simulated", "params": {"skill": float(skill)},
                                       "seed": seed, "level": 1, "fold_hash": folds.hash})
        names.append(name)
    return names
