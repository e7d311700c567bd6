"""Launch: everything the match job reads and decides before any pipeline exists.

:func:`prepare` parses the flags into the frozen config and does the launch-time I/O: it checks the
corpus globs and the output directory (``beam_jobs.launch_checks``), fingerprints the model, reads
and checks a kept index (``beam_jobs.kept_index``) and the scoring model, sizes the output, bounds
the inputs and settles what it can of the index; it returns a :class:`Launch` for
``beam_jobs.match_corpora.build_pipeline``. Nothing here builds a graph.

:func:`record_count_bound` bounds how many records a corpus glob can hold without reading the
records: a parquet file's footer says how many rows it has; an uncompressed local csv or jsonl file
holds at most one record per line. The match job uses the bound to decide, at launch, what the
``--index auto`` rule would decide per shard once the counts are known (:func:`exact_at_launch`),
so a job that will brute-force anyway builds no tuning branch (the sample passes, an exact sample
top-K and the effort search that would find nothing to tune) and no routing sample pass. The same
bounds give a local run's progress line its totals (records read and embedded, with an ETA):
:func:`input_bounds` computes them once per launch.

Only cheap, certain bounds: gzip, tfrecord, remote files and local text files past
``_MAX_SCANNED_BYTES`` in all give None (no decision: the pipeline decides as before).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from typing import Any, NamedTuple

from beam_jobs.config import MatchConfig
from transforms.common.flags import DEFAULTS

__all__ = ["InputBounds", "Launch", "LaunchDecision", "default_output_shards", "exact_at_launch",
           "input_bounds", "input_bytes", "prepare", "progress_totals", "launch_progress_totals",
           "record_count_bound"]

_LOGGER = logging.getLogger(__name__)
# Match output bytes per file when --num_output_shards is not given (estimated from input size).
_OUTPUT_BYTES_PER_SHARD = 1 << 30

_MAX_SCANNED_BYTES = 256 << 20  # newline counting reads every byte: about 0.1 s per 100 MB
_CHUNK = 8 << 20


class InputBounds(NamedTuple):
    """At most how many records the job reads as queries and as candidates (None: not known; in
    dedup both are the one corpus; candidates is 0 when a kept index is searched without --append)."""

    queries: int | None
    candidates: int | None

    def to_dict(self) -> dict:
        return {"queries_at_most": self.queries, "candidates_at_most": self.candidates}


class LaunchDecision(NamedTuple):
    """Why the index kind was settled at launch (recorded in the manifest)."""

    queries_at_most: int
    candidates_at_most: int
    dims: int
    work_at_most: float
    max_work: float

    def to_dict(self) -> dict:
        return {"index": "exact", "queries_at_most": self.queries_at_most,
                "candidates_at_most": self.candidates_at_most, "dims": self.dims,
                "work_at_most": self.work_at_most, "max_work": self.max_work}


def _local_path(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def _lines(path: str) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def record_count_bound(pattern: str, input_format: str = DEFAULTS["input_format"]) -> int | None:
    """At most how many records the files matching ``pattern`` hold, or None when that is not
    cheaply certain (see the module docstring)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.io.read_corpus import format_for_path

    total, scanned = 0, 0
    for meta in FileSystems.match([pattern])[0].metadata_list:
        local = _local_path(meta.path)
        fmt = format_for_path(meta.path) if input_format == "auto" else input_format
        if local is None or meta.path.lower().endswith(".gz") or fmt not in ("parquet", "csv", "jsonl"):
            return None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                total += pq.ParquetFile(local).metadata.num_rows
            except Exception:  # noqa: BLE001 - a bad file is the readers' to report
                return None
            continue
        scanned += os.path.getsize(local)
        if scanned > _MAX_SCANNED_BYTES:
            return None
        total += _lines(local)  # a header line or a quoted newline only loosens the bound
    return total


def input_bounds(cfg) -> InputBounds:
    """The record-count bounds of the job's corpora (:func:`record_count_bound` of each glob)."""
    if cfg.mode == "dedup":
        bound = record_count_bound(cfg.input, cfg.input_format)
        return InputBounds(bound, bound)
    queries = record_count_bound(cfg.queries, cfg.input_format)
    if cfg.index_dir and not cfg.append:
        return InputBounds(queries, 0)  # the kept index holds the candidates: none are read
    return InputBounds(queries, record_count_bound(cfg.candidates, cfg.input_format))


def progress_totals(cfg, bounds: InputBounds) -> dict[str, int]:
    """Totals for the progress line's "records read" and "embedded" stages, where the bounds give
    them: every row read counts once (a dedup corpus is read once), and an embedding job embeds at
    most the rows it reads. Bounds, not counts: a header or a bad row leaves the count short."""
    if bounds.queries is None or bounds.candidates is None:
        return {}
    read = bounds.queries if cfg.mode == "dedup" else bounds.queries + bounds.candidates
    return {"read": read, "embedded": read} if cfg.embeds else {"read": read}


def exact_at_launch(cfg, dims: int | None, max_work: float,
                    bounds: InputBounds | None = None) -> LaunchDecision | None:
    """The decision ``--index auto`` would make for every shard, when the input bounds already
    settle it: one shard of at most N candidates searched by at most Q queries of ``dims`` dims,
    with Q x N x dims <= ``max_work``. None otherwise (the pipeline decides per shard).
    ``bounds``: :func:`input_bounds` of ``cfg`` when the caller has them already."""
    if cfg.index != "auto" or dims is None or cfg.num_shards not in (None, 1) or cfg.index_dir:
        return None
    queries, candidates = bounds if bounds is not None else input_bounds(cfg)
    if queries is None or candidates is None:
        return None
    from transforms.placement.sizing import size_shards

    sizing = size_shards(max(candidates, 1), dims, fixed=cfg.num_shards,
                         max_shard_vectors=cfg.max_shard_vectors, worker_memory_gb=cfg.worker_memory_gb)
    if not sizing.ok or sizing.num_shards != 1:
        return None
    work = float(max(queries, 1)) * max(candidates, 1) * max(dims, 1)
    if work > max_work:
        return None
    return LaunchDecision(queries, candidates, dims, work, max_work)


