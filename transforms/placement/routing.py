"""Partition routing: train coarse centroids once, place candidates by centroid, route queries.

The IVF idea at the level of shards. Centroids are trained with seeded k-means (numpy) on a
deterministic sample of candidates; every candidate goes to the partition of its nearest centroid;
partitions are packed into shards of bounded size (a partition larger than a shard is split by hash
into pieces, so one shard can never outgrow a worker); each query then searches only the shards that
hold its ``probe`` nearest partitions. Work per query grows with ``probe``, not with the number of
shards.

The numpy functions are pure; ``TrainRouting`` and ``PlaceCandidates`` are the Beam composites.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.common import metrics
from transforms.common.schema import VectorBatch
from transforms.common.sharding import stable_hash64
from transforms.placement.sizing import ShardSizing

__all__ = ["TrainRouting", "PlaceCandidates", "RoutingPlan", "train_centroids", "nearest_centroids",
           "plan_shards", "route_rows", "shards_of_candidates", "PlaceResult"]

_LOGGER = logging.getLogger(__name__)


class RoutingPlan(NamedTuple):
    """Where each partition's candidates live. JSON-able through ``to_dict``.

    Attributes:
        centroids: float32 [P, d].
        distance: the job's distance (decides how queries pick partitions).
        pieces: per partition, the shard of each of its pieces (a partition larger than a shard is
            split by id hash into several pieces).
        num_shards: total number of shards.
    """

    centroids: np.ndarray
    distance: str
    pieces: tuple[tuple[int, ...], ...]
    num_shards: int
    kind: str = "centroids"  # or 'hash': shard by id hash, every query searches every shard

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_partitions": len(self.pieces), "num_shards": self.num_shards,
                "pieces": [list(p) for p in self.pieces]}


def _scores(vectors: np.ndarray, centroids: np.ndarray, distance: str) -> np.ndarray:
    """Higher is nearer: -squared L2 for squared_l2 (and cosine, on unit vectors), dot for dot."""
    dots = vectors @ centroids.T
    if distance == "dot":
        return dots
    return 2 * dots - (centroids * centroids).sum(axis=1)[None, :]


def nearest_centroids(vectors: np.ndarray, centroids: np.ndarray, distance: str, n: int,
                      block: int = 8192) -> np.ndarray:
    """Indices [len(vectors), n] of each vector's n nearest centroids, nearest first."""
    n = min(n, len(centroids))
    out = np.empty((len(vectors), n), dtype=np.int64)
    for s in range(0, len(vectors), block):
        sc = _scores(vectors[s:s + block], centroids, distance)
        if n < sc.shape[1]:
            part = np.argpartition(-sc, n - 1, axis=1)[:, :n]
        else:
            part = np.broadcast_to(np.arange(sc.shape[1]), sc.shape).copy()
        order = np.argsort(-np.take_along_axis(sc, part, axis=1), axis=1, kind="stable")
        out[s:s + block] = np.take_along_axis(part, order, axis=1)
    return out


