"""Tests for transforms.io.tfrecord: the tf.Example codec, framing and checksums, non-UTF-8 bytes."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.io.io_cases import (
    _pipeline,
    _read_directly,
    _tfrecord_bytes,
)
from transforms.io.read_corpus import ReadCorpus
from transforms.io.tfrecord import decode_example, encode_example, frame_tfrecord

# Serialized by tensorflow.core.example.example_pb2 (TF 2.21) from the same features, deterministic=True.
_TF_GOLDEN = (b'\na\n\x1d\n\tembedding\x12\x10\x12\x0e\n\x0c\x00\x00\x00?\x00\x00\x80>\x00\x00\x80\xbf\n\t\n'
              b'\x05empty\x12\x00\n\x0c\n\x02id\x12\x06\n\x04\n\x02q1\n\x17\n\x04rank\x12\x0f\x1a\r\n\x0b'
              b'\x01\xfd\xff\xff\xff\xff\xff\xff\xff\xff\x01\n\x0e\n\x01z\x12\t\n\x07\n\x01a\n\x02\xc3\xa9')


def test_example_codec_matches_tensorflow_bytes():
    features = {"id": "q1", "rank": [1, -3], "embedding": [0.5, 0.25, -1.0], "z": [b"a", "é"], "empty": []}
    assert encode_example(features) == _TF_GOLDEN
    assert decode_example(_TF_GOLDEN) == {"embedding": [0.5, 0.25, -1.0], "empty": [], "id": ["q1"],
                                          "rank": [1, -3], "z": ["a", "é"]}


def test_lost_tfrecord_framing_is_a_bad_file_but_a_bad_checksum_is_one_record(tmp_path):
    (tmp_path / "t.tfrecord").write_bytes(_tfrecord_bytes())
    _, dead = _read_directly(str(tmp_path / "t.tfrecord"), "tfrecord")
    rows = {d.error.split(":")[0]: d.rows for d in dead}
    assert rows == {"record 1": 1, "record 3": 1, "record 5": 0}


def test_tf_example_bytes_that_are_not_utf8_are_replaced_and_counted(tmp_path):
    data = frame_tfrecord(encode_example({"id": b"ok", "name": [b"caf\xe9", b"fine"]}))
    (tmp_path / "t.tfrecord").write_bytes(data)
    replaced = [0]
    assert decode_example(encode_example({"name": [b"caf\xe9", b"x"]}), replaced=replaced) == {
        "name": ["caf\ufffd", "x"]}
    assert replaced == [1]
    p = _pipeline()
    result = p | ReadCorpus(file_pattern=str(tmp_path / "*"), input_format="auto", role="input")
    assert_that(result.batches | beam.FlatMap(lambda b: b.rows),
                equal_to([{"id": ["ok"], "name": ["caf\ufffd", "fine"]}]))
    outcome = p.run()
    outcome.wait_until_finish()
    counters = outcome.metrics().query(MetricsFilter().with_name("utf8_replaced_values"))["counters"]
    assert sum(c.committed for c in counters) == 1
