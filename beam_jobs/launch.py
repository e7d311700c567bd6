"""Launch-time facts about a job's inputs, read before any pipeline exists.

:func:`record_count_bound` bounds how many records a corpus glob can hold without reading the
records: a parquet file's footer says how many rows it has; an uncompressed local csv or jsonl file
holds at most one record per line. The match job uses the bound to decide, at launch, what the
``--index auto`` rule would decide per shard once the counts are known (:func:`exact_at_launch`),
so a job that will brute-force anyway builds no tuning branch (the sample passes, an exact sample
top-K and the effort search that would find nothing to tune) and no routing sample pass.

Only cheap, certain bounds: gzip, tfrecord, remote files and local text files past
``_MAX_SCANNED_BYTES`` in all give None (no decision: the pipeline decides as before).
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["LaunchDecision", "exact_at_launch", "record_count_bound"]

_MAX_SCANNED_BYTES = 256 << 20  # newline counting reads every byte: about 0.1 s per 100 MB
_CHUNK = 8 << 20


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


def record_count_bound(pattern: str, input_format: str = "auto") -> int | None:
    """At most how many records the files matching ``pattern`` hold, or None when that is not
    cheaply certain (see the module docstring)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.io import format_for_path

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


def exact_at_launch(cfg, dims: int | None, max_work: float) -> LaunchDecision | None:
    """The decision ``--index auto`` would make for every shard, when the input bounds already
    settle it: one shard of at most N candidates searched by at most Q queries of ``dims`` dims,
    with Q x N x dims <= ``max_work``. None otherwise (the pipeline decides per shard)."""
    if cfg.index != "auto" or dims is None or cfg.num_shards not in (None, 1) or cfg.index_dir:
        return None
    if cfg.mode == "dedup":
        queries = candidates = record_count_bound(cfg.input, cfg.input_format)
    else:
        queries = record_count_bound(cfg.queries, cfg.input_format)
        candidates = record_count_bound(cfg.candidates, cfg.input_format)
    if queries is None or candidates is None:
        return None
    from transforms.shard_records import shard_sizing

    sizing = shard_sizing(max(candidates, 1), dims, fixed=cfg.num_shards,
                          max_shard_vectors=cfg.max_shard_vectors, worker_memory_gb=cfg.worker_memory_gb)
    if not sizing["ok"] or sizing["num_shards"] != 1:
        return None
    work = float(max(queries, 1)) * max(candidates, 1) * max(dims, 1)
    if work > max_work:
        return None
    return LaunchDecision(queries, candidates, dims, work, max_work)
