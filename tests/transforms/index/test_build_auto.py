"""--index auto: brute force for shards whose exact search is cheap, ScaNN past the measured crossover."""

from __future__ import annotations

from transforms.index.build import EXACT_MAX_WORK, auto_index_kind


def test_small_jobs_search_exactly_and_large_ones_use_scann():
    assert auto_index_kind(5_000, 5_000, 192) == "exact"  # the 5,000 x 5,000
    assert auto_index_kind(1_000_000, 100_000, 128) == "scann"
    assert auto_index_kind(20_000, 10_000_000, 64) == "scann"  # few candidates, very many queries
    n = int((EXACT_MAX_WORK / 100) ** 0.5)
    assert auto_index_kind(n, n, 100) == "exact"
    assert auto_index_kind(n + 10, n + 10, 100) == "scann"
