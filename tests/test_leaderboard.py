"""stacker.leaderboard on the memory-mapped pool: the blocked correlation equals numpy's."""

from __future__ import annotations

import numpy as np
import pytest

from stacker.layout.collect import collect
from stacker.leaderboard import leaderboard, oof_correlation


@pytest.mark.parametrize("block_bytes", [1, 500, 64 << 20])    # one row a block .. one block
def test_blocked_correlation_equals_numpy(small_layout, block_bytes):
    root = small_layout(n_experiments=4)
    collection = collect(root, n_jobs=1)                       # the mapped pool
    flat = np.asarray(collection.oof).transpose(1, 0, 2).reshape(4, -1).astype(np.float64)
    got = oof_correlation(collection, block_bytes=block_bytes)
    np.testing.assert_allclose(got.to_numpy(), np.corrcoef(flat), atol=1e-12)
    assert list(got.index) == list(collection.names)


def test_leaderboard_same_on_mapped_and_in_memory_pools(small_layout):
    root = small_layout()
    in_memory = leaderboard(collect(root, use_cache=False, n_jobs=1))
    collect(root, n_jobs=1)
    mapped = leaderboard(collect(root, n_jobs=1))
    assert mapped.equals(in_memory)
