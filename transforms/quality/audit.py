"""Measures a run's recall on a deterministic sample of queries, and tunes ScaNN search effort per shard.

Flow: ``SampleQueries`` picks the audit sample (the queries with the smallest stable hash of their
id); ``ExactSampleTopK`` brute-forces the sample's exact global top-K, one shard per element so shards
run in parallel; ``AuditRecall`` compares that truth with the pairs the job emitted and reports recall
overall and per shard (also as Beam metrics); ``TuneSearch`` searches the sample in every ScaNN shard
with growing effort and picks the cheapest (leaves_to_search, reorder) whose per-shard recall reaches
a target, which :func:`search_kwargs` turns into ``NeighborIndex.search`` arguments; ``TuneProbe``
picks the routing probe the same way.

Recall counts the neighbours that matter for matching (:func:`relevance_cutoff`): those within
--max_distance when the job has one, else each query's nearest neighbour and every neighbour closer
than a distance derived from the sample's own exact top-K (a low quantile of its K-th-neighbour
distances: true matches are unusually close, the far ranks of the exact top-K are mostly unrelated
records at near-random distance). The tuner aims at that recall; the audit reports it beside the
classic recall@K of every exact top-K slot.

Everything moves as a few small numpy batches: the sample (at most ``sample_size`` rows), one exact
top-K per shard, and the emitted pairs of sample queries only (filtered where they are produced).

This module does not change what the job emits, write files or fail a run: the caller decides what a
low recall means (e.g. a ``--min_recall`` check in the manifest step). Recall measured on the sample
used for tuning is biased upwards (the effort was chosen to pass on exactly those queries); audit a
differently salted sample (``SampleQueries(salt=...)``) to get an honest estimate.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics
from transforms.common.schema import PairBatch, ShardIndexInfo, VectorBatch
from transforms.common.sharding import id_sort_keys, stable_hash64, str_array
from transforms.index.sample_truth import SampleTruth, drop_self, empty_truth, index_truth

__all__ = ["AUDIT_MODES", "RECALL_PERMILLE_METRIC", "RELEVANCE_QUANTILE", "RELEVANT_RECALL_PERMILLE_METRIC",
           "Relevance", "SampleQueries", "ExactSampleTopK", "MergeSampleTruth", "AuditRecall", "TuneSearch",
           "TuneProbe", "choose_probe", "routing_target", "merge_truth", "recall_report", "relevance_cutoff",
           "relevant_slots", "select_sample", "tuning_ladder"]

_LOGGER = logging.getLogger(__name__)

AUDIT_MODES = ("link", "dedup")
# Beam metrics (namespace transforms.common.metrics.NAMESPACE).
RECALL_PERMILLE_METRIC = "audit_recall_permille"
_TRUE_PAIRS_METRIC = "audit_true_pairs"
_FOUND_PAIRS_METRIC = "audit_found_pairs"
_TUNED_SHARDS_METRIC = "tuned_shards"
_UNREACHED_SHARDS_METRIC = "tuned_shards_below_target"
RELEVANT_RECALL_PERMILLE_METRIC = "audit_relevant_recall_permille"

# The derived relevance cutoff starts from this quantile of the sample's K-th-neighbour distances (see
# relevance_cutoff): the K-th neighbour of 95% of the queries is farther.
RELEVANCE_QUANTILE = 0.05

# Leaves searched grow by this factor per rung; reorder doubles this many times from the built value.
_LEAVES_GROWTH = 1.5
_REORDER_STEPS = 3
# Rough cost of one exact float re-score in units of one AH (4-bit LUT) score: it only orders rungs.
_REORDER_COST = 4.0
_ABSENT = -3
# Joins two ids into one comparable key without building Python tuples per pair.
_SEP = "\x1f"


# ------------------------------------------------------------------------------------------------
# Element types


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


# ------------------------------------------------------------------------------------------------
# Pure functions


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


# Ids stay object arrays of str here (and sort, compare by Python's str order, which is numpy
# unicode's): a fixed-width copy would be as wide as the longest id for every row.
def _keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([f"{x}{_SEP}{y}" for x, y in zip(str_array(a).reshape(-1), str_array(b).reshape(-1),
                                                       strict=True)], dtype=object)


def _canonical(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = str_array(a), str_array(b)
    swap = (b < a).astype(bool)
    return np.where(swap, b, a), np.where(swap, a, b)


def _true_keys(truth: SampleTruth, slots: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(pair keys, shard of each) of the truth's ``slots`` (bool [n, k]); dedup: unordered, once."""
    cand, shards = truth.candidate_ids[:, :slots.shape[1]], truth.shards[:, :slots.shape[1]]
    q = np.broadcast_to(np.asarray(truth.query_ids, dtype=object)[:, None], cand.shape)[slots]
    c, s = cand[slots], shards[slots]
    if mode == "dedup":
        q, c = _canonical(q, c)
    keys = _keys(q, c)
    if mode == "dedup" and len(keys):
        order = np.lexsort((s, keys))
        keys, s = keys[order], s[order]
        first = np.r_[True, keys[1:] != keys[:-1]]
        keys, s = keys[first], s[first]
    return keys, s


