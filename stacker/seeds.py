"""Seeds derived from the user's seed, so every fold model draws its own reproducible stream."""

import numpy as np


def fold_seed(seed: int, fold: int) -> int:
    """A distinct, reproducible seed for each (seed, fold) pair (first-level and level-2 models)."""
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])
