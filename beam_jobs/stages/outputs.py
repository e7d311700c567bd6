"""Stage 4: (score the pairs) -> write the matches -> (cluster them, dedup) and the run's record:
the dead letters, the counts the manifest reports, and the ``_SUCCESS`` marker of a launch that
does not wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import apache_beam as beam

from beam_jobs.config import MatchConfig
from transforms.clusters.cluster_pairs import ClusterPairs, WriteClusters
from transforms.io.write_matches import WriteDeadLetters, WriteMatches
from transforms.run.finish import MarkFinished

__all__ = ["Matches", "write_matches", "write_dead_letters", "run_counts", "finish_run"]


class Matches(NamedTuple):
    """What was written as the run's matches."""

    pairs: beam.PCollection  # PairBatch, or ScoredPairBatch when a scorer runs
    files: beam.PCollection  # (file, rows) per match file written
    scoring: beam.PCollection  # singleton dict: the scorer's fitted model (None without a scorer)
    clusters: beam.PCollection  # singleton dict: cluster statistics (None in link mode)
    written: tuple  # other steps that write outputs (the cluster assignments)
    dead_letters: tuple


def write_matches(cfg: MatchConfig, pairs: beam.PCollection, corpora, placement, *,
                  num_output_shards: int, scoring_buckets: int) -> Matches:
    """Scores the pairs (--scorer), writes them, and in dedup mode clusters them and writes the
    clusters. ``scoring_buckets``: the scorer's join width (``scoring_buckets`` of the input size)."""
    p = pairs.pipeline
    scoring = None
    if cfg.scorer != "none":
        from beam_jobs.launch_checks import read_scoring_model
        from transforms.scoring.score_pairs import ScorePairs

        scoring = pairs | "ScorePairs" >> ScorePairs(
            records=corpora.records, text_fields=cfg.text_fields, numeric_fields=cfg.numeric_fields,
            min_probability=cfg.min_probability, num_buckets=scoring_buckets, output_dir=cfg.output,
            model_json=read_scoring_model(cfg) if cfg.scoring_model else None)
        pairs = scoring.pairs
    files = pairs | "WriteMatches" >> WriteMatches(
        output_dir=cfg.output, output_format=cfg.output_format, num_shards=num_output_shards,
        unique_pairs=cfg.mode == "dedup", rank_by_weight=scoring is not None and cfg.mode == "link",
        scored=scoring is not None)
    model = scoring.model if scoring is not None else p | "Unscored" >> beam.Create([None])
    if cfg.mode != "dedup":
        return Matches(pairs=pairs, files=files, scoring=model,
                       clusters=p | "NoClusters" >> beam.Create([None]), written=(), dead_letters=())
    clustered = (pairs, placement.record_ids) | "ClusterPairs" >> ClusterPairs(
        max_cluster_size=cfg.max_cluster_size, max_rounds=cfg.cluster_max_rounds)
    assignments = clustered.assignments | "WriteClusters" >> WriteClusters(
        output_dir=cfg.output, num_shards=num_output_shards)
    return Matches(pairs=pairs, files=files, scoring=model, clusters=clustered.stats,
                   written=(assignments,), dead_letters=())


def write_dead_letters(cfg: MatchConfig, dead_letters: beam.PCollection, index) -> beam.PCollection:
    """Writes every dead letter once the indexes are built; returns the singleton {stage: count}."""
    # Written once the indexes are built, as before the build took the audit sample (and so the
    # query side) as an input: a run killed during the build leaves no dead letters that look final.
    return (dead_letters
            | "AfterIndexes" >> beam.Map(lambda letter, _: letter, beam.pvalue.AsList(index.infos))
            | "WriteDeadLetters" >> WriteDeadLetters(output_dir=cfg.output))


def run_counts(corpora, gate, index, matches: Matches) -> dict[str, beam.PCollection]:
    """The manifest's counts: rows read per corpus, pairs written, bad files, candidates indexed."""
    counts = {f"{role}_read": corpora.rows_read[role] for role in corpora.roles}
    counts["pairs_written"] = (matches.files | "RowsWritten" >> beam.Map(lambda kv: kv[1])
                               | "SumPairs" >> beam.CombineGlobally(sum))
    counts["bad_files"] = (gate.bad_files | "UniqueBadFiles" >> beam.Distinct()
                           | "CountBadFiles" >> beam.combiners.Count.Globally())
    counts["candidates_indexed"] = (index.infos | "ShardSizes" >> beam.Map(lambda s: s.size)
                                    | "SumIndexed" >> beam.CombineGlobally(sum))
    return counts


def finish_run(p: beam.Pipeline, cfg: MatchConfig, manifest: beam.PCollection, *,
               written: Sequence[beam.PCollection], mark_finished: bool) -> None:
    """With ``mark_finished`` (a launch the launcher does not wait for), the graph's last step
    writes ``DIR/_SUCCESS`` once every output is written; a waiting launcher writes it itself."""
    if mark_finished:
        # The manifest (written only when the run passed its checks) already waits for the matches,
        # dead letters, shards, audit and scoring model; the other writes are waited for here.
        p | "FinishRun" >> MarkFinished(output_dir=cfg.output, manifest=manifest, after=written)
