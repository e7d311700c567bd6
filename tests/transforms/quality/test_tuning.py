"""Tests for transforms.quality.tuning: the effort ladder, search tuning and probe tuning."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from tests.transforms.quality.helpers import (
    PLANTED,
    SCANN_PARAMS,
    TOP_K,
    _oracle_relevant,
    _oracle_truth,
    _pipeline,
    _single,
)
from transforms.common.schema import ShardIndexInfo, VectorBatch
from transforms.index.sample_truth import SampleTruth
from transforms.index.shard_cache import load_shard
from transforms.quality.ground_truth import (
    relevance_cutoff,
)
from transforms.quality.tuning import TuneSearch, tuning_ladder
from transforms.search.search import search_kwargs


def test_tuning_ladder_starts_at_the_built_params_and_ends_at_full_effort():
    ladder = tuning_ladder({"num_leaves": 50, "num_leaves_to_search": 4, "quantization": "ah",
                            "reorder": 100}, 3000)
    assert ladder[0] == (4, 100)
    assert ladder[-1] == (50, 400)
    assert {r for _, r in ladder} == {100, 200, 400}
    assert [lv for lv, r in ladder if r == 100] == [4, 6, 9, 14, 21, 32, 48, 50]
    assert tuning_ladder({"num_leaves": 1, "quantization": "brute"}, 3000) == [(None, None)]
    assert tuning_ladder({"num_leaves": 1, "quantization": "ah", "reorder": 300}, 500) == [
        (None, 300), (None, 400), (None, 500)]
    # A shallow built reorder still gets the depths that serve top-10 well.
    assert {r for _, r in tuning_ladder({"num_leaves": 1, "quantization": "ah", "reorder": 10},
                                        5000)} == {10, 20, 40, 100, 200, 400}


def _shard_recall(sample: VectorBatch, truth: SampleTruth, info: ShardIndexInfo, kwargs: dict,
                  slots: np.ndarray | None = None) -> float:
    """Independent: the share of the sample's true neighbours in this shard (only the ``slots``
    [n, K] of the truth, default all) that the shard's ANN top-K finds."""
    loaded = load_shard(info.path)
    positions, _ = loaded.index.search(sample.vectors, TOP_K, **kwargs)
    found = [set(loaded.ids[row[row >= 0]].tolist()) for row in positions]
    slots = np.ones(truth.shards.shape, dtype=bool) if slots is None else slots
    mine = [(i, c) for i, (cs, ss, ok) in enumerate(zip(truth.candidate_ids, truth.shards, slots,
                                                         strict=True))
            for c, s, o in zip(cs, ss, ok, strict=True) if s == info.shard and o]
    return sum(c in found[i] for i, c in mine) / len(mine)


def test_tune_search_reaches_target_and_prefers_cheap_rungs(corpus):
    truth = _oracle_truth(corpus, corpus["sample"])
    relevant = _oracle_relevant(truth.distances, TOP_K)
    infos = {i.shard: i for i in corpus["infos"]}
    scann = [s for s, i in infos.items() if i.kind == "scann"]
    sample = corpus["sample"]
    built = {s: _shard_recall(sample, truth, infos[s], {}, relevant) for s in scann}
    assert max(built.values()) < 0.99, built  # tuning has work to do

    def check_hard(tuned):
        assert sorted(tuned) == scann  # the exact shard needs no tuning
        for shard, entry in tuned.items():
            assert entry["reached"] and entry["recall"] >= 0.99, entry
            assert entry["leaves_to_search"] > SCANN_PARAMS["num_leaves_to_search"], entry
            kwargs = search_kwargs(tuned, shard)
            assert _shard_recall(sample, truth, infos[shard], kwargs, relevant) == pytest.approx(
                entry["recall"])
            assert _shard_recall(sample, truth, infos[shard], kwargs) == pytest.approx(
                entry["recall_at_k"])
            assert entry["relevant_neighbors"] == (relevant & (truth.shards == shard)).sum()
            assert entry["true_neighbors"] == (truth.shards == shard).sum()
            assert entry["target"].startswith("rank-1 and neighbours within distance")

    def check_easy(tuned):
        assert sorted(tuned) == scann
        for shard, entry in tuned.items():
            first = tuning_ladder(infos[shard].params, infos[shard].size)[0]
            assert (entry["leaves_to_search"], entry["reorder"]) == first == (1, 100)
            assert entry["reached"] and entry["recall"] == pytest.approx(built[shard])

    with _pipeline() as p:
        sample_pc = p | "Sample" >> beam.Create([sample])
        truth_pc = p | "Truth" >> beam.Create([truth])
        shards = p | "Infos" >> beam.Create(corpus["infos"])
        for label, target, check in (("Hard", 0.99, check_hard), ("Easy", 0.05, check_easy)):
            tuned = shards | f"Tune{label}" >> TuneSearch(sample=sample_pc, truth=truth_pc,
                                                          target_recall=target, top_k=TOP_K)
            assert_that(tuned, _single(check), label=f"Check{label}")


