"""The one reader of a run's outputs: its match files (whole, or the distances streamed with a bounded
sample), its dead letters, its manifest, and match files given by path.

What it does not do: write any of them, or judge them (evaluation and the report use what this reads).
"""

from __future__ import annotations

import csv
import glob
import io
import itertools
import json
import os
import posixpath
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.common.artifacts import join_path, read_bytes
from transforms.common.dead_letters import DeadLetter
from transforms.common.schema import MATCH_COLUMNS, SCORE_COLUMNS
from transforms.io.tfrecord import decode_example, iter_tfrecords
from transforms.io.write_matches import MATCH_EXTENSIONS

__all__ = ["read_matches", "read_dead_letters", "read_match_files", "check_match_set", "stream_distances",
           "manifest_path", "read_manifest"]



def _decode_matches(data: bytes, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        return pq.read_table(pa.BufferReader(data)).to_pandas()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line]
        scored = bool(rows) and SCORE_COLUMNS[0] in rows[0]
        return pd.DataFrame(rows, columns=list(MATCH_COLUMNS + (SCORE_COLUMNS if scored else ())))
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        return pd.DataFrame(rows[1:], columns=rows[0] if rows else list(MATCH_COLUMNS))
    rows = []
    for _, record, error in iter_tfrecords(io.BytesIO(data)):
        if error is not None:
            raise ValueError(error)
        example = decode_example(record)
        rows.append((example["query_id"][0], example["candidate_id"][0], example["rank"][0],
                     example["distance_exact"][0],
                     *(example[f"{n}_exact"][0] for n in SCORE_COLUMNS if f"{n}_exact" in example)))
    scored = bool(rows) and len(rows[0]) > len(MATCH_COLUMNS)
    return pd.DataFrame(rows, columns=list(MATCH_COLUMNS + (SCORE_COLUMNS if scored else ())))


def _typed_matches(frame: pd.DataFrame) -> pd.DataFrame:
    columns = {
        "query_id": frame["query_id"].astype(str).astype(object),
        "candidate_id": frame["candidate_id"].astype(str).astype(object),
        "rank": frame["rank"].astype(np.int64),
        "distance": frame["distance"].astype(np.float64),
    }
    for name in SCORE_COLUMNS:
        if name in frame.columns:
            columns[name] = frame[name].astype(np.float64)
    return pd.DataFrame(columns, columns=list(columns))


def _finished_files(pattern: str) -> list[str]:
    found = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in found if ".tmp-" not in posixpath.basename(m.path))


def read_matches(output_dir: str, *, allow_incomplete: bool = False) -> pd.DataFrame:
    """Reads every match file (any format) under ``DIR/matches/`` into one DataFrame.

    The run must have finished (``DIR/_SUCCESS``, see :mod:`transforms.common.run_dir`) and the files must
    be the whole ``matches-SSSSS-of-NNNNN`` set its manifest and ``_SUCCESS`` name; a directory with
    neither manifest nor ``_SUCCESS`` (``WriteMatches`` alone) needs only the whole set.
    ``allow_incomplete=True`` reads whatever match files are there.

    Returns:
        Columns ``MATCH_COLUMNS`` with dtypes object (str), object (str), int64, float64 (and the
        float64 ``SCORE_COLUMNS`` when the run scored its pairs), sorted by
        (query_id, rank, candidate_id) with a fresh index.

    Raises:
        IncompleteRunError (a FileNotFoundError): the run did not finish, or a shard is missing.
        FileNotFoundError: there is no match file (a finished run always writes at least one).
    """
    paths = _finished_files(join_path(output_dir, "matches", "matches-*-of-*.*"))
    if not allow_incomplete:
        from transforms.common.run_dir import check_run_shards

        check_run_shards(output_dir, "matches", paths, what="its matches")
    frames = []
    for path in paths:
        fmt = posixpath.splitext(path)[1].lstrip(".")
        if fmt not in MATCH_EXTENSIONS:
            continue
        frames.append(_typed_matches(_decode_matches(read_bytes(path), fmt)))
    if not frames:
        raise FileNotFoundError(f"no match files under {join_path(output_dir, 'matches')}")
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["query_id", "rank", "candidate_id"], kind="stable").reset_index(drop=True)


def read_dead_letters(output_dir: str) -> list[DeadLetter]:
    """Reads every dead-letter file under ``DIR/dead_letters/`` (used by tests and reports)."""
    letters = []
    for path in _finished_files(join_path(output_dir, "dead_letters", "dead_letters-*-of-*.jsonl")):
        letters.extend(DeadLetter(**json.loads(line))
                       for line in read_bytes(path).decode("utf-8").splitlines() if line)
    return letters


_READERS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
            ".csv": "csv", ".tsv": "tsv"}


