"""Stage 2: the candidate shards and their indexes.

:func:`place_candidates`: find duplicate ids -> (train routing) -> place candidates in shards. One
shuffle places the candidates (large pieces of their vectors travel beside it as spill files):
placement by content hash (hash plan) or nearest centroid, with exact duplicates collapsed inside
each shard, since identical vectors always meet in one shard. Nothing that placement waits for (the
count from CheckDims' length histogram, the duplicate ids found on the batches before the dims
check) depends on the dims filter's output, so the runner can fuse the filter into placement: the
vectors are not materialised once more in between.

:func:`build_indexes`: build each shard's index (gated by the bad-record verdict), then record the
index (its manifest and alias map) for a later ``--index_dir`` run.

With a kept index (``--index_dir``) nothing is placed or built unless ``--append``: then the new
candidates go to the kept plan's shards and only those shards are rebuilt.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from beam_jobs.config import MatchConfig, scann_params
from beam_jobs.kept_index import KeptIndex, index_static
from transforms.common.schema import Role
from transforms.index.append import CombineWithKeptShards, FindKeptIds, MergeWithKeptShards
from transforms.index.build import BuildShardIndexes
from transforms.index.index_manifest import WriteIndexManifest
from transforms.placement.duplicate_ids import FindDuplicateIds
from transforms.placement.routing import PlaceCandidates, RoutingPlan, TrainRouting
from transforms.placement.sizing import ShardSizing, size_shards
from transforms.placement.spill import DeleteSpillDir

__all__ = ["Placement", "Index", "place_candidates", "build_indexes", "PARTITIONS_PER_SHARD",
           "AUTO_ROUTING_MIN_SHARDS"]

# k-means partitions per shard when routing: packing several per shard evens shard sizes out.
PARTITIONS_PER_SHARD = 4
# --routing auto routes by centroids only above this many shards.
AUTO_ROUTING_MIN_SHARDS = 4


class Placement(NamedTuple):
    """Where the candidates go."""

    shards: beam.PCollection  # (shard, VectorBatch) to build (empty when a kept index is reused)
    plan: beam.PCollection  # singleton RoutingPlan (None: a kept index written before plans)
    routed: bool  # whether there is a plan to tune --probe_shards on
    num_candidates: beam.PCollection  # singleton int
    sizing: beam.PCollection  # singleton ShardSizing
    num_shards: beam.PCollection  # singleton shard count (names the index directories)
    aliases: beam.PCollection  # AliasGroup of collapsed exact duplicates (empty when none)
    collapsed: bool  # whether the matches must put collapsed duplicates back (``aliases``)
    record_ids: beam.PCollection  # arrays of every valid candidate id (dedup clusters)
    dims: beam.PCollection  # singleton int: the vectors' length
    dead_letters: tuple


class Index(NamedTuple):
    """The shard indexes the search uses."""

    infos: beam.PCollection  # ShardIndexInfo per shard (kept, rebuilt or new)
    sample_truth: beam.PCollection  # the audit sample's exact top-K per shard, found beside the build
    truth_beside_build: bool  # False: the audit brute-forces the sample on ``infos`` after
    written: tuple  # steps that write outputs (the index manifest, the alias map, the spill cleanup)
    dead_letters: tuple


def candidate_role(cfg: MatchConfig) -> str:
    return Role.CANDIDATES if cfg.mode == "link" else Role.INPUT


def _spill_bytes(cfg: MatchConfig) -> int:
    return max(1, round(cfg.spill_min_mb * (1 << 20)))


def place_candidates(p: beam.Pipeline, cfg: MatchConfig, corpora, *, kept: KeptIndex | None,
                     spill_dir: str | None) -> Placement:
    """The candidates' shards: none to place for a reused kept index, the kept plan's shards for
    an --append, else a plan of this run's own (:func:`_place_fresh`)."""
    if kept is not None and not cfg.append:
        return _reuse_kept(p, kept, dims=corpora.dims)
    role = candidate_role(cfg)
    num_candidates = corpora.passing[role]
    if kept is not None:
        return _place_appended(p, cfg, corpora, kept=kept, num_candidates=num_candidates,
                               spill_dir=spill_dir)
    return _place_fresh(cfg, corpora, num_candidates=num_candidates, spill_dir=spill_dir)


