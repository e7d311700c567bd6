"""Launch-time facts about a job's inputs, read before any pipeline exists.

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

import os
from typing import NamedTuple

from transforms.common.flags import DEFAULTS

__all__ = ["InputBounds", "LaunchDecision", "exact_at_launch", "input_bounds", "progress_totals",
           "record_count_bound"]

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
    from transforms.placement.sizing import shard_sizing

    sizing = shard_sizing(max(candidates, 1), dims, fixed=cfg.num_shards,
                          max_shard_vectors=cfg.max_shard_vectors, worker_memory_gb=cfg.worker_memory_gb)
    if not sizing["ok"] or sizing["num_shards"] != 1:
        return None
    work = float(max(queries, 1)) * max(candidates, 1) * max(dims, 1)
    if work > max_work:
        return None
    return LaunchDecision(queries, candidates, dims, work, max_work)
