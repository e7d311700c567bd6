"""The audit's ground truth: a deterministic sample of queries, its exact global top-K, and which of
those neighbours matter.

``SampleQueries`` picks the sample (the queries with the smallest stable hash of their id);
``ExactSampleTopK`` brute-forces the sample's exact global top-K, one shard per element so shards run
in parallel, and merges the per-shard pieces (``MergeSampleTruth``, :func:`merge_truth`; the pieces
themselves are computed beside the index build, ``transforms.index.sample_truth``).

:func:`relevance_cutoff` says which neighbours of that truth matter for matching: those within
--max_distance when the job has one, else each query's nearest neighbour and every neighbour closer
than a distance derived from the sample's own exact top-K (a low quantile of its K-th-neighbour
distances: true matches are unusually close, the far ranks of the exact top-K are mostly unrelated
records at near-random distance). The tuner (``transforms.quality.tuning``) aims at them and the
recall audit (``transforms.quality.audit``) reports recall of them.

Everything moves as a few small numpy batches: the sample (at most ``sample_size`` rows) and one exact
top-K per shard. This module does not search with the job's settings, measure recall or tune.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics
from transforms.common.schema import ShardIndexInfo, VectorBatch
from transforms.common.sharding import id_sort_keys, stable_hash64
from transforms.index.sample_truth import SampleTruth, empty_truth, index_truth

__all__ = ["RELEVANCE_QUANTILE", "Relevance", "SampleQueries", "ExactSampleTopK", "MergeSampleTruth",
           "check_max_distance", "check_top_k", "merge_truth", "relevance_cutoff", "relevant_slots",
           "select_sample"]

_LOGGER = logging.getLogger(__name__)

# The derived relevance cutoff starts from this quantile of the sample's K-th-neighbour distances (see
# relevance_cutoff): the K-th neighbour of 95% of the queries is farther.
RELEVANCE_QUANTILE = 0.05


class Relevance(NamedTuple):
    """Which slots of an exact top-K truth a recall counts: the neighbours that matter.

    ``rule`` is ``"max_distance"`` (slots within the job's --max_distance), ``"derived"`` (rank 1, and
    slots within ``cutoff``, a distance derived from the sample's own truth by
    :func:`relevance_cutoff`) or ``"all"`` (every non-empty slot: there is no background to separate
    true matches from). ``target`` says it in words, for the manifest and logs.
    """

    rule: str
    cutoff: float | None
    target: str


def _empty_vector_batch() -> VectorBatch:
    return VectorBatch(ids=np.empty(0, dtype=object), vectors=np.empty((0, 0), dtype=np.float32),
                       origins=np.empty(0, dtype=object))


class _Sample(NamedTuple):
    """A candidate sample: at most ``size`` rows, each with its (salted) id hash."""

    hashes: np.ndarray  # uint64 [n]
    batch: VectorBatch


def _id_hashes(ids: np.ndarray, salt: str) -> np.ndarray:
    if salt:
        ids = np.array([salt + str(i) for i in ids], dtype=object)
    return stable_hash64(ids)


def _smallest(sample: _Sample, size: int) -> _Sample:
    """The ``size`` distinct ids with the smallest (hash, id); a repeated id keeps its smallest origin."""
    batch = sample.batch
    if len(batch) == 0:
        return sample
    (ids,), (origins,) = id_sort_keys(batch.ids), id_sort_keys(batch.origins)
    order = np.lexsort((origins, ids, sample.hashes))
    sorted_ids = ids[order]
    first = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]  # equal ids have equal hashes: adjacent
    keep = order[first][:size]
    return _Sample(sample.hashes[keep],
                   VectorBatch(batch.ids[keep], batch.vectors[keep], batch.origins[keep]))


def select_sample(batches: Iterable[VectorBatch], sample_size: int, *, salt: str = "") -> VectorBatch:
    """The audit sample of some query batches, as :class:`SampleQueries` computes it (for tests, tools).

    Args:
        batches: query batches (vectors already prepared for the distance).
        sample_size: how many queries to keep, >= 1.
        salt: prefixed to every id before hashing; "" hashes the ids themselves.

    Returns:
        A VectorBatch of the ``sample_size`` distinct ids with the smallest ``stable_hash64(salt + id)``
        (ties by id), sorted by id; an empty VectorBatch (vectors of shape [0, 0]) when there are none.
    """
    fn = _SampleFn(sample_size=sample_size, salt=salt)
    acc = fn.create_accumulator()
    for batch in batches:
        acc = fn.add_input(acc, ("", batch))
    return fn.extract_output(acc)


def merge_truth(parts: Iterable[SampleTruth], top_k: int) -> SampleTruth:
    """Merges per-shard exact top-K of the same sample into the global top-K (ties by candidate id).

    The result does not depend on the order of ``parts``.

    Raises:
        ValueError: the parts are not about the same queries.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("merge_truth needs at least one part")
    query_ids = parts[0].query_ids
    for part in parts[1:]:
        if not np.array_equal(part.query_ids, query_ids):
            raise ValueError("cannot merge exact top-K of different query samples")
    cand, dist, shards, pos = (np.concatenate([getattr(p, f) for p in parts], axis=1)
                               for f in ("candidate_ids", "distances", "shards", "positions"))
    # Empty slots tie exactly (inf, '', -1, -1) whichever shard they came from.
    order = np.lexsort((cand, dist), axis=-1)[:, :top_k]
    cand, dist, shards, pos = (np.take_along_axis(a, order, axis=1) for a in (cand, dist, shards, pos))
    # Not padded out to top_k: with fewer candidates than K (--top_k is not capped by the flag
    # parser), the truth is as wide as the shards' candidates, never top_k slots per query.
    return SampleTruth("audit", query_ids, cand.astype(object), dist.astype(np.float64),
                       shards.astype(np.int64), pos.astype(np.int64))


