"""Tests for transforms.quality.audit: the audit sample, exact sample truth, recall audit and search tuning.

Three candidate shards (two ScaNN, built with deliberately few leaves searched, and one exact) are
built and published the way transforms/index/build.py does, so ``load_shard`` works on them. Expected values
come from independent float64 numpy brute force. Pipelines run on ``BundleBasedDirectRunner`` (see
tests/transforms/io/test_read_corpus.py).
"""

from __future__ import annotations

import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from transforms.common import metrics
from transforms.common.artifacts import publish_dir
from transforms.common.schema import PairBatch, ShardIndexInfo, VectorBatch
from transforms.common.sharding import assign_shards, stable_hash64
from transforms.common.vectors import prepare_vectors
from transforms.index.neighbor_index import build_index
from transforms.index.sample_truth import SampleTruth
from transforms.index.shard_cache import load_shard
from transforms.index.shard_files import IDS_FILE
from transforms.quality.audit import (
    RECALL_PERMILLE_METRIC,
    RELEVANCE_QUANTILE,
    RELEVANT_RECALL_PERMILLE_METRIC,
    AuditRecall,
    ExactSampleTopK,
    SampleQueries,
    TuneSearch,
    recall_report,
    relevance_cutoff,
    relevant_slots,
    select_sample,
    tuning_ladder,
)
from transforms.search.search import search_kwargs
from transforms.testing.clustered import make_link_vectors

os.environ["CUDA_VISIBLE_DEVICES"] = ""

RUNNER = "BundleBasedDirectRunner"
DIMS, TOP_K, SAMPLE, NUM_SHARDS = 16, 10, 80, 3
N_CANDIDATES, N_QUERIES = 7500, 400
# Built to miss: 1 of 50 leaves searched, so tuning must raise it to reach a high target.
SCANN_PARAMS = {"num_leaves": 50, "num_leaves_to_search": 1, "training_sample_size": 2000,
                "quantization": "ah", "anisotropic_quantization_threshold": 0.2, "reorder": 100,
                "spherical": True}
EXACT_SHARD = 2


def _pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(runner=RUNNER)


def _batch(ids, vectors) -> VectorBatch:
    ids = np.asarray(ids, dtype=object)
    return VectorBatch(ids, np.asarray(vectors, dtype=np.float32),
                       np.array([f"f#{i}" for i in range(len(ids))], dtype=object))


def _batches(batch: VectorBatch, size: int, order: np.ndarray) -> list[tuple[str, VectorBatch]]:
    out = []
    for n, start in enumerate(range(0, len(order), size)):
        rows = order[start:start + size]
        out.append((f"b{n}", VectorBatch(batch.ids[rows], batch.vectors[rows], batch.origins[rows])))
    return out


def _expected_sample_ids(ids: np.ndarray, size: int) -> list[str]:
    hashes = stable_hash64(ids)
    order = np.lexsort((ids.astype(str), hashes))[:size]
    return sorted(ids[order].tolist())


def _oracle(query_ids, queries, cand_ids, cands, k, exclude_self):
    """Float64 brute force over all candidates: (ids, distances, rows into cands), ties by id."""
    dist = 1.0 - queries.astype(np.float64) @ cands.astype(np.float64).T
    if exclude_self:
        dist[np.asarray(query_ids)[:, None] == np.asarray(cand_ids)[None, :]] = np.inf
    order = np.lexsort((np.broadcast_to(cand_ids.astype(str), dist.shape), dist), axis=-1)[:, :k]
    return cand_ids[order], np.take_along_axis(dist, order, axis=1), order


def _publish(root, shard: int, ids: np.ndarray, vectors: np.ndarray, kind: str,
             params: dict) -> ShardIndexInfo:
    """Builds and publishes one shard the way transforms/index/build.py does (so load_shard works)."""
    index = build_index(vectors, distance="cosine", kind=kind, params=params if kind == "scann" else {})
    assert index.kind == kind
    local, dest = root / f"local-{shard}", str(root / "indexes" / f"shard-{shard}")
    index.save(str(local))
    np.save(os.path.join(local, IDS_FILE), ids.astype(str), allow_pickle=False)
    publish_dir(str(local), dest)
    return ShardIndexInfo(shard=shard, path=dest, size=len(ids), kind=index.kind,
                          params=dict(index.params))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    raw_cands, raw_queries = make_link_vectors(N_CANDIDATES, N_QUERIES, DIMS, clusters=30, seed=11)
    cands, ok_c = prepare_vectors(raw_cands, "cosine")
    queries, ok_q = prepare_vectors(raw_queries, "cosine")
    assert ok_c.all() and ok_q.all()
    cand_ids = np.array([f"c{i:05d}" for i in range(N_CANDIDATES)], dtype=object)
    query_ids = np.array([f"q{i:04d}" for i in range(N_QUERIES)], dtype=object)
    shard_of = assign_shards(cand_ids, NUM_SHARDS)
    position = np.empty(N_CANDIDATES, dtype=np.int64)
    infos = []
    for shard in range(NUM_SHARDS):
        rows = np.flatnonzero(shard_of == shard)  # ids ascending, as ShardRecords sorts them
        position[rows] = np.arange(len(rows))
        kind = "exact" if shard == EXACT_SHARD else "scann"
        infos.append(_publish(root, shard, cand_ids[rows], cands[rows], kind, SCANN_PARAMS))
    query_batch = _batch(query_ids, queries)
    sample = select_sample([query_batch], SAMPLE)
    return {"cands": cands, "cand_ids": cand_ids, "shard_of": shard_of, "position": position,
            "infos": infos, "queries": query_batch, "sample": sample}


