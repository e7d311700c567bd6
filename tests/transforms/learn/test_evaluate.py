"""Tests of match evaluation (transforms/learn/evaluate.py) on hand-built cases."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.transforms.learn.evaluation_cases import LINK_MATCHES, LINK_TRUTH, _matches
from transforms.io import results
from transforms.learn import evaluate as ev
from transforms.testing import people


def test_link_precision_recall_f1_by_hand():
    report = ev.evaluate(LINK_MATCHES, LINK_TRUTH, mode="link", thresholds=[0.1, 0.2, 0.3, 0.4, 0.5])
    assert report["counts"]["emitted_pairs"] == 5
    assert report["counts"]["true_positives"] == 2
    assert report["pairs"] == pytest.approx({"precision": 2 / 5, "recall": 2 / 3, "f1": 0.5})
    assert report["top1"]["pairs"] == 3
    assert report["top1"]["precision"] == pytest.approx(1 / 3)
    assert report["top1"]["recall"] == pytest.approx(1 / 3)
    assert report["top1"]["f1"] == pytest.approx(1 / 3)
    assert report["k"] == 2
    assert report["recall_at"] == pytest.approx({"1": 1 / 3, "2": 2 / 3})


def test_threshold_sweep_picks_best_f1_threshold():
    report = ev.evaluate(LINK_MATCHES, LINK_TRUTH, mode="link", thresholds=[0.5, 0.1, 0.3, 0.2, 0.4])
    rows = {r["threshold"]: r for r in report["threshold_sweep"]["rows"]}
    assert [r["threshold"] for r in report["threshold_sweep"]["rows"]] == [0.1, 0.2, 0.3, 0.4, 0.5]
    # distance <= 0.3 keeps q1-c1, q2-cy, q2-c2: 2 of 3 right, 2 of 3 found.
    assert rows[0.3]["pairs"] == 3
    assert rows[0.3]["f1"] == pytest.approx(2 / 3)
    assert rows[0.1]["f1"] == pytest.approx(0.5)
    assert report["threshold_sweep"]["best"]["threshold"] == 0.3
    # Among rank-1 pairs only, the best cut keeps just q1-c1.
    assert report["threshold_sweep_top1"]["best"]["threshold"] == 0.1
    assert report["threshold_sweep_top1"]["best"]["precision"] == 1.0


def test_default_sweep_uses_quantiles_of_emitted_distances():
    rows = [(f"q{i}", f"c{i}", 1, i / 100) for i in range(200)]
    report = ev.evaluate(_matches(rows), {(f"q{i}", f"c{i}") for i in range(0, 200, 2)}, mode="link")
    sweep = report["threshold_sweep"]["rows"]
    assert len(sweep) == 50
    assert sweep[0]["threshold"] == 0.0 and sweep[-1]["threshold"] == pytest.approx(1.99)
    assert sweep[-1]["recall"] == 1.0


def test_dedup_pairs_are_unordered_and_symmetric():
    truth = {("b", "a"), ("c", "d")}  # either order in, unordered inside
    one_way = _matches([("a", "b", 1, 0.1), ("c", "e", 1, 0.2), ("d", "e", 1, 0.3)])
    both_ways = _matches([("a", "b", 1, 0.1), ("b", "a", 1, 0.1), ("c", "e", 1, 0.2),
                          ("e", "c", 2, 0.2), ("d", "e", 1, 0.3)])
    r1 = ev.evaluate(one_way, truth, mode="dedup")
    r2 = ev.evaluate(both_ways, truth, mode="dedup")
    flipped = one_way.rename(columns={"query_id": "candidate_id", "candidate_id": "query_id"})
    r3 = ev.evaluate(flipped, truth, mode="dedup")
    for r in (r1, r2, r3):
        assert r["counts"]["emitted_pairs"] == 3  # {a,b}, {c,e}, {d,e}
        assert r["pairs"] == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4})
        assert r["top1"] is None
        assert r["recall_at"]["1"] == pytest.approx(0.5)
    assert r1["threshold_sweep"] == r3["threshold_sweep"]


def test_dedup_recall_at_k_counts_either_direction():
    truth = {("a", "b")}
    matches = _matches([("a", "x", 1, 0.1), ("a", "y", 2, 0.2), ("a", "b", 3, 0.3),
                        ("b", "a", 1, 0.3)])
    report = ev.evaluate(matches, truth, mode="dedup")
    assert report["recall_at"]["1"] == 1.0  # b retrieved a at rank 1


def test_unknown_ids_self_pairs_and_empty_slots_are_counted_not_fatal():
    truth = set(LINK_TRUTH) | {("q9", "c9")}
    matches = pd.concat([LINK_MATCHES, _matches([("q1", "q1", 3, 0.0), ("q3", "", 2, float("inf"))])])
    report = ev.evaluate(matches, truth, mode="link")
    c = report["counts"]
    assert c["true_pairs"] == 4 and c["true_pairs_missing_ids"] == 1
    assert c["self_pairs_dropped"] == 1 and c["empty_slots_dropped"] == 1
    assert c["emitted_rows"] == 7 and c["emitted_pairs"] == 5
    assert report["pairs"]["recall"] == pytest.approx(2 / 4)  # unknown pairs are misses
    assert "1 with an id not in the output" in ev.format_table(report)


def test_k_sets_recall_cutoff_and_is_validated():
    report = ev.evaluate(LINK_MATCHES, LINK_TRUTH, mode="link", k=1)
    assert report["k"] == 1 and list(report["recall_at"]) == ["1"]
    with pytest.raises(ValueError, match="k must be"):
        ev.evaluate(LINK_MATCHES, LINK_TRUTH, mode="link", k=0)
    with pytest.raises(ValueError, match="mode"):
        ev.evaluate(LINK_MATCHES, LINK_TRUTH, mode="cluster")
    with pytest.raises(ValueError, match="distance"):
        ev.evaluate(LINK_MATCHES.drop(columns="distance"), LINK_TRUTH)


def test_load_truth_pairs_and_clusters(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query_id,candidate_id\n007,b\nb,007\n")
    assert ev.load_truth(str(pairs)) == {("007", "b"), ("b", "007")}
    assert ev.load_truth(str(pairs), mode="dedup") == {("007", "b")}
    clusters = tmp_path / "clusters.csv"
    clusters.write_text("id,cluster_id\nr3,1\nr1,1\nr2,1\nr4,2\nr5,3\nr6,3\n")
    assert ev.load_truth(str(clusters)) == {("r1", "r2"), ("r1", "r3"), ("r2", "r3"), ("r5", "r6")}
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="query_id,candidate_id"):
        ev.load_truth(str(bad))


def test_perfect_matcher_on_generated_people_scores_one():
    a, b, links = people.make_link_corpora(50, overlap=0.6, seed=0)
    matches = _matches([(x, y, 1, 0.0) for x, y in links])
    report = ev.evaluate(matches, set(links), mode="link")
    assert report["pairs"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert report["counts"]["true_pairs"] == 30


def test_fallback_reader_refuses_unknown_formats(tmp_path):
    _matches([("a", "b", 1, 0.1)]).to_csv(tmp_path / "matches-00000-of-00002.csv.gz", index=False)
    frame = results.read_match_files(str(tmp_path))
    assert frame.to_dict("records") == [
        {"query_id": "a", "candidate_id": "b", "rank": 1, "distance": 0.1}]
    (tmp_path / "matches-00001-of-00002.tfrecord").write_bytes(b"\0")
    with pytest.raises(ValueError, match="tfrecord"):
        results.read_match_files(str(tmp_path))
