"""Searches query batches against shard indices and merges each query's top-K across shards.

Flow: every query batch fans out to the shards that can hold its neighbours (all shards, unless a
router narrows them), grouped so each group gets its shard's index once (from the worker's
``transforms.index.shard_cache``, which loads it only when this process does not hold it already) and
searches all its batches with one ``search`` call per batch; each shard returns its top-K with
exact distances; per query batch the partial results of all shards are merged as arrays (ties
broken by candidate id) and, with ``rescore='wasserstein'``, the kept pairs are rescored and
re-ranked.

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
from transforms.common.flags import DEFAULTS
from transforms.common.schema import NeighborBatch, PairBatch, ShardIndexInfo, VectorBatch
from transforms.common.sharding import id_sort_keys
from transforms.index.neighbor_index import clamp_distances
from transforms.index.shard_cache import LoadedShard, load_shard

__all__ = ["SearchShards", "MergeTopK", "merge_partials", "neighbors_to_pairs",
           "wasserstein_1d", "PartialResult", "search_kwargs"]

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


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """1-D Wasserstein distance between the value distributions of vectors, row-wise.

    For two samples of equal size d (every vector here has the corpus' dimension) the distance
    between their empirical distributions is the mean absolute difference of the sorted values,
    which is what ``scipy.stats.wasserstein_distance(u_row, v_row)`` computes.

    Args:
        u: [..., d] array; v: array broadcastable to u.
    Returns:
        float64 array of shape u.shape[:-1] (broadcast).
    """
    su = np.sort(np.asarray(u, dtype=np.float64), axis=-1)
    sv = np.sort(np.asarray(v, dtype=np.float64), axis=-1)
    return np.abs(su - sv).mean(axis=-1)


def _full_width(p: PartialResult) -> PartialResult:
    """Pads a partial to every row of its batch (rows not routed to the shard get empty slots)."""
    if len(p.rows) == p.batch_size:
        return p
    n, k = p.batch_size, p.candidate_ids.shape[1]
    qids = np.full(n, None, dtype=object)
    qids[p.rows] = p.query_ids
    cand = np.full((n, k), "", dtype=object)
    cand[p.rows] = p.candidate_ids
    dist = np.full((n, k), np.inf)
    dist[p.rows] = p.distances
    cv = None
    if p.candidate_vectors is not None:
        cv = np.zeros((n, *p.candidate_vectors.shape[1:]), dtype=p.candidate_vectors.dtype)
        cv[p.rows] = p.candidate_vectors
    return PartialResult(p.shard, np.arange(n), n, qids, cand, dist, None, cv)


def merge_partials(partials: list[PartialResult], top_k: int,
                   rescore: str = DEFAULTS["rescore"]) -> NeighborBatch:
    """Merges shards' top-K for one query batch into the global top-K, ties broken by candidate id."""
    raw = sorted(partials, key=lambda p: p.shard)
    partials = [_full_width(p) for p in raw]
    query_ids = partials[0].query_ids.copy()
    for p in partials[1:]:  # with routing each partial knows only its rows' ids
        missing = np.equal(query_ids, None)
        query_ids[missing] = p.query_ids[missing]
    cand = np.concatenate([p.candidate_ids for p in partials], axis=1)
    dist = np.concatenate([p.distances for p in partials], axis=1)
    (cand_key,) = id_sort_keys(cand)  # 8 bytes a slot, not the longest id's width
    order = np.lexsort((cand_key, dist), axis=-1)[:, :top_k]
    cand = np.take_along_axis(cand, order, axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    if rescore == "wasserstein":
        vecs = np.concatenate([p.candidate_vectors for p in partials], axis=1)
        vecs = np.take_along_axis(vecs, order[:, :, None], axis=1)
        qvecs = np.zeros((raw[0].batch_size, raw[0].query_vectors.shape[1]), dtype=np.float32)
        for p in raw:  # a routed partial carries only its rows' query vectors
            qvecs[p.rows] = p.query_vectors
        new = wasserstein_1d(qvecs[:, None, :], vecs)
        dist = np.where(np.isfinite(dist), new, np.inf)
        reorder = np.lexsort((id_sort_keys(cand)[0], dist), axis=-1)
        cand = np.take_along_axis(cand, reorder, axis=1)
        dist = np.take_along_axis(dist, reorder, axis=1)
    return NeighborBatch(batch_key="", query_ids=query_ids, candidate_ids=cand, distances=dist)


def neighbors_to_pairs(nb: NeighborBatch, *, max_distance: float | None,
                       canonical: bool) -> PairBatch:
    """Flattens a NeighborBatch to pair rows (rank = position in the top-K, 1 = nearest).

    Empty slots and pairs farther than ``max_distance`` are dropped. With ``canonical`` (dedup mode)
    each pair is written with the smaller id first; the same pair found from both sides is then
    removed where pairs are grouped for writing.
    """
    n, k = nb.candidate_ids.shape
    ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int64), (n, k))
    qids = np.broadcast_to(nb.query_ids[:, None], (n, k))
    keep = np.isfinite(nb.distances) & (nb.candidate_ids != "")
    if max_distance is not None:
        keep &= nb.distances <= max_distance
    q, c, r, d = qids[keep], nb.candidate_ids[keep], ranks[keep], nb.distances[keep]
    if canonical:
        c_key, q_key = id_sort_keys(c, q)
        swap = c_key < q_key
        q, c = np.where(swap, c, q), np.where(swap, q, c)
    return PairBatch(query_ids=q.astype(object), candidate_ids=c.astype(object),
                     ranks=r.astype(np.int64), distances=d.astype(np.float64))


class _MergeFn(beam.DoFn):
    def __init__(self, *, top_k: int, rescore: str, max_distance: float | None, canonical: bool):
        self._top_k = top_k
        self._rescore = rescore
        self._max_distance = max_distance
        self._canonical = canonical
        self._merged = Metrics.counter(metrics.NAMESPACE, "queries_merged")
        self._timer = metrics.StageTimer("merge")

    def start_bundle(self) -> None:
        self._bundle_queries, self._bundle_start = 0, time.perf_counter()

    def process(self, element: tuple[str, Iterable[PartialResult]]) -> Iterator[PairBatch]:
        batch_key, partials = element
        with self._timer:
            nb = merge_partials(list(partials), self._top_k, self._rescore)
            pairs = neighbors_to_pairs(nb, max_distance=self._max_distance, canonical=self._canonical)
        self._merged.inc(len(nb.query_ids))
        progress.add("searched", len(nb.query_ids))
        self._bundle_queries += len(nb.query_ids)
        yield pairs

    def finish_bundle(self) -> None:
        elapsed = time.perf_counter() - self._bundle_start
        if self._bundle_queries:
            _LOGGER.info("merged top-%d of %d queries in %.1f s", self._top_k, self._bundle_queries,
                         elapsed)


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


class MergeTopK(beam.PTransform):
    """(batch_key, PartialResult) from every searched shard -> PairBatch of the global top-K."""

    def __init__(self, *, top_k: int, rescore: str = DEFAULTS["rescore"], max_distance: float | None = None,
                 canonical: bool = False):
        super().__init__()
        if rescore not in ("exact", "wasserstein"):
            raise ValueError(f"rescore must be 'exact' or 'wasserstein', got {rescore!r}")
        self._fn = _MergeFn(top_k=top_k, rescore=rescore, max_distance=max_distance,
                            canonical=canonical)

    def expand(self, partials):
        return (partials
                | "GroupByQueryBatch" >> beam.GroupByKey()
                | "MergeTopK" >> beam.ParDo(self._fn))


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
