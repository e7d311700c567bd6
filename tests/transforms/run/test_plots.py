"""Tests for transforms.run.plots: the report's SVG figures (drawn into the page: see test_report)."""

from __future__ import annotations

from transforms.run import plots


def test_cluster_bins_are_powers_of_two():
    labels, counts = plots._cluster_bins({"1": 5, "2": 3, "3": 1, "4": 2, "5": 1, "1000": 1})
    assert labels[:4] == ["1", "2", "3-4", "5-8"] and labels[-1] == "513-1024"
    assert counts[:4] == [5, 3, 3, 1] and counts[-1] == 1 and sum(counts) == 13
