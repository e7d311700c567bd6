"""Reads corpora into raw batches and writes match and dead-letter files, deterministically.

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
``_csv_rows``): an unclosed quote costs its own line. jsonl and csv lines with invalid UTF-8 are dead
letters; tf.Example bytes values are decoded with replacement and counted
(``utf8_replaced_values``). Filesystem errors raise, so the runner retries the bundle.

Writing (:class:`WriteMatches`, :class:`WriteDeadLetters`, :func:`write_match_shard`): rows are
routed to a fixed number of shards by a stable hash, sorted, encoded with fixed settings and written
through a temporary name plus rename, so the same rows always give the same bytes and readers never
see half a file. Match formats: parquet (query_id string, candidate_id string, rank int64, distance
float64), jsonl (keys in ``MATCH_COLUMNS`` order, shortest round-trip float text), csv (header line,
same float text) and tfrecord (one ``tf.Example`` per pair: bytes ``query_id`` / ``candidate_id``,
int64 ``rank``, float ``distance`` -- float32, lossy, what TF input pipelines expect -- plus bytes
``distance_exact``, the float64 as round-trip text, which :func:`read_matches` prefers).

This module does not validate fields, ids or vectors (see validation) and does not choose shard counts.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import csv
import functools
import gzip
import io
import json
import logging
import posixpath
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import combiners
from google.protobuf.message import DecodeError

from transforms.common import metrics, progress
from transforms.common.artifacts import join_path, read_bytes, write_bytes
from transforms.common.dead_letters import (
    DEAD_LETTER_TAG,
    UNKNOWN_ROWS,
    DeadLetter,
    make_dead_letter,
    rows_rejected,
)
from transforms.common.schema import (
    INPUT_FORMATS,
    MATCH_COLUMNS,
    OUTPUT_FORMATS,
    SCORE_COLUMNS,
    PairBatch,
    RawBatch,
    Role,
    ScoredPairBatch,
)
from transforms.common.sharding import assign_shards, id_sort_keys, split_by_shard, stable_hash64, str_array

__all__ = [
    "ReadCorpus",
    "ReadResult",
    "WriteMatches",
    "WriteDeadLetters",
    "check_glob_matches",
    "format_for_path",
    "write_match_shard",
    "drop_duplicate_pairs",
    "rank_by_weight",
    "match_shard_path",
    "dead_letter_shard_path",
    "read_matches",
    "read_dead_letters",
    "encode_example",
    "decode_example",
    "frame_tfrecord",
    "iter_tfrecords",
    "iter_raw_batches",
    "MATCH_EXTENSIONS",
]

_LOGGER = logging.getLogger(__name__)

_STAGE = "read"
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
MATCH_EXTENSIONS = {"parquet": "parquet", "jsonl": "jsonl", "csv": "csv", "tfrecord": "tfrecord"}

# Long vector columns (a 4096-d JSON array is ~100 kB of text) exceed csv's 128 kB default field limit.
_CSV_FIELD_LIMIT = 64 << 20
# Most physical lines one csv record (a quoted field with line breaks) may span.
_CSV_MAX_RECORD_LINES = 1000

_MATCH_SCHEMA = pa.schema([
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("rank", pa.int64(), nullable=False),
    pa.field("distance", pa.float64(), nullable=False),
])
_SCORED_SCHEMA = pa.schema(list(_MATCH_SCHEMA) + [
    pa.field("match_weight", pa.float64(), nullable=False),
    pa.field("match_probability", pa.float64(), nullable=False),
])
# Every writer option is pinned: the same rows must give the same bytes (with the same pyarrow, whose
# version is recorded in the file's created_by field).
_PARQUET_OPTIONS = {
    "row_group_size": 1 << 20,
    "version": "2.6",
    "data_page_version": "1.0",
    "compression": "snappy",
    "use_dictionary": True,
    "write_statistics": True,
    "write_page_index": False,
    "write_page_checksum": False,
    "store_schema": True,
}


# --------------------------------------------------------------------------------------------------
# tf.Example and TFRecord framing, without TensorFlow


@functools.cache
def _example_class() -> type:
    """The ``tensorflow.Example`` message class, built in a private descriptor pool.

    The private pool keeps these descriptors from clashing with TensorFlow's own registration of
    ``tensorflow/core/example/*.proto`` in the default pool when both are loaded in one process.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="corpus_matcher/tf_example.proto", package="tensorflow", syntax="proto3")
    for name, kind in (("BytesList", fd.TYPE_BYTES), ("FloatList", fd.TYPE_FLOAT),
                       ("Int64List", fd.TYPE_INT64)):
        field = proto.message_type.add(name=name).field.add(
            name="value", number=1, label=fd.LABEL_REPEATED, type=kind)
        if kind != fd.TYPE_BYTES:
            field.options.packed = True
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate(
            (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), 1):
        feature.field.add(name=name, number=number, label=fd.LABEL_OPTIONAL, type=fd.TYPE_MESSAGE,
                          type_name=f".tensorflow.{type_name}", oneof_index=0)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=fd.LABEL_OPTIONAL, type=fd.TYPE_STRING)
    entry.field.add(name="value", number=2, label=fd.LABEL_OPTIONAL, type=fd.TYPE_MESSAGE,
                    type_name=".tensorflow.Feature")
    features.field.add(name="feature", number=1, label=fd.LABEL_REPEATED, type=fd.TYPE_MESSAGE,
                       type_name=".tensorflow.Features.FeatureEntry")
    proto.message_type.add(name="Example").field.add(
        name="features", number=1, label=fd.LABEL_OPTIONAL, type=fd.TYPE_MESSAGE,
        type_name=".tensorflow.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def encode_example(features: dict[str, Any]) -> bytes:
    """Serializes a ``tf.Example`` deterministically (map entries sorted by feature name).

    Args:
        features: feature name -> value or list of values. ``str``/``bytes`` go to ``bytes_list``
            (str as UTF-8), ints and bools to ``int64_list``, floats to ``float_list`` (float32). A list
            takes its kind from its first value; an empty list gives a feature with no kind.

    Returns:
        The serialized Example, byte-identical to TensorFlow's deterministic serialization.

    Raises:
        TypeError: a value of another type.
    """
    example = _example_class()()
    feature_map = example.features.feature
    for name, value in features.items():
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        feature = feature_map[name]
        if not values:
            feature.SetInParent()
        elif isinstance(values[0], (str, bytes)):
            feature.bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else v for v in values)
        elif isinstance(values[0], (bool, int, np.integer)):
            feature.int64_list.value.extend(int(v) for v in values)
        elif isinstance(values[0], (float, np.floating)):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise TypeError(f"feature {name!r}: cannot store {type(values[0]).__name__} in a tf.Example")
    return example.SerializeToString(deterministic=True)


def _utf8_text(value: bytes, replaced: list[int] | None) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        if replaced is not None:
            replaced[0] += 1
        return value.decode("utf-8", errors="replace")


def decode_example(data: bytes, *, replaced: list[int] | None = None,
                   binary_fields: frozenset[str] = frozenset()) -> dict[str, list]:
    """Parses a serialized ``tf.Example`` into ``{feature: list of values}`` (see module docstring).

    Args:
        data: the serialized Example.
        replaced: optional one-element counter, increased by the bytes values that were not valid
            UTF-8 (decoded with U+FFFD replacing the invalid bytes).
        binary_fields: features whose bytes values are returned as bytes, undecoded.

    Raises:
        google.protobuf.message.DecodeError: ``data`` is not a valid Example.
    """
    example = _example_class().FromString(data)
    row: dict[str, list] = {}
    for name in sorted(example.features.feature):
        feature = example.features.feature[name]
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list" and name in binary_fields:
            row[name] = list(feature.bytes_list.value)
        elif kind == "bytes_list":
            row[name] = [_utf8_text(v, replaced) for v in feature.bytes_list.value]
        elif kind == "float_list":
            row[name] = list(feature.float_list.value)
        elif kind == "int64_list":
            row[name] = list(feature.int64_list.value)
        else:
            row[name] = []
    return row


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_tfrecord(data: bytes) -> bytes:
    """Frames one record as TFRecord: uint64 length, masked crc32c of it, data, masked crc32c of data."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", _masked_crc32c(length)), data,
                     struct.pack("<I", _masked_crc32c(data))))


def _read_exact(fh, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = fh.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def iter_tfrecords(fh) -> Any:
    """Yields ``(record_index, data, error)`` for every record of a TFRecord stream.

    ``error`` is None for a good record. A record whose data checksum fails is reported and skipped;
    a bad length header or a truncated record is reported and ends the iteration, because the framing
    of everything after it is lost.
    """
    index = 0
    while True:
        header = _read_exact(fh, 12)
        if not header:
            return
        if len(header) < 12:
            yield index, header, f"record {index}: truncated length header ({len(header)} of 12 bytes)"
            return
        length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
        if _masked_crc32c(length_bytes) != length_crc:
            yield index, header, f"record {index}: length checksum mismatch; rest of file unreadable"
            return
        (length,) = struct.unpack("<Q", length_bytes)
        body = _read_exact(fh, length + 4)
        if len(body) < length + 4:
            yield index, body, f"record {index}: truncated ({len(body)} of {length + 4} bytes)"
            return
        data, (data_crc,) = body[:length], struct.unpack("<I", body[length:])
        if _masked_crc32c(data) != data_crc:
            yield index, data, f"record {index}: data checksum mismatch"
        else:
            yield index, data, None
        index += 1


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


def _open_for(path: str, fmt: str):
    # parquet needs random access: never let Beam guess a decompressor for it.
    compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else CompressionTypes.AUTO
    return FileSystems.open(path, compression_type=compression)


def _read_dead_letter(error: str, payload: Any, source: str, rows: int = 1) -> DeadLetter:
    return make_dead_letter(_STAGE, "", error, payload, source, rows=rows)


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
                                       _read_dead_letter(error, "", source, rows=UNKNOWN_ROWS))
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
        with _open_for(path, fmt) as fh:
            watched = _WatchedFile(fh)
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


class _WatchedFile:
    """A read-only view of a Beam file that remembers whether the file itself raised.

    pyarrow reports corrupt parquet (bad thrift, bad compression) as a plain ``OSError``, the same type
    as a real I/O failure. Corrupt data is a bad record (dead letter); an I/O failure must raise so the
    runner retries. Errors raised while this view was reading are the I/O ones.
    """

    def __init__(self, fh):
        self._fh = fh
        self.failed = False

    def _call(self, name: str, *args):
        try:
            return getattr(self._fh, name)(*args)
        except BaseException:
            self.failed = True
            raise

    def read(self, size: int = -1) -> bytes:
        return self._call("read", size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call("seek", offset, whence)

    def tell(self) -> int:
        return self._call("tell")

    @property
    def closed(self) -> bool:
        return self._fh.closed


def _read_parquet(path: str, row_group: int, first_row: int, batch_size: int, rows: int = -1):
    """RawBatches of one row group; a corrupt row group is one dead letter for every row of it not
    read (``rows``, the footer's count; at least 1)."""
    start = first_row
    with _open_for(path, "parquet") as fh:
        watched = _WatchedFile(fh)
        error = None
        try:
            for table in pq.ParquetFile(watched).iter_batches(batch_size=batch_size,
                                                              row_groups=[row_group]):
                yield RawBatch(source=path, first_row=first_row, table=table)
                first_row += table.num_rows
        except OSError as e:
            if watched.failed:
                raise
            error = e
        except pa.ArrowInvalid as e:
            error = e
        if error is not None:
            lost = max(1, rows - (first_row - start)) if rows >= 0 else 1
            yield _read_dead_letter(f"corrupt parquet row group {row_group} from row {first_row} "
                                    f"({lost} rows lost): {error}", f"row group {row_group}", path,
                                    rows=lost)


def _lines(fh):
    """Binary lines of a Beam file (``CompressedFile`` is not iterable, but has readline)."""
    return iter(fh.readline, b"")


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


def _jsonl_rows(fh, path: str):
    for line_number, raw in enumerate(_lines(fh), 1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
            row = json.loads(text.lstrip("\ufeff") if line_number == 1 else text)
        except UnicodeDecodeError as e:
            yield _read_dead_letter(f"line {line_number}: invalid UTF-8: {e}", raw, path)
            continue
        except (json.JSONDecodeError, RecursionError) as e:
            yield _read_dead_letter(f"line {line_number}: invalid JSON: {e}", raw, path)
            continue
        if not isinstance(row, dict):
            yield _read_dead_letter(f"line {line_number}: expected a JSON object, got "
                                    f"{type(row).__name__}", raw, path)
            continue
        yield row


def _csv_text(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue().encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _has_undecodable(values: list[str]) -> bool:
    # surrogateescape maps undecodable bytes to lone surrogates U+DC80..U+DCFF.
    return any(any("\udc80" <= ch <= "\udcff" for ch in v) for v in values)


class _CsvLineFeed:
    """The lines a ``csv.reader`` reads, numbered, with the lines of the current record kept.

    ``taken`` holds the (line number, text) lines of the record being read; lines pushed back onto
    ``pending`` are read again first. ``ran_out`` says the reader wanted another line for a record
    it had started (a quoted field still open at the end of the file, or past
    ``_CSV_MAX_RECORD_LINES``).
    """

    def __init__(self, source):
        self._source = source
        self.pending: collections.deque = collections.deque()
        self.taken: list[tuple[int, str]] = []
        self.ran_out = False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if len(self.taken) >= _CSV_MAX_RECORD_LINES:
            self.ran_out = True
            raise StopIteration
        line = self.pending.popleft() if self.pending else next(self._source, None)
        if line is None:
            self.ran_out = bool(self.taken)
            raise StopIteration
        self.taken.append(line)
        return line[1]

    def start_record(self) -> None:
        self.taken = []
        self.ran_out = False


def _csv_rows(fh, path: str):
    """Rows of a csv file keyed by its header, read record by record with line-aware quoting.

    A quoted field may span lines (at most ``_CSV_MAX_RECORD_LINES``), but only when the record it
    ends gets the header's field count: a quote left open on a line (to the end of the file, or
    closing into a record of another width) is an error for that line alone, and reading resumes
    on the next line, so one stray quote does not swallow the rows after it.
    """
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    # Decode line by line with surrogateescape so one bad byte rejects its row, not the whole file.
    feed = _CsvLineFeed(enumerate((raw.decode("utf-8", errors="surrogateescape") for raw in _lines(fh)), 1))
    reader = csv.reader(feed)
    header = None
    while True:
        feed.start_record()
        error = ""
        try:
            row = next(reader)
        except StopIteration:
            if not feed.taken:
                return
            row, error = None, "unexpected end of data"
        except csv.Error as e:
            row, error = None, str(e)
        if not error and (feed.ran_out or (len(feed.taken) > 1 and header is not None
                                           and len(row) != len(header))):
            width = f" of {len(header)} fields" if header is not None else ""
            error = f"a quoted field is not closed on this line (nor within a record{width})"
        line_number, first_line = feed.taken[0]
        if error:
            feed.pending.extendleft(reversed(feed.taken[1:]))  # only this line is lost
            reader = csv.reader(feed)  # the old reader may be mid-record or past the end
            yield _read_dead_letter(f"line {line_number}: {error}",
                                    _csv_text([first_line.rstrip("\r\n")]), path)
            continue
        if header is None:
            header = [h.lstrip("\ufeff") if i == 0 else h for i, h in enumerate(row)]
            continue
        if not row:
            continue
        if len(row) != len(header):
            yield _read_dead_letter(f"line {line_number}: expected {len(header)} fields, got {len(row)}",
                                    _csv_text(row), path)
        elif _has_undecodable(row):
            yield _read_dead_letter(f"line {line_number}: invalid UTF-8", _csv_text(row), path)
        else:
            yield dict(zip(header, row, strict=True))


def _tfrecord_rows(fh, path: str, binary_fields: frozenset[str] = frozenset()):
    replaced_values = Metrics.counter(metrics.NAMESPACE, "utf8_replaced_values")
    for index, data, error in iter_tfrecords(fh):
        rows = 1
        if error is None:
            try:
                replaced = [0]
                row = decode_example(data, replaced=replaced, binary_fields=binary_fields)
                if replaced[0]:  # documented: kept with U+FFFD, and counted
                    replaced_values.inc(replaced[0])
                yield row
                continue
            except DecodeError as e:
                error = f"record {index}: not a tf.Example: {e}"
        elif not error.endswith("data checksum mismatch"):
            # The framing is lost: every record after this one is unreadable, how many is unknown.
            rows = UNKNOWN_ROWS
            error += "; the records after it cannot be framed, how many is unknown"
        yield _read_dead_letter(error, "base64:" + base64.b64encode(data[:1500]).decode("ascii"), path,
                                rows=rows)


_ROW_READERS = {"jsonl": _jsonl_rows, "csv": _csv_rows, "tfrecord": _tfrecord_rows}
# A gzip stream that is cut short or corrupt (a real I/O error is an OSError that is not a
# BadGzipFile, and raises).
_STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@contextlib.contextmanager
def _open_rows(path: str, fmt: str):
    """A text-format file as a binary stream; ``.gz`` through :mod:`gzip`, which, unlike Beam's
    decompressor, reports a stream cut short (EOFError) instead of ending quietly."""
    if not path.lower().endswith(".gz"):
        with _open_for(path, fmt) as fh:
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
        yield _read_dead_letter(
            f"truncated or corrupt gzip stream after {line} rows and dead letters "
            f"({type(e).__name__}: {e}); the rows after them are lost, how many is unknown",
            "", path, rows=UNKNOWN_ROWS)


def _read_rows(path: str, fmt: str, batch_size: int, binary_fields: frozenset[str] = frozenset()):
    reader = _ROW_READERS[fmt]
    if fmt == "tfrecord" and binary_fields:
        reader = functools.partial(_tfrecord_rows, binary_fields=binary_fields)
    with _open_rows(path, fmt) as fh:
        yield from _rows_to_batches(_until_stream_fault(reader(fh, path), path), path, batch_size)


def iter_raw_batches(pattern: str, input_format: str = "auto", batch_size: int = 4096,
                     binary_fields: frozenset[str] = frozenset()) -> Iterator[RawBatch]:
    """Every RawBatch of the files matching ``pattern``, read in this process as ReadCorpus reads
    them (same formats, rows and origins ``path:row``); what ReadCorpus would send to dead letters is
    skipped. For tools that look records up again (``explain``, ``calibrate --fit_scorer``, ``train``),
    not for the pipeline."""
    for meta in FileSystems.match([pattern])[0].metadata_list:
        fmt = format_for_path(meta.path) if input_format == "auto" else input_format
        if fmt == "parquet":
            with _open_for(meta.path, "parquet") as fh:
                footer = pq.ParquetFile(fh).metadata
            first_row, items = 0, []
            for g in range(footer.num_row_groups):
                items.append(_read_parquet(meta.path, g, first_row, batch_size))
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
                items = list(_read_parquet(path, row_group, first_row, self._batch_size, rows))
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

    def __init__(self, *, file_pattern: str, input_format: str, role: str, batch_size: int = 4096,
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


# --------------------------------------------------------------------------------------------------
# Writing matches


def match_shard_path(output_dir: str, output_format: str, shard: int, num_shards: int) -> str:
    """``DIR/matches/matches-SSSSS-of-NNNNN.<ext>``."""
    name = f"matches-{shard:05d}-of-{num_shards:05d}.{MATCH_EXTENSIONS[output_format]}"
    return join_path(output_dir, "matches", name)


def dead_letter_shard_path(output_dir: str, shard: int, num_shards: int) -> str:
    """``DIR/dead_letters/dead_letters-SSSSS-of-NNNNN.jsonl``."""
    return join_path(output_dir, "dead_letters", f"dead_letters-{shard:05d}-of-{num_shards:05d}.jsonl")


def _empty_pairs() -> PairBatch:
    return PairBatch(query_ids=np.empty(0, dtype=object), candidate_ids=np.empty(0, dtype=object),
                     ranks=np.empty(0, dtype=np.int64), distances=np.empty(0, dtype=np.float64))


def _as_columns(pairs: PairBatch | ScoredPairBatch) -> PairBatch | ScoredPairBatch:
    """Flat columns of the right dtypes; a ScoredPairBatch keeps its score columns."""
    head = (np.asarray(pairs.query_ids, dtype=object).reshape(-1),
            np.asarray(pairs.candidate_ids, dtype=object).reshape(-1),
            np.asarray(pairs.ranks, dtype=np.int64).reshape(-1),
            np.asarray(pairs.distances, dtype=np.float64).reshape(-1))
    tail = tuple(np.asarray(c, dtype=np.float64).reshape(-1) for c in pairs[len(PairBatch._fields):])
    return type(pairs)(*head, *tail)


def _concat_pairs(batches: list[PairBatch | ScoredPairBatch]) -> PairBatch | ScoredPairBatch:
    if not batches:
        return _empty_pairs()
    kinds = {type(b) for b in batches}
    if len(kinds) > 1:
        names = sorted(k.__name__ for k in kinds)
        raise ValueError(f"cannot write scored and unscored pairs together: {names}")
    columns = [_as_columns(b) for b in batches]
    cls = type(columns[0])
    return cls(*(np.concatenate([c[i] for c in columns]) for i in range(len(cls._fields))))


def _sorted_pairs(pairs: PairBatch) -> PairBatch:
    """Sorts rows by (query_id, rank, candidate_id, distance): a total order, so bytes are stable."""
    pairs = _as_columns(pairs)
    if len(pairs) == 0:
        return pairs
    # Ids sort by int keys (id_sort_keys), never as fixed-width unicode copies whose width is the
    # longest id's.
    (query_key,) = id_sort_keys(pairs.query_ids)
    order = np.lexsort((pairs.ranks, query_key))
    q, r = query_key[order], pairs.ranks[order]
    if ((q[1:] == q[:-1]) & (r[1:] == r[:-1])).any():  # (query, rank) repeats: the full order
        (candidate_key,) = id_sort_keys(pairs.candidate_ids)
        order = np.lexsort((pairs.distances, candidate_key, pairs.ranks, query_key))
    return type(pairs)(str_array(pairs.query_ids[order]), str_array(pairs.candidate_ids[order]),
                       *(column[order] for column in pairs[2:]))


def rank_by_weight(pairs: ScoredPairBatch) -> ScoredPairBatch:
    """Re-ranks each query's rows by match weight (highest first), ties by distance, then candidate id.

    All rows of a query must be in ``pairs`` (the match writer holds every row of its queries).
    """
    pairs = _as_columns(pairs)
    if len(pairs) == 0:
        return pairs
    query_key, candidate_key = id_sort_keys(pairs.query_ids, pairs.candidate_ids)
    order = np.lexsort((candidate_key, pairs.distances, -pairs.match_weights, query_key))
    q = query_key[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    first_of_row = np.repeat(starts, np.diff(np.r_[starts, len(q)]))
    ranks = np.empty(len(q), dtype=np.int64)
    ranks[order] = np.arange(len(q)) - first_of_row + 1
    return ScoredPairBatch(pairs.query_ids, pairs.candidate_ids, ranks, *pairs[3:])


def drop_duplicate_pairs(pairs: PairBatch) -> PairBatch:
    """Keeps one row per (query_id, candidate_id): the lowest rank, then the smallest distance.

    In dedup mode each pair is canonicalised (smaller id first) before writing, so a pair found from
    both sides appears twice with the same query_id, hence in the same output shard, where this drops
    the second copy. Row order of the result is unspecified (writers sort).
    """
    pairs = _as_columns(pairs)
    if len(pairs) == 0:
        return pairs
    query_key, candidate_key = id_sort_keys(pairs.query_ids, pairs.candidate_ids)
    order = np.lexsort((pairs.distances, pairs.ranks, candidate_key, query_key))
    q, c = query_key[order], candidate_key[order]
    first = np.r_[True, (q[1:] != q[:-1]) | (c[1:] != c[:-1])]
    keep = order[first]
    return type(pairs)(*(column[keep] for column in pairs))


def _columns_of(pairs: PairBatch | ScoredPairBatch) -> tuple[str, ...]:
    return MATCH_COLUMNS + (SCORE_COLUMNS if isinstance(pairs, ScoredPairBatch) else ())


def _rows(pairs: PairBatch | ScoredPairBatch):
    """Rows as Python values (str, str, int, float[, float, float])."""
    tail = [c.tolist() for c in pairs[2:]]
    return zip(pairs.query_ids, pairs.candidate_ids, *tail, strict=True)


def _encode_parquet(pairs: PairBatch) -> bytes:
    scored = isinstance(pairs, ScoredPairBatch)
    arrays = [pa.array(pairs.query_ids, pa.string()), pa.array(pairs.candidate_ids, pa.string()),
              pa.array(pairs.ranks, pa.int64()), pa.array(pairs.distances, pa.float64())]
    if scored:
        arrays += [pa.array(pairs.match_weights, pa.float64()),
                   pa.array(pairs.match_probabilities, pa.float64())]
    table = pa.Table.from_arrays(arrays, schema=_SCORED_SCHEMA if scored else _MATCH_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **_PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()


def _encode_jsonl(pairs: PairBatch) -> bytes:
    # json.dumps writes floats with repr(): the shortest text that round-trips the float64.
    names = _columns_of(pairs)
    lines = [json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) + "\n"
             for row in _rows(pairs)]
    return "".join(lines).encode("utf-8")


def _encode_csv(pairs: PairBatch) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_columns_of(pairs))
    writer.writerows([q, c, r, *(repr(v) for v in rest)] for q, c, r, *rest in _rows(pairs))
    return out.getvalue().encode("utf-8")


def _encode_tfrecord(pairs: PairBatch) -> bytes:
    names = _columns_of(pairs)[4:]
    return b"".join(
        frame_tfrecord(encode_example({"query_id": q, "candidate_id": c, "rank": r, "distance": d,
                                       "distance_exact": repr(d),
                                       **{n: v for n, v in zip(names, rest, strict=True)},
                                       **{f"{n}_exact": repr(v) for n, v in zip(names, rest, strict=True)}}))
        for q, c, r, d, *rest in _rows(pairs))


_MATCH_ENCODERS = {"parquet": _encode_parquet, "jsonl": _encode_jsonl, "csv": _encode_csv,
                   "tfrecord": _encode_tfrecord}


def write_match_shard(path: str, pairs: PairBatch | ScoredPairBatch, output_format: str) -> int:
    """Writes one match file, sorted and byte-for-byte reproducible, through a temp name and rename.

    Args:
        path: the file to write (any Beam filesystem); parent directories are created as needed.
        pairs: the rows, in any order; empty gives a valid empty file (parquet: schema only, csv:
            header only, jsonl/tfrecord: zero bytes).
        output_format: one of ``OUTPUT_FORMATS``.

    Returns:
        The number of rows written.

    Raises:
        ValueError: unknown ``output_format``.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    pairs = _sorted_pairs(pairs)
    write_bytes(path, _MATCH_ENCODERS[output_format](pairs))
    return len(pairs)


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


class _SplitPairsByShardFn(beam.DoFn):
    """PairBatch -> ``(shard, PairBatch)`` for every shard its rows go to (by query id)."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, pairs):
        if len(pairs) == 0:
            return
        pairs = _as_columns(pairs)
        shards = assign_shards(pairs.query_ids, self._num_shards)
        for shard, rows in split_by_shard(shards, self._num_shards):
            yield shard, type(pairs)(*(column[rows] for column in pairs))


class _WriteMatchShardFn(beam.DoFn):
    """``(shard, [PairBatch or None, ...])`` -> one match file -> ``(shard, rows_written)``."""

    def __init__(self, output_dir: str, output_format: str, num_shards: int, unique_pairs: bool,
                 rank_by_weight: bool = False, scored: bool = False):
        self._output_dir = output_dir
        self._output_format = output_format
        self._num_shards = num_shards
        self._unique_pairs = unique_pairs
        self._rank_by_weight = rank_by_weight
        self._scored = scored
        self._timer = metrics.StageTimer("write")

    def process(self, element):
        shard, batches = element
        with self._timer:
            pairs = _concat_pairs([b for b in batches if b is not None])
            if self._scored and not isinstance(pairs, ScoredPairBatch):  # an empty shard
                pairs = ScoredPairBatch(*pairs, np.empty(0, np.float64), np.empty(0, np.float64))
            if self._unique_pairs:
                pairs = drop_duplicate_pairs(pairs)
            if self._rank_by_weight and isinstance(pairs, ScoredPairBatch):
                pairs = rank_by_weight(pairs)
            path = match_shard_path(self._output_dir, self._output_format, shard, self._num_shards)
            written = write_match_shard(path, pairs, self._output_format)
        progress.add("written", written)
        yield shard, written


def _placeholder(shard):
    return shard, None


def _check_writer_args(output_dir: str, num_shards: int) -> None:
    if not isinstance(output_dir, str) or not output_dir.strip():
        raise ValueError(f"output_dir must be a non-empty string, got {output_dir!r}")
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")


class WriteMatches(beam.PTransform):
    """Writes PairBatches to exactly ``num_shards`` match files, routed by a stable hash of query_id.

    Input: PCollection of PairBatch. Output: PCollection of ``(shard, rows_written)``, one per file.
    Every shard gets a file, empty or not; the bytes depend only on the multiset of rows.
    """

    def __init__(self, *, output_dir: str, output_format: str, num_shards: int,
                 unique_pairs: bool = False, rank_by_weight: bool = False, scored: bool = False):
        """Validates the arguments.

        Args:
            output_dir: the run's output directory; files go to ``DIR/matches/``.
            output_format: one of ``OUTPUT_FORMATS``.
            num_shards: number of match files, >= 1.
            unique_pairs: dedup mode: keep one row per (query_id, candidate_id), see
                :func:`drop_duplicate_pairs` (pairs must already be canonical, smaller id first).
            rank_by_weight: scored pairs (ScoredPairBatch) get their ranks re-assigned per query by
                match weight (:func:`rank_by_weight`); every row of a query meets in one file.
            scored: the pairs are ScoredPairBatches: an empty file gets the score columns too.

        Raises:
            ValueError: an argument is out of range.
        """
        super().__init__()
        _check_writer_args(output_dir, num_shards)
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
        self._output_dir = output_dir.rstrip("/")
        self._output_format = output_format
        self._num_shards = num_shards
        self._unique_pairs = bool(unique_pairs)
        self._rank_by_weight = bool(rank_by_weight)
        self._scored = bool(scored)

    def expand(self, pairs):
        keyed = pairs | "SplitByShard" >> beam.ParDo(_SplitPairsByShardFn(self._num_shards))
        placeholders = (pairs.pipeline
                        | "ListShards" >> beam.Create(list(range(self._num_shards)))
                        | "EmptyShards" >> beam.Map(_placeholder))
        return ((keyed, placeholders)
                | "FlattenWithEmptyShards" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(
                    _WriteMatchShardFn(self._output_dir, self._output_format, self._num_shards,
                                       self._unique_pairs, self._rank_by_weight, self._scored)))


# --------------------------------------------------------------------------------------------------
# Writing dead letters


def _dead_letter_sort_key(letter: DeadLetter) -> tuple[str, ...]:
    return letter.stage, letter.source, letter.record_id, letter.error, letter.payload


class _KeyDeadLetterFn(beam.DoFn):
    """DeadLetter -> ``(shard, DeadLetter)``, the shard from a stable hash of its JSON text."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, letter):
        letter = DeadLetter(*letter)  # a schema-aware coder may hand back a plain row
        shard = int(stable_hash64(np.array([letter.to_json()], dtype=object))[0] % self._num_shards)
        yield shard, letter


class _WriteDeadLetterShardFn(beam.DoFn):
    """``(shard, [DeadLetter or None, ...])`` -> one sorted jsonl file -> ``(shard, count)``."""

    def __init__(self, output_dir: str, num_shards: int):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def process(self, element):
        shard, letters = element
        letters = sorted((DeadLetter(*d) for d in letters if d is not None), key=_dead_letter_sort_key)
        text = "".join(d.to_json() + "\n" for d in letters)
        write_bytes(dead_letter_shard_path(self._output_dir, shard, self._num_shards), text.encode("utf-8"))
        yield shard, len(letters)


def _stage_rows(letter):
    letter = DeadLetter(*letter)
    return letter.stage, rows_rejected(letter)


class WriteDeadLetters(beam.PTransform):
    """Writes dead letters to ``DIR/dead_letters/dead_letters-SSSSS-of-NNNNN.jsonl``, sorted.

    Input: PCollection of DeadLetter. Output: PCollection of one dict ``{stage: rows rejected}``
    (:func:`~transforms.common.dead_letters.rows_rejected`: a file fault counts the rows it lost; ``{}`` when
    there are none), emitted only once every shard file is written. Every shard file is written,
    even empty, so the directory always exists.
    """

    def __init__(self, *, output_dir: str, num_shards: int = 1):
        """Validates the arguments.

        Args:
            output_dir: the run's output directory.
            num_shards: number of dead-letter files, >= 1 (one is plenty while the bad-record ratio
                limit holds).

        Raises:
            ValueError: an argument is out of range.
        """
        super().__init__()
        _check_writer_args(output_dir, num_shards)
        self._output_dir = output_dir.rstrip("/")
        self._num_shards = num_shards

    def expand(self, dead_letters):
        keyed = dead_letters | "KeyByShard" >> beam.ParDo(_KeyDeadLetterFn(self._num_shards))
        placeholders = (dead_letters.pipeline
                        | "ListShards" >> beam.Create(list(range(self._num_shards)))
                        | "EmptyShards" >> beam.Map(_placeholder))
        written = ((keyed, placeholders)
                   | "FlattenWithEmptyShards" >> beam.Flatten()
                   | "GroupByShard" >> beam.GroupByKey()
                   | "WriteShards" >> beam.ParDo(_WriteDeadLetterShardFn(self._output_dir,
                                                                         self._num_shards)))
        # The counts wait for the files (a side input): what consumes them (the manifest, then
        # _SUCCESS on a runner the launcher does not wait for) comes after every file is written.
        return (dead_letters
                | "StageOf" >> beam.Map(_stage_rows)
                | "CountPerStage" >> beam.CombinePerKey(sum)
                | "ToDict" >> combiners.ToDict()
                | "AfterShardsWritten" >> beam.Map(lambda counts, shards: counts,
                                                   shards=beam.pvalue.AsList(written)))