def _kind(path: str) -> str | None:
    name = os.path.basename(path).lower()
    for comp in (".gz", ".bz2", ".zst", ".xz"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    # Beam shard names look like matches-00000-of-00004.parquet; the extension decides.
    return _READERS.get(os.path.splitext(name)[1])


def read_match_files(path: str) -> pd.DataFrame:
    """Reads every match file (parquet, jsonl, csv; optionally compressed) under a directory or file.

    Hidden and underscore files (``_SUCCESS``, ``.part``) are skipped; any other file of an unknown
    format is an error, so nothing is left out silently.

    Args:
        path: a match file or a directory searched recursively.

    Returns:
        The concatenated rows with columns ``query_id, candidate_id, rank, distance`` (ids as str).

    Raises:
        FileNotFoundError: no match file found.
        ValueError: a file of an unsupported format (e.g. tfrecord) or without the match columns.
    """
    if os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                       if os.path.isfile(f) and not os.path.basename(f).startswith((".", "_")))
    else:
        files = [path]
    if not files:
        raise FileNotFoundError(f"no match files under {path}")
    frames = []
    for f in files:
        kind = _kind(f)
        if kind == "parquet":
            frame = pd.read_parquet(f)
        elif kind == "jsonl":
            frame = pd.read_json(f, lines=True, dtype=False)
        elif kind in ("csv", "tsv"):
            frame = pd.read_csv(f, sep="," if kind == "csv" else "\t", keep_default_na=False,
                                dtype={"query_id": str, "candidate_id": str})
        else:
            raise ValueError(f"{f}: cannot read this match file format here (use parquet, jsonl or "
                             "csv output to evaluate)")
        missing = [c for c in MATCH_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{f}: missing columns {missing}")
        frames.append(frame[list(MATCH_COLUMNS)])
    out = pd.concat(frames, ignore_index=True)
    out["query_id"] = out["query_id"].astype(str)
    out["candidate_id"] = out["candidate_id"].fillna("").astype(str)
    return out


def check_match_set(output_dir: str, manifest: dict[str, Any] | None,
                     paths: list[str] | None = None) -> None:
    """The match files must be one whole ``-of-N`` set (of the manifest's count when it has one):
    else IncompleteRunError (a FileNotFoundError), which leaves the histogram out with its reason."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.common.run_dir import check_complete_shards

    where = join_path(output_dir, "matches")
    if paths is None:
        paths = [m.path for m in FileSystems.match([join_path(where, "matches-*-of-*.*")])[0].metadata_list
                 if ".tmp-" not in posixpath.basename(m.path)]
    expected = (manifest or {}).get("num_output_shards")
    check_complete_shards(paths, where=where, expected=expected if isinstance(expected, int) else None)


def stream_distances(output_dir: str, max_rows: int) -> tuple[np.ndarray, int, str, int]:
    """Reads match files in name order, keeping at most ``max_rows`` distances.

    Files are read whole while they fit; the first file that does not fit is sampled uniformly
    (bottom-k of a seeded random key, so memory stays at ``max_rows``) and reading stops there.

    Returns:
        ``(distances, whole_files, rest, total_files)``: how many files (in name order) were kept
        whole, and what happened to the rest: ``'none'`` (nothing left out), ``'sampled'`` (the next
        file was sampled, later ones not read) or ``'skipped'`` (the quota was full, not read).
    """
    from apache_beam.io.filesystems import FileSystems

    pattern = join_path(output_dir, "matches", "matches-*-of-*.*")
    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list
                   if ".tmp-" not in posixpath.basename(m.path))
    if not paths:
        raise FileNotFoundError(f"no match files under {join_path(output_dir, 'matches')}")
    check_match_set(output_dir, None, paths)
    parts: list[np.ndarray] = []
    kept = 0
    for whole, path in enumerate(paths):
        capacity = max_rows - kept
        sample, complete = _sample_file(path, capacity, seed=whole)
        parts.append(sample)
        kept += len(sample)
        if not complete:
            return np.concatenate(parts), whole, "sampled" if capacity else "skipped", len(paths)
    return (np.concatenate(parts) if parts else np.empty(0)), len(paths), "none", len(paths)


def _sample_file(path: str, capacity: int, *, seed: int) -> tuple[np.ndarray, bool]:
    """All distances of one match file if it has at most ``capacity`` rows, else a uniform sample."""
    rng = np.random.default_rng(seed)
    keys, values = np.empty(0), np.empty(0)
    seen = 0
    for chunk in _distance_chunks(path):
        seen += len(chunk)
        if capacity == 0 and seen:
            return values, False
        keys = np.concatenate([keys, rng.random(len(chunk))])
        values = np.concatenate([values, chunk])
        if len(values) > capacity:
            keep = np.argpartition(keys, capacity - 1)[:capacity]
            keys, values = keys[keep], values[keep]
    return values, seen <= capacity


def _distance_chunks(path: str, chunk_rows: int = 65_536) -> Iterator[np.ndarray]:
    """The ``distance`` column of one match file (any output format), a chunk at a time."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from transforms.io.tfrecord import decode_example, iter_tfrecords

    fmt = posixpath.splitext(path)[1].lstrip(".")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        if fmt == "parquet":
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=chunk_rows, columns=["distance"]):
                yield batch.column(0).to_numpy().astype(np.float64)
            return
        if fmt == "jsonl":
            rows = (float(json.loads(line)["distance"])
                    for line in io.TextIOWrapper(fh, encoding="utf-8") if line.strip())
        elif fmt == "csv":
            rows = (float(row["distance"])
                    for row in csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", newline="")))
        elif fmt == "tfrecord":
            rows = (float(decode_example(_checked(record, error, path))["distance_exact"][0])
                    for _, record, error in iter_tfrecords(fh))
        else:
            return
        while True:
            chunk = np.fromiter(itertools.islice(rows, chunk_rows), dtype=np.float64)
            if len(chunk) == 0:
                return
            yield chunk


def _checked(record: bytes, error: str | None, path: str) -> bytes:
    if error is not None:
        raise ValueError(f"{path}: {error}")
    return record


def manifest_path(output_dir: str) -> str:
    return f"{output_dir}/manifest.json"


def read_manifest(output_dir: str) -> dict[str, Any]:
    from transforms.common.artifacts import read_text

    return json.loads(read_text(manifest_path(output_dir)))
