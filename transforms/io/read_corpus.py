"""Reads corpora into raw batches (the per-format parsers live beside this, one module per format).

Reading (:class:`ReadCorpus`): a glob is matched with ``fileio.MatchFiles``; every parquet row group and
every other file becomes one unit of work, units are reshuffled across workers, and each is read
through Beam ``FileSystems`` (so gs:// and mem:// work) into :class:`~transforms.common.schema.RawBatch`
elements:

- parquet: ``pyarrow.RecordBatch`` tables, one per ``batch_size`` rows of a row group;
- jsonl: one JSON object per line (blank lines skipped), as dicts;
- csv: ``csv`` module rows keyed by the header, every value a string (a vector column is a JSON array
  string, parsed later by validation);
- tfrecord: ``tf.Example`` records, each decoded to ``{feature: list}``. *Every* feature stays a list,
  even with one value (the reader does not know which field is the vector); validation unwraps
  length-1 lists for scalar fields. Bytes values decode as UTF-8 (errors replaced), except those of
  ``binary_fields`` (an image field), which stay bytes; floats are the float32 values widened to
  Python floats. No TensorFlow import: the Example messages are built from
  a private protobuf descriptor pool with the same wire format (a test pins TensorFlow's bytes).

jsonl, csv and tfrecord files may be gzipped (``.gz``). Row numbers (``RawBatch.first_row``) count
the rows successfully parsed from a file, so ``source#row`` is a stable origin; dead letters name the
line (or record) number in their error text instead. Rows that cannot be parsed, undecodable records,
files that are not valid parquet and files whose extension gives no format (``auto``) become
``DeadLetter(stage='read')`` on the ``DEAD_LETTER_TAG`` output; nothing is dropped silently.
A file-level fault is one letter whose ``rows`` is the rows it lost: a corrupt parquet row group
counts its footer's rows; a file nothing says the size of (no readable parquet footer, a truncated
or corrupt gzip stream, lost TFRecord framing, an unknown extension) has ``rows`` 0, a bad file that
``--max_bad_files`` decides on. ``.gz`` files are read through :mod:`gzip`, which reports a cut
stream (Beam's decompressor ends quietly). csv is read record by record with line-aware quoting (see
``csv_rows``): an unclosed quote costs its own line. jsonl and csv lines with invalid UTF-8 are dead
letters; tf.Example bytes values are decoded with replacement and counted
(``utf8_replaced_values``). Filesystem errors raise, so the runner retries the bundle.

This module does not validate fields, ids or vectors (:mod:`transforms.io.validate`), does not write
(:mod:`transforms.io.write_matches`) and does not choose shard counts.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import logging
import posixpath
import time
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.common import metrics, progress
from transforms.common.dead_letters import DEAD_LETTER_TAG, UNKNOWN_ROWS, DeadLetter, rows_rejected
from transforms.common.flags import DEFAULTS
from transforms.common.schema import INPUT_FORMATS, RawBatch, Role
from transforms.io.csv import csv_rows
from transforms.io.files import WatchedFile, open_for, read_dead_letter
from transforms.io.jsonl import jsonl_rows
from transforms.io.parquet import read_parquet
from transforms.io.tfrecord import tfrecord_rows

__all__ = ["ReadCorpus", "ReadResult", "check_glob_matches", "format_for_path", "iter_raw_batches"]

_LOGGER = logging.getLogger(__name__)

_ROW_COUNT_TAG = "row_counts"

_EXTENSION_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
}
_GZIP_FORMATS = ("jsonl", "csv", "tfrecord")  # parquet compresses internally and needs random access


# --------------------------------------------------------------------------------------------------
# Reading


def format_for_path(path: str) -> str | None:
    """The input format a file's extension implies (``.gz`` allowed for jsonl/csv/tfrecord), or None."""
    name = posixpath.basename(path.rstrip("/")).lower()
    gzipped = name.endswith(".gz")
    if gzipped:
        name = name[:-3]
    fmt = _EXTENSION_FORMATS.get(posixpath.splitext(name)[1])
    if gzipped and fmt not in _GZIP_FORMATS:
        return None
    return fmt


def check_glob_matches(pattern: str, flag_name: str) -> int:
    """Fails fast, before the graph is built, when a corpus glob matches no file.

    Args:
        pattern: the glob (local, gs://, any Beam filesystem).
        flag_name: the flag that gave it (``'queries'`` or ``'--queries'``), named in the error.

    Returns:
        The number of files matched (>= 1).

    Raises:
        ValueError: nothing matches, or the filesystem cannot be listed; the message names the flag.
    """
    flag = "--" + flag_name.lstrip("-")
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except (BeamIOError, ValueError) as e:
        raise ValueError(f"{flag}: cannot list {pattern!r}: {e}") from e
    if not found:
        raise ValueError(f"{flag}: {pattern!r} matches no files")
    return len(found)


