"""tf.Example and TFRecord framing without TensorFlow: encode/decode Examples, frame and iterate
records (with their CRCs), read a TFRecord file's rows and encode match rows.

What it does not do: import TensorFlow (the Example proto class comes from the installed protobuf).
"""

from __future__ import annotations

import base64
import functools
import struct
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from google.protobuf.message import DecodeError

from transforms.common import metrics
from transforms.common.dead_letters import UNKNOWN_ROWS
from transforms.common.schema import PairBatch
from transforms.io.files import columns_of, pair_rows, read_dead_letter

__all__ = ["encode_example", "decode_example", "frame_tfrecord", "iter_tfrecords", "tfrecord_rows",
           "encode_tfrecord"]



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


def tfrecord_rows(fh, path: str, binary_fields: frozenset[str] = frozenset()):
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
        yield read_dead_letter(error, "base64:" + base64.b64encode(data[:1500]).decode("ascii"), path,
                                rows=rows)


def encode_tfrecord(pairs: PairBatch) -> bytes:
    names = columns_of(pairs)[4:]
    return b"".join(
        frame_tfrecord(encode_example({"query_id": q, "candidate_id": c, "rank": r, "distance": d,
                                       "distance_exact": repr(d),
                                       **{n: v for n, v in zip(names, rest, strict=True)},
                                       **{f"{n}_exact": repr(v) for n, v in zip(names, rest, strict=True)}}))
        for q, c, r, d, *rest in pair_rows(pairs))