def relevance_cutoff(truth: SampleTruth, top_k: int, max_distance: float | None = None) -> Relevance:
    """The neighbours a recall should count, derived once from a sample's exact top-K.

    Record linkage needs the few true matches of a query (duplicates, corrupted copies: unusually
    close), not its K-th nearest unrelated record, so recall over every slot of the exact top-K
    measures mostly the background. With ``max_distance`` the relevant neighbours are those the job
    keeps (distance <= max_distance). Without, they are each query's nearest neighbour plus every
    neighbour at most ``cutoff`` away, where ``cutoff`` is where the background of unrelated near
    neighbours begins: the :data:`RELEVANCE_QUANTILE` quantile (``method="lower"``, an observed
    distance) of the sample's K-th-neighbour distances, less the median depth of the background
    shell (the median over queries of K-th minus 2nd-neighbour distance). The K-th neighbour is
    unrelated for nearly every query (true matches are few), but the densest queries' ranks 2..K lie
    within that shell below it, so the quantile alone would count a few unrelated neighbours per
    query (on generated people: 3.1 of 10 slots at 0.53, against 0.2 at the shifted 0.43, which
    still holds 98% of the true links in the exact top-10). Ties at the cutoff count (``<=``), so
    identical distances make every slot relevant and exact duplicates (distance 0) always count.
    A sample of fewer than 1 / quantile queries gives the smallest K-th distance. When no query has a
    finite K-th neighbour (fewer candidates than K) or ``top_k`` is 1, every non-empty slot counts
    (rule ``"all"``).

    Args:
        truth: exact top-K of a sample (:class:`ExactSampleTopK`); dedup truth (queries excluded
            from their own lists) is read the same way.
        top_k: the job's K (only the first ``top_k`` slots are read).
        max_distance: the job's --max_distance, or None.

    Returns:
        A :class:`Relevance`; :func:`relevant_slots` applies it.
    """
    if max_distance is not None:
        return Relevance("max_distance", float(max_distance),
                         f"neighbours within --max_distance {max_distance:g}")
    if top_k == 1:
        return Relevance("all", None, "the nearest neighbour (top_k 1)")
    dist = np.asarray(truth.distances, dtype=np.float64)[:, :top_k]
    if dist.ndim != 2 or dist.shape[1] < top_k:  # fewer candidates than K: no K-th neighbour
        dist = np.zeros((0, top_k))
    dist = dist[np.isfinite(dist[:, top_k - 1])]  # rows with K neighbours (their 2nd is finite too)
    if not len(dist):
        return Relevance("all", None, f"every exact top-{top_k} neighbour (no sample query has "
                                      f"{top_k} neighbours: no background distance to derive a cutoff "
                                      f"from)")
    last = float(np.quantile(dist[:, top_k - 1], RELEVANCE_QUANTILE, method="lower"))
    shell = float(np.median(dist[:, top_k - 1] - dist[:, 1]))
    cutoff = last - shell
    return Relevance("derived", cutoff,
                     f"rank-1 and neighbours within distance {cutoff:.4g} (derived from {len(dist)} "
                     f"sample queries: {_ordinal(RELEVANCE_QUANTILE * 100)} percentile of the "
                     f"{_ordinal(top_k)}-neighbour distance, {last:.4g}, less the median gap between "
                     f"the 2nd and {_ordinal(top_k)} neighbours, {shell:.4g})")


