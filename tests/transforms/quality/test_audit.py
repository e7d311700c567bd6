"""Tests for transforms.quality.audit: the recall audit and recall report (and the quality
composites' argument checks)."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that

from tests.transforms.quality.helpers import (
    NUM_SHARDS,
    SAMPLE,
    TOP_K,
    _oracle_relevant,
    _oracle_truth,
    _pairs,
    _pipeline,
    _single,
    _true_pairs,
)
from transforms.common import metrics
from transforms.index.sample_truth import SampleTruth
from transforms.quality.audit import (
    RECALL_PERMILLE_METRIC,
    RELEVANT_RECALL_PERMILLE_METRIC,
    AuditRecall,
    recall_report,
)
from transforms.quality.ground_truth import (
    ExactSampleTopK,
    SampleQueries,
    relevance_cutoff,
)
from transforms.quality.tuning import TuneSearch


def test_constructors_validate_arguments():
    with pytest.raises(ValueError, match="sample_size"):
        SampleQueries(sample_size=0)
    with pytest.raises(ValueError, match="mode"):
        AuditRecall(truth=None, top_k=3, mode="both")
    with pytest.raises(ValueError, match="target_recall"):
        TuneSearch(sample=None, truth=None, target_recall=1.5, top_k=3)
    with pytest.raises(ValueError, match="top_k"):
        ExactSampleTopK(sample=None, top_k=0)


def test_audit_recall_counts_dropped_true_pairs(corpus):
    truth = _oracle_truth(corpus, corpus["sample"])
    true_pairs = _true_pairs(truth)
    dropped = set(range(0, len(true_pairs), 4))  # a quarter of them
    kept = [(q, c) for i, (q, c, _) in enumerate(true_pairs) if i not in dropped]
    # Pairs of queries outside the sample, and a reversed true pair, must not count in link mode.
    noise = [("q9999", "c00001"), ("zz", truth.query_ids[0])] + [(c, q) for q, c, _ in true_pairs[:4]]
    emitted = [_pairs(kept[:300] + noise[:3]), _pairs(kept[300:] + noise[3:]), _pairs([])]
    want_per_shard = {}
    for shard in range(NUM_SHARDS):
        mine = [i for i, (_, _, s) in enumerate(true_pairs) if s == shard]
        want_per_shard[shard] = 1 - len(dropped.intersection(mine)) / len(mine)

    relevant = _oracle_relevant(truth.distances, TOP_K).ravel()  # same order as true_pairs
    want_relevant = sum(i not in dropped for i in np.flatnonzero(relevant)) / relevant.sum()

    def check(report):
        assert report["sample_size"] == SAMPLE
        assert report["true_pairs"] == SAMPLE * TOP_K
        assert report["found_pairs"] == len(kept)
        assert report["recall_at_k"] == pytest.approx(1 - len(dropped) / len(true_pairs))
        assert report["relevant_pairs"] == relevant.sum() < SAMPLE * TOP_K
        assert report["recall_relevant"] == pytest.approx(want_relevant)
        assert f"{report['relevance_cutoff']:.4g}" in report["target"]
        assert report["per_shard"].keys() == want_per_shard.keys()
        for shard, recall in want_per_shard.items():
            assert report["per_shard"][shard] == pytest.approx(recall)

    p = _pipeline()
    report = (p | "Pairs" >> beam.Create(emitted)
              | "Audit" >> AuditRecall(truth=p | "Truth" >> beam.Create([truth]), top_k=TOP_K,
                                       mode="link"))
    assert_that(report, _single(check))
    outcome = p.run()
    outcome.wait_until_finish()
    dists = outcome.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE)
                                    .with_name(RECALL_PERMILLE_METRIC))["distributions"]
    assert [d.committed.max for d in dists] == [round(1000 * (1 - len(dropped) / len(true_pairs)))]
    dists = outcome.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE)
                                    .with_name(RELEVANT_RECALL_PERMILLE_METRIC))["distributions"]
    assert [d.committed.max for d in dists] == [round(1000 * want_relevant)]


def test_audit_recall_dedup_compares_unordered_pairs():
    # Sample {a, b}; a's true top-2 is [b, c], b's is [a, d]: unordered pairs {a-b, a-c, b-d}.
    truth = SampleTruth("t", np.array(["a", "b"], dtype=object),
                        np.array([["b", "c"], ["a", "d"]], dtype=object),
                        np.array([[0.1, 0.2], [0.1, 0.3]]), np.array([[1, 0], [0, 1]]),
                        np.array([[0, 0], [0, 1]]))
    # a-b emitted once, a-c emitted from c's side (as ("c", "a")), b-d missed; x-y is not about the sample.
    emitted = [_pairs([("a", "b"), ("x", "y")]), _pairs([("c", "a"), ("b", "e")])]

    def check(report):
        assert (report["true_pairs"], report["found_pairs"]) == (3, 2)
        assert report["recall_at_k"] == pytest.approx(2 / 3)
        # a-b is attributed to the smaller shard of its two sides (0); b-d lives in shard 1.
        assert report["per_shard"] == {0: 1.0, 1: 0.0}

    with _pipeline() as p:
        report = (p | "Pairs" >> beam.Create(emitted)
                  | "Audit" >> AuditRecall(truth=p | "Truth" >> beam.Create([truth]), top_k=2, mode="dedup"))
        assert_that(report, _single(check))
    # Relevance is per slot, before pairs become unordered. With K = 2 the shell (2nd to K-th) has no
    # depth, so the cutoff is the smallest K-th distance, 0.2: a's two slots and b's rank 1 count, not
    # b-d (0.3); a-b, relevant from both sides, counts once.
    report = recall_report(truth, np.array(["a"]), np.array(["b"]), top_k=2, mode="dedup")
    assert report["relevance_cutoff"] == pytest.approx(0.2)
    assert (report["relevant_pairs"], report["found_relevant_pairs"]) == (2, 1)
    assert report["recall_relevant"] == pytest.approx(0.5)
    assert (report["true_pairs"], report["recall_at_k"]) == (3, pytest.approx(1 / 3))
    # The same pairs in link mode: ("c", "a") is the wrong direction, so only a-b is found.
    rows = [("a", "b"), ("x", "y"), ("c", "a"), ("b", "e")]
    q, c = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    assert recall_report(truth, q, c, top_k=2, mode="link")["found_pairs"] == 1


def test_recall_report_applies_max_distance_to_the_truth(corpus):
    truth = _oracle_truth(corpus, corpus["sample"])
    cut = float(np.median(truth.distances))
    within = [(q, c) for q, cs, ds in zip(truth.query_ids, truth.candidate_ids, truth.distances, strict=True)
              for c, d in zip(cs, ds, strict=True) if d <= cut]
    emitted = within[::2]
    q, c = np.array([r[0] for r in emitted]), np.array([r[1] for r in emitted])
    report = recall_report(truth, q, c, top_k=TOP_K, mode="link", max_distance=cut)
    assert report["true_pairs"] == len(within)
    assert report["recall_at_k"] == pytest.approx(len(emitted) / len(within))
    nothing = recall_report(truth, q, c, top_k=TOP_K, mode="link", max_distance=-1.0)
    assert (nothing["true_pairs"], nothing["recall_at_k"]) == (0, None)


def test_recall_report_counts_relevant_and_all_pairs(planted):
    truth = planted["truth"]
    slots = _oracle_relevant(truth.distances, TOP_K)
    qids = np.broadcast_to(truth.query_ids[:, None], slots.shape)
    # Emit every relevant pair but one, and none of the others.
    q, c = qids[slots][1:], truth.candidate_ids[slots][1:]
    report = recall_report(truth, q, c, top_k=TOP_K, mode="link")
    assert report["relevant_pairs"] == slots.sum() and report["found_relevant_pairs"] == slots.sum() - 1
    assert report["recall_relevant"] == pytest.approx(1 - 1 / slots.sum())
    assert report["recall_at_k"] == pytest.approx((slots.sum() - 1) / slots.size)
    assert report["per_shard_relevant"] == {0: pytest.approx(report["recall_relevant"])}
    assert report["target"] == relevance_cutoff(truth, TOP_K).target
    # With --max_distance the relevant pairs are the kept ones, and both recalls agree.
    cut = float(np.median(truth.distances))
    report = recall_report(truth, q, c, top_k=TOP_K, mode="link", max_distance=cut)
    assert report["recall_relevant"] == report["recall_at_k"]
    assert report["relevant_pairs"] == (truth.distances <= cut).sum()
