"""Tests for transforms.io.results: reading a run's matches."""

from __future__ import annotations

import pytest

from transforms.io.results import read_matches


def test_read_matches_without_files_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_matches(str(tmp_path))
