"""The match job: wiring only. options -> frozen config -> build_pipeline(p, config) -> run().

read -> validate -> (preprocess -> embed) -> check dims -> shard candidates -> build indices ->
fan query batches out to shards -> search -> merge top-K (exact distances) -> write matches,
dead letters and the manifest.

``python -m beam_jobs.match_corpora`` and the ``corpus-match`` console script run the same job.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import os
import sys
import time
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from beam_jobs.config import TREE_TRAINING, MatchConfig, config_from_options, scann_params_for
from transforms.clusters.cluster_pairs import ClusterPairs, WriteClusters
from transforms.common.dead_letters import is_bad_file, rows_rejected
from transforms.common.flags import DEFAULTS
from transforms.common.schema import Role
from transforms.index.append import CombineWithKeptShards, FindKeptIds, MergeWithKeptShards
from transforms.index.build import BuildShardIndexes
from transforms.index.index_manifest import WriteIndexManifest
from transforms.io.read_corpus import ReadCorpus
from transforms.io.validate import CheckDims, ValidateRecords
from transforms.io.write_matches import WriteDeadLetters, WriteMatches
from transforms.placement.duplicate_ids import FindDuplicateIds
from transforms.placement.exact_duplicates import ExpandAliases
from transforms.placement.place import ShardRecords, SplitQueryBatches
from transforms.placement.routing import PlaceCandidates, RoutingPlan, TrainRouting
from transforms.placement.sizing import shard_sizing
from transforms.placement.spill import delete_spill_dir, new_spill_dir
from transforms.quality.audit import AuditRecall
from transforms.quality.ground_truth import ExactSampleTopK, MergeSampleTruth, SampleQueries
from transforms.quality.tuning import TuneProbe, TuneSearch
from transforms.run.manifest import (
    BadRecordRatioError,
    RecallBelowMinimumError,
    WriteManifest,
    bad_files_verdict,
    bad_record_verdict,
    stack_versions,
)
from transforms.search.merge import MergeTopK
from transforms.search.search import SearchShards

__all__ = ["build_pipeline", "run", "main", "PipelineOutputs", "LOCAL_RUNNERS",
           "resolve_model_input"]

_LOGGER = logging.getLogger(__name__)
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "FnApiRunner",
                 "PrismRunner", None)
# Query rows per query shard (grouping removes duplicate query ids; a shard must fit a worker).
_QUERIES_PER_SHARD = 1_000_000
# k-means partitions per shard when routing: packing several per shard evens shard sizes out.
PARTITIONS_PER_SHARD = 4
# --routing auto routes by centroids only above this many shards.
AUTO_ROUTING_MIN_SHARDS = 4
# Match output bytes per file when --num_output_shards is not given (estimated from input size).
_OUTPUT_BYTES_PER_SHARD = 1 << 30


class PipelineOutputs(NamedTuple):
    """The PCollections tests and the launcher look at."""

    pairs: beam.PCollection  # PairBatch
    shards: beam.PCollection  # ShardIndexInfo
    dead_letters: beam.PCollection  # DeadLetter
    manifest: beam.PCollection  # the manifest dict, once
    audit: beam.PCollection | None  # the recall audit dict, once (None when --audit_sample 0)


def _role_label(role: str) -> str:
    return role.capitalize()


def _count(pcoll, label: str):
    return (pcoll
            | f"Len{label}" >> beam.Map(len)
            | f"Sum{label}" >> beam.CombineGlobally(sum))


class _GateFn(beam.DoFn):
    """Decides, before any index is built, whether too many records were rejected.

    It does not raise: a failed verdict makes the build skip every shard, the dead letters are still
    written, and WriteManifest fails the run after writing the manifest that explains why.
    """

    def __init__(self, max_ratio: float, max_bad_files: int = 0):
        self._max_ratio = max_ratio
        self._max_bad_files = max_bad_files

    def process(self, _: Any, rows_read: list[int], dead: int, candidates: int,
                sizing: dict, bad_files: list[str] = (), queries: int | None = None) -> Any:
        read = sum(rows_read)
        ok, message = bad_files_verdict(sorted(set(bad_files)), self._max_bad_files)
        if ok:
            ok, message = bad_record_verdict(read, dead, self._max_ratio)
        if ok and candidates == 0:
            ok, message = False, "no valid candidate records: nothing to match against"
        if ok and queries == 0:
            ok, message = False, "no valid query records: nothing to match"
        if ok and not sizing["ok"]:
            ok, message = False, sizing["message"]
        if ok:
            _LOGGER.info("validated: %d records read, %d rejected so far", read, dead)
        else:
            _LOGGER.error("stopping before the index build: %s", message)
        yield {"ok": ok, "message": message, "rows_read": read, "rejected": dead}


def _exact_params(shard_size: int) -> dict[str, Any]:
    return {}


def default_output_shards(cfg: MatchConfig) -> int:
    """--num_output_shards, else one file per ~1 GiB of query input (at least 1, at most 10000)."""
    if cfg.num_output_shards:
        return cfg.num_output_shards
    from apache_beam.io.filesystems import FileSystems

    pattern = cfg.queries if cfg.mode == "link" else cfg.input
    total = sum(m.size_in_bytes for r in FileSystems.match([pattern]) for m in r.metadata_list)
    return int(min(10_000, max(1, math.ceil(total / _OUTPUT_BYTES_PER_SHARD))))


class _IndexStage(NamedTuple):
    infos: beam.PCollection | None  # ShardIndexInfo of a reused index; None when building
    plan: beam.PCollection | None  # singleton RoutingPlan
    num_candidates: beam.PCollection  # singleton int
    cand_shards: beam.PCollection | None  # (shard, VectorBatch) to build; None when reusing
    sizing: beam.PCollection  # singleton shard_sizing dict
    num_shards: beam.PCollection | None  # singleton shard count (names the index directories)
    aliases: beam.PCollection | None  # AliasGroup of collapsed exact duplicates
    record_ids: beam.PCollection | None = None  # arrays of every valid candidate id (dedup clusters)


def _read_corpora(p, cfg: MatchConfig, roles: list[str], dead: list, writes: list | None = None):
    """read -> validate -> (preprocess -> embed) for each role.

    Returns (vectors, rows_read, records): ``records`` are the validated FeatureBatches per role when
    the job embeds (the pairwise scorer compares their fields), else {}.
    """
    globs = {Role.QUERIES: cfg.queries, Role.CANDIDATES: cfg.candidates, Role.INPUT: cfg.input}
    rows_read: dict[str, beam.PCollection] = {}
    vectors: dict[str, beam.PCollection] = {}
    for role in roles:
        label = _role_label(role)
        read = p | f"Read{label}" >> ReadCorpus(file_pattern=globs[role], input_format=cfg.input_format,
                                                role=role, batch_size=cfg.batch_size,
                                                binary_fields=(cfg.image_field,) if cfg.image_field
                                                else ())
        valid = read.batches | f"Validate{label}" >> ValidateRecords(
            role=role, id_field=cfg.id_field, vector_field=cfg.vector_field,
            text_fields=cfg.text_fields, numeric_fields=cfg.numeric_fields, distance=cfg.distance,
            max_id_length=cfg.max_id_length, image_field=cfg.image_field,
            # a raw-text or image model's embed step rejects records with nothing to embed
            allow_empty=cfg.embeds and not cfg.preprocesses)
        rows_read[role] = read.rows_read
        vectors[role] = valid.batches
        dead += [read.dead_letters, valid.dead_letters]
    records = dict(vectors) if cfg.embeds else {}
    if cfg.embeds:
        vectors = _preprocess_and_embed(cfg, vectors, dead, writes)
    return vectors, rows_read, records


def _preprocess_and_embed(cfg: MatchConfig, features: dict[str, beam.PCollection],
                          dead: list, writes: list | None = None) -> dict[str, beam.PCollection]:
    """FeatureBatch per role -> tf.Transform (analysed once over all corpora, or a saved
    transform_fn) -> the model (RunInference, batched) -> prepared VectorBatch per role.

    A model taking raw text or images skips tf.Transform: FeatureBatch -> its inputs
    (transforms.features.raw_inputs) -> the same RunInference handler."""
    from transforms.features.embed import EmbedRecords

    if not cfg.preprocesses:
        return _embed_raw(cfg, features, dead)
    from transforms.features.preprocess import AnalyzeAndTransformFeatures

    pre = features | "Preprocess" >> AnalyzeAndTransformFeatures(
        text_fields=cfg.text_fields, numeric_fields=cfg.numeric_fields,
        transform_fn_dir_out=f"{cfg.output}/transform_fn", transform_fn_dir_in=cfg.transform_fn_dir,
        temp_dir=f"{cfg.output}/tmp/tft")
    dead.append(pre.dead_letters)
    if writes is not None and pre.written is not None:
        writes.append(pre.written)
    vectors = {}
    for role in features:
        label = _role_label(role)
        embedded = getattr(pre, role) | f"Embed{label}" >> EmbedRecords(
            model_dir=cfg.model_dir, run_dir=cfg.output, text_fields=cfg.text_fields,
            numeric_fields=cfg.numeric_fields, min_batch_size=cfg.embed_min_batch_size,
            max_batch_size=cfg.embed_max_batch_size, call_rows=cfg.embed_batch_size)
        dead.append(embedded.dead_letters)
        vectors[role] = embedded.vectors | f"PrepareVectors{label}" >> beam.Map(
            _prepare_batch, cfg.distance)
    return vectors


def _embed_raw(cfg: MatchConfig, features: dict[str, beam.PCollection],
               dead: list) -> dict[str, beam.PCollection]:
    """FeatureBatch per role -> raw text or images -> a model of the user's own -> VectorBatch."""
    from transforms.features.embed import EmbedRecords
    from transforms.features.raw_inputs import PrepareModelInputs

    vectors = {}
    for role in features:
        label = _role_label(role)
        pooling, separator = cfg.text_feed
        prepared = features[role] | f"PrepareModelInputs{label}" >> PrepareModelInputs(
            model_input=cfg.model_input, text_fields=cfg.text_fields, image_field=cfg.image_field,
            text_pooling=pooling or DEFAULTS["text_pooling"], text_separator=separator or "")
        dead.append(prepared.dead_letters)
        embedded = prepared.batches | f"Embed{label}" >> EmbedRecords(
            model_dir=cfg.model_dir, min_batch_size=cfg.embed_min_batch_size,
            max_batch_size=cfg.embed_max_batch_size, call_rows=cfg.embed_batch_size)
        dead.append(embedded.dead_letters)
        vectors[role] = embedded.vectors | f"PrepareVectors{label}" >> beam.Map(
            _prepare_batch, cfg.distance)
    return vectors