def recall_report(truth: SampleTruth, query_ids: np.ndarray, candidate_ids: np.ndarray, *, top_k: int,
                  mode: str, max_distance: float | None = None,
                  relevance: Relevance | None = None) -> dict[str, Any]:
    """Recall of the sample's true pairs among emitted pairs: the relevant ones, and all top-K.

    Two recalls of the same emitted pairs. ``recall_relevant`` counts the pairs that matter for
    matching (:func:`relevance_cutoff` of this truth: within ``max_distance`` when given, else rank 1
    and pairs within a distance derived from the sample); ``--min_recall`` applies to it.
    ``recall_at_k`` is the classic recall@K: every non-empty slot of the truth's first ``top_k``
    columns within ``max_distance``, as the job keeps them. In ``dedup`` mode pairs are unordered:
    true and emitted pairs become (min, max), a true pair is found when emitted in either direction,
    and a pair that is in the truth of both its ids counts once (attributed to the smaller shard of the
    two sides; relevant when relevant from either side).

    Args:
        truth: exact top-K of the sample (:class:`ExactSampleTopK`).
        query_ids, candidate_ids: emitted pairs, object or str arrays [m]; pairs of other queries
            may be included, they never match.
        top_k: the job's K.
        mode: 'link' or 'dedup'.
        max_distance: the job's --max_distance, or None.
        relevance: which slots are relevant; default :func:`relevance_cutoff` of ``truth``.

    Returns:
        ``{"sample_size", "recall_at_k", "per_shard": {shard: recall}, "true_pairs", "found_pairs",
        "target", "relevance_cutoff", "recall_relevant", "per_shard_relevant", "relevant_pairs",
        "found_relevant_pairs"}``: ``target`` says which pairs ``recall_relevant`` counts and
        ``relevance_cutoff`` is their distance limit (None when every slot counts). A recall is None
        when there is nothing to find (no true pair within max_distance); a ``per_shard`` dict lists
        the shards holding at least one such pair.
    """
    if mode not in AUDIT_MODES:
        raise ValueError(f"mode must be one of {', '.join(AUDIT_MODES)}, got {mode!r}")
    if relevance is None:
        relevance = relevance_cutoff(truth, top_k, max_distance)
    cand, dist = truth.candidate_ids[:, :top_k], truth.distances[:, :top_k]
    valid = (cand != "") & np.isfinite(dist)
    if max_distance is not None:
        valid &= dist <= max_distance
    if mode == "dedup":
        query_ids, candidate_ids = _canonical(query_ids, candidate_ids)
    # A set, not np.isin: on object arrays isin sorts Python strings (1.1 s for 10k pairs at 200k).
    emitted = set(_keys(query_ids, candidate_ids).tolist()) if len(query_ids) else set()

    def recall_of(slots: np.ndarray) -> tuple[float | None, dict[int, float], int, int]:
        keys, shards = _true_keys(truth, slots, mode)
        found = np.fromiter((k in emitted for k in keys.tolist()), dtype=bool, count=len(keys))
        per_shard = {int(shard): float(found[shards == shard].mean()) for shard in np.unique(shards)}
        n_true, n_found = int(len(keys)), int(found.sum())
        return (n_found / n_true if n_true else None), per_shard, n_true, n_found

    recall, per_shard, true_pairs, found_pairs = recall_of(valid)
    relevant, per_shard_relevant, relevant_pairs, found_relevant = recall_of(
        relevant_slots(truth, top_k, relevance) & valid)
    return {"sample_size": int(len(truth.query_ids)),
            "recall_at_k": recall,
            "per_shard": per_shard,
            "true_pairs": true_pairs,
            "found_pairs": found_pairs,
            "target": relevance.target,
            "relevance_cutoff": relevance.cutoff,
            "recall_relevant": relevant,
            "per_shard_relevant": per_shard_relevant,
            "relevant_pairs": relevant_pairs,
            "found_relevant_pairs": found_relevant}


