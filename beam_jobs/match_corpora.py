"""The match job: wiring only. options -> frozen config -> build_pipeline(p, config) -> run().

read -> validate -> (preprocess -> embed) -> check dims -> shard candidates -> build indices ->
fan query batches out to shards -> search -> merge top-K (exact distances) -> write matches,
dead letters and the manifest. Each step is a named stage of ``beam_jobs.stages``; what is read and
decided before the pipeline exists is ``beam_jobs.launch``.

``python -m beam_jobs.match_corpora`` and the ``corpus-match`` console script run the same job.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions

from beam_jobs.config import MatchConfig
from beam_jobs.kept_index import KeptIndex
from beam_jobs.launch import launch_progress_totals, prepare
from beam_jobs.launch_checks import resolve_model_input
from beam_jobs.stages.index import build_indexes, place_candidates
from beam_jobs.stages.outputs import finish_run, run_counts, write_dead_letters, write_matches
from beam_jobs.stages.read import read_corpora, roles_read
from beam_jobs.stages.search import audit_recall, batch_queries, search_matches, tune_search
from transforms.common.schema import Role
from transforms.placement.spill import delete_spill_dir, new_spill_dir
from transforms.run.gate import GateIndexBuild
from transforms.run.manifest import BadRecordRatioError, RecallBelowMinimumError, WriteManifest

__all__ = ["build_pipeline", "run", "run_job", "main", "prepare", "PipelineOutputs", "LOCAL_RUNNERS",
           "resolve_model_input"]

_LOGGER = logging.getLogger(__name__)
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "FnApiRunner",
                 "PrismRunner", None)


class PipelineOutputs(NamedTuple):
    """The PCollections tests and the launcher look at."""

    pairs: beam.PCollection  # PairBatch
    shards: beam.PCollection  # ShardIndexInfo
    dead_letters: beam.PCollection  # DeadLetter
    manifest: beam.PCollection  # the manifest dict, once
    audit: beam.PCollection | None  # the recall audit dict, once (None when --audit_sample 0)


def build_pipeline(p: beam.Pipeline, cfg: MatchConfig, *, num_output_shards: int = 1,
                   static_manifest: dict[str, Any] | None = None, kept_index: KeptIndex | None = None,
                   spill_dir: str | None = None, scoring_buckets: int = 1,
                   mark_finished: bool = False) -> PipelineOutputs:
    """Builds the job's graph on ``p`` and returns the PCollections tests need.

    ``kept_index`` is the earlier run's index for --index_dir (``beam_jobs.kept_index``). With
    ``spill_dir`` (``run_job`` makes one per run), large pieces of the candidate vectors reach their
    shards through files there (see transforms.placement.spill), deleted once every shard is built;
    without it they travel in the shuffle. ``scoring_buckets`` is the pairwise scorer's join width
    (``transforms.scoring.score_pairs.scoring_buckets`` of the input size). With ``mark_finished``
    (a launch the launcher does not wait for) the graph's last step writes ``DIR/_SUCCESS`` once
    every output is written; a waiting launcher writes it itself after the run (see
    transforms.common.run_dir).
    """
    cfg = resolve_model_input(cfg)  # prepare() has done it; tests may call build_pipeline directly
    static = static_manifest or {}
    kept = kept_index
    corpora = read_corpora(p, cfg, roles=roles_read(cfg, reuses_index=kept is not None and not cfg.append),
                           expected_dims=kept.dims if kept is not None else None)
    placement = place_candidates(p, cfg, corpora, kept=kept, spill_dir=spill_dir)
    gate = p | "GateIndexBuild" >> GateIndexBuild(
        dead_letters=corpora.dead_letters + placement.dead_letters,
        rows_read=tuple(corpora.rows_read.values()), num_candidates=placement.num_candidates,
        num_queries=corpora.passing.get(Role.QUERIES), sizing=placement.sizing,
        max_bad_record_ratio=cfg.max_bad_record_ratio, max_bad_files=cfg.max_bad_files)
    queries = batch_queries(cfg, corpora, placement)
    index = build_indexes(p, cfg, placement, gate=gate.verdict, queries=queries, kept=kept,
                          spill_dir=spill_dir, model_fp=static.get("model_fingerprint"))
    effort = tune_search(p, cfg, queries, index, placement)
    pairs = search_matches(cfg, queries, index, effort, placement)
    audit = audit_recall(cfg, pairs, queries, index)
    matches = write_matches(cfg, pairs, corpora, placement, num_output_shards=num_output_shards,
                            scoring_buckets=scoring_buckets)

    stages = (corpora, placement, queries, index, matches)
    dead_letters = [d for s in stages for d in s.dead_letters] | "FlattenDeadLetters" >> beam.Flatten()
    manifest = p | "Manifest" >> WriteManifest(
        output_dir=cfg.output, static=static, counts=run_counts(corpora, gate, index, matches),
        dead_letter_counts=write_dead_letters(cfg, dead_letters, index), shards=index.infos,
        gate=gate.verdict, max_bad_record_ratio=cfg.max_bad_record_ratio, audit=audit,
        tuning=effort.leaves, plan=placement.plan, clusters=matches.clusters, min_recall=cfg.min_recall,
        probe_tuning=effort.probe, scoring=matches.scoring)
    finish_run(p, cfg, manifest, written=corpora.written + index.written + matches.written,
               mark_finished=mark_finished)
    return PipelineOutputs(pairs=matches.pairs, shards=index.infos, dead_letters=dead_letters,
                           manifest=manifest, audit=audit)


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
            result = finish_local_run(p.run, cfg, start, totals=launch_progress_totals(cfg, static))
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