def resolve_model_input(cfg: MatchConfig) -> MatchConfig:
    """The config with ``model_input`` read from ``--model_dir``'s serving signature (or Keras
    inputs), and the flags that depend on it checked: else ConfigError naming the flag and the
    signature's inputs. The built-in embedder and precomputed vectors have nothing to read."""
    import dataclasses

    from beam_jobs.config import ConfigError

    if not cfg.model_dir or not cfg.embeds or cfg.model_input is not None:
        return cfg
    from transforms.features.model_ref import ModelNotFoundError
    from transforms.features.model_signature import read_model_inputs
    from transforms.features.model_signature import resolve_model_input as resolve

    features = ()
    if cfg.text_fields or cfg.numeric_fields:
        from transforms.features.preprocess import output_feature_keys

        features = output_feature_keys(cfg.text_fields, cfg.numeric_fields)
    try:
        found = resolve(read_model_inputs(cfg.model_dir), model_dir=cfg.model_dir,
                        text_fields=cfg.text_fields, numeric_fields=cfg.numeric_fields,
                        image_field=cfg.image_field, feature_names=features)
    except (ModelNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if found.kind != "text":
        for name in ("text_pooling", "text_separator"):
            if getattr(cfg, name) is not None:
                raise ConfigError(f"--{name}: --model_dir {cfg.model_dir} takes {found.kind}, not one "
                                  "tf.string input of raw text")
    if found.kind == "text" and cfg.transform_fn_dir:
        raise ConfigError(f"--transform_fn_dir: --model_dir {cfg.model_dir} takes raw text; nothing is "
                          "preprocessed")
    _LOGGER.info("--model_dir %s takes %s", cfg.model_dir, found)
    return dataclasses.replace(cfg, model_input=found)


def _prepare_batch(batch, distance: str):
    """Model outputs -> vectors prepared for the distance (unit length for cosine)."""
    from transforms.common.schema import VectorBatch
    from transforms.common.vectors import prepare_vectors

    vecs, ok = prepare_vectors(batch.vectors, distance)
    if ok.all():
        return VectorBatch(batch.ids, vecs, batch.origins)
    # The embed step already rejected non-finite and zero vectors; nothing else can fail here.
    raise ValueError(f"{int((~ok).sum())} embedded vectors cannot be prepared for {distance}")


def _kept_aliases(p, kept: dict[str, Any]):
    """The alias map of a kept index's collapsed duplicates (None when it has none)."""
    from transforms.placement.exact_duplicates import ReadAliases

    glob = kept.get("aliases_glob")
    return (p | "KeptAliases" >> ReadAliases(glob)) if glob else None


def _build_index(p, cfg: MatchConfig, candidates, dims, cand_role: str, dead: list,
                 kept: dict[str, Any] | None, *, unchecked=None, num_candidates=None,
                 spill_dir: str | None = None) -> _IndexStage:
    """find duplicate ids -> (train routing) -> place candidates in shards -> (the builds follow).

    One shuffle places the candidates (large pieces of their vectors travel beside it as spill
    files under ``spill_dir``): placement by content hash (hash plan) or nearest centroid, with
    exact duplicates collapsed inside each shard, since identical vectors always meet in one shard.
    Nothing that placement waits for (the count from CheckDims' length histogram, the duplicate ids
    found on the batches before the dims check) depends on the dims filter's output, so the runner
    can fuse the filter into placement: the vectors are not materialised once more in between.

    With a kept index (--index_dir) nothing is built unless --append: then the new candidates go to
    the kept plan's shards and only those shards are rebuilt.
    """
    if kept is not None and not cfg.append:
        infos = p | "KeptShards" >> beam.Create(kept["shards"])
        plan = (p | "KeptPlan" >> beam.Create([kept["plan"]])) if kept["plan"] is not None else None
        total = p | "KeptSize" >> beam.Create([kept["candidates_indexed"]])
        sizing = p | "KeptSizing" >> beam.Create([{"ok": True, "message": "", "capacity": 0,
                                                  "num_shards": len(kept["shards"])}])
        return _IndexStage(infos, plan, total, None, sizing, None, _kept_aliases(p, kept))

    if num_candidates is None:
        num_candidates = _count(candidates, "Candidates")
    sizing = num_candidates | "SizeShards" >> beam.Map(
        lambda n, d: shard_sizing(n, d, fixed=cfg.num_shards, max_shard_vectors=cfg.max_shard_vectors,
                                  worker_memory_gb=cfg.worker_memory_gb),
        d=beam.pvalue.AsSingleton(dims))
    if kept is not None:  # --append: the kept index decides where candidates go
        sizing = p | "KeptSizing" >> beam.Create([{"ok": True, "message": "", "capacity": 0,
                                                  "num_shards": kept["num_shards"]}])
    # Duplicate ids are found by grouping ids alone; the rows they name are dropped on the way to
    # the shards, in the one shuffle that places the candidates (PlaceCandidates).
    duplicates = (candidates if unchecked is None else unchecked) | "FindDuplicateIds" >> FindDuplicateIds(
        num_records=num_candidates,
        num_shards=sizing | "ShardsForIdBuckets" >> beam.Map(lambda s: s.get("num_shards") or 1),
        dims=dims)
    if kept is not None:
        plan = p | "KeptPlan" >> beam.Create([kept["plan"]])
        kept_aliases = _kept_aliases(p, kept)
        # Ids the kept index holds in any shard (an append adds records; it does not update them).
        indexed = candidates | "FindKeptIds" >> FindKeptIds(kept_shards=kept["shards"],
                                                           aliases=kept_aliases)
        placed = candidates | "PlaceNewCandidates" >> PlaceCandidates(
            plan=plan, duplicates=duplicates, role=cand_role, indexed=indexed, spill_dir=spill_dir,
            min_spill_bytes=_spill_bytes(cfg))
        dead.append(placed.dead_letters)
        merged = placed.shards | "MergeWithKeptShards" >> MergeWithKeptShards(kept_shards=kept["shards"])
        dead.append(merged.dead_letters)
        return _IndexStage(None, plan, num_candidates, merged.shards, sizing,
                           p | "KeptShardCount" >> beam.Create([kept["num_shards"]]), kept_aliases)
    hash_plan_known = cfg.routing == "all" or (
        cfg.routing == "auto" and cfg.num_shards is not None and cfg.num_shards <= AUTO_ROUTING_MIN_SHARDS)
    if hash_plan_known:  # no centroids to train: skip the sample pass
        plan = sizing | "HashPlan" >> beam.Map(
            lambda s: RoutingPlan(np.zeros((0, 0), np.float32), cfg.distance, (), s["num_shards"],
                                  kind="hash"))
    else:
        plan = candidates | "TrainRouting" >> TrainRouting(
            sizing=sizing, distance=cfg.distance, num_shards=cfg.num_shards,
            partitions_per_shard=PARTITIONS_PER_SHARD,
            min_shards_to_route=0 if cfg.routing == "centroids" else AUTO_ROUTING_MIN_SHARDS)
    placed = candidates | "PlaceCandidates" >> PlaceCandidates(
        plan=plan, duplicates=duplicates, collapse=cfg.collapse_duplicates, role=cand_role,
        spill_dir=spill_dir, min_spill_bytes=_spill_bytes(cfg))
    dead.append(placed.dead_letters)
    num_shards = plan | "PlannedShardCount" >> beam.Map(lambda pl: pl.num_shards)
    return _IndexStage(None, plan, num_candidates, placed.shards, sizing, num_shards,
                       placed.aliases if cfg.collapse_duplicates else None, placed.record_ids)


def build_pipeline(p: beam.Pipeline, cfg: MatchConfig, *, num_output_shards: int = 1,
                   static_manifest: dict[str, Any] | None = None,
                   kept_index: dict[str, Any] | None = None,
                   spill_dir: str | None = None, scoring_buckets: int = 1,
                   mark_finished: bool = False) -> PipelineOutputs:
    """Builds the job's graph on ``p`` and returns the PCollections tests need.

    ``kept_index`` is the earlier run's index manifest (``read_index_manifest``) for --index_dir.
    With ``spill_dir`` (``run_job`` makes one per run), large pieces of the candidate vectors reach
    their shards through files there (see transforms.placement.spill), deleted once every shard is built;
    without it they travel in the shuffle. ``scoring_buckets`` is the pairwise scorer's join width
    (``transforms.scoring.score_pairs.scoring_buckets`` of the input size). With ``mark_finished``
    (a launch the launcher does not wait for) the graph's last step writes ``DIR/_SUCCESS`` once
    every output is written; a waiting launcher writes it itself after the run (see
    transforms.common.run_dir).
    """
    cfg = resolve_model_input(cfg)  # prepare() has done it; tests may call build_pipeline directly
    reuse = kept_index is not None and not cfg.append
    if cfg.mode == "dedup":
        roles = [Role.INPUT]
    else:
        roles = [Role.QUERIES] if reuse else [Role.QUERIES, Role.CANDIDATES]
    dead: list[beam.PCollection] = []
    writes: list[beam.PCollection] = []  # steps that write outputs; _SUCCESS waits for all of them
    vectors, rows_read, records = _read_corpora(p, cfg, roles, dead, writes)
    unchecked = vectors
    checked = tuple(vectors[r] for r in roles) | "CheckDims" >> CheckDims(
        expected=kept_index["dims"] if kept_index else None)
    vectors = dict(zip(roles, checked.batches, strict=True))
    passing = dict(zip(roles, checked.passing, strict=True))
    dims = checked.dims
    dead.append(checked.dead_letters)

    cand_role = Role.CANDIDATES if cfg.mode == "link" else Role.INPUT
    stage = _build_index(p, cfg, vectors.get(cand_role), dims, cand_role, dead, kept_index,
                         unchecked=unchecked.get(cand_role), num_candidates=passing.get(cand_role),
                         spill_dir=spill_dir)
    early = dead | "FlattenEarlyDeadLetters" >> beam.Flatten()
    # A file fault weighs the rows it lost; one whose row count is unknown is a bad file.
    early_dead = (early | "EarlyRowsRejected" >> beam.Map(rows_rejected)
                  | "CountEarlyDeadLetters" >> beam.CombineGlobally(sum))
    bad_files = (early | "BadFiles" >> beam.Filter(is_bad_file)
                 | "BadFilePaths" >> beam.Map(lambda letter: letter.source))
    query_side = ({"queries": beam.pvalue.AsSingleton(passing[Role.QUERIES])}
                  if cfg.mode == "link" else {})
    gate = (p | "GateOnce" >> beam.Create([None])
            | "CheckBadRecords" >> beam.ParDo(
                _GateFn(cfg.max_bad_record_ratio, cfg.max_bad_files),
                bad_files=beam.pvalue.AsList(bad_files), **query_side,
                rows_read=beam.pvalue.AsList(
                    tuple(rows_read.values()) | "FlattenRowsRead" >> beam.Flatten()),
                dead=beam.pvalue.AsSingleton(early_dead),
                candidates=beam.pvalue.AsSingleton(stage.num_candidates),
                sizing=beam.pvalue.AsSingleton(stage.sizing)))
    plan = stage.plan
    if cfg.mode == "link":
        num_queries = passing[Role.QUERIES]
        query_shards = vectors[Role.QUERIES] | "ShardQueries" >> ShardRecords(
            num_shards=num_queries | "QueryShardCount" >> beam.Map(
                lambda n: max(1, math.ceil(n / _QUERIES_PER_SHARD))),
            role=Role.QUERIES)
        dead.append(query_shards.dead_letters)
        query_source = query_shards.shards
    else:
        num_queries = stage.num_candidates
        query_source = stage.cand_shards
    query_batches = query_source | "BatchQueries" >> SplitQueryBatches(batch_size=cfg.batch_size)
    exclude_self = cfg.mode == "dedup"
    audit_sample = built_truth = None
    if cfg.audit_sample:
        audit_sample = query_batches | "SampleAuditQueries" >> SampleQueries(
            sample_size=cfg.audit_sample)
    if reuse:
        infos = stage.infos
    else:
        params_for = (functools.partial(scann_params_for, cfg) if cfg.index != "exact"
                      else _exact_params)
        # A fresh index brute-forces the audit sample in each shard beside its build (a core is
        # idle while ScaNN completes the index); an --append also audits kept shards, after.
        fresh = kept_index is None
        built = stage.cand_shards | "BuildShardIndexes" >> BuildShardIndexes(
            output_dir=cfg.output, distance=cfg.distance, kind=cfg.index, params_for=params_for,
            num_shards=stage.num_shards, gate=gate,
            num_queries=(passing[Role.QUERIES] if cfg.mode == "link" else stage.num_candidates)
            if cfg.index == "auto" else None,
            audit_sample=audit_sample if fresh else None, top_k=cfg.top_k, exclude_self=exclude_self)
        infos = built.infos
        if fresh and audit_sample is not None:
            built_truth = built.sample_truth
        if spill_dir is not None:
            writes.append(p | "SpillDir" >> beam.Create([spill_dir])
                          | "DeleteSpillDir" >> beam.Map(_delete_spill_dir,
                                                         built=beam.pvalue.AsList(infos)))
        if kept_index is not None:  # --append: rebuilt shards replace their kept versions
            infos = infos | "WithUntouchedKeptShards" >> CombineWithKeptShards(
                kept_shards=kept_index["shards"])
        index_static = _index_static(cfg, (static_manifest or {}).get("model_fingerprint"))
        if kept_index is not None:  # --append: the kept duplicates stay where they were written
            index_static["aliases_glob"] = kept_index.get("aliases_glob")
        elif stage.aliases is not None:
            from transforms.placement.exact_duplicates import WriteAliases, aliases_glob

            writes.append(stage.aliases | "KeepAliases" >> WriteAliases(f"{cfg.output}/indexes"))
            index_static["aliases_glob"] = aliases_glob(f"{cfg.output}/indexes")
        writes.append(infos | "IndexManifest" >> WriteIndexManifest(
            index_root=f"{cfg.output}/indexes", static=index_static, dims=dims, plan=plan))


    exclude_self = cfg.mode == "dedup"
    overrides = probe_choice = None
    if cfg.target_recall is not None:
        # A sample of its own, so the audit does not grade the tuning on the queries it tuned on.
        tune_sample = query_batches | "SampleTuningQueries" >> SampleQueries(
            sample_size=cfg.audit_sample, salt="tune")
        tune_truth = infos | "ExactTuningTopK" >> ExactSampleTopK(
            sample=tune_sample, top_k=cfg.top_k, exclude_self=exclude_self)
        overrides = infos | "TuneSearch" >> TuneSearch(
            sample=tune_sample, truth=tune_truth, target_recall=cfg.target_recall,
            top_k=cfg.top_k, exclude_self=exclude_self, max_distance=cfg.max_distance)
        if plan is not None:  # centroid routing: tune --probe_shards on the same sample
            probe_choice = plan | "TuneProbe" >> TuneProbe(
                sample=tune_sample, truth=tune_truth, target_recall=cfg.target_recall,
                top_k=cfg.top_k, max_distance=cfg.max_distance)
    partials = query_batches | "SearchShards" >> SearchShards(
        shards=infos, num_queries=num_queries, top_k=cfg.top_k, exclude_self=exclude_self,
        keep_vectors=cfg.rescore == "wasserstein", plan=plan, probe=cfg.probe_shards,
        search_overrides=overrides, probe_choice=probe_choice)
    pairs = partials | "MergeTopK" >> MergeTopK(
        top_k=cfg.top_k, rescore=cfg.rescore, max_distance=cfg.max_distance,
        canonical=exclude_self)
    if stage.aliases is not None:
        pairs = pairs | "ExpandExactDuplicates" >> ExpandAliases(
            aliases=stage.aliases, mode=cfg.mode, top_k=cfg.top_k, distance=cfg.distance)
    audit = None
    if cfg.audit_sample:
        if built_truth is not None:
            truth = built_truth | "ExactAuditTopK" >> MergeSampleTruth(top_k=cfg.top_k)
        else:
            truth = infos | "ExactAuditTopK" >> ExactSampleTopK(
                sample=audit_sample, top_k=cfg.top_k, exclude_self=exclude_self)
        audit = pairs | "AuditRecall" >> AuditRecall(
            truth=truth, top_k=cfg.top_k, mode=cfg.mode, max_distance=cfg.max_distance)
    scoring = None
    if cfg.scorer != "none":
        from transforms.scoring.score_pairs import ScorePairs

        scoring = pairs | "ScorePairs" >> ScorePairs(
            records=records, text_fields=cfg.text_fields, numeric_fields=cfg.numeric_fields,
            min_probability=cfg.min_probability, num_buckets=scoring_buckets, output_dir=cfg.output,
            model_json=_read_scoring_model(cfg) if cfg.scoring_model else None)
        pairs = scoring.pairs
    written = pairs | "WriteMatches" >> WriteMatches(
        output_dir=cfg.output, output_format=cfg.output_format, num_shards=num_output_shards,
        unique_pairs=exclude_self, rank_by_weight=scoring is not None and cfg.mode == "link",
        scored=scoring is not None)

    clusters = None
    if cfg.mode == "dedup":
        clustered = (pairs, stage.record_ids) | "ClusterPairs" >> ClusterPairs(
            max_cluster_size=cfg.max_cluster_size, max_rounds=cfg.cluster_max_rounds)
        writes.append(clustered.assignments | "WriteClusters" >> WriteClusters(
            output_dir=cfg.output, num_shards=num_output_shards))
        clusters = clustered.stats

    all_dead = dead | "FlattenDeadLetters" >> beam.Flatten()
    # Written once the indexes are built, as before the build took the audit sample (and so the
    # query side) as an input: a run killed during the build leaves no dead letters that look final.
    dead_counts = (all_dead
                   | "AfterIndexes" >> beam.Map(lambda letter, _: letter, beam.pvalue.AsList(infos))
                   | "WriteDeadLetters" >> WriteDeadLetters(output_dir=cfg.output))
    counts = {f"{role}_read": rows_read[role] for role in roles}
    counts["pairs_written"] = (written | "RowsWritten" >> beam.Map(lambda kv: kv[1])
                               | "SumPairs" >> beam.CombineGlobally(sum))
    counts["bad_files"] = (bad_files | "UniqueBadFiles" >> beam.Distinct()
                           | "CountBadFiles" >> beam.combiners.Count.Globally())
    counts["candidates_indexed"] = (infos | "ShardSizes" >> beam.Map(lambda s: s.size)
                                    | "SumIndexed" >> beam.CombineGlobally(sum))
    manifest = p | "Manifest" >> WriteManifest(
        output_dir=cfg.output, static=static_manifest or {}, counts=counts,
        dead_letter_counts=dead_counts, shards=infos, gate=gate,
        max_bad_record_ratio=cfg.max_bad_record_ratio, audit=audit, tuning=overrides, plan=plan,
        clusters=clusters, min_recall=cfg.min_recall, probe_tuning=probe_choice,
        scoring=None if scoring is None else scoring.model)
    if mark_finished:
        # The manifest (written only when the run passed its checks) already waits for the matches,
        # dead letters, shards, audit and scoring model; the other writes are waited for here.
        (p | "FinishOnce" >> beam.Create([None])
         | "MarkFinished" >> beam.Map(_mark_finished, cfg.output, manifest=beam.pvalue.AsList(manifest),
                                      **{f"written_{i}": beam.pvalue.AsList(pc)
                                         for i, pc in enumerate(writes)}))
    return PipelineOutputs(pairs=pairs, shards=infos, dead_letters=all_dead, manifest=manifest,
                           audit=audit)


def _mark_finished(_: Any, output_dir: str, **written: Any) -> None:
    """The graph's last step on a runner the launcher does not wait for: DIR/_SUCCESS."""
    from transforms.common.run_dir import mark_finished

    mark_finished(output_dir)


def _spill_bytes(cfg: MatchConfig) -> int:
    return max(1, round(cfg.spill_min_mb * (1 << 20)))


def _delete_spill_dir(spill_dir: str, built: list) -> None:
    """Runs once every shard is built (``built`` is their ShardIndexInfos): the spill files are spent."""
    delete_spill_dir(spill_dir)
    _LOGGER.info("deleted spill directory %s after building %d shards", spill_dir, len(built))


def _index_static(cfg: MatchConfig, model_fp: str | None = None) -> dict[str, Any]:
    """What a later --index_dir run must agree with."""
    if cfg.embeds and model_fp is None:
        from transforms.features.model_ref import model_fingerprint

        model_fp = model_fingerprint(cfg.model_dir, cfg.text_fields, cfg.numeric_fields)
    return {"format_version": 1, "distance": cfg.distance, "index": cfg.index, "id_field": cfg.id_field,
            "vector_field": None if cfg.embeds else cfg.vector_field,
            "text_fields": list(cfg.text_fields), "numeric_fields": list(cfg.numeric_fields),
            "image_field": cfg.image_field,
            "model_dir": cfg.model_dir, "model_fingerprint": model_fp if cfg.embeds else None,
            "model_input": cfg.model_input._asdict() if cfg.model_input else None,
            "text_pooling": cfg.text_feed[0], "text_separator": cfg.text_feed[1],
            "transform_fn_dir": cfg.transform_fn_dir,
            # Where this run's preprocessing lives: a later --index_dir run must embed with it.
            "transform_fn_used": (cfg.transform_fn_dir or f"{cfg.output}/transform_fn")
            if cfg.preprocesses else None,
            # How ScaNN shards' trees were trained (absent: ScaNN's k-means++, before issue #14): an
            # --append rebuilds some shards, so it must not mix schemes within one index.
            "tree_training": TREE_TRAINING,
            "versions": stack_versions()}


def check_kept_index(cfg: MatchConfig, kept: dict[str, Any], model_fp: str | None = None) -> None:
    """A kept index must have been built with the same distance, features and model (by content
    fingerprint, see transforms.features.model_ref): else ConfigError."""
    from beam_jobs.config import ConfigError

    for flag, ours in (("distance", cfg.distance), ("id_field", cfg.id_field),
                       ("text_fields", list(cfg.text_fields)),
                       ("numeric_fields", list(cfg.numeric_fields)),
                       ("image_field", cfg.image_field),
                       # how raw text becomes the model's input changes the vectors too
                       ("text_pooling", cfg.text_feed[0]), ("text_separator", cfg.text_feed[1])):
        if kept.get(flag) != ours:
            raise ConfigError(f"--index_dir {cfg.index_dir} was built with --{flag} {kept.get(flag)!r}; "
                              f"this run has --{flag} {ours!r}")
    scann_shards = any(getattr(s, "kind", None) == "scann" for s in kept.get("shards", ()))
    if cfg.append and scann_shards and kept.get("tree_training", "scann_kmeans++") != TREE_TRAINING:
        raise ConfigError(f"--append: --index_dir {cfg.index_dir} was built by an older version whose "
                          f"ScaNN trees were trained by {kept.get('tree_training', 'scann_kmeans++')}; "
                          f"this version trains them by {TREE_TRAINING} and would mix the two in one "
                          "index: rebuild the index without --index_dir (searching it as it is, "
                          "without --append, is fine)")
    if not cfg.embeds:
        return
    if kept.get("model_fingerprint") is None:  # an index from before fingerprints: compare paths
        if kept.get("model_dir") != cfg.model_dir:
            raise ConfigError(f"--index_dir {cfg.index_dir} was built with --model_dir "
                              f"{kept.get('model_dir')!r}; this run has --model_dir {cfg.model_dir!r}: "
                              "vectors from different models cannot be compared")
        return
    if kept["model_fingerprint"] != model_fp:
        raise ConfigError(
            f"--model_dir {cfg.model_dir or '(the built-in embedder)'} is not the model --index_dir "
            f"{cfg.index_dir} was built with ({kept.get('model_dir') or 'the built-in embedder'}): "
            f"fingerprint {model_fp} != {kept['model_fingerprint']}; vectors from different models "
            "cannot be compared (rebuild the index, or use the model it was built with)")


def prepare(argv: list[str] | None):
    """Parses flags and checks everything that can be checked before a pipeline exists.

    Returns (options, config, static manifest facts, number of match files, kept index or None,
    the pairwise scorer's join buckets).
    """
    from beam_jobs.config import ConfigError
    from beam_jobs.dated_paths import expand_date_flags
    from beam_jobs.options import check_known_flags
    from transforms.io.read_corpus import check_glob_matches

    # Nightly runs: --output gs://b/runs/{date} -> the launch's UTC date (as the template shim does).
    argv = expand_date_flags(sys.argv[1:] if argv is None else argv)
    check_known_flags(argv)  # a misspelled flag is an error, not a warning and a run with defaults
    options = PipelineOptions(argv)
    cfg = config_from_options(options)
    for flag in ("queries", "candidates", "input"):
        if getattr(cfg, flag):
            try:
                check_readable_files(getattr(cfg, flag), flag)
                check_glob_matches(getattr(cfg, flag), flag)
            except ValueError as e:  # names the flag and the glob or file
                raise ConfigError(str(e)) from None
    check_output_path(cfg.output)
    model_fp = None
    if cfg.embeds:
        from beam_jobs.config import ConfigError
        from transforms.features.model_ref import ModelNotFoundError, model_fingerprint

        try:
            model_fp = model_fingerprint(cfg.model_dir, cfg.text_fields, cfg.numeric_fields)
        except ModelNotFoundError as e:
            raise ConfigError(str(e)) from None
        cfg = resolve_model_input(cfg)
    kept = None
    if cfg.index_dir:
        from transforms.index.index_manifest import read_index_manifest

        kept = read_index_manifest(cfg.index_dir)
        kept["num_shards"] = (kept["plan"].num_shards if kept["plan"] is not None
                              else len(kept["shards"]))
        check_kept_index(cfg, kept, model_fp)
        if cfg.preprocesses and not cfg.transform_fn_dir:
            # New queries must be preprocessed exactly as the kept candidates were.
            import dataclasses

            cfg = dataclasses.replace(cfg, transform_fn_dir=kept["transform_fn_used"])
    _check_output_dir(cfg)
    from beam_jobs.launch import input_bounds

    bounds = input_bounds(cfg)
    cfg, decided = _decide_index_at_launch(cfg, options, bounds)
    if cfg.mode == "dedup" and cfg.max_distance is None:
        _LOGGER.warning("dedup without --max_distance (or --calibration): every record is paired "
                        "with its %d nearest records, so the clusters connect nearly everything; "
                        "choose a threshold with `corpus-match calibrate`", cfg.top_k)
    num_output_shards = default_output_shards(cfg)
    buckets = 1
    if cfg.scorer != "none":
        from transforms.scoring.score_pairs import scoring_buckets

        buckets = scoring_buckets(_input_bytes(cfg))
    if cfg.scoring_model:
        _read_scoring_model(cfg)  # a bad file fails here, before any pipeline exists
    static = {
        "mode": cfg.mode,
        "flags": cfg.to_dict(),
        "num_output_shards": num_output_shards,
        "versions": stack_versions(),
        "runner": options.view_as(StandardOptions).runner or "DirectRunner",
    }
    if model_fp is not None:
        static["model_fingerprint"] = model_fp
    if decided is not None:
        static["index_decided_at_launch"] = decided.to_dict()
    if bounds.queries is not None and bounds.candidates is not None:
        static["input_records_at_most"] = bounds.to_dict()
    return options, cfg, static, num_output_shards, kept, buckets


def _decide_index_at_launch(cfg: MatchConfig, options: PipelineOptions, bounds):
    """(config, LaunchDecision or None): with the built-in embedder (its dims are known) and input
    bounds that already settle ``--index auto`` as exact for the one shard there will be
    (beam_jobs.launch), the index is exact and one shard from the start, so the graph has no search
    tuning (the default --target_recall has nothing to tune on brute force) and no routing sample
    pass. The matches are those ``auto`` gives; the manifest says why."""
    import dataclasses

    from beam_jobs.launch import exact_at_launch
    from transforms.index.build import EXACT_MAX_WORK

    raw = options.get_all_options()
    if not cfg.embeds or cfg.model_dir or raw.get("target_recall") is not None:
        return cfg, None
    from transforms.features.default_embedder import embedding_dim

    decided = exact_at_launch(cfg, embedding_dim(tuple(cfg.text_fields), tuple(cfg.numeric_fields)),
                              EXACT_MAX_WORK, bounds)
    if decided is None:
        return cfg, None
    _LOGGER.info("index exact from the start: at most %d queries x %d candidates x %d dims = %.3g <= "
                 "%.3g (--index auto would choose exact for the one shard)", decided.queries_at_most,
                 decided.candidates_at_most, decided.dims, decided.work_at_most, decided.max_work)
    return dataclasses.replace(cfg, index="exact", num_shards=1, target_recall=None), decided


def _progress_totals(cfg: MatchConfig, static: dict) -> dict[str, int]:
    from beam_jobs.launch import InputBounds, progress_totals

    bounds = static.get("input_records_at_most")
    if bounds is None:
        return {}
    return progress_totals(cfg, InputBounds(bounds["queries_at_most"], bounds["candidates_at_most"]))


def _check_output_dir(cfg: MatchConfig) -> None:
    """--output must be empty or new, or hold a run that --overwrite replaces; a kept index must come
    from a run that is not still running (else ConfigError; see transforms.common.run_dir)."""
    from beam_jobs.config import ConfigError
    from transforms.common.run_dir import check_output_dir, inspect_output_dir, kept_index_run_dir

    check_output_dir(cfg.output, overwrite=cfg.overwrite, inputs={
        flag: getattr(cfg, flag) for flag in ("queries", "candidates", "input", "index_dir",
                                              "transform_fn_dir", "model_dir", "scoring_model",
                                              "calibration")})
    if cfg.index_dir:
        kept_run = inspect_output_dir(kept_index_run_dir(cfg.index_dir))
        if kept_run.exit_state == "running" and not kept_run.finished:
            raise ConfigError(f"--index_dir {cfg.index_dir}: the run that wrote it has not finished "
                              "(exit_state running: still running, or killed)")


def _is_local(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.get_scheme(path) in (None, "file")


def check_readable_files(pattern: str, flag: str) -> None:
    """Every local file a corpus glob matches can be opened for reading (else ValueError naming the
    flag and the file): a directory or an unreadable file found at the pipeline's read step would
    fail the run after it started. Remote globs are left to the read (one request per file)."""
    if not _is_local(pattern):
        return
    from apache_beam.io.filesystems import FileSystems

    if os.path.islink(pattern) and not os.path.exists(pattern):
        raise ValueError(f"--{flag}: {pattern} is a broken symlink (to {os.readlink(pattern)})")
    for found in FileSystems.match([pattern])[0].metadata_list:
        path = found.path
        if os.path.isdir(path):
            raise ValueError(f"--{flag}: {path} is a directory, not a corpus file")
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ValueError(f"--{flag}: cannot read {path}: {e.strerror or e}") from None


def check_output_path(output: str) -> None:
    """A local --output must be a directory or creatable as one, in a writable place (else
    ConfigError naming --output), so that the run does not fail at its first write."""
    from beam_jobs.config import ConfigError

    if not _is_local(output):
        return
    path = os.path.abspath(output.removeprefix("file://"))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--output {output}: exists and is not a directory")
    existing = path
    while not os.path.exists(existing):  # the nearest ancestor that exists is where mkdir starts
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"--output {output}: cannot be created, {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {output}: {existing} is not writable")


@functools.lru_cache(maxsize=4)
def _read_scoring_model(cfg: MatchConfig) -> str:
    """The --scoring_model file's text, checked against this job's fields (else ConfigError); read
    once per config (prepare checks it, build_pipeline passes it on)."""
    from beam_jobs.config import ConfigError
    from transforms.common.artifacts import read_text
    from transforms.scoring.fellegi_sunter import FellegiSunterModel
    from transforms.scoring.score_pairs import DISTANCE_FIELD

    try:
        text = read_text(cfg.scoring_model)
        model = FellegiSunterModel.from_json(text)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--scoring_model {cfg.scoring_model}: not a scoring model ({e})") from None
    want = tuple(cfg.text_fields) + tuple(cfg.numeric_fields) + (DISTANCE_FIELD,)
    if model.fields != want or not model.fit.get("distance_cuts"):
        raise ConfigError(f"--scoring_model {cfg.scoring_model} compares {list(model.fields)}; this job "
                          f"compares {list(want)} (--text_fields, --numeric_fields)")
    return text


def _input_bytes(cfg: MatchConfig) -> int:
    from apache_beam.io.filesystems import FileSystems

    patterns = [g for g in (cfg.queries, cfg.candidates, cfg.input) if g]
    return sum(m.size_in_bytes for r in FileSystems.match(patterns) for m in r.metadata_list)


def run(argv: list[str] | None = None, *, wait: bool | None = None):
    """Builds and runs the job. Waits only for local runners (a Flex Template launch returns at once).

    Returns the PipelineResult. Raises ConfigError (a ValueError naming the flag) before anything runs.
    """
    return run_job(argv, wait=wait)[0]


def run_job(argv: list[str] | None = None, *, wait: bool | None = None, prepared: tuple | None = None):
    """Like :func:`run`, returning (PipelineResult, MatchConfig, waited). ``prepared`` is what
    :func:`prepare` returned for ``argv``, when the caller has called it already."""
    options, cfg, static, num_output_shards, kept, buckets = prepared or prepare(argv)
    runner = options.view_as(StandardOptions).runner
    local = runner in LOCAL_RUNNERS
    if wait is None:
        wait = local
    p = beam.Pipeline(options=options)
    spill_dir = None
    if cfg.spill_min_mb > 0 and (kept is None or cfg.append):
        spill_dir = new_spill_dir(options.view_as(GoogleCloudOptions).temp_location, cfg.output)
    build_pipeline(p, cfg, num_output_shards=num_output_shards, static_manifest=static,
                   kept_index=kept, spill_dir=spill_dir, scoring_buckets=buckets,
                   mark_finished=not wait)
    from beam_jobs.summary import finish_local_run
    from transforms.common.run_dir import claim_output_dir

    # The old run's outputs go (with --overwrite) and a "running" manifest is written before the
    # pipeline runs: a run that dies leaves nothing that looks finished.
    claim_output_dir(cfg.output, static, overwrite=cfg.overwrite)
    start = time.time()
    if wait:
        # Local runners may run the whole pipeline inside run(); both calls are watched.
        try:
            result = finish_local_run(p.run, cfg, start, totals=_progress_totals(cfg, static))
        finally:  # a failed local run leaves no spill files behind either
            if spill_dir is not None:
                delete_spill_dir(spill_dir)
    else:
        try:
            result = p.run()
        except Exception as e:  # the submission failed: say so instead of "running"
            from transforms.run.manifest import update_manifest

            update_manifest(cfg.output, exit_state="failed", error=f"{type(e).__name__}: {e}"[:2000])
            raise
    return result, cfg, wait


def main(argv: list[str] | None = None, *, verbose: bool = False) -> int:
    """Runs the match job and prints a short summary. Returns the process exit code: 0 done, 2 a
    configuration error (found before the pipeline runs), 1 a failed run; each failure is one line
    on stderr naming the flag or file (with the traceback too when ``verbose``).

    The console entry (``beam_jobs.cli``) handles ``--help``, ``--verbose`` and logging first.
    """
    from beam_jobs.config import ConfigError
    from beam_jobs.summary import print_summary

    if not logging.getLogger().handlers:  # called directly rather than through beam_jobs.cli
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    started = False
    try:
        options, cfg, static, num_output_shards, kept, buckets = prepare(argv)
        started = True
        result, cfg, waited = run_job(argv, prepared=(options, cfg, static, num_output_shards, kept,
                                                      buckets))
    except ConfigError as e:
        return _fail(2, f"configuration error: {e}", verbose)
    except OSError as e:  # a file or directory a flag names, found unusable before the pipeline ran
        if started:
            return _fail(1, f"pipeline failed: {type(e).__name__}: {e}", verbose)
        return _fail(2, f"configuration error: {e}", verbose)
    except (BadRecordRatioError, RecallBelowMinimumError) as e:
        return _fail(1, f"failed: {e}", verbose)
    except Exception as e:  # a failed pipeline: the manifest already records it
        return _fail(1, f"pipeline failed: {type(e).__name__}: {e}", verbose)
    code = print_summary(result, cfg, waited)
    # Nothing is freed after this: without the freeze, the interpreter's last collections walk
    # every TensorFlow and Beam object at exit (about 0.9 s of a 5,000 x 5,000 job's 18 s).
    gc.freeze()
    return code


def _fail(code: int, message: str, verbose: bool) -> int:
    if verbose:
        import traceback

        traceback.print_exc()
    print(f"corpus-match: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    from beam_jobs.cli import job_main

    sys.exit(job_main())