def tuning_ladder(params: dict[str, Any], size: int) -> list[tuple[int | None, int | None]]:
    """The (leaves_to_search, reorder) rungs tried for a ScaNN shard, cheapest first.

    Leaves grow from the built ``num_leaves_to_search`` by x1.5 up to all ``num_leaves``; reorder
    doubles twice from the built ``reorder`` (100 -> 200 -> 400) and always offers 100, 200 and 400
    when they are deeper than the built one, capped at the shard size. Rungs are
    ordered by an estimated per-query cost (AH scores of the searched leaves plus ~4x that per
    re-scored vector); the first is the built setting, the last the most effort. A knob the index does
    not have (no tree: ``num_leaves <= 1``; no reorder stage) is None.

    Args:
        params: the shard's ``ShardIndexInfo.params`` (ScaNN build params).
        size: vectors in the shard.
    """
    num_leaves = int(params.get("num_leaves") or 1)
    leaves: list[int | None] = [None]
    if num_leaves > 1:
        step = max(1, min(int(params["num_leaves_to_search"]), num_leaves))
        leaves = [step]
        while step < num_leaves:
            step = min(num_leaves, max(step + 1, math.ceil(step * _LEAVES_GROWTH)))
            leaves.append(step)
    reorders: list[int | None] = [None]
    built_reorder = int(params.get("reorder") or 0)
    if params.get("quantization") == "ah" and built_reorder > 0:
        # Doubling from the built depth, and at least up to the depths that serve top-10 well
        # (FACTS.md: 100; 200 bought little) in case the run was built with a very shallow reorder.
        depths = [built_reorder * 2 ** i for i in range(_REORDER_STEPS)] + [100, 200, 400]
        reorders = sorted({min(r, max(size, built_reorder)) for r in depths if r >= built_reorder})

    def cost(rung: tuple[int | None, int | None]) -> tuple[float, int, int]:
        leaves_, reorder_ = rung
        searched = size * (leaves_ or num_leaves) / num_leaves
        return searched + _REORDER_COST * (reorder_ or 0), leaves_ or 0, reorder_ or 0

    return sorted(((lv, r) for lv in leaves for r in reorders), key=cost)


# ------------------------------------------------------------------------------------------------
# CombineFns and DoFns


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
        _check_top_k(top_k)
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


def _sorted_ids(truth: SampleTruth) -> np.ndarray:
    return np.sort(str_array(truth.query_ids))