def _kept_aliases(p: beam.Pipeline, kept: KeptIndex) -> beam.PCollection:
    from transforms.placement.exact_duplicates import ReadAliases

    if kept.aliases_glob:
        return p | "KeptAliases" >> ReadAliases(kept.aliases_glob)
    return p | "NoKeptAliases" >> beam.Create([])


def _reuse_kept(p: beam.Pipeline, kept: KeptIndex, *, dims: beam.PCollection) -> Placement:
    nothing = p | "NoNewCandidates" >> beam.Create([])
    return Placement(
        shards=nothing, plan=p | "KeptPlan" >> beam.Create([kept.plan]), routed=kept.plan is not None,
        num_candidates=p | "KeptSize" >> beam.Create([kept.candidates_indexed]),
        sizing=p | "KeptSizing" >> beam.Create([ShardSizing.fixed(len(kept.shards))]),
        num_shards=p | "KeptShardCount" >> beam.Create([kept.num_shards]),
        aliases=_kept_aliases(p, kept), collapsed=bool(kept.aliases_glob), record_ids=nothing,
        dims=dims, dead_letters=())


def _find_duplicate_ids(cfg: MatchConfig, corpora, *, num_candidates, sizing) -> beam.PCollection:
    # Duplicate ids are found by grouping ids alone; the rows they name are dropped on the way to
    # the shards, in the one shuffle that places the candidates (PlaceCandidates).
    return corpora.unchecked[candidate_role(cfg)] | "FindDuplicateIds" >> FindDuplicateIds(
        num_records=num_candidates,
        num_shards=sizing | "ShardsForIdBuckets" >> beam.Map(lambda s: s.num_shards or 1),
        dims=corpora.dims)


def _place_appended(p: beam.Pipeline, cfg: MatchConfig, corpora, *, kept: KeptIndex, num_candidates,
                    spill_dir: str | None) -> Placement:
    """--append: the kept index decides where candidates go; only the shards they reach are rebuilt."""
    role = candidate_role(cfg)
    candidates = corpora.vectors[role]
    sizing = p | "KeptSizing" >> beam.Create([ShardSizing.fixed(kept.num_shards)])
    duplicates = _find_duplicate_ids(cfg, corpora, num_candidates=num_candidates, sizing=sizing)
    plan = p | "KeptPlan" >> beam.Create([kept.plan])
    aliases = _kept_aliases(p, kept)
    # Ids the kept index holds in any shard (an append adds records; it does not update them).
    indexed = candidates | "FindKeptIds" >> FindKeptIds(
        kept_shards=list(kept.shards), aliases=aliases if kept.aliases_glob else None)
    placed = candidates | "PlaceNewCandidates" >> PlaceCandidates(
        plan=plan, duplicates=duplicates, role=role, indexed=indexed, spill_dir=spill_dir,
        min_spill_bytes=_spill_bytes(cfg))
    merged = placed.shards | "MergeWithKeptShards" >> MergeWithKeptShards(kept_shards=list(kept.shards))
    return Placement(
        shards=merged.shards, plan=plan, routed=True, num_candidates=num_candidates, sizing=sizing,
        num_shards=p | "KeptShardCount" >> beam.Create([kept.num_shards]), aliases=aliases,
        collapsed=bool(kept.aliases_glob), record_ids=p | "NoRecordIds" >> beam.Create([]),
        dims=corpora.dims, dead_letters=(placed.dead_letters, merged.dead_letters))


def _hash_plan(sizing: ShardSizing, distance: str) -> RoutingPlan:
    return RoutingPlan(np.zeros((0, 0), np.float32), distance, (), sizing.num_shards, kind="hash")


