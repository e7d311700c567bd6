"""Stage 3: query batches -> (tune the search effort) -> search the shards -> merge top-K -> put
collapsed duplicates back; and the recall audit of what came out.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import apache_beam as beam

from beam_jobs.config import MatchConfig
from transforms.common.schema import Role
from transforms.placement.exact_duplicates import ExpandAliases
from transforms.placement.place import ShardRecords, SplitQueryBatches
from transforms.quality.audit import AuditRecall
from transforms.quality.ground_truth import ExactSampleTopK, MergeSampleTruth, SampleQueries
from transforms.quality.tuning import TuneProbe, TuneSearch
from transforms.search.merge import MergeTopK
from transforms.search.search import SearchShards

__all__ = ["Queries", "SearchEffort", "batch_queries", "tune_search", "search_matches", "audit_recall"]

# Query rows per query shard (grouping removes duplicate query ids; a shard must fit a worker).
_QUERIES_PER_SHARD = 1_000_000


class Queries(NamedTuple):
    """The queries, batched for the search."""

    batches: beam.PCollection  # (batch_key, VectorBatch)
    num_queries: beam.PCollection  # singleton int
    # singleton VectorBatch the recall audit grades (None with --audit_sample 0: nothing is sampled)
    audit_sample: beam.PCollection | None
    dead_letters: tuple


class SearchEffort(NamedTuple):
    """The search effort tuned on a sample for --target_recall; singleton None when not tuned."""

    leaves: beam.PCollection  # {shard: {leaves_to_search, reorder}} from TuneSearch
    probe: beam.PCollection  # {probe, ...} from TuneProbe: the --probe_shards to use


def batch_queries(cfg: MatchConfig, corpora, placement) -> Queries:
    """Link queries are grouped into query shards (duplicate ids out) and batched; dedup queries are
    the placed candidates' shards, batched."""
    dead = ()
    if cfg.mode == "link":
        num_queries = corpora.passing[Role.QUERIES]
        sharded = corpora.vectors[Role.QUERIES] | "ShardQueries" >> ShardRecords(
            num_shards=num_queries | "QueryShardCount" >> beam.Map(
                lambda n: max(1, math.ceil(n / _QUERIES_PER_SHARD))),
            role=Role.QUERIES)
        source, dead = sharded.shards, (sharded.dead_letters,)
    else:
        num_queries, source = placement.num_candidates, placement.shards
    batches = source | "BatchQueries" >> SplitQueryBatches(batch_size=cfg.batch_size)
    sample = None
    if cfg.audit_sample:
        sample = batches | "SampleAuditQueries" >> SampleQueries(sample_size=cfg.audit_sample)
    return Queries(batches=batches, num_queries=num_queries, audit_sample=sample, dead_letters=dead)


def tune_search(p: beam.Pipeline, cfg: MatchConfig, queries: Queries, index, placement) -> SearchEffort:
    """With --target_recall: the cheapest ScaNN effort per shard (and, with a routing plan, the
    fewest shards to probe) reaching it on a sample of its own, so the audit does not grade the
    tuning on the queries it tuned on."""
    if cfg.target_recall is None:
        untuned = p | "Untuned" >> beam.Create([None])
        return SearchEffort(leaves=untuned, probe=untuned)
    exclude_self = cfg.mode == "dedup"
    sample = queries.batches | "SampleTuningQueries" >> SampleQueries(
        sample_size=cfg.audit_sample, salt="tune")
    truth = index.infos | "ExactTuningTopK" >> ExactSampleTopK(
        sample=sample, top_k=cfg.top_k, exclude_self=exclude_self)
    leaves = index.infos | "TuneSearch" >> TuneSearch(
        sample=sample, truth=truth, target_recall=cfg.target_recall,
        top_k=cfg.top_k, exclude_self=exclude_self, max_distance=cfg.max_distance)
    if not placement.routed:
        return SearchEffort(leaves=leaves, probe=p | "Unprobed" >> beam.Create([None]))
    probe = placement.plan | "TuneProbe" >> TuneProbe(  # tune --probe_shards on the same sample
        sample=sample, truth=truth, target_recall=cfg.target_recall,
        top_k=cfg.top_k, max_distance=cfg.max_distance)
    return SearchEffort(leaves=leaves, probe=probe)


def search_matches(cfg: MatchConfig, queries: Queries, index, effort: SearchEffort,
                   placement) -> beam.PCollection:
    """Query batches -> each batch's shards searched -> per-query top-K (exact distances), with
    collapsed exact duplicates put back. Returns PairBatches."""
    exclude_self = cfg.mode == "dedup"
    partials = queries.batches | "SearchShards" >> SearchShards(
        shards=index.infos, num_queries=queries.num_queries, top_k=cfg.top_k, exclude_self=exclude_self,
        keep_vectors=cfg.rescore == "wasserstein", plan=placement.plan, probe=cfg.probe_shards,
        search_overrides=effort.leaves, probe_choice=effort.probe)
    pairs = partials | "MergeTopK" >> MergeTopK(
        top_k=cfg.top_k, rescore=cfg.rescore, max_distance=cfg.max_distance, canonical=exclude_self)
    if not placement.collapsed:
        return pairs
    return pairs | "ExpandExactDuplicates" >> ExpandAliases(
        aliases=placement.aliases, mode=cfg.mode, top_k=cfg.top_k, distance=cfg.distance)


def audit_recall(cfg: MatchConfig, pairs: beam.PCollection, queries: Queries,
                 index) -> beam.PCollection | None:
    """The recall of the matches on the audit sample, against its exact top-K (found beside a fresh
    build, else brute-forced on the shards); None with --audit_sample 0."""
    if queries.audit_sample is None:
        return None
    if index.truth_beside_build:
        truth = index.sample_truth | "ExactAuditTopK" >> MergeSampleTruth(top_k=cfg.top_k)
    else:
        truth = index.infos | "ExactAuditTopK" >> ExactSampleTopK(
            sample=queries.audit_sample, top_k=cfg.top_k, exclude_self=cfg.mode == "dedup")
    return pairs | "AuditRecall" >> AuditRecall(
        truth=truth, top_k=cfg.top_k, mode=cfg.mode, max_distance=cfg.max_distance)