def _is_member(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    if len(sorted_ids) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    values = str_array(values)
    at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return sorted_ids[at] == values


class _KeepSamplePairsFn(beam.DoFn):
    """PairBatch -> its rows about sample queries (either side in dedup mode), or nothing."""

    def __init__(self, *, dedup: bool):
        self._dedup = dedup

    def process(self, pairs: PairBatch, sample_ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        keep = _is_member(pairs.query_ids, sample_ids)
        if self._dedup:
            keep |= _is_member(pairs.candidate_ids, sample_ids)
        if keep.any():
            yield str_array(pairs.query_ids[keep]), str_array(pairs.candidate_ids[keep])


class _ConcatPairsFn(beam.CombineFn):
    """(query_ids, candidate_ids) chunks -> one pair of str arrays (empty when there are none)."""

    def create_accumulator(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return []

    def add_input(self, acc, chunk):
        acc.append(chunk)
        return acc

    def merge_accumulators(self, accs):
        return [chunk for acc in accs for chunk in acc]

    def extract_output(self, acc) -> tuple[np.ndarray, np.ndarray]:
        if not acc:
            return np.empty(0, dtype=object), np.empty(0, dtype=object)
        return (np.concatenate([q for q, _ in acc]), np.concatenate([c for _, c in acc]))


class _ScoreRecallFn(beam.DoFn):
    def __init__(self, *, top_k: int, mode: str, max_distance: float | None):
        self._top_k = top_k
        self._mode = mode
        self._max_distance = max_distance
        self._permille = Metrics.distribution(metrics.NAMESPACE, RECALL_PERMILLE_METRIC)
        self._relevant_permille = Metrics.distribution(metrics.NAMESPACE, RELEVANT_RECALL_PERMILLE_METRIC)
        self._true = Metrics.counter(metrics.NAMESPACE, _TRUE_PAIRS_METRIC)
        self._found = Metrics.counter(metrics.NAMESPACE, _FOUND_PAIRS_METRIC)

    def process(self, emitted: tuple[np.ndarray, np.ndarray], truth: SampleTruth) -> Iterator[dict]:
        # The relevance cutoff is derived once, here, from the audit sample's own truth.
        report = recall_report(truth, *emitted, top_k=self._top_k, mode=self._mode,
                               max_distance=self._max_distance)
        self._true.inc(report["true_pairs"])
        self._found.inc(report["found_pairs"])
        if report["recall_at_k"] is not None:
            self._permille.update(round(1000 * report["recall_at_k"]))
        if report["recall_relevant"] is not None:
            self._relevant_permille.update(round(1000 * report["recall_relevant"]))
        worst = min(report["per_shard_relevant"].items(), key=lambda kv: (kv[1], kv[0]), default=None)
        _LOGGER.info("audit: recall %s of %s (%d of %d pairs found), recall@%d %s (%d of %d) on %d "
                     "sample queries; worst shard %s", report["recall_relevant"], report["target"],
                     report["found_relevant_pairs"], report["relevant_pairs"], self._top_k,
                     report["recall_at_k"], report["found_pairs"], report["true_pairs"],
                     report["sample_size"], worst)
        yield report


class _TuneShardFn(beam.DoFn):
    """ShardIndexInfo -> (shard, chosen rung) for ScaNN shards; nothing for exact ones."""

    def __init__(self, *, target_recall: float, top_k: int, exclude_self: bool):
        self._target = target_recall
        self._top_k = top_k
        self._exclude_self = exclude_self
        self._tuned = Metrics.counter(metrics.NAMESPACE, _TUNED_SHARDS_METRIC)
        self._unreached = Metrics.counter(metrics.NAMESPACE, _UNREACHED_SHARDS_METRIC)

    def _recall(self, index: Any, shard_ids: np.ndarray, queries: VectorBatch, want: np.ndarray,
                relevant: np.ndarray, rung: tuple[int | None, int | None]) -> tuple[float, float]:
        """(recall of the relevant neighbours, recall of all true neighbours) at one rung."""
        leaves, reorder = rung
        positions, distances = index.search(
            queries.vectors, min(self._top_k + int(self._exclude_self), max(1, index.size)),
            leaves_to_search=leaves, reorder=reorder)
        positions, _, _ = drop_self(positions, distances, shard_ids, queries.ids, self._top_k,
                                     self._exclude_self)
        found = (want[:, :, None] == positions[:, None, :]).any(axis=2)
        return (float(found[relevant].sum()) / int(relevant.sum()),
                float(found.sum()) / int((want != _ABSENT).sum()))

    def process(self, info: ShardIndexInfo, sample: VectorBatch, truth: SampleTruth,
                relevance: Relevance) -> Iterator[tuple[int, dict[str, Any]]]:
        from transforms.index.shard_cache import load_shard

        if info.kind != "scann":
            # Brute force has no knobs.
            return
        if not np.array_equal(np.asarray(truth.query_ids, dtype=object), sample.ids):
            raise ValueError("TuneSearch needs the exact top-K of the same sample (ExactSampleTopK)")
        ladder = tuning_ladder(info.params, info.size)
        mine = truth.shards[:, :self._top_k] == info.shard
        relevant = mine & relevant_slots(truth, self._top_k, relevance)
        n_true, n_relevant = int(mine.sum()), int(relevant.sum())
        self._tuned.inc()
        about = {"target": relevance.target, "relevance_cutoff": relevance.cutoff,
                 "relevant_neighbors": n_relevant, "true_neighbors": n_true}
        if n_relevant == 0:
            # No relevant neighbour of the sample lives here: nothing to measure, keep the built setting.
            leaves, reorder = ladder[0]
            yield info.shard, {"leaves_to_search": leaves, "reorder": reorder, "recall": None,
                               "recall_at_k": None, "reached": True, "rungs_tried": 0} | about
            return
        start = time.perf_counter()
        rows = mine.any(axis=1)
        queries = VectorBatch(sample.ids[rows], sample.vectors[rows], sample.origins[rows])
        want = np.where(mine[rows], truth.positions[rows, :self._top_k], _ABSENT)
        loaded = load_shard(info.path, info.build)
        recall_of = functools.partial(self._recall, loaded.index, loaded.ids, queries, want,
                                      relevant[rows])
        # The most effort first: if even that misses the target, the other rungs need not be tried.
        tried = {ladder[-1]: recall_of(ladder[-1])}
        chosen = ladder[-1]
        if tried[chosen][0] >= self._target:
            for rung in ladder[:-1]:
                tried[rung] = recall_of(rung)
                if tried[rung][0] >= self._target:
                    chosen = rung
                    break
        recall, recall_at_k = tried[chosen]
        reached = recall >= self._target
        if not reached:
            self._unreached.inc()
            _LOGGER.warning("shard %d: recall %.4f of the relevant neighbours at the most effort tried "
                            "(leaves_to_search=%s, reorder=%s) is below the target %.4f", info.shard,
                            recall, *chosen, self._target)
        _LOGGER.info("shard %d: leaves_to_search=%s reorder=%s -> recall %.4f of %d relevant "
                     "neighbours (%s), %.4f of all %d true neighbours (%d rungs tried in %.1f s)",
                     info.shard, *chosen, recall, n_relevant, relevance.target, recall_at_k, n_true,
                     len(tried), time.perf_counter() - start)
        yield info.shard, {"leaves_to_search": chosen[0], "reorder": chosen[1], "recall": recall,
                           "recall_at_k": recall_at_k, "reached": reached,
                           "rungs_tried": len(tried)} | about


# ------------------------------------------------------------------------------------------------
# Composites


def _check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")


def _check_max_distance(max_distance: float | None) -> None:
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
        _check_top_k(top_k)
        self._sample = sample
        self._top_k = top_k
        self._fn = _ExactShardTopKFn(top_k=top_k, exclude_self=bool(exclude_self))

    def expand(self, infos):
        return (infos
                | "SpreadShards" >> beam.Reshuffle()
                | "ExactShardTopK" >> beam.ParDo(self._fn, sample=beam.pvalue.AsSingleton(self._sample))
                | "MergeTopK" >> beam.CombineGlobally(_MergeTruthFn(self._top_k)))


class AuditRecall(beam.PTransform):
    """PairBatch emitted pairs -> singleton dict: recall of the sample's true pairs.

    Two recalls (see :func:`recall_report`): ``recall_relevant``, of the pairs that matter (within
    ``max_distance`` when given, else rank 1 and pairs within a distance derived once from this
    truth by :func:`relevance_cutoff`; the report says which in ``target`` and
    ``relevance_cutoff``), and the classic ``recall_at_k`` of every true top-K pair.
    Emitted pairs are cut down to those of sample queries where they are produced (a sorted-id side
    input; in dedup mode a pair is kept when either id is a sample query), so only about
    ``sample_size * top_k`` pairs are ever gathered. The report is also published as the Beam
    distributions ``audit_relevant_recall_permille`` and ``audit_recall_permille`` and the counters
    ``audit_true_pairs`` / ``audit_found_pairs`` in ``transforms.common.metrics.NAMESPACE``.

    Args:
        truth: singleton PCollection of SampleTruth (:class:`ExactSampleTopK`).
        top_k: the job's K.
        mode: 'link' or 'dedup' (pairs compared as unordered (min, max)).
        max_distance: the job's --max_distance (applied to the truth as the job applies it), or None.
    """

    def __init__(self, *, truth: beam.PCollection, top_k: int, mode: str,
                 max_distance: float | None = None):
        super().__init__()
        _check_top_k(top_k)
        if mode not in AUDIT_MODES:
            raise ValueError(f"mode must be one of {', '.join(AUDIT_MODES)}, got {mode!r}")
        _check_max_distance(max_distance)
        self._truth = truth
        self._keep = _KeepSamplePairsFn(dedup=mode == "dedup")
        self._score = _ScoreRecallFn(top_k=top_k, mode=mode, max_distance=max_distance)

    def expand(self, pairs):
        sample_ids = self._truth | "SampleIds" >> beam.Map(_sorted_ids)
        return (pairs
                | "KeepSamplePairs" >> beam.ParDo(self._keep,
                                                  sample_ids=beam.pvalue.AsSingleton(sample_ids))
                | "GatherSamplePairs" >> beam.CombineGlobally(_ConcatPairsFn())
                | "ScoreRecall" >> beam.ParDo(self._score, truth=beam.pvalue.AsSingleton(self._truth)))


class TuneSearch(beam.PTransform):
    """ShardIndexInfo shards -> singleton dict: the cheapest search effort per ScaNN shard.

    The dict is ``{shard: {"leaves_to_search": L, "reorder": R, "recall": r, "recall_at_k": a,
    "reached": bool, "relevant_neighbors": n, "true_neighbors": t, "target": text,
    "relevance_cutoff": c, "rungs_tried": m}}`` (L or R None for a knob the index lacks).

    The tuner aims at the neighbours that matter, not at every slot of the exact top-K (whose far
    ranks are mostly unrelated records at near-random distance, costly to find and of no use to
    matching): the relevant neighbours of :func:`relevance_cutoff`, derived once from the whole
    tuning truth (so every shard, and :class:`TuneProbe` on the same truth, aims at the same ones;
    ``target`` and ``relevance_cutoff`` say which). One shard per element (spread over workers). A
    shard's ``recall`` is the share of the sample's relevant neighbours living in that shard that its
    ANN top-K finds (what the merge can keep); ``recall_at_k`` is the same over all the true top-K
    neighbours there, for comparison. Rungs come from :func:`tuning_ladder`, cheapest first; the first
    whose ``recall`` reaches ``target_recall`` wins. If none does, the most effort is kept with
    ``reached: False`` (logged, and counted in the ``tuned_shards_below_target`` counter). A shard
    holding none of the sample's relevant neighbours keeps its built setting (``recall: None``).
    Exact shards have no knobs and are absent. Feed the dict to :func:`search_kwargs`.

    Args:
        sample: singleton PCollection of VectorBatch (:class:`SampleQueries`).
        truth: singleton PCollection of SampleTruth of that sample (:class:`ExactSampleTopK`, same
            top_k and exclude_self).
        target_recall: in (0, 1].
        top_k: the job's K.
        exclude_self: dedup mode.
        max_distance: the job's --max_distance, or None (see :func:`relevance_cutoff`).
    """

    def __init__(self, *, sample: beam.PCollection, truth: beam.PCollection, target_recall: float,
                 top_k: int, exclude_self: bool = False, max_distance: float | None = None):
        super().__init__()
        _check_top_k(top_k)
        if not (isinstance(target_recall, int | float) and 0.0 < target_recall <= 1.0):
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
        _check_max_distance(max_distance)
        self._sample = sample
        self._truth = truth
        self._top_k = top_k
        self._max_distance = max_distance
        self._fn = _TuneShardFn(target_recall=float(target_recall), top_k=top_k,
                                exclude_self=bool(exclude_self))

    def expand(self, infos):
        relevance = self._truth | "RelevanceCutoff" >> beam.Map(
            relevance_cutoff, top_k=self._top_k, max_distance=self._max_distance)
        return (infos
                | "SpreadShards" >> beam.Reshuffle()
                | "TuneShard" >> beam.ParDo(self._fn, sample=beam.pvalue.AsSingleton(self._sample),
                                            truth=beam.pvalue.AsSingleton(self._truth),
                                            relevance=beam.pvalue.AsSingleton(relevance))
                | "ToDict" >> beam.combiners.ToDict())


# ------------------------------------------------------------------------------------------------
# Probe tuning (centroid routing)

# Probe counts tried, cheapest first (then every partition).
_PROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def routing_target(target_recall: float) -> float:
    """The share of true neighbours routing must reach: half the recall budget (1 - target) goes to
    routing, half to the search inside the shards."""
    return 1.0 - (1.0 - target_recall) / 2.0


def choose_probe(plan: Any, sample: VectorBatch, truth: SampleTruth, *, top_k: int,
                 target_recall: float, start: int = 1, max_distance: float | None = None,
                 relevance: Relevance | None = None) -> dict[str, Any]:
    """The smallest probe (partitions per query) whose routes reach ``routing_target`` of the sample's
    relevant neighbours, with the routing recall of every probe tried.

    The relevant neighbours are those of :func:`relevance_cutoff` (``relevance``, default derived from
    ``truth`` with ``max_distance``), as :class:`TuneSearch` counts them; the result's
    ``target_neighbors`` and ``relevance_cutoff`` say which. A relevant neighbour counts as reachable
    when its shard is among those the query is routed to. A hash plan has nothing to tune (every
    query searches every shard).
    """
    from transforms.placement.routing import route_rows

    if plan is None or plan.kind == "hash" or not len(sample):
        return {"probe": None, "routing_recall": None, "tried": {}}
    if relevance is None:
        relevance = relevance_cutoff(truth, top_k, max_distance)
    shards = truth.shards[:, :top_k]
    valid = (shards >= 0) & relevant_slots(truth, top_k, relevance)
    n_true = int(valid.sum())
    partitions = len(plan.pieces)
    ladder = sorted({p for p in _PROBE_LADDER if start <= p < partitions} | {partitions})
    want = routing_target(target_recall)
    tried: dict[int, float] = {}
    for probe in ladder:
        reach = np.zeros(shards.shape, dtype=bool)
        for shard, rows in route_rows(sample.vectors, plan, probe).items():
            reach[rows] |= shards[rows] == shard
        tried[probe] = float((reach & valid).sum()) / n_true if n_true else 1.0
        if tried[probe] >= want:
            break
    probe = next((p for p in ladder if tried.get(p, -1.0) >= want), ladder[-1])
    return {"probe": probe, "routing_recall": tried[probe], "target": want,
            "tried": {str(p): round(r, 4) for p, r in tried.items()},
            "target_neighbors": relevance.target, "relevance_cutoff": relevance.cutoff,
            "relevant_neighbors": n_true}


class TuneProbe(beam.PTransform):
    """Singleton RoutingPlan -> singleton dict: the ``--probe_shards`` chosen on the tuning sample.

    See :func:`choose_probe`. Runs before the main search, on the same sample and exact truth as
    ``TuneSearch`` (and so the same relevant neighbours); the search reads the chosen probe as a side
    input.
    """

    def __init__(self, *, sample: beam.PCollection, truth: beam.PCollection, target_recall: float,
                 top_k: int, start: int = 1, max_distance: float | None = None):
        super().__init__()
        _check_top_k(top_k)
        _check_max_distance(max_distance)
        self._max_distance = max_distance
        self._sample = sample
        self._truth = truth
        self._target = float(target_recall)
        self._top_k = top_k
        self._start = start

    def _choose(self, plan, sample, truth):
        if plan is not None and len(sample) and not np.array_equal(
                np.asarray(truth.query_ids, dtype=object), sample.ids):
            raise ValueError("TuneProbe needs the exact top-K of the same sample (ExactSampleTopK)")
        choice = choose_probe(plan, sample, truth, top_k=self._top_k, target_recall=self._target,
                              start=self._start, max_distance=self._max_distance)
        if choice["probe"] is not None:
            _LOGGER.info("routing: probe %d partitions -> %.4f of the sample's relevant neighbours "
                         "(%s) reachable (target %.4f; tried %s)", choice["probe"],
                         choice["routing_recall"], choice["target_neighbors"], choice["target"],
                         choice["tried"])
        return choice

    def expand(self, plan):
        return plan | "ChooseProbe" >> beam.Map(
            self._choose, sample=beam.pvalue.AsSingleton(self._sample),
            truth=beam.pvalue.AsSingleton(self._truth))
