"""Exact-duplicate short-circuit helpers against direct computations."""

from __future__ import annotations

import numpy as np

from transforms.exact_duplicates import collapse_identical, expand_link_pairs
from transforms.schema import PairBatch, VectorBatch


def test_collapse_keeps_the_smallest_id_of_each_identical_group():
    v = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [1, 2]], dtype=np.float32)
    ids = np.array(["e", "b", "a", "z", "c", "d"], dtype=object)
    kept, aliases = collapse_identical(VectorBatch(ids, v, ids.copy()))
    assert list(kept.ids) == ["a", "b", "z"]  # sorted by id
    np.testing.assert_array_equal(kept.vectors, [[1, 2], [3, 4], [5, 6]])
    assert list(kept.origins) == ["a", "b", "z"]
    assert {str(r): sorted(m) for r, m in aliases} == {"a": ["d", "e"], "b": ["c"]}


def test_collapse_confirms_equal_bytes_when_hashes_collide(monkeypatch):
    import transforms.exact_duplicates as ed

    monkeypatch.setattr(ed, "content_hash64", lambda v: np.zeros(len(v), dtype=np.uint64))
    v = np.array([[1, 2], [1, 3], [1, 2]], dtype=np.float32)
    ids = np.array(["x", "y", "w"], dtype=object)
    kept, aliases = ed.collapse_identical(VectorBatch(ids, v, ids))
    assert sorted(kept.ids) == ["w", "y"]
    assert [(str(r), list(m)) for r, m in aliases] == [("w", ["x"])]


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
    from transforms.exact_duplicates import expand_dedup_pairs

    pairs = PairBatch(np.array(["a", "b"], dtype=object), np.array(["c", "z"], dtype=object),
                      np.array([1, 2]), np.array([0.1, 0.2]))
    out = expand_dedup_pairs(pairs, {"c": np.array(["d"], dtype=object),
                                     "b": np.array(["e"], dtype=object)})
    got = set(zip(out.query_ids, out.candidate_ids, out.distances, strict=True))
    assert got == {("a", "c", 0.1), ("a", "d", 0.1), ("b", "z", 0.2), ("e", "z", 0.2)}
