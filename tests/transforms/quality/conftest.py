"""Fixtures of the quality tests: the three-shard corpus and the planted-matches shard (see helpers.py).

Package-scoped: built once for test_ground_truth, test_tuning and test_audit together, as they were
when the three were one module.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.transforms.quality.helpers import (
    DIMS,
    EXACT_SHARD,
    LONERS,
    N_CANDIDATES,
    N_QUERIES,
    NUM_SHARDS,
    PLANTED,
    PLANTED_PARAMS,
    SAMPLE,
    SCANN_PARAMS,
    TOP_K,
    _batch,
    _oracle,
    _publish,
)
from transforms.common.sharding import assign_shards
from transforms.common.vectors import prepare_vectors
from transforms.index.sample_truth import SampleTruth
from transforms.quality.ground_truth import (
    select_sample,
)
from transforms.testing.clustered import make_link_vectors


@pytest.fixture(scope="package")
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


@pytest.fixture(scope="package")
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