def _ordinal(x: float) -> str:
    n = f"{x:g}"
    if "." in n:
        return n + "th"
    i = int(n)
    suffix = "th" if 10 <= i % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(i % 10, "th")
    return f"{i}{suffix}"


def relevant_slots(truth: SampleTruth, top_k: int, relevance: Relevance) -> np.ndarray:
    """bool [n, top_k]: the non-empty slots of ``truth`` that ``relevance`` counts."""
    cand, dist = truth.candidate_ids[:, :top_k], np.asarray(truth.distances[:, :top_k], dtype=np.float64)
    valid = (cand != "") & np.isfinite(dist)
    if relevance.rule == "all":
        return valid
    within = valid & (dist <= relevance.cutoff)
    if relevance.rule == "max_distance":
        return within
    within[:, :1] |= valid[:, :1]  # rank 1: nearest first, so the first slot when it is non-empty
    return within


class _SampleFn(beam.CombineFn):
    """(batch_key, VectorBatch) -> the audit sample; accumulators hold at most sample_size rows."""

    def __init__(self, *, sample_size: int, salt: str):
        self._size = sample_size
        self._salt = salt

    def create_accumulator(self) -> _Sample | None:
        return None

    def _merge(self, parts: Iterable[_Sample | None]) -> _Sample | None:
        parts = [p for p in parts if p is not None and len(p.batch)]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        joined = _Sample(np.concatenate([p.hashes for p in parts]),
                         VectorBatch(*(np.concatenate([p.batch[i] for p in parts]) for i in range(3))))
        return _smallest(joined, self._size)

    def add_input(self, acc: _Sample | None, element: tuple[str, VectorBatch]) -> _Sample | None:
        _, batch = element
        if len(batch) == 0:
            return acc
        # Chosen per batch first, so the accumulator never grows past sample_size rows.
        return self._merge([acc, _smallest(_Sample(_id_hashes(batch.ids, self._salt), batch), self._size)])

    def merge_accumulators(self, accs: Iterable[_Sample | None]) -> _Sample | None:
        return self._merge(accs)

    def extract_output(self, acc: _Sample | None) -> VectorBatch:
        if acc is None:
            return _empty_vector_batch()
        batch = acc.batch
        order = np.argsort(id_sort_keys(batch.ids)[0], kind="stable")
        return VectorBatch(batch.ids[order].astype(object), np.ascontiguousarray(batch.vectors[order]),
                           batch.origins[order].astype(object))


class _ExactShardTopKFn(beam.DoFn):
    """ShardIndexInfo -> the sample's exact top-K within that shard (a SampleTruth)."""

    def __init__(self, *, top_k: int, exclude_self: bool):
        self._top_k = top_k
        self._exclude_self = exclude_self
        self._ms = Metrics.distribution(metrics.NAMESPACE, "audit_exact_search_ms")

    def process(self, info: ShardIndexInfo, sample: VectorBatch) -> Iterator[SampleTruth]:
        from transforms.index.neighbor_index import ExactIndex
        from transforms.index.shard_cache import load_shard

        if len(sample) == 0:
            yield empty_truth(sample.ids, self._top_k)
            return
        metrics.heap_watch_start()
        start = time.perf_counter()
        loaded = load_shard(info.path, info.build)
        index = loaded.index
        if index.kind != "exact":
            # Shares the loaded float32 vectors (no copy): brute force, then exact rescoring.
            index = ExactIndex(index.vectors, distance=index.distance)
        truth = index_truth(index, loaded.ids, info.shard, sample, self._top_k, self._exclude_self)
        elapsed = time.perf_counter() - start
        self._ms.update(int(elapsed * 1000))
        metrics.heap_watch_end("audit_exact_search")
        _LOGGER.info("exact top-%d of %d sample queries in shard %d (%d vectors) in %.1f s",
                     self._top_k, len(sample), info.shard, index.size, elapsed)
        yield truth