class ReadResult(NamedTuple):
    """What :class:`ReadCorpus` returns.

    Attributes:
        batches: PCollection of RawBatch.
        dead_letters: PCollection of DeadLetter (stage 'read').
        rows_read: PCollection of one int: rows parsed plus rows (or files) dead-lettered while reading.
    """

    batches: beam.PCollection
    dead_letters: beam.PCollection
    rows_read: beam.PCollection


class _PlanReadUnitsFn(beam.DoFn):
    """FileMetadata -> ``(path, format, row_group, first_row, rows)`` units (row_group -1: whole
    file; ``rows``: the row group's rows from the parquet footer, -1 when not known)."""

    def __init__(self, input_format: str, role: str):
        self._input_format = input_format
        self._rows_read = Metrics.counter(metrics.NAMESPACE, metrics.records_read_counter(role))

    def _reject(self, error: str, source: str):
        # A file nothing can be read from: how many rows it held is unknown (a bad file).
        self._rows_read.inc()
        progress.add("read")
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG,
                                       read_dead_letter(error, "", source, rows=UNKNOWN_ROWS))
        yield beam.pvalue.TaggedOutput(_ROW_COUNT_TAG, 1)

    def process(self, metadata):
        path = metadata.path
        fmt = self._input_format if self._input_format != "auto" else format_for_path(path)
        if fmt is None:
            yield from self._reject("unknown file extension; expected .parquet/.pq, .jsonl/.json/.ndjson, "
                                    ".csv, .tfrecord/.tfrecords (jsonl/csv/tfrecord may end in .gz), or "
                                    "set --input_format", path)
            return
        if fmt != "parquet":
            yield (path, fmt, -1, 0, -1)
            return
        with open_for(path, fmt) as fh:
            watched = WatchedFile(fh)
            try:
                meta = pq.ParquetFile(watched).metadata
            except OSError as e:  # pyarrow reports corrupt data as OSError/ArrowInvalid(ValueError)
                if watched.failed:
                    raise
                yield from self._reject(f"not a valid parquet file (no readable footer, so its row "
                                        f"count is unknown): {e}", path)
                return
            except pa.ArrowInvalid as e:
                yield from self._reject(f"not a valid parquet file (no readable footer, so its row "
                                        f"count is unknown): {e}", path)
                return
        first_row = 0
        for row_group in range(meta.num_row_groups):
            rows = meta.row_group(row_group).num_rows
            yield (path, fmt, row_group, first_row, rows)
            first_row += rows


def _rows_to_batches(items, path: str, batch_size: int):
    """Collects dict rows into RawBatches of ``batch_size``, passing dead letters straight through."""
    rows: list[dict] = []
    first_row = 0
    for item in items:
        if isinstance(item, DeadLetter):
            yield item
            continue
        rows.append(item)
        if len(rows) >= batch_size:
            yield RawBatch(source=path, first_row=first_row, rows=rows)
            first_row += len(rows)
            rows = []
    if rows:
        yield RawBatch(source=path, first_row=first_row, rows=rows)


_ROW_READERS = {"jsonl": jsonl_rows, "csv": csv_rows, "tfrecord": tfrecord_rows}
# A gzip stream that is cut short or corrupt (a real I/O error is an OSError that is not a
# BadGzipFile, and raises).
_STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@contextlib.contextmanager
def _open_rows(path: str, fmt: str):
    """A text-format file as a binary stream; ``.gz`` through :mod:`gzip`, which, unlike Beam's
    decompressor, reports a stream cut short (EOFError) instead of ending quietly."""
    if not path.lower().endswith(".gz"):
        with open_for(path, fmt) as fh:
            yield fh
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
            yield fh


def _until_stream_fault(items, path: str):
    """Passes rows and dead letters through; a broken gzip stream ends them with one bad-file letter."""
    line = 0
    try:
        for item in items:
            line += 1
            yield item
    except _STREAM_ERRORS as e:
        yield read_dead_letter(
            f"truncated or corrupt gzip stream after {line} rows and dead letters "
            f"({type(e).__name__}: {e}); the rows after them are lost, how many is unknown",
            "", path, rows=UNKNOWN_ROWS)


def _read_rows(path: str, fmt: str, batch_size: int, binary_fields: frozenset[str] = frozenset()):
    reader = _ROW_READERS[fmt]
    if fmt == "tfrecord" and binary_fields:
        reader = functools.partial(tfrecord_rows, binary_fields=binary_fields)
    with _open_rows(path, fmt) as fh:
        yield from _rows_to_batches(_until_stream_fault(reader(fh, path), path), path, batch_size)