class Launch(NamedTuple):
    """What :func:`prepare` found: the job's options and config, the manifest's static facts, the
    number of match files, the kept index (None without --index_dir) and the pairwise scorer's join
    buckets."""

    options: Any  # PipelineOptions
    cfg: MatchConfig
    static: dict[str, Any]
    num_output_shards: int
    kept: Any  # beam_jobs.kept_index.KeptIndex or None
    scoring_buckets: int


def prepare(argv: list[str] | None) -> Launch:
    """Parses flags and checks everything that can be checked before a pipeline exists."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from beam_jobs.config import config_from_options
    from beam_jobs.dated_paths import expand_date_flags
    from beam_jobs.launch_checks import check_output_dir, check_output_path, read_scoring_model
    from beam_jobs.options import check_known_flags
    from transforms.run.manifest import stack_versions

    # Nightly runs: --output gs://b/runs/{date} -> the launch's UTC date (as the template shim does).
    argv = expand_date_flags(sys.argv[1:] if argv is None else argv)
    check_known_flags(argv)  # a misspelled flag is an error, not a warning and a run with defaults
    options = PipelineOptions(argv)
    cfg = config_from_options(options)
    _check_corpora(cfg)
    check_output_path(cfg.output)
    cfg, model_fp = _fingerprint_model(cfg)
    cfg, kept = _read_kept_index(cfg, model_fp)
    check_output_dir(cfg)
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

        buckets = scoring_buckets(input_bytes(cfg))
    if cfg.scoring_model:
        read_scoring_model(cfg)  # a bad file fails here, before any pipeline exists
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
    return Launch(options, cfg, static, num_output_shards, kept, buckets)


def _check_corpora(cfg: MatchConfig) -> None:
    """Every corpus glob matches readable files (else ConfigError naming the flag and the file)."""
    from beam_jobs.config import ConfigError
    from beam_jobs.launch_checks import check_readable_files
    from transforms.io.read_corpus import check_glob_matches

    for flag in ("queries", "candidates", "input"):
        if getattr(cfg, flag):
            try:
                check_readable_files(getattr(cfg, flag), flag)
                check_glob_matches(getattr(cfg, flag), flag)
            except ValueError as e:  # names the flag and the glob or file
                raise ConfigError(str(e)) from None


def _fingerprint_model(cfg: MatchConfig) -> tuple[MatchConfig, str | None]:
    """(config with the model's inputs read, the model's content fingerprint) when the job embeds."""
    if not cfg.embeds:
        return cfg, None
    from beam_jobs.config import ConfigError
    from beam_jobs.launch_checks import resolve_model_input
    from transforms.features.model_ref import ModelNotFoundError, model_fingerprint

    try:
        model_fp = model_fingerprint(cfg.model_dir, cfg.text_fields, cfg.numeric_fields)
    except ModelNotFoundError as e:
        raise ConfigError(str(e)) from None
    return resolve_model_input(cfg), model_fp


def _read_kept_index(cfg: MatchConfig, model_fp: str | None):
    """(config, KeptIndex or None): the --index_dir index, checked against this run."""
    if not cfg.index_dir:
        return cfg, None
    from beam_jobs.kept_index import check_kept_index, read_kept_index

    kept = read_kept_index(cfg.index_dir)
    check_kept_index(cfg, kept.manifest, model_fp)
    if cfg.preprocesses and not cfg.transform_fn_dir:
        # New queries must be preprocessed exactly as the kept candidates were.
        cfg = dataclasses.replace(cfg, transform_fn_dir=kept.transform_fn_used)
    return cfg, kept


def _decide_index_at_launch(cfg: MatchConfig, options, bounds: InputBounds):
    """(config, LaunchDecision or None): with the built-in embedder (its dims are known) and input
    bounds that already settle ``--index auto`` as exact for the one shard there will be
    (:func:`exact_at_launch`), the index is exact and one shard from the start, so the graph has no
    search tuning (the default --target_recall has nothing to tune on brute force) and no routing
    sample pass. The matches are those ``auto`` gives; the manifest says why."""
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


def launch_progress_totals(cfg: MatchConfig, static: dict[str, Any]) -> dict[str, int]:
    """:func:`progress_totals` from the bounds :func:`prepare` recorded in the static manifest."""
    bounds = static.get("input_records_at_most")
    if bounds is None:
        return {}
    return progress_totals(cfg, InputBounds(bounds["queries_at_most"], bounds["candidates_at_most"]))


def default_output_shards(cfg: MatchConfig) -> int:
    """--num_output_shards, else one file per ~1 GiB of query input (at least 1, at most 10000)."""
    if cfg.num_output_shards:
        return cfg.num_output_shards
    from apache_beam.io.filesystems import FileSystems

    pattern = cfg.queries if cfg.mode == "link" else cfg.input
    total = sum(m.size_in_bytes for r in FileSystems.match([pattern]) for m in r.metadata_list)
    return int(min(10_000, max(1, math.ceil(total / _OUTPUT_BYTES_PER_SHARD))))


def input_bytes(cfg: MatchConfig) -> int:
    """Bytes of every corpus file the job reads."""
    from apache_beam.io.filesystems import FileSystems

    patterns = [g for g in (cfg.queries, cfg.candidates, cfg.input) if g]
    return sum(m.size_in_bytes for r in FileSystems.match(patterns) for m in r.metadata_list)