def _place_fresh(cfg: MatchConfig, corpora, *, num_candidates, spill_dir: str | None) -> Placement:
    """A plan of this run's own: by content hash, or by nearest centroid (trained on a sample)."""
    role = candidate_role(cfg)
    candidates = corpora.vectors[role]
    sizing = num_candidates | "SizeShards" >> beam.Map(
        lambda n, d: size_shards(n, d, fixed=cfg.num_shards, max_shard_vectors=cfg.max_shard_vectors,
                                 worker_memory_gb=cfg.worker_memory_gb),
        d=beam.pvalue.AsSingleton(corpora.dims))
    duplicates = _find_duplicate_ids(cfg, corpora, num_candidates=num_candidates, sizing=sizing)
    hash_plan_known = cfg.routing == "all" or (
        cfg.routing == "auto" and cfg.num_shards is not None and cfg.num_shards <= AUTO_ROUTING_MIN_SHARDS)
    if hash_plan_known:  # no centroids to train: skip the sample pass
        plan = sizing | "HashPlan" >> beam.Map(_hash_plan, cfg.distance)
    else:
        plan = candidates | "TrainRouting" >> TrainRouting(
            sizing=sizing, distance=cfg.distance, num_shards=cfg.num_shards,
            partitions_per_shard=PARTITIONS_PER_SHARD,
            min_shards_to_route=0 if cfg.routing == "centroids" else AUTO_ROUTING_MIN_SHARDS)
    placed = candidates | "PlaceCandidates" >> PlaceCandidates(
        plan=plan, duplicates=duplicates, collapse=cfg.collapse_duplicates, role=role,
        spill_dir=spill_dir, min_spill_bytes=_spill_bytes(cfg))
    return Placement(
        shards=placed.shards, plan=plan, routed=True, num_candidates=num_candidates, sizing=sizing,
        num_shards=plan | "PlannedShardCount" >> beam.Map(lambda pl: pl.num_shards),
        aliases=placed.aliases, collapsed=cfg.collapse_duplicates, record_ids=placed.record_ids,
        dims=corpora.dims, dead_letters=(placed.dead_letters,))


def build_indexes(p: beam.Pipeline, cfg: MatchConfig, placement: Placement, *, gate: beam.PCollection,
                  queries, kept: KeptIndex | None, spill_dir: str | None, model_fp: str | None) -> Index:
    """Builds the placed shards' indexes (none for a reused kept index) once ``gate`` (a singleton
    GateVerdict) is computed, and records the index for a later --index_dir run. ``queries``: the
    search stage's Queries (their count decides ``--index auto``; their audit sample).

    A fresh index brute-forces the audit sample in each shard beside its build (a core is idle while
    ScaNN completes the index); an --append audits the kept shards too, after.
    """
    if kept is not None and not cfg.append:
        return Index(infos=p | "KeptShards" >> beam.Create(list(kept.shards)),
                     sample_truth=p | "NoSampleTruth" >> beam.Create([]), truth_beside_build=False,
                     written=(), dead_letters=())
    fresh = kept is None
    audit_sample = queries.audit_sample
    built = placement.shards | "BuildShardIndexes" >> BuildShardIndexes(
        output_dir=cfg.output, distance=cfg.distance, kind=cfg.index,
        params_for=functools.partial(scann_params, cfg), num_shards=placement.num_shards, gate=gate,
        num_queries=queries.num_queries if cfg.index == "auto" else None,
        audit_sample=audit_sample if fresh else None, top_k=cfg.top_k, exclude_self=cfg.mode == "dedup")
    infos = built.infos
    written = []
    if spill_dir is not None:
        written.append(p | "DeleteSpillDir" >> DeleteSpillDir(spill_dir=spill_dir, built=infos))
    static = index_static(cfg, model_fp)
    if not fresh:  # --append: rebuilt shards replace their kept versions; the kept duplicates stay
        infos = infos | "WithUntouchedKeptShards" >> CombineWithKeptShards(kept_shards=list(kept.shards))
        static["aliases_glob"] = kept.aliases_glob
    elif placement.collapsed:
        from transforms.placement.exact_duplicates import WriteAliases, aliases_glob

        written.append(placement.aliases | "KeepAliases" >> WriteAliases(f"{cfg.output}/indexes"))
        static["aliases_glob"] = aliases_glob(f"{cfg.output}/indexes")
    written.append(infos | "IndexManifest" >> WriteIndexManifest(
        index_root=f"{cfg.output}/indexes", static=static, dims=placement.dims, plan=placement.plan))
    return Index(infos=infos, sample_truth=built.sample_truth,
                 truth_beside_build=fresh and audit_sample is not None, written=tuple(written),
                 dead_letters=())
