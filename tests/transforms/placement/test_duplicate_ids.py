"""Repeated ids: the first occurrence by file then row is kept, found by id bucket across batches."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.placement.duplicate_ids import sort_and_dedupe


def test_duplicate_ids_keep_first_occurrence_by_file_then_row():
    from transforms.common.schema import VectorBatch

    batch = VectorBatch(ids=np.array(["b", "a", "b", "b"], dtype=object),
                        vectors=np.arange(8, dtype=np.float32).reshape(4, 2),
                        origins=np.array(["f2#1", "f1#0", "f1#10", "f1#9"], dtype=object))
    ordered, keep, kept_row = sort_and_dedupe(batch)
    assert list(ordered.ids[keep]) == ["a", "b"]
    assert list(ordered.origins[keep]) == ["f1#0", "f1#9"]  # row 9 before row 10, f1 before f2
    dropped = np.flatnonzero(~keep)
    assert sorted(ordered.origins[dropped]) == ["f1#10", "f2#1"]
    assert all(ordered.origins[kept_row[d]] == "f1#9" for d in dropped)


def test_first_occurrences_equals_a_full_sort_by_id_source_row():
    from transforms.placement.duplicate_ids import _origin_key, first_occurrences

    rng = np.random.default_rng(4)
    ids = np.array([f"id{v}" for v in rng.integers(0, 60, 300)], dtype=object)
    origins = np.array([f"f{f}#{r}" for f, r in zip(rng.integers(0, 3, 300), rng.integers(0, 40, 300),
                                                    strict=True)], dtype=object)
    order, keep, kept_row = first_occurrences(ids, origins)
    want = sorted(range(300), key=lambda i: (ids[i], *_origin_key(origins[i])))
    assert [(ids[i], _origin_key(origins[i])) for i in order] == \
        [(ids[i], _origin_key(origins[i])) for i in want]
    assert sorted(set(ids)) == list(ids[order][keep])
    np.testing.assert_array_equal(ids[order][kept_row], ids[order])


def test_id_buckets_follow_records_and_shards(monkeypatch):
    import transforms.placement.duplicate_ids as sr

    monkeypatch.setattr(sr, "_IDS_PER_BUCKET", 100)
    assert sr.id_buckets(0) == 1
    assert sr.id_buckets(250) == 3
    assert sr.id_buckets(250, num_shards=8) == 8  # no more ids per bucket than vectors per shard
    assert sr.id_buckets(250, num_shards=2) == 3


@pytest.mark.parametrize("shards", [None, 5])
def test_find_duplicate_ids_across_batches_and_id_buckets(monkeypatch, shards):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    import transforms.placement.duplicate_ids as sr
    from transforms.common.schema import VectorBatch

    monkeypatch.setattr(sr, "_IDS_PER_BUCKET", 3)  # 9 records -> 3 id buckets

    def batch(ids, source):
        return VectorBatch(np.array(ids, dtype=object), np.zeros((len(ids), 2), np.float32),
                           np.array([f"{source}#{i}" for i in range(len(ids))], dtype=object))

    with TestPipeline(runner="FnApiRunner") as p:
        batches = p | beam.Create([batch(["a", "b", "c", "a"], "f2"), batch(["d", "a", "e", "c", "f"], "f1")])
        found = batches | sr.FindDuplicateIds(
            num_records=p | "N" >> beam.Create([9]),
            num_shards=None if shards is None else p | "S" >> beam.Create([shards]))
        # first occurrence by file, then row: a at f1#1, c at f1#3
        assert_that(found, equal_to([(("a", "f2#0"), "f1#1"), (("a", "f2#3"), "f1#1"),
                                     (("c", "f2#2"), "f1#3")]))
