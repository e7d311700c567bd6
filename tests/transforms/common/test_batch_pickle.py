"""The batch types survive Beam's coder unchanged: values, dtypes, shapes, writability."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from apache_beam.coders import coders

from transforms.common.schema import NeighborBatch, PairBatch, VectorBatch


def _roundtrip(value):
    coder = coders.FastPrimitivesCoder()
    return coder.decode(coder.encode(value))


def _same(a, b):
    assert type(a) is type(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert [type(v) for v in x.reshape(-1)] == [type(v) for v in y.reshape(-1)]
            np.testing.assert_array_equal(x, y)
            assert y.flags.writeable
        else:
            assert x == y


def test_vector_batch_with_unicode_and_missing_ids():
    batch = VectorBatch(np.array(["a", None, "é→", ""], dtype=object),
                        np.arange(12, dtype=np.float32).reshape(4, 3),
                        np.array(["f.jsonl#0", "f.jsonl#1", "f.jsonl#2", "g#0"], dtype=object))
    got = _roundtrip(batch)
    _same(batch, got)
    got.vectors[0, 0] = -1.0  # writable, and not shared with the input
    assert batch.vectors[0, 0] == 0.0


def test_columns_that_are_not_strings_pickle_as_they_are():
    # bytes must stay bytes (Arrow would turn them into str); ints, mixed types and strings UTF-8
    # cannot encode (a lone surrogate, as json.loads accepts) too.
    for ids in ([b"x", b"y"], [1, "a"], ["a", b"b"], [float("nan"), "a"], ["\ud800x", "a"]):
        batch = VectorBatch(np.array(ids, dtype=object), np.zeros((2, 2), np.float64),
                            np.array(["o", "p"], dtype=object))
        got = pickle.loads(pickle.dumps(batch))
        assert [type(v) for v in got.ids] == [type(v) for v in batch.ids]
        assert [str(v) for v in got.ids] == [str(v) for v in batch.ids]
        assert got.vectors.dtype == np.float64


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_pair_and_neighbor_batches(n):
    rng = np.random.default_rng(n)
    pairs = PairBatch(np.array([f"q{i}" for i in range(n)], dtype=object),
                      np.array([f"c{i}" for i in rng.integers(0, 50, n)], dtype=object),
                      np.arange(n, dtype=np.int64), rng.random(n))
    _same(pairs, _roundtrip(pairs))
    cands = np.array([[f"c{i}", ""] for i in range(n)], dtype=object).reshape(n, 2)
    neighbors = NeighborBatch("batch-7", pairs.query_ids, cands, np.full((n, 2), np.inf))
    _same(neighbors, _roundtrip(neighbors))


def test_string_columns_travel_as_arrow_buffers():
    from transforms.common import batch_pickle

    batch = VectorBatch(np.array(["a", "b"], dtype=object), np.zeros((2, 2), np.float32),
                        np.array([b"x", b"y"], dtype=object))
    rebuild, (cls, columns) = batch.__reduce__()
    assert rebuild is batch_pickle._rebuild and cls is VectorBatch
    assert [type(c) for c in columns] == [batch_pickle._Strings, batch_pickle._AsIs, batch_pickle._AsIs]


def test_str_subclasses_come_back_as_equal_str():
    batch = VectorBatch(np.array([np.str_("a"), "b"], dtype=object), np.zeros((2, 1), np.float32),
                        np.array(["o", "p"], dtype=object))
    got = _roundtrip(batch)
    assert list(got.ids) == ["a", "b"] and all(type(v) is str for v in got.ids)
