"""Spill files carry candidate vectors to their shards: rows come back whole and in order."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from apache_beam.io.filesystems import FileSystems

import tests.memfs  # noqa: F401  (registers mem://)
from transforms.common.schema import VectorBatch
from transforms.placement.spill import (
    MIN_SPILL_BYTES,
    assemble_parts,
    delete_spill_dir,
    new_spill_dir,
    should_spill,
    spill_rows,
)


def _batch(start, n, dims=5):
    rng = np.random.default_rng(start)
    return VectorBatch(np.array([f"id{i}" for i in range(start, start + n)], dtype=object),
                       rng.standard_normal((n, dims)).astype(np.float32),
                       np.array([f"f#{i}" for i in range(start, start + n)], dtype=object))


def test_parts_assemble_in_order_and_the_directory_is_deleted(tmp_path):
    spill_dir = new_spill_dir(None, str(tmp_path / "out"))
    assert spill_dir.startswith(str(tmp_path / "out" / ".spill"))
    batches = [_batch(0, 7), _batch(7, 0), _batch(100, 3)]
    parts = [spill_rows(b, spill_dir, shard=2) for b in batches]
    assert len({p.path for p in parts}) == 3 and all(os.path.exists(p.path) for p in parts)
    whole = assemble_parts(parts)
    np.testing.assert_array_equal(whole.vectors, np.concatenate([b.vectors for b in batches]))
    assert list(whole.ids) == [i for b in batches for i in b.ids]
    assert list(whole.origins) == [o for b in batches for o in b.origins]
    assert whole.vectors.flags.writeable
    assert assemble_parts([]) is None
    delete_spill_dir(spill_dir)
    assert not os.path.exists(tmp_path / "out" / ".spill")  # the empty parent goes too
    delete_spill_dir(spill_dir)  # deleting twice is fine


def test_a_short_or_foreign_spill_file_is_an_error_not_garbage(tmp_path):
    part = spill_rows(_batch(0, 4), str(tmp_path), shard=0)
    with open(part.path, "r+b") as f:
        f.truncate(os.path.getsize(part.path) - 8)
    with pytest.raises(ValueError, match="ends after"):
        assemble_parts([part])
    np.save(part.path, np.zeros((4, 5), dtype=np.float64))
    with pytest.raises(ValueError, match="expected float32"):
        assemble_parts([part])
    other = spill_rows(_batch(10, 2, dims=3), str(tmp_path), shard=0)
    with pytest.raises(ValueError, match="different vector lengths"):
        assemble_parts([spill_rows(_batch(0, 4), str(tmp_path), shard=0), other])


def test_spill_on_a_beam_filesystem():
    spill_dir = new_spill_dir(f"mem://spill-test/{uuid.uuid4().hex}", "unused-output")
    batches = [_batch(0, 6), _batch(50, 2)]
    parts = [spill_rows(b, spill_dir, shard=0) for b in batches]
    assert all(p.path.startswith("mem://") and FileSystems.exists(p.path) for p in parts)
    whole = assemble_parts(parts)
    np.testing.assert_array_equal(whole.vectors, np.concatenate([b.vectors for b in batches]))
    delete_spill_dir(spill_dir)
    assert not any(FileSystems.exists(p.path) for p in parts)


def test_only_pieces_of_at_least_min_spill_bytes_are_spilled():
    rows = MIN_SPILL_BYTES // (4 * 64)  # rows of 64 float32 dims that make MIN_SPILL_BYTES
    assert should_spill(_batch(0, rows, dims=64))
    assert not should_spill(_batch(0, rows - 1, dims=64))
    assert not should_spill(_batch(0, 0, dims=64))