def _oracle_truth(corpus, sample: VectorBatch, exclude_self: bool = False) -> SampleTruth:
    ids, dist, rows = _oracle(sample.ids, sample.vectors, corpus["cand_ids"], corpus["cands"], TOP_K,
                              exclude_self)
    return SampleTruth("oracle", sample.ids, ids.astype(object), dist, corpus["shard_of"][rows],
                       corpus["position"][rows])


def _oracle_relevant(dist: np.ndarray, k: int) -> np.ndarray:
    """Independent of transforms.quality.audit: rank 1, or at most P(d_K) - median(d_K - d_2) away, where P is
    the RELEVANCE_QUANTILE quantile taken as an observed value (numpy's "lower")."""
    d = np.asarray(dist, dtype=np.float64)[:, :k]
    last = np.sort(d[:, k - 1])[int(np.floor(RELEVANCE_QUANTILE * (len(d) - 1)))]
    rel = d <= last - np.median(d[:, k - 1] - d[:, 1])
    rel[:, 0] = True
    return rel


def _true_pairs(truth: SampleTruth) -> list[tuple[str, str, int]]:
    return [(q, c, int(s)) for q, cs, ss in zip(truth.query_ids, truth.candidate_ids, truth.shards,
                                                 strict=True)
            for c, s in zip(cs, ss, strict=True)]


def _pairs(rows: list[tuple[str, str]]) -> PairBatch:
    return PairBatch(np.array([q for q, _ in rows], dtype=object),
                     np.array([c for _, c in rows], dtype=object),
                     np.ones(len(rows), dtype=np.int64), np.zeros(len(rows), dtype=np.float64))


def _single(check):
    def matcher(actual):
        if len(actual) != 1:
            raise BeamAssertException(f"expected one element, got {len(actual)}")
        try:
            check(actual[0])
        except AssertionError as e:
            raise BeamAssertException(str(e)) from e
    return matcher


# ------------------------------------------------------------------------------------------------
# SampleQueries


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


def test_constructors_validate_arguments():
    with pytest.raises(ValueError, match="sample_size"):
        SampleQueries(sample_size=0)
    with pytest.raises(ValueError, match="mode"):
        AuditRecall(truth=None, top_k=3, mode="both")
    with pytest.raises(ValueError, match="target_recall"):
        TuneSearch(sample=None, truth=None, target_recall=1.5, top_k=3)
    with pytest.raises(ValueError, match="top_k"):
        ExactSampleTopK(sample=None, top_k=0)


# ------------------------------------------------------------------------------------------------
# ExactSampleTopK


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


# ------------------------------------------------------------------------------------------------
# AuditRecall


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


# ------------------------------------------------------------------------------------------------
# TuneSearch


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


def test_search_kwargs():
    tuned = {0: {"leaves_to_search": 12, "reorder": 200, "recall": 0.99, "reached": True},
             1: {"leaves_to_search": None, "reorder": 400, "recall": 0.9, "reached": False}}
    assert search_kwargs(tuned, 0) == {"leaves_to_search": 12, "reorder": 200}
    assert search_kwargs(tuned, 1) == {"reorder": 400}
    assert search_kwargs(tuned, 2) == {}
    assert search_kwargs({"0": tuned[0]}, 0) == {"leaves_to_search": 12, "reorder": 200}
    assert search_kwargs(None, 0) == search_kwargs({}, 0) == {}


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


# ------------------------------------------------------------------------------------------------
# Relevance: the neighbours recall counts

PLANTED, LONERS = 180, 20  # queries with a planted near copy among the candidates, and without
PLANTED_PARAMS = dict(SCANN_PARAMS, num_leaves=60, training_sample_size=6000)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Unstructured candidates (uniform on the sphere: every neighbour but a planted copy is at
    near-random distance); most queries are a slightly perturbed copy of one candidate."""
    rng = np.random.default_rng(5)
    n, dims = 6000, 32
    cands = rng.standard_normal((n, dims)).astype(np.float32)
    cands /= np.linalg.norm(cands, axis=1, keepdims=True)
    source = rng.choice(n, PLANTED, replace=False)
    noise = rng.standard_normal((PLANTED, dims)).astype(np.float32) * (0.3 / np.sqrt(dims))
    queries = np.concatenate([cands[source] + noise, rng.standard_normal((LONERS, dims))]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cand_ids = np.array([f"c{i:05d}" for i in range(n)], dtype=object)
    query_ids = np.array([f"q{i:04d}" for i in range(len(queries))], dtype=object)
    info = _publish(tmp_path_factory.mktemp("planted"), 0, cand_ids, cands, "scann", PLANTED_PARAMS)
    ids, dist, rows = _oracle(query_ids, queries, cand_ids, cands, TOP_K, False)
    truth = SampleTruth("oracle", query_ids, ids.astype(object), dist, np.zeros(rows.shape, np.int64), rows)
    return {"sample": _batch(query_ids, queries), "truth": truth, "info": info,
            "partner": cand_ids[source]}


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


def test_tune_search_aims_at_relevant_neighbours_with_fewer_leaves(planted):
    """On close pairs among noise, the relevant target is reached with far fewer leaves than the
    same target over every slot of the exact top-K; each reported recall is the oracle's."""
    from transforms.quality.audit import _TuneShardFn

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
    from transforms.quality.audit import choose_probe, routing_target
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