class MergeSampleTruth(beam.PTransform):
    """Per-shard SampleTruth parts -> singleton SampleTruth: the sample's exact global top-K (what
    :class:`ExactSampleTopK` merges; ties by candidate id, independent of the parts' order)."""

    def __init__(self, *, top_k: int):
        super().__init__()
        check_top_k(top_k)
        self._top_k = top_k

    def expand(self, parts):
        return parts | "MergeTopK" >> beam.CombineGlobally(_MergeTruthFn(self._top_k))


class _MergeTruthFn(beam.CombineFn):
    def __init__(self, top_k: int):
        self._top_k = top_k

    def create_accumulator(self) -> SampleTruth | None:
        return None

    def add_input(self, acc: SampleTruth | None, part: SampleTruth) -> SampleTruth:
        return self.merge_accumulators([acc, part])

    def merge_accumulators(self, accs: Iterable[SampleTruth | None]) -> SampleTruth | None:
        parts = [a for a in accs if a is not None]
        return merge_truth(parts, self._top_k) if parts else None

    def extract_output(self, acc: SampleTruth | None) -> SampleTruth:
        # No shards at all: no rows to report on.
        return acc if acc is not None else empty_truth(np.empty(0, dtype=object), self._top_k)


def check_top_k(top_k: int) -> None:
    """Raises ValueError unless ``top_k`` is an integer >= 1 (not a bool)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")


def check_max_distance(max_distance: float | None) -> None:
    """Raises ValueError unless ``max_distance`` is None or finite."""
    if max_distance is not None and not math.isfinite(max_distance):
        raise ValueError(f"max_distance must be finite or None, got {max_distance!r}")


class SampleQueries(beam.PTransform):
    """(batch_key, VectorBatch) query batches -> singleton VectorBatch: the audit sample.

    The sample is the ``sample_size`` distinct ids with the smallest ``stable_hash64(salt + id)``
    (ties by id), sorted by id: the same whatever the batching, bundling or runner order. Each batch
    is cut down to at most ``sample_size`` rows before anything is combined. No queries -> an empty
    VectorBatch (vectors of shape [0, 0]).

    Args:
        sample_size: queries in the sample, >= 1.
        salt: prefixed to ids before hashing, to draw a different sample (e.g. one to tune on and
            another to audit); "" (default) hashes the ids themselves.
    """

    def __init__(self, *, sample_size: int, salt: str = ""):
        super().__init__()
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
            raise ValueError(f"sample_size must be an integer >= 1, got {sample_size!r}")
        if not isinstance(salt, str):
            raise ValueError(f"salt must be a string, got {salt!r}")
        self._fn = _SampleFn(sample_size=sample_size, salt=salt)

    def expand(self, query_batches):
        return query_batches | "SmallestIdHashes" >> beam.CombineGlobally(self._fn)


class ExactSampleTopK(beam.PTransform):
    """ShardIndexInfo shards -> singleton SampleTruth: the sample's exact global top-K.

    One shard per element (spread over workers): the shard is loaded once (``load_shard``), searched by
    brute force over its float32 vectors with exact float64 rescoring (the same distances the job
    reports), and the per-shard results are merged with ties broken by candidate id. The distance is
    the one each shard's index was built with.

    Args:
        sample: singleton PCollection of VectorBatch (:class:`SampleQueries`).
        top_k: neighbours per query, the job's K.
        exclude_self: dedup mode: a query is never its own neighbour.
    """

    def __init__(self, *, sample: beam.PCollection, top_k: int, exclude_self: bool = False):
        super().__init__()
        check_top_k(top_k)
        self._sample = sample
        self._top_k = top_k
        self._fn = _ExactShardTopKFn(top_k=top_k, exclude_self=bool(exclude_self))

    def expand(self, infos):
        return (infos
                | "SpreadShards" >> beam.Reshuffle()
                | "ExactShardTopK" >> beam.ParDo(self._fn, sample=beam.pvalue.AsSingleton(self._sample))
                | "MergeTopK" >> beam.CombineGlobally(_MergeTruthFn(self._top_k)))
