"""Tests for transforms.quality.ground_truth: the audit sample, exact sample truth and the relevance
cutoff."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from tests.transforms.quality.helpers import (
    DIMS,
    N_QUERIES,
    PLANTED,
    SAMPLE,
    TOP_K,
    _batch,
    _batches,
    _expected_sample_ids,
    _oracle_relevant,
    _oracle_truth,
    _pipeline,
    _single,
)
from transforms.common.schema import VectorBatch
from transforms.index.sample_truth import SampleTruth
from transforms.quality.ground_truth import (
    RELEVANCE_QUANTILE,
    ExactSampleTopK,
    SampleQueries,
    relevance_cutoff,
    relevant_slots,
    select_sample,
)


def test_select_sample_is_the_smallest_hashes_whatever_the_batching(corpus):
    batch = corpus["queries"]
    want = _expected_sample_ids(batch.ids, SAMPLE)
    rng = np.random.default_rng(0)
    for size in (7, 64, N_QUERIES):
        got = select_sample([b for _, b in _batches(batch, size, rng.permutation(N_QUERIES))], SAMPLE)
        assert got.ids.tolist() == want
        rows = np.searchsorted(batch.ids.astype(str), got.ids.astype(str))
        np.testing.assert_array_equal(got.vectors, batch.vectors[rows])
    dup = _batch(["a", "b", "a"], np.eye(3))
    assert sorted(select_sample([dup], 5).ids.tolist()) == ["a", "b"]
    assert len(select_sample([], 5)) == 0
    salted = select_sample([batch], SAMPLE, salt="tune")
    assert len(salted) == SAMPLE and salted.ids.tolist() != want


def _check_empty(sample: VectorBatch) -> None:
    assert len(sample) == 0 and sample.vectors.shape == (0, 0)


def test_sample_queries_independent_of_batching(corpus):
    batch = corpus["queries"]
    want = _expected_sample_ids(batch.ids, SAMPLE)

    def check(sample):
        assert sample.ids.tolist() == want
        assert sample.vectors.shape == (SAMPLE, DIMS)

    with _pipeline() as p:
        for label, size, seed in (("Small", 9, 1), ("Large", 150, 2)):
            order = np.random.default_rng(seed).permutation(N_QUERIES)
            sample = (p | f"Create{label}" >> beam.Create(_batches(batch, size, order))
                      | f"Sample{label}" >> SampleQueries(sample_size=SAMPLE))
            assert_that(sample, _single(check), label=f"Check{label}")
        empty = (p | "CreateEmpty" >> beam.Create([])
                 | "SampleEmpty" >> SampleQueries(sample_size=SAMPLE))
        assert_that(empty, _single(_check_empty), label="CheckEmpty")


def test_exact_sample_top_k_matches_numpy_oracle(corpus):
    link = corpus["sample"]
    # Dedup: the sample is drawn from the candidates themselves, and each must not find itself.
    dedup = select_sample([_batch(corpus["cand_ids"], corpus["cands"])], SAMPLE)

    def check(want: SampleTruth):
        def _check(got: SampleTruth):
            assert got.query_ids.tolist() == want.query_ids.tolist()
            assert got.candidate_ids.tolist() == want.candidate_ids.tolist()
            np.testing.assert_allclose(got.distances, want.distances, rtol=0, atol=1e-12)
            np.testing.assert_array_equal(got.shards, want.shards)
            np.testing.assert_array_equal(got.positions, want.positions)
        return _check

    with _pipeline() as p:
        infos = p | "Infos" >> beam.Create(corpus["infos"])
        for label, sample, exclude in (("Link", link, False), ("Dedup", dedup, True)):
            truth = infos | f"Truth{label}" >> ExactSampleTopK(
                sample=p | f"Sample{label}" >> beam.Create([sample]), top_k=TOP_K, exclude_self=exclude)
            assert_that(truth, _single(check(_oracle_truth(corpus, sample, exclude))),
                        label=f"Check{label}")
    assert all(q not in row for q, row in zip(dedup.ids, _oracle_truth(corpus, dedup, True).candidate_ids,
                                               strict=True))


def test_relevance_cutoff_separates_planted_matches_from_background(planted):
    truth = planted["truth"]
    rel = relevance_cutoff(truth, TOP_K)
    d = truth.distances
    assert rel.rule == "derived"
    want = np.sort(d[:, -1])[int(RELEVANCE_QUANTILE * (len(d) - 1))] - np.median(d[:, -1] - d[:, 1])
    assert rel.cutoff == pytest.approx(want)
    assert f"{rel.cutoff:.4g}" in rel.target and "rank-1" in rel.target
    slots = relevant_slots(truth, TOP_K, rel)
    np.testing.assert_array_equal(slots, _oracle_relevant(d, TOP_K))
    # Every planted copy is its query's nearest neighbour and relevant; the background mostly is not.
    assert (truth.candidate_ids[:PLANTED, 0] == planted["partner"]).all()
    assert slots[:PLANTED, 0].all() and slots[:, 0].all()
    assert d[:PLANTED, 0].max() < rel.cutoff < d[:, 1:].mean()
    assert slots[:, 1:].mean() < 0.05, slots[:, 1:].mean()
    # The quantile of the K-th distance alone would sit inside the background.
    assert (d[:, 1:] <= np.quantile(d[:, -1], RELEVANCE_QUANTILE)).mean() > 3 * slots[:, 1:].mean()


def _truth(dist, cand=None) -> SampleTruth:
    dist = np.asarray(dist, dtype=np.float64)
    n, k = dist.shape
    if cand is None:
        cand = np.full((n, k), "", dtype=object)
        for i, j in np.ndindex(n, k):
            cand[i, j] = f"c{i}-{j}"
    cand = np.where(np.isfinite(dist), cand, "").astype(object)
    shards = np.where(np.isfinite(dist), 0, -1)
    return SampleTruth("t", np.array([f"q{i}" for i in range(n)], dtype=object), cand, dist,
                       shards, shards.copy())


def test_relevance_cutoff_edge_cases():
    rng = np.random.default_rng(0)
    dist = np.sort(rng.uniform(0.3, 0.9, (50, 5)), axis=1)
    # --max_distance: exactly the pairs the job keeps, rank 1 included only when within.
    rel = relevance_cutoff(_truth(dist), 5, max_distance=0.5)
    assert (rel.rule, rel.cutoff) == ("max_distance", 0.5) and "0.5" in rel.target
    np.testing.assert_array_equal(relevant_slots(_truth(dist), 5, rel), dist <= 0.5)
    # All distances identical: no neighbour stands out, every slot counts (ties at the cutoff do).
    same = _truth(np.full((20, 5), 0.4))
    rel = relevance_cutoff(same, 5)
    assert rel.cutoff == pytest.approx(0.4) and relevant_slots(same, 5, rel).all()
    # Exact duplicates (distance 0) count at any rank.
    dup = dist.copy()
    dup[:3, :3] = 0.0
    slots = relevant_slots(_truth(dup), 5, relevance_cutoff(_truth(dup), 5))
    assert slots[:3, :3].all()
    # One query: its own K-th distance less its own shell, i.e. its 2nd-neighbour distance.
    one = _truth(dist[:1])
    assert relevance_cutoff(one, 5).cutoff == pytest.approx(dist[0, 1])
    assert relevant_slots(one, 5, relevance_cutoff(one, 5)).tolist() == [[True, True, False, False, False]]
    # No query has K neighbours (fewer candidates than K), or top_k 1: every found neighbour counts.
    short = dist.copy()
    short[:, 3:] = np.inf
    rel = relevance_cutoff(_truth(short), 5)
    assert (rel.rule, rel.cutoff) == ("all", None)
    np.testing.assert_array_equal(relevant_slots(_truth(short), 5, rel), np.isfinite(short))
    assert relevance_cutoff(_truth(dist), 1).rule == "all"
    assert relevant_slots(_truth(dist), 1, relevance_cutoff(_truth(dist), 1)).all()
    # Rows without K neighbours are left out of the estimate, and their empty slots never count.
    mixed = dist.copy()
    mixed[:10, 4] = np.inf
    rel = relevance_cutoff(_truth(mixed), 5)
    assert rel.cutoff == pytest.approx(relevance_cutoff(_truth(dist[10:]), 5).cutoff)
    assert not relevant_slots(_truth(mixed), 5, rel)[:10, 4].any()
    # An empty sample, and distances below zero (dot: -dot).
    assert relevance_cutoff(_truth(np.empty((0, 5))), 5).rule == "all"
    neg = _truth(-dist[:, ::-1])
    rel = relevance_cutoff(neg, 5)
    np.testing.assert_array_equal(relevant_slots(neg, 5, rel), _oracle_relevant(-dist[:, ::-1], 5))
    # Dedup truth reads the same: the query is absent from its own list, slots shift up.
    assert relevance_cutoff(_truth(dist[:, 1:]), 4).cutoff == pytest.approx(
        np.sort(dist[:, 4])[int(RELEVANCE_QUANTILE * 49)] - np.median(dist[:, 4] - dist[:, 2]))
