"""Searches query batches against shard indices: each shard's top-K for the queries routed to it.

Flow: every query batch fans out to the shards that can hold its neighbours (all shards, unless a
router narrows them), grouped so each group gets its shard's index once (from the worker's
``transforms.index.shard_cache``, which loads it only when this process does not hold it already) and
searches all its batches with one ``search`` call per batch; each shard returns its top-K with
exact distances as a :class:`PartialResult`. Merging the partial results of all shards per query
batch (and the rescoring after it) is ``transforms.search.merge``.

Everything moves as numpy batches; nothing here is per vector or per neighbour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics, progress
from transforms.common.schema import ShardIndexInfo, VectorBatch
from transforms.index.neighbor_index import clamp_distances
from transforms.index.shard_cache import LoadedShard, load_shard

__all__ = ["SearchShards", "PartialResult", "search_kwargs"]

_LOGGER = logging.getLogger(__name__)
# Query batches of one shard are split over this many groups per million queries, so one shard's
# search can run on several workers.
QUERIES_PER_SEARCH_GROUP = 1_000_000
# Rows per index call: routed sub-batches are small, so several are searched together.
_SEARCH_CALL_ROWS = 8192


class PartialResult(NamedTuple):
    """One shard's top-K for the rows of one query batch that were routed to it.

    ``rows`` are those rows' positions in the batch (of ``batch_size`` rows); every other array
    aligns with ``rows``.
    """

    shard: int
    rows: np.ndarray  # int64 [m]
    batch_size: int
    query_ids: np.ndarray  # object [m]
    candidate_ids: np.ndarray  # object [n, k] ('' = empty slot)
    distances: np.ndarray  # float64 [n, k] (inf = empty slot)
    query_vectors: np.ndarray | None  # float32 [n, d], only for wasserstein rescoring
    candidate_vectors: np.ndarray | None  # float32 [n, k, d], only for wasserstein rescoring


class _FanOutFn(beam.DoFn):
    """(batch_key, VectorBatch) -> (group, (batch_key, rows, sub-batch)) for every shard to search.

    Without a routing plan (or with ``probe`` 0) every shard gets the whole batch; with one, each
    shard gets the rows whose ``probe`` nearest partitions it holds.
    """

    def __init__(self, probe: int):
        self._probe = probe
        self._searches = Metrics.counter(metrics.NAMESPACE, "query_shard_pairs_routed")

    def process(self, element: tuple[str, VectorBatch], shards: list[ShardIndexInfo],
                num_queries: int, plan: Any = None,
                probe_choice: dict | None = None) -> Iterator[tuple[str, tuple]]:
        from transforms.common.sharding import stable_hash64
        from transforms.placement.routing import route_rows

        batch_key, batch = element
        progress.set_total("searched", num_queries)
        groups = max(1, -(-num_queries // QUERIES_PER_SEARCH_GROUP))
        sub = int(stable_hash64(np.array([batch_key], dtype=object))[0] % groups)
        everything = np.arange(len(batch), dtype=np.int64)
        probe = self._probe
        if probe_choice and probe_choice.get("probe"):
            probe = int(probe_choice["probe"])  # tuned on the sample (--target_recall)
        if plan is not None and probe > 0:
            routes = route_rows(batch.vectors, plan, probe)
        else:
            routes = {info.shard: everything for info in shards}
        built = {info.shard for info in shards}
        for shard, rows in sorted(routes.items()):
            if shard not in built:
                continue  # an empty shard has no index
            self._searches.inc(len(rows))
            part = batch if len(rows) == len(batch) else VectorBatch(
                batch.ids[rows], batch.vectors[rows], batch.origins[rows])
            yield f"{shard:05d}/{sub:04d}", (batch_key, rows, len(batch), part)


class _SearchShardFn(beam.DoFn):
    def __init__(self, *, top_k: int, exclude_self: bool, keep_vectors: bool):
        self._top_k = top_k
        self._exclude_self = exclude_self
        self._keep_vectors = keep_vectors
        self._queries = Metrics.counter(metrics.NAMESPACE, "shard_query_searches")
        self._ms = Metrics.distribution(metrics.NAMESPACE, "search_ms")

    def process(self, element: tuple[str, Iterable[tuple[str, VectorBatch]]],
                shards: dict[int, ShardIndexInfo],
                overrides: dict | None = None) -> Iterator[tuple[str, PartialResult]]:
        group, batches = element
        shard = int(group.split("/")[0])
        info = shards[shard]
        metrics.heap_watch_start()
        loaded = load_shard(info.path, info.build)
        # --top_k past the shard's size would only allocate empty slots: ask for no more than it holds.
        k_fetch = min(self._top_k + (1 if self._exclude_self else 0), max(1, info.size))
        effort = search_kwargs(overrides, shard)
        start, searched = time.perf_counter(), 0
        pending: list[tuple[str, np.ndarray, int, VectorBatch]] = []
        pending_rows = 0
        for item in batches:
            pending.append(item)
            pending_rows += len(item[3])
            if pending_rows >= _SEARCH_CALL_ROWS:
                yield from self._search(shard, loaded, pending, k_fetch, effort)
                searched += pending_rows
                pending, pending_rows = [], 0
        if pending:
            yield from self._search(shard, loaded, pending, k_fetch, effort)
            searched += pending_rows
        elapsed = time.perf_counter() - start
        self._queries.inc(searched)
        self._ms.update(int(elapsed * 1000))
        metrics.heap_watch_end("search")
        _LOGGER.info("searched %d queries in shard %d (group %s) in %.1f s (%.0f queries/s)",
                     searched, shard, group, elapsed, searched / max(elapsed, 1e-9))

    def _search(self, shard: int, loaded: LoadedShard, items: list, k_fetch: int,
                effort: dict) -> Iterator[tuple[str, PartialResult]]:
        """One index call for several (routed) sub-batches, results split back per batch."""
        vectors = items[0][3].vectors if len(items) == 1 else np.concatenate(
            [b.vectors for _, _, _, b in items])
        query_ids = items[0][3].ids if len(items) == 1 else np.concatenate([b.ids for _, _, _, b in items])
        positions, distances = loaded.index.search(vectors, k_fetch, **effort)
        # Reported distances stay in their range (cosine in [0, 2], squared_l2 >= 0): identical
        # vectors are 0 apart, not -4e-08, and then tie by candidate id.
        clamp_distances(loaded.index.distance, distances)
        found = positions >= 0
        cand_ids = np.where(found, loaded.ids[np.where(found, positions, 0)], "")
        if self._exclude_self:
            # Drop the query itself; keep the k nearest others (order is preserved).
            is_self = cand_ids == query_ids[:, None]
            distances = np.where(is_self, np.inf, distances)
            cand_ids = np.where(is_self, "", cand_ids)
            order = np.argsort(is_self, axis=1, kind="stable")[:, : self._top_k]
            cand_ids = np.take_along_axis(cand_ids, order, axis=1)
            distances = np.take_along_axis(distances, order, axis=1)
            positions = np.take_along_axis(np.where(is_self, -1, positions), order, axis=1)
        cand_ids = cand_ids.astype(object)
        distances = distances.astype(np.float64)
        offset = 0
        for batch_key, rows, batch_size, batch in items:
            sl = slice(offset, offset + len(batch))
            offset += len(batch)
            qv = cv = None
            if self._keep_vectors:
                qv = batch.vectors
                cv = loaded.index.vectors[np.maximum(positions[sl], 0)]
            yield batch_key, PartialResult(shard, rows, batch_size, batch.ids, cand_ids[sl],
                                           distances[sl], qv, cv)


class SearchShards(beam.PTransform):
    """(batch_key, VectorBatch) queries x ShardIndexInfo shards -> (batch_key, PartialResult).

    Args:
        shards: PCollection of ShardIndexInfo.
        num_queries: singleton PCollection with the query count (sizes the search groups).
        top_k: neighbours per query.
        exclude_self: dedup mode: a record is never its own neighbour.
        keep_vectors: carry vectors for rescoring after the merge (wasserstein).
        plan: optional singleton RoutingPlan; with ``probe`` > 0 each query searches only the
            shards holding its ``probe`` nearest partitions.
        probe: partitions probed per query (0 = every shard).
        probe_choice: optional singleton dict from ``TuneProbe``; its ``probe``, when set, replaces
            ``probe``.
        search_overrides: optional singleton {shard: {leaves_to_search, reorder}} from TuneSearch.
    """

    def __init__(self, *, shards, num_queries, top_k: int, exclude_self: bool = False,
                 keep_vectors: bool = False, plan=None, probe: int = 0, search_overrides=None,
                 probe_choice=None):
        super().__init__()
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self._shards = shards
        self._num_queries = num_queries
        self._plan = plan
        self._probe = probe
        self._probe_choice = probe_choice
        self._overrides = search_overrides
        self._fn = _SearchShardFn(top_k=top_k, exclude_self=exclude_self, keep_vectors=keep_vectors)

    def expand(self, query_batches):
        by_shard = self._shards | "KeyByShard" >> beam.Map(lambda info: (info.shard, info))
        side = {"plan": beam.pvalue.AsSingleton(self._plan)} if self._plan is not None else {}
        if self._probe_choice is not None:
            side["probe_choice"] = beam.pvalue.AsSingleton(self._probe_choice)
        search_side = {"shards": beam.pvalue.AsDict(by_shard)}
        if self._overrides is not None:
            search_side["overrides"] = beam.pvalue.AsSingleton(self._overrides)
        return (query_batches
                | "FanOutToShards" >> beam.ParDo(
                    _FanOutFn(self._probe), shards=beam.pvalue.AsList(self._shards),
                    num_queries=beam.pvalue.AsSingleton(self._num_queries), **side)
                | "GroupByShard" >> beam.GroupByKey()
                | "SearchShard" >> beam.ParDo(self._fn, **search_side))


def search_kwargs(overrides: dict | None, shard: int) -> dict[str, int]:
    """``NeighborIndex.search`` keyword arguments for one shard from TuneSearch's output.

    Args:
        overrides: TuneSearch's dict ``{shard: {"leaves_to_search", "reorder", ...}}`` (keys may also
            be strings, as after a JSON round trip), or None / {} for no tuning.
        shard: the shard number.

    Returns:
        ``{"leaves_to_search": L, "reorder": R}`` without the knobs that are None, or {} when the
        shard was not tuned (exact shards, or no overrides): search then uses the built params.
    """
    if not overrides:
        return {}
    entry = overrides.get(shard, overrides.get(str(shard)))
    if not entry:
        return {}
    return {name: int(entry[name]) for name in ("leaves_to_search", "reorder")
            if entry.get(name) is not None}