def test_tune_search_aims_at_relevant_neighbours_with_fewer_leaves(planted):
    """On close pairs among noise, the relevant target is reached with far fewer leaves than the
    same target over every slot of the exact top-K; each reported recall is the oracle's."""
    from transforms.quality.tuning import _TuneShardFn

    truth, sample, info = planted["truth"], planted["sample"], planted["info"]
    relevant = _oracle_relevant(truth.distances, TOP_K)
    ladder = tuning_ladder(info.params, info.size)
    fn = _TuneShardFn(target_recall=0.95, top_k=TOP_K, exclude_self=False)
    got = {}
    # A max_distance beyond any cosine distance (2) makes every slot relevant: the old target.
    for label, max_distance, slots in (("relevant", None, relevant), ("all", 4.0, None)):
        ((shard, entry),) = fn.process(info, sample, truth, relevance_cutoff(truth, TOP_K, max_distance))
        got[label] = entry
        kwargs = search_kwargs({shard: entry}, shard)
        assert entry["reached"] and entry["recall"] >= 0.95, entry
        assert _shard_recall(sample, truth, info, kwargs, slots) == pytest.approx(entry["recall"])
        assert _shard_recall(sample, truth, info, kwargs) == pytest.approx(entry["recall_at_k"])
        # Every cheaper rung (the ladder is cheapest first) falls short of the target.
        at = ladder.index((entry["leaves_to_search"], entry["reorder"]))
        assert all(_shard_recall(sample, truth, info, {"leaves_to_search": lv, "reorder": r}, slots)
                   < 0.95 for lv, r in ladder[:at])
    relevant_entry, all_entry = got["relevant"], got["all"]
    assert relevant_entry["relevant_neighbors"] == relevant.sum()
    assert all_entry["relevant_neighbors"] == all_entry["true_neighbors"] == relevant.size
    assert relevant_entry["leaves_to_search"] * 2 <= all_entry["leaves_to_search"], got
    # Cheaper, it finds the planted matches all the same, but not the background.
    kwargs = {"leaves_to_search": relevant_entry["leaves_to_search"], "reorder": relevant_entry["reorder"]}
    positions, _ = load_shard(info.path).index.search(sample.vectors[:PLANTED], TOP_K, **kwargs)
    assert (positions == truth.positions[:PLANTED, :1]).any(axis=1).mean() >= 0.99
    assert relevant_entry["recall_at_k"] < 0.95


def test_choose_probe_picks_the_fewest_partitions_that_reach_the_routing_target():
    from transforms.index.sample_truth import SampleTruth
    from transforms.placement.routing import (
        nearest_centroids,
        plan_shards,
        shards_of_candidates,
        train_centroids,
    )
    from transforms.quality.tuning import choose_probe, routing_target
    from transforms.testing.clustered import make_clustered

    vecs, _ = make_clustered(4000, 16, clusters=40, seed=8)
    cents = train_centroids(vecs, 32, distance="cosine", seed=0)
    sizes = np.bincount(nearest_centroids(vecs, cents, "squared_l2", 1)[:, 0], minlength=32)
    plan = plan_shards(cents, sizes, distance="cosine", max_shard_vectors=500)
    ids = np.array([f"c{i:05d}" for i in range(len(vecs))], dtype=object)
    shard_of = shards_of_candidates(ids, vecs, plan)
    queries = make_clustered(200, 16, clusters=40, seed=9)[0]
    k = 10
    top = np.argsort(-(queries @ vecs.T), axis=1)[:, :k]  # exact cosine top-k (unit vectors)
    qids = np.array([f"q{i:03d}" for i in range(len(queries))], dtype=object)
    truth = SampleTruth("tune", qids, ids[top], np.zeros(top.shape), shard_of[top], top)
    sample = VectorBatch(qids, queries, qids)

    def reachable(probe):  # independent: each query's probed partitions -> their shards
        near = nearest_centroids(queries, plan.centroids, "cosine", probe)
        hits = 0
        for q in range(len(queries)):
            routed = {s for p in near[q] for s in plan.pieces[p]}
            hits += sum(int(s in routed) for s in shard_of[top[q]])
        return hits / top.size

    for target in (0.8, 0.95, 0.99):
        got = choose_probe(plan, sample, truth, top_k=k, target_recall=target)
        assert got["probe"] is not None
        assert got["routing_recall"] == pytest.approx(reachable(got["probe"]))
        assert got["routing_recall"] >= routing_target(target) or got["probe"] == len(plan.pieces)
        smaller = [int(p) for p in got["tried"] if int(p) < got["probe"]]
        assert all(reachable(p) < routing_target(target) for p in smaller)
    # It counts the relevant neighbours, as TuneSearch does (all of them here: the distances tie).
    assert got["target_neighbors"] == relevance_cutoff(truth, k).target
    assert got["relevant_neighbors"] == top.size
    nothing = choose_probe(plan, sample, truth, top_k=k, target_recall=0.99, max_distance=-1.0)
    assert (nothing["probe"], nothing["relevant_neighbors"]) == (1, 0)
    hash_plan = plan._replace(kind="hash")
    assert choose_probe(hash_plan, sample, truth, top_k=k, target_recall=0.95)["probe"] is None