def iter_raw_batches(pattern: str, input_format: str = DEFAULTS["input_format"],
                     batch_size: int = DEFAULTS["batch_size"],
                     binary_fields: frozenset[str] = frozenset()) -> Iterator[RawBatch]:
    """Every RawBatch of the files matching ``pattern``, read in this process as ReadCorpus reads
    them (same formats, rows and origins ``path:row``); what ReadCorpus would send to dead letters is
    skipped. For tools that look records up again (``explain``, ``calibrate --fit_scorer``, ``train``),
    not for the pipeline."""
    for meta in FileSystems.match([pattern])[0].metadata_list:
        fmt = format_for_path(meta.path) if input_format == "auto" else input_format
        if fmt == "parquet":
            with open_for(meta.path, "parquet") as fh:
                footer = pq.ParquetFile(fh).metadata
            first_row, items = 0, []
            for g in range(footer.num_row_groups):
                items.append(read_parquet(meta.path, g, first_row, batch_size))
                first_row += footer.row_group(g).num_rows
            batches = (b for group in items for b in group)
        else:
            batches = _read_rows(meta.path, fmt, batch_size, binary_fields)
        for item in batches:
            if isinstance(item, RawBatch):
                yield item


class _ReadUnitFn(beam.DoFn):
    """One read unit -> RawBatches, plus dead letters and the unit's row count on tagged outputs."""

    def __init__(self, role: str, batch_size: int, binary_fields: frozenset[str] = frozenset()):
        self._role = role
        self._batch_size = batch_size
        self._binary_fields = binary_fields
        self._rows_read = Metrics.counter(metrics.NAMESPACE, metrics.records_read_counter(role))
        self._timer = metrics.StageTimer("read")

    def process(self, unit):
        path, fmt, row_group, first_row, rows = unit
        start = time.perf_counter()
        with self._timer:
            if fmt == "parquet":
                items = list(read_parquet(path, row_group, first_row, self._batch_size, rows))
            else:
                items = list(_read_rows(path, fmt, self._batch_size, self._binary_fields))
        count = 0
        for item in items:
            if isinstance(item, DeadLetter):
                count += rows_rejected(item)
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, item)
            else:
                count += len(item)
                yield item
        self._rows_read.inc(count)
        progress.add("read", count)
        elapsed = time.perf_counter() - start
        _LOGGER.info("read %d %s rows from %s%s in %.1f s (%.0f rows/s)", count, self._role, path,
                     f" (row group {row_group})" if fmt == "parquet" else "", elapsed,
                     count / max(elapsed, 1e-9))
        yield beam.pvalue.TaggedOutput(_ROW_COUNT_TAG, count)


class ReadCorpus(beam.PTransform):
    """Reads every file a glob matches into RawBatches; unparseable input goes to dead letters.

    Apply to the pipeline root: ``p | 'ReadQueries' >> ReadCorpus(...)``. Returns a
    :class:`ReadResult`. Rows read (parsed + dead-lettered) are also counted in the
    ``<role>_read`` counter of the ``corpus_matcher`` metric namespace.
    """

    def __init__(self, *, file_pattern: str, input_format: str, role: str,
                 batch_size: int = DEFAULTS["batch_size"],
                 binary_fields: tuple[str, ...] = ()):
        """Validates the arguments.

        Args:
            file_pattern: glob of the corpus files on any Beam filesystem. Matching nothing fails the
                run; call :func:`check_glob_matches` first to fail before launch.
            input_format: one of ``INPUT_FORMATS``; ``'auto'`` picks per file by extension.
            role: a :class:`~transforms.common.schema.Role` value, used in counters.
            batch_size: most rows per RawBatch.
            binary_fields: tf.Example features kept as bytes rather than decoded as UTF-8 (an
                image field holding encoded images).

        Raises:
            ValueError: an argument is out of range.
        """
        super().__init__()
        if not isinstance(file_pattern, str) or not file_pattern.strip():
            raise ValueError(f"file_pattern must be a non-empty string, got {file_pattern!r}")
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        roles = (Role.QUERIES, Role.CANDIDATES, Role.INPUT)
        if role not in roles:
            raise ValueError(f"role must be one of {roles}, got {role!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self._file_pattern = file_pattern.strip()
        self._input_format = input_format
        self._role = role
        self._batch_size = batch_size
        self._binary_fields = frozenset(binary_fields)

    def expand(self, pbegin):
        files = pbegin | "MatchFiles" >> fileio.MatchFiles(
            self._file_pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
        planned = files | "PlanReadUnits" >> beam.ParDo(
            _PlanReadUnitsFn(self._input_format, self._role)).with_outputs(
                DEAD_LETTER_TAG, _ROW_COUNT_TAG, main="units")
        read = (planned.units
                | "SpreadReadUnits" >> beam.Reshuffle()
                | "ReadUnits" >> beam.ParDo(_ReadUnitFn(self._role, self._batch_size,
                                                        self._binary_fields)).with_outputs(
                    DEAD_LETTER_TAG, _ROW_COUNT_TAG, main="batches"))
        dead_letters = ((planned[DEAD_LETTER_TAG], read[DEAD_LETTER_TAG])
                        | "FlattenDeadLetters" >> beam.Flatten())
        rows_read = ((planned[_ROW_COUNT_TAG], read[_ROW_COUNT_TAG])
                     | "FlattenRowCounts" >> beam.Flatten()
                     | "SumRowsRead" >> beam.CombineGlobally(sum))
        return ReadResult(batches=read.batches, dead_letters=dead_letters, rows_read=rows_read)
