"""Shared set-up of the quality tests (test_ground_truth, test_tuning, test_audit): constants, the
numpy oracle and helpers; the fixtures that use them are in conftest.py.

Three candidate shards (two ScaNN, built with deliberately few leaves searched, and one exact) are
built and published the way transforms/index/build.py does, so ``load_shard`` works on them. Expected values
come from independent float64 numpy brute force. Pipelines run on ``BundleBasedDirectRunner`` (see
tests/transforms/io/test_read_corpus.py).
"""

from __future__ import annotations

import os

import numpy as np
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException

from transforms.common.artifacts import publish_dir
from transforms.common.schema import PairBatch, ShardIndexInfo, VectorBatch
from transforms.common.sharding import stable_hash64
from transforms.index.neighbor_index import build_index
from transforms.index.sample_truth import SampleTruth
from transforms.index.shard_files import IDS_FILE
from transforms.quality.ground_truth import (
    RELEVANCE_QUANTILE,
)

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


PLANTED, LONERS = 180, 20  # queries with a planted near copy among the candidates, and without
PLANTED_PARAMS = dict(SCANN_PARAMS, num_leaves=60, training_sample_size=6000)
