"""Exact-duplicate short-circuit helpers against direct computations."""

from __future__ import annotations

import numpy as np

from transforms.common.schema import PairBatch, VectorBatch
from transforms.placement.exact_duplicates import collapse_identical, expand_link_pairs


def test_collapse_keeps_the_smallest_id_of_each_identical_group():
    v = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [1, 2]], dtype=np.float32)
    ids = np.array(["e", "b", "a", "z", "c", "d"], dtype=object)
    kept, aliases = collapse_identical(VectorBatch(ids, v, ids.copy()))
    assert list(kept.ids) == ["a", "b", "z"]  # sorted by id
    np.testing.assert_array_equal(kept.vectors, [[1, 2], [3, 4], [5, 6]])
    assert list(kept.origins) == ["a", "b", "z"]
    assert {str(r): sorted(m) for r, m, _ in aliases} == {"a": ["d", "e"], "b": ["c"]}
    assert {str(g.representative): g.sq_norm for g in aliases} == {"a": 5.0, "b": 25.0}


def test_collapse_confirms_equal_bytes_when_hashes_collide(monkeypatch):
    import transforms.placement.exact_duplicates as ed

    monkeypatch.setattr(ed, "content_hash64", lambda v: np.zeros(len(v), dtype=np.uint64))
    v = np.array([[1, 2], [1, 3], [1, 2]], dtype=np.float32)
    ids = np.array(["x", "y", "w"], dtype=object)
    kept, aliases = ed.collapse_identical(VectorBatch(ids, v, ids))
    assert sorted(kept.ids) == ["w", "y"]
    assert [(str(r), list(m)) for r, m, _ in aliases] == [("w", ["x"])]


def test_expand_adds_aliases_at_equal_distance_and_recuts_top_k():
    pairs = PairBatch(np.array(["q1", "q1", "q1", "q2"], dtype=object),
                      np.array(["a", "b", "c", "b"], dtype=object),
                      np.array([1, 2, 3, 1]), np.array([0.1, 0.2, 0.3, 0.5]))
    out = expand_link_pairs(pairs, {"a": np.array(["a2"], dtype=object),
                                    "b": np.array(["b0", "b9"], dtype=object)}, top_k=3)
    got = list(zip(out.query_ids, out.candidate_ids, out.ranks, out.distances, strict=True))
    assert got == [("q1", "a", 1, 0.1), ("q1", "a2", 2, 0.1), ("q1", "b", 3, 0.2),
                   ("q2", "b", 1, 0.5), ("q2", "b0", 2, 0.5), ("q2", "b9", 3, 0.5)]


def test_dedup_expansion_repeats_representative_pairs_for_aliases():
    from transforms.placement.exact_duplicates import expand_dedup_pairs

    pairs = PairBatch(np.array(["a", "b"], dtype=object), np.array(["c", "z"], dtype=object),
                      np.array([1, 2]), np.array([0.1, 0.2]))
    out = expand_dedup_pairs(pairs, {"c": np.array(["d"], dtype=object),
                                     "b": np.array(["e"], dtype=object)})
    got = set(zip(out.query_ids, out.candidate_ids, out.distances, strict=True))
    assert got == {("a", "c", 0.1), ("a", "d", 0.1), ("b", "z", 0.2), ("e", "z", 0.2)}


def test_dedup_group_pairs_are_at_the_distance_of_identical_vectors():
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.placement.exact_duplicates import (
        AliasGroup,
        ExpandAliases,
        _alias_line,
        _parse_alias_line,
    )

    v = np.array([[1, 2], [1, 2], [1, 2]], dtype=np.float32)
    ids = np.array(["b", "a", "c"], dtype=object)
    _, groups = collapse_identical(VectorBatch(ids, v, ids))
    assert groups[0].sq_norm == 5.0
    # The kept index's alias file carries the norm (and an older file without it reads as 0).
    assert _parse_alias_line(_alias_line(groups[0])).sq_norm == 5.0
    assert _parse_alias_line('{"representative": "a", "aliases": ["b"]}') == ("a", ["b"], 0.0)
    for distance, expected in (("dot", -5.0), ("cosine", 0.0), ("squared_l2", 0.0)):
        with TestPipeline() as p:
            aliases = p | f"Aliases{distance}" >> beam.Create([AliasGroup(*groups[0])])
            pairs = (p | f"Pairs{distance}" >> beam.Create([PairBatch(
                np.array(["a"], dtype=object), np.array(["z"], dtype=object), np.array([1]),
                np.array([-3.0]))])
                | ExpandAliases(aliases=aliases, mode="dedup", top_k=5, distance=distance))
            rows = pairs | beam.FlatMap(lambda b: list(zip(b.query_ids, b.candidate_ids,
                                                           b.distances.tolist(), strict=True)))
            assert_that(rows, equal_to([("a", "z", -3.0), ("b", "z", -3.0), ("c", "z", -3.0),
                                        ("a", "b", expected), ("a", "c", expected),
                                        ("b", "c", expected)]))