def train_centroids(sample: np.ndarray, num_partitions: int, *, distance: str, seed: int = 0,
                    iterations: int = 15) -> np.ndarray:
    """Seeded k-means (k-means++ init) on ``sample``; spherical for cosine. Returns [P, d] float32."""
    sample = np.asarray(sample, dtype=np.float32)
    k = max(1, min(num_partitions, len(sample)))
    rng = np.random.default_rng(seed)
    # k-means++ on a bounded subset keeps the init cost small.
    init_pool = sample[rng.permutation(len(sample))[: min(len(sample), 20 * k)]]
    centroids = [init_pool[rng.integers(len(init_pool))]]
    d2 = ((init_pool - centroids[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else None
        nxt = init_pool[rng.choice(len(init_pool), p=probs)]
        centroids.append(nxt)
        d2 = np.minimum(d2, ((init_pool - nxt) ** 2).sum(axis=1))
    cents = np.stack(centroids).astype(np.float32)
    for _ in range(iterations):
        assign = nearest_centroids(sample, cents, "squared_l2", 1)[:, 0]
        # Per-centroid sums by sorting once and reducing runs (np.add.at is ~100x slower).
        order = np.argsort(assign, kind="stable")
        counts = np.bincount(assign, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.zeros((k, sample.shape[1]), dtype=np.float64)
        nonempty = counts > 0
        sums[nonempty] = np.add.reduceat(sample[order].astype(np.float64), starts[nonempty], axis=0)
        empty = counts == 0
        cents = np.where(empty[:, None], cents, sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if distance == "cosine":
            norms = np.linalg.norm(cents, axis=1, keepdims=True)
            cents = cents / np.where(norms > 0, norms, 1)
    return cents


def plan_shards(centroids: np.ndarray, partition_sizes: np.ndarray, *, distance: str,
                max_shard_vectors: int, num_shards: int | None = None) -> RoutingPlan:
    """Packs partitions into shards of at most ``max_shard_vectors`` (greedy, largest first).

    A partition larger than ``max_shard_vectors`` is split into ``ceil(size / max)`` pieces of its
    own. The others are placed, largest first, into the least-filled shard with room, opening a new
    shard when none has room (or up to ``num_shards`` shards when that is given and they fit).
    Deterministic: ties go to the lower partition / shard index.
    """
    sizes = np.asarray(partition_sizes, dtype=np.int64)
    pieces: list[list[int]] = [[] for _ in sizes]
    loads: list[int] = []
    order = sorted(range(len(sizes)), key=lambda p: (-int(sizes[p]), p))
    target = num_shards or 0
    for p in order:
        size = int(sizes[p])
        if size > max_shard_vectors:
            n_pieces = math.ceil(size / max_shard_vectors)
            for _ in range(n_pieces):
                pieces[p].append(len(loads))
                loads.append(math.ceil(size / n_pieces))
            continue
        room = [s for s in range(len(loads)) if loads[s] + size <= max_shard_vectors]
        if len(loads) < target or not room:
            loads.append(size)
            pieces[p].append(len(loads) - 1)
        else:
            best = min(room, key=lambda s: (loads[s], s))
            loads[best] += size
            pieces[p].append(best)
    plan = RoutingPlan(centroids=np.asarray(centroids, dtype=np.float32), distance=distance,
                       pieces=tuple(tuple(p) for p in pieces), num_shards=max(1, len(loads)))
    _LOGGER.info("routing plan: %d partitions in %d shards, largest shard %d vectors",
                 len(sizes), plan.num_shards, max(loads) if loads else 0)
    return plan


def shards_of_candidates(ids: np.ndarray, vectors: np.ndarray, plan: RoutingPlan, *,
                         by: str = "id") -> np.ndarray:
    """The shard of every candidate: its nearest partition's piece (or its hash shard in a hash plan).

    ``by="id"`` hashes the id; ``by="content"`` hashes the vector's bytes, so identical records always
    meet in one shard (where exact duplicates are collapsed) whatever their ids.
    """
    if by not in ("id", "content"):
        raise ValueError(f"by must be 'id' or 'content', got {by!r}")
    from transforms.common.sharding import content_hash64

    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    if plan.num_shards == 1:  # every candidate is in the one shard: no hashing, no routing
        return np.zeros(len(ids), dtype=np.int64)
    hashes = stable_hash64(ids) if by == "id" else content_hash64(vectors)
    if plan.kind == "hash":
        return (hashes % np.uint64(plan.num_shards)).astype(np.int64)
    # Placement uses the metric k-means was trained in; queries route with the job's distance.
    part = nearest_centroids(vectors, plan.centroids, "squared_l2", 1)[:, 0]
    n_pieces = np.array([len(p) for p in plan.pieces], dtype=np.int64)[part]
    piece = (hashes % n_pieces.astype(np.uint64)).astype(np.int64)
    table = np.full((len(plan.pieces), max(len(p) for p in plan.pieces)), -1, dtype=np.int64)
    for i, p in enumerate(plan.pieces):
        table[i, : len(p)] = p
    return table[part, piece]


def route_rows(vectors: np.ndarray, plan: RoutingPlan, probe: int) -> dict[int, np.ndarray]:
    """For a query batch: {shard: row indices} of the shards holding each row's ``probe`` nearest
    partitions (every piece of a split partition). A hash plan sends every row to every shard."""
    if plan.kind == "hash":
        everything = np.arange(len(vectors), dtype=np.int64)
        return {s: everything for s in range(plan.num_shards)}
    near = nearest_centroids(vectors, plan.centroids, plan.distance, probe)
    routes: dict[int, set[int]] = {}
    for part in np.unique(near):
        rows = np.flatnonzero((near == part).any(axis=1))
        for shard in plan.pieces[int(part)]:
            routes.setdefault(shard, set()).update(rows.tolist())
    return {s: np.array(sorted(r), dtype=np.int64) for s, r in sorted(routes.items())}


class _SmallestHashSampleFn(beam.CombineFn):
    """Keeps the ``size`` vectors whose ids hash smallest: a sample independent of batching.

    Accumulators grow to twice the sample before they are cut (by hash only), so the cost is linear
    in the corpus; the final cut also orders ties by id.
    """

    def __init__(self, size: int):
        self._size = size

    def create_accumulator(self):
        return None

    def _cut(self, hashes, ids, vectors):
        if len(hashes) > self._size:
            keep = np.argpartition(hashes, self._size - 1)[: self._size]
            return hashes[keep], ids[keep], vectors[keep]
        return hashes, ids, vectors

    def add_input(self, acc, batch: VectorBatch):
        return self.merge_accumulators([acc, [(stable_hash64(batch.ids), batch.ids, batch.vectors)]])

    def merge_accumulators(self, accs):
        # An accumulator is a list of (hashes, ids, vectors) parts, concatenated and cut only when
        # they hold more than twice the sample: linear in the corpus, not corpus x sample.
        parts = [part for a in accs if a is not None for part in a]
        if not parts:
            return None
        if sum(len(h) for h, _, _ in parts) <= 2 * self._size:
            return parts
        return [self._cut(*(np.concatenate([p[i] for p in parts]) for i in range(3)))]

    def extract_output(self, acc):
        if acc is None:
            return np.zeros((0, 0), dtype=np.float32)
        hashes, ids, vectors = self._cut(*(np.concatenate([p[i] for p in acc]) for i in range(3)))
        from transforms.common.sharding import id_sort_keys

        return vectors[np.lexsort((id_sort_keys(ids)[0], hashes))]


class _PartitionSizesFn(beam.DoFn):
    def process(self, batch: VectorBatch, centroids: np.ndarray):
        if centroids.size == 0:  # a hash plan: nothing to count
            return
        part = nearest_centroids(batch.vectors, centroids, "squared_l2", 1)[:, 0]
        yield np.bincount(part, minlength=len(centroids)).astype(np.int64)


def _sum_arrays(arrays) -> np.ndarray | None:
    total = None
    for a in arrays:
        total = a.copy() if total is None else total + a
    return total


class _PlanFn(beam.DoFn):
    def __init__(self, distance: str, num_shards: int | None, min_shards_to_route: int):
        self._distance = distance
        self._num_shards = num_shards
        self._min_shards = min_shards_to_route

    def process(self, centroids: np.ndarray, sizes: np.ndarray | None, sizing: ShardSizing):
        if sizing.num_shards <= self._min_shards or centroids.size == 0:
            # Few shards: every query searches all of them anyway, and hash placement spreads each
            # query's neighbours over the shards, which gives more recall per unit of search effort.
            yield RoutingPlan(np.zeros((0, 0), np.float32), self._distance, (), sizing.num_shards,
                              kind="hash")
            return
        if sizes is None:  # no candidates: an empty plan (the gate fails the run)
            sizes = np.zeros(len(centroids), dtype=np.int64)
        yield plan_shards(centroids, sizes, distance=self._distance,
                          max_shard_vectors=sizing.capacity, num_shards=self._num_shards)


def _num_partitions(sizing: ShardSizing, per_shard: int) -> int:
    return max(1, per_shard * sizing.num_shards)


def _train_if_routing(sample: np.ndarray, sizing: ShardSizing, per_shard: int, distance: str, seed: int,
                      min_shards: int) -> np.ndarray:
    """Centroids, or an empty array when the plan will be plain hash shards (no k-means needed)."""
    if sizing.num_shards <= min_shards or sample.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return train_centroids(sample, _num_partitions(sizing, per_shard), distance=distance, seed=seed)


class TrainRouting(beam.PTransform):
    """Deduplicated candidate VectorBatches -> singleton RoutingPlan (train once, route many).

    Args:
        sizing: singleton ShardSizing (``transforms.placement.sizing``: num_shards, capacity).
        distance: the job's distance.
        num_shards: fixed shard count (--num_shards) or None to size from the data.
        partitions_per_shard: k-means partitions per planned shard.
        min_shards_to_route: with this many shards or fewer, plan plain hash shards instead.
        sample_size: candidates the centroids are trained on.
    """

    def __init__(self, *, sizing, distance: str, num_shards: int | None, partitions_per_shard: int = 4,
                 min_shards_to_route: int = 0, sample_size: int = 100_000, seed: int = 0):
        super().__init__()
        if partitions_per_shard < 1 or sample_size < 1:
            raise ValueError("partitions_per_shard and sample_size must be >= 1")
        self._sizing = sizing
        self._distance = distance
        self._num_shards = num_shards
        self._per_shard = partitions_per_shard
        self._min_shards = min_shards_to_route
        self._sample_size = sample_size
        self._seed = seed

    def expand(self, batches):
        sample = batches | "SampleCandidates" >> beam.CombineGlobally(
            _SmallestHashSampleFn(self._sample_size))
        centroids = sample | "TrainCentroids" >> beam.Map(
            _train_if_routing, sizing=beam.pvalue.AsSingleton(self._sizing),
            per_shard=self._per_shard, distance=self._distance, seed=self._seed,
            min_shards=self._min_shards)
        sizes = (batches
                 | "PartitionSizes" >> beam.ParDo(_PartitionSizesFn(),
                                                  centroids=beam.pvalue.AsSingleton(centroids))
                 | "SumSizes" >> beam.CombineGlobally(_sum_arrays))
        return centroids | "PlanShards" >> beam.ParDo(
            _PlanFn(self._distance, self._num_shards, self._min_shards), sizes=beam.pvalue.AsSingleton(sizes),
            sizing=beam.pvalue.AsSingleton(self._sizing))


class PlaceResult(NamedTuple):
    shards: beam.PCollection  # (shard, VectorBatch sorted by id): what each shard's index holds
    dead_letters: beam.PCollection  # rows dropped as duplicate ids
    aliases: beam.PCollection  # AliasGroup (representative, alias ids, squared norm) per collapsed group
    record_ids: beam.PCollection  # np.ndarray of every placed id (aliases included), one per shard


class _PlaceFn(beam.DoFn):
    def __init__(self, role: str, by: str, spill_dir: str | None = None, min_spill_bytes: int = 0):
        self._by = by
        self._spill_dir = spill_dir
        self._min_spill_bytes = min_spill_bytes
        self._dups = Metrics.counter(metrics.NAMESPACE, f"{role}_duplicate_ids")
        self._timer = metrics.StageTimer("place")

    def process(self, batch: VectorBatch, plan: RoutingPlan, duplicates: dict, indexed: dict):
        from transforms.common.dead_letters import DEAD_LETTER_TAG
        from transforms.placement.duplicate_ids import drop_duplicate_ids, drop_indexed_ids
        from transforms.placement.place import split_batch

        with self._timer:
            batch, dead = drop_duplicate_ids(batch, duplicates)
            batch, kept_dead = drop_indexed_ids(batch, indexed)
            dead += kept_dead
            parts = list(split_batch(batch, shards_of_candidates(batch.ids, batch.vectors, plan,
                                                                 by=self._by), plan.num_shards))
            if self._spill_dir is not None:
                from transforms.placement.spill import should_spill, spill_rows

                parts = [(shard, spill_rows(part, self._spill_dir, shard)
                          if should_spill(part, self._min_spill_bytes) else part)
                         for shard, part in parts]
        for letter in dead:
            self._dups.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
        yield from parts


class _AssembleFn(beam.DoFn):
    def __init__(self, role: str, collapse: bool):
        self._role = role
        self._collapse = collapse
        self._aliases = Metrics.counter(metrics.NAMESPACE, "exact_duplicate_aliases")
        self._timer = metrics.StageTimer("place")

    def process(self, element):
        from transforms.placement.exact_duplicates import collapse_identical
        from transforms.placement.spill import assemble_parts

        shard, parts = element
        with self._timer:
            whole = assemble_parts(parts)  # in-memory and spilled pieces alike
            if whole is None:
                return
            all_ids = whole.ids
            groups = []
            if self._collapse:
                whole, groups = collapse_identical(whole)
            else:
                from transforms.common.sharding import id_sort_keys

                order = np.argsort(id_sort_keys(whole.ids)[0], kind="stable")
                whole = VectorBatch(whole.ids[order], whole.vectors[order], whole.origins[order])
        yield beam.pvalue.TaggedOutput("record_ids", all_ids)
        for group in groups:
            self._aliases.inc(len(group.aliases))
            yield beam.pvalue.TaggedOutput("aliases", group)
        _LOGGER.info("%s shard %d: %d records placed, %d exact duplicates collapsed", self._role, shard,
                     len(whole), sum(len(g.aliases) for g in groups))
        yield shard, whole


class PlaceCandidates(beam.PTransform):
    """Candidate VectorBatches -> (shard, VectorBatch sorted by id) by the routing plan: the one
    shuffle that places the candidates (with ``spill_dir``, large pieces of their vectors go beside
    it as files).

    Args:
        plan: singleton RoutingPlan.
        duplicates: optional PCollection from ``FindDuplicateIds``; the rows it names are dropped here,
            into dead letters, on their way to the shards.
        collapse: place by content (identical vectors share a shard) and collapse exact duplicates
            in each shard to one representative; otherwise place by id.
        role: corpus role for metrics and logs.
        indexed: optional PCollection of (id, where) from ``build.FindKeptIds`` (--append): rows
            with those ids are dropped here, into dead letters.
        spill_dir: optional directory (any Beam filesystem) for the vectors: a batch's rows of a
            shard holding at least ``min_spill_bytes`` of vectors go to a file there and the
            shuffle moves only their ids, origins and the file's path; each shard reads its files
            (see ``transforms.placement.spill``). The caller deletes it once the shards are built. None: all
            vectors travel in the shuffle.
        min_spill_bytes: the smallest piece that goes through a spill file.
    """

    def __init__(self, *, plan, duplicates=None, collapse: bool = False, role: str = "candidates",
                 indexed=None, spill_dir: str | None = None, min_spill_bytes: int | None = None):
        super().__init__()
        from transforms.placement.spill import MIN_SPILL_BYTES

        self._spill_dir = spill_dir
        self._min_spill_bytes = MIN_SPILL_BYTES if min_spill_bytes is None else int(min_spill_bytes)
        self._plan = plan
        self._duplicates = duplicates
        self._indexed = indexed
        self._collapse = collapse
        self._role = role

    def expand(self, batches):
        from transforms.common.dead_letters import DEAD_LETTER_TAG

        duplicates = self._duplicates
        if duplicates is None:
            duplicates = batches.pipeline | "NoDuplicates" >> beam.Create([])
        indexed = self._indexed
        if indexed is None:
            indexed = batches.pipeline | "NoKeptIds" >> beam.Create([])
        placed = batches | "AssignShards" >> beam.ParDo(
            _PlaceFn(self._role, "content" if self._collapse else "id", self._spill_dir,
                     self._min_spill_bytes),
            plan=beam.pvalue.AsSingleton(self._plan),
            duplicates=beam.pvalue.AsDict(duplicates),
            indexed=beam.pvalue.AsDict(indexed)).with_outputs(DEAD_LETTER_TAG, main="placed")
        out = (placed.placed
               | "GroupByShard" >> beam.GroupByKey()
               | "AssembleShard" >> beam.ParDo(_AssembleFn(self._role, self._collapse)).with_outputs(
                   "aliases", "record_ids", main="shards"))
        return PlaceResult(shards=out.shards, dead_letters=placed[DEAD_LETTER_TAG], aliases=out.aliases,
                           record_ids=out.record_ids)
