"""The exact top-K of the audit's sample queries within one shard, and the type holding it.

The index build computes it beside ScaNN's build, from the shard's rows it already holds
(``BuildShardIndexes(audit_sample=...)``); :mod:`transforms.quality.ground_truth` merges the parts
into the sample's global truth. What it does not do: choose the sample or score recall.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from transforms.common.schema import VectorBatch

__all__ = ["EMPTY_SLOT", "SampleTruth", "empty_truth", "drop_self", "index_truth", "shard_sample_truth"]



# An empty truth slot's shard and position.
EMPTY_SLOT = -1


class SampleTruth(NamedTuple):
    """The exact global top-K of the sample queries, with where each neighbour lives.

    The first four fields are those of :class:`transforms.common.schema.NeighborBatch` (same meaning, same
    order), so code that reads a NeighborBatch's attributes (e.g. ``search.neighbors_to_pairs``)
    accepts this too. Rows are the sample's queries sorted by id; slots are nearest first, ties broken
    by candidate id. Empty slots have ``candidate_ids == ''``, ``distances == inf`` and ``shards ==
    positions == -1``.
    """

    batch_key: str
    query_ids: np.ndarray  # object [n]
    candidate_ids: np.ndarray  # object [n, k]
    distances: np.ndarray  # float64 [n, k]
    shards: np.ndarray  # int64 [n, k]: the shard holding each neighbour
    positions: np.ndarray  # int64 [n, k]: the neighbour's row in that shard's index


def empty_truth(query_ids: np.ndarray, k: int) -> SampleTruth:
    n = len(query_ids)
    return SampleTruth(batch_key="audit", query_ids=np.asarray(query_ids, dtype=object),
                       candidate_ids=np.full((n, k), "", dtype=object),
                       distances=np.full((n, k), np.inf, dtype=np.float64),
                       shards=np.full((n, k), EMPTY_SLOT, dtype=np.int64),
                       positions=np.full((n, k), EMPTY_SLOT, dtype=np.int64))


def drop_self(positions: np.ndarray, distances: np.ndarray, shard_ids: np.ndarray,
               query_ids: np.ndarray, top_k: int, exclude_self: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, candidate ids, distances) [n, top_k] without each query itself, order kept.

    The same rule as ``search._SearchShardFn``: search top_k + 1 and drop the query's own row.
    """
    found = positions >= 0
    cand = (np.where(found, shard_ids[np.where(found, positions, 0)], "") if len(shard_ids)
            else np.full(positions.shape, "")).astype(object)
    if exclude_self:
        is_self = found & (cand == np.asarray(query_ids, dtype=object)[:, None])
        positions = np.where(is_self, EMPTY_SLOT, positions)
        cand = np.where(is_self, "", cand).astype(object)
        distances = np.where(is_self, np.inf, distances)
        order = np.argsort(is_self, axis=1, kind="stable")
        positions, cand, distances = (np.take_along_axis(a, order, axis=1)
                                      for a in (positions, cand, distances))
    return positions[:, :top_k], cand[:, :top_k], distances[:, :top_k]


def index_truth(index: Any, ids: np.ndarray, shard: int, sample: VectorBatch, top_k: int,
                 exclude_self: bool) -> SampleTruth:
    from transforms.index.neighbor_index import clamp_distances

    # No wider than the shard: --top_k past the candidate count allocates nothing more.
    positions, distances = index.search(sample.vectors, min(top_k + int(exclude_self), max(1, index.size)))
    clamp_distances(index.distance, distances)  # as the search reports them
    positions, cand, distances = drop_self(positions, distances, ids, sample.ids, top_k, exclude_self)
    return SampleTruth("audit", sample.ids, cand, distances.astype(np.float64),
                       np.where(positions >= 0, shard, EMPTY_SLOT).astype(np.int64), positions)


def shard_sample_truth(vectors: np.ndarray, ids: np.ndarray, *, distance: str, shard: int,
                       sample: VectorBatch, top_k: int, exclude_self: bool = False) -> SampleTruth:
    """The sample's exact top-K within one shard's prepared vectors, as :class:`ExactSampleTopK`
    computes it from the published shard (same brute force, rescoring, clamping and self-exclusion),
    for a caller that holds the shard's rows already: the index build computes it while ScaNN
    completes the index on one thread (``BuildShardIndexes(audit_sample=...)``).

    Args:
        vectors: the shard's prepared float32 [n, d] vectors, row i being ``ids[i]``.
        ids: str array [n] (as ``transforms.common.sharding.str_array`` gives).
        distance: the shard index's distance.
        shard: the shard number (recorded per slot).
        sample: the audit sample (:class:`SampleQueries`).
        top_k, exclude_self: as for :class:`ExactSampleTopK`.
    """
    from transforms.index.neighbor_index import ExactIndex

    if len(sample) == 0:
        return empty_truth(sample.ids, top_k)
    return index_truth(ExactIndex(vectors, distance=distance), ids, shard, sample, top_k, exclude_self)
