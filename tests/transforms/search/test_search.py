"""Searching one shard (a top-K past its size) and the tuned search arguments, against direct
numpy computations."""

from __future__ import annotations

import numpy as np

from transforms.search.merge import merge_partials, neighbors_to_pairs
from transforms.search.search import search_kwargs


def test_a_top_k_past_the_shard_size_allocates_only_the_shard(tmp_path):
    from transforms.common.artifacts import SUCCESS_MARKER
    from transforms.common.schema import ShardIndexInfo, VectorBatch
    from transforms.common.vectors import prepare_vectors
    from transforms.index.neighbor_index import build_index
    from transforms.index.shard_files import save_ids
    from transforms.search.search import _SearchShardFn

    rng = np.random.default_rng(5)
    cands, _ = prepare_vectors(rng.normal(size=(5, 8)), "cosine")
    queries, _ = prepare_vectors(np.vstack([cands[:2], rng.normal(size=(3, 8))]), "cosine")
    index = build_index(cands, distance="cosine", kind="exact", params={})
    index.save(str(tmp_path))
    ids = np.array(["e", "d", "c", "b", "a"], dtype=object)
    save_ids(str(tmp_path), ids)
    (tmp_path / SUCCESS_MARKER).write_text("")
    info = ShardIndexInfo(0, str(tmp_path), 5, "exact", {})
    batch = VectorBatch(np.array([f"q{i}" for i in range(5)], dtype=object), queries,
                        np.array([f"f#{i}" for i in range(5)], dtype=object))
    fn = _SearchShardFn(top_k=1_000_000, exclude_self=False, keep_vectors=False)
    [(_, part)] = list(fn.process(("00000/0000", [("b0", np.arange(5), 5, batch)]), shards={0: info}))
    assert part.candidate_ids.shape == part.distances.shape == (5, 5)  # not (5, 1_000_000)
    pairs = neighbors_to_pairs(merge_partials([part], 1_000_000), max_distance=None, canonical=False)
    # Exact oracle in float64, ties by id; reported distances clamped to cosine's range.
    d = 1.0 - queries.astype(np.float64) @ cands.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(ids.astype(str), d.shape), d), axis=-1)
    np.testing.assert_array_equal(pairs.candidate_ids.reshape(5, 5), ids[order])
    np.testing.assert_allclose(pairs.distances.reshape(5, 5),
                               np.maximum(np.take_along_axis(d, order, axis=1), 0), atol=1e-6)
    assert (pairs.distances >= 0).all()


def test_search_kwargs():
    tuned = {0: {"leaves_to_search": 12, "reorder": 200, "recall": 0.99, "reached": True},
             1: {"leaves_to_search": None, "reorder": 400, "recall": 0.9, "reached": False}}
    assert search_kwargs(tuned, 0) == {"leaves_to_search": 12, "reorder": 200}
    assert search_kwargs(tuned, 1) == {"reorder": 400}
    assert search_kwargs(tuned, 2) == {}
    assert search_kwargs({"0": tuned[0]}, 0) == {"leaves_to_search": 12, "reorder": 200}
    assert search_kwargs(None, 0) == search_kwargs({}, 0) == {}
