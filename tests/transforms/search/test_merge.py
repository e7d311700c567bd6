"""Merging per-shard top-K and rescoring, against direct numpy computations."""

from __future__ import annotations

import numpy as np
import scipy.stats

from transforms.search.merge import merge_partials, neighbors_to_pairs, wasserstein_1d
from transforms.search.search import PartialResult


def _partial(shard, qids, cands, dists, qv=None, cv=None, rows=None, n=None):
    rows = np.arange(len(qids)) if rows is None else np.array(rows)
    return PartialResult(shard, rows, n or len(qids), np.array(qids, dtype=object),
                         np.array(cands, dtype=object), np.array(dists, dtype=np.float64), qv, cv)


def test_merge_takes_global_top_k_with_ties_broken_by_id():
    a = _partial(0, ["q1", "q2"], [["c5", "c1"], ["c2", ""]], [[0.1, 0.3], [0.2, np.inf]])
    b = _partial(1, ["q1", "q2"], [["c4", "c0"], ["c9", "c3"]], [[0.1, 0.5], [0.2, 0.4]])
    nb = merge_partials([b, a], top_k=3)
    assert nb.candidate_ids.tolist() == [["c4", "c5", "c1"], ["c2", "c9", "c3"]]
    np.testing.assert_allclose(nb.distances, [[0.1, 0.1, 0.3], [0.2, 0.2, 0.4]])


def test_pairs_drop_empty_slots_and_apply_max_distance():
    a = _partial(0, ["q1", "q2"], [["c1", ""], ["c2", "c3"]], [[0.1, np.inf], [0.2, 0.9]])
    pairs = neighbors_to_pairs(merge_partials([a], top_k=2), max_distance=0.5, canonical=False)
    assert list(zip(pairs.query_ids, pairs.candidate_ids, pairs.ranks, strict=True)) == [
        ("q1", "c1", 1), ("q2", "c2", 1)]


def test_canonical_pairs_put_smaller_id_first():
    a = _partial(0, ["b", "a"], [["a"], ["b"]], [[0.1], [0.1]])
    pairs = neighbors_to_pairs(merge_partials([a], top_k=1), max_distance=None, canonical=True)
    assert set(zip(pairs.query_ids, pairs.candidate_ids, strict=True)) == {("a", "b")}


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((5, 16))
    v = rng.standard_normal((5, 3, 16))
    got = wasserstein_1d(u[:, None, :], v)
    want = [[scipy.stats.wasserstein_distance(u[i], v[i, j]) for j in range(3)] for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_wasserstein_rescore_reranks_the_kept_pairs():
    rng = np.random.default_rng(1)
    qv = rng.standard_normal((1, 8)).astype(np.float32)
    cv = rng.standard_normal((1, 3, 8)).astype(np.float32)
    a = _partial(0, ["q"], [["c1", "c2", "c3"]], [[0.1, 0.2, 0.3]], qv, cv)
    nb = merge_partials([a], top_k=3, rescore="wasserstein")
    want = [scipy.stats.wasserstein_distance(qv[0], cv[0, j]) for j in range(3)]
    order = np.argsort(want)
    assert nb.candidate_ids[0].tolist() == [["c1", "c2", "c3"][i] for i in order]
    np.testing.assert_allclose(nb.distances[0], np.sort(want), rtol=1e-6)


def test_merge_of_routed_partials_covering_different_rows():
    a = _partial(0, ["q1"], [["c1", "c2"]], [[0.1, 0.2]], rows=[0], n=3)
    b = _partial(1, ["q2", "q3"], [["c3", "c4"], ["c5", ""]], [[0.3, 0.4], [0.5, np.inf]],
                 rows=[1, 2], n=3)
    c = _partial(2, ["q1", "q3"], [["c0", "c9"], ["c6", "c7"]], [[0.15, 0.9], [0.6, 0.7]],
                 rows=[0, 2], n=3)
    nb = merge_partials([c, b, a], top_k=2)
    assert nb.query_ids.tolist() == ["q1", "q2", "q3"]
    assert nb.candidate_ids.tolist() == [["c1", "c0"], ["c3", "c4"], ["c5", "c6"]]
