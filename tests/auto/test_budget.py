"""The time-budget rules of stack auto (stacker.auto.budget)."""

import pytest

from stacker.auto.budget import FINAL_SEARCH_FACTOR, RESERVE_SHARE, Budget


def test_the_reserve_covers_final_searches_as_slow_as_the_first_level_ones():
    budget = Budget(200.0)
    assert budget.reserve == pytest.approx(RESERVE_SHARE * 200.0)
    budget.first_level_took(4.0)                    # fast searches: the share stays
    assert budget.reserve == pytest.approx(max(RESERVE_SHARE * 200.0, FINAL_SEARCH_FACTOR * 4.0))
    budget.first_level_took(30.0)                   # slow ones (class biases on a big pool)
    assert budget.reserve == pytest.approx(FINAL_SEARCH_FACTOR * 30.0)
    assert budget.training_seconds() <= 200.0 - FINAL_SEARCH_FACTOR * 30.0
