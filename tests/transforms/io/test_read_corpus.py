"""Tests for transforms.io.read_corpus: reading every input format (and its bad rows), and deterministic
writing.

Pipelines run on ``FnApiRunner`` by name: the default ``DirectRunner`` first tries to download the Prism
runner binary (slow, or a failed network call offline) and then falls back to this same in-process
FnApiRunner; naming it skips the download. ``BundleBasedDirectRunner`` measured the same speed here but
is the legacy engine, so tests would exercise something other than what local runs use.
"""

from __future__ import annotations

import gzip
import json
import os

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from transforms.common.dead_letters import DEAD_LETTER_TAG, DeadLetter
from transforms.common.schema import MATCH_COLUMNS, OUTPUT_FORMATS, PairBatch, RawBatch
from transforms.io.read_corpus import ReadCorpus, check_glob_matches, format_for_path
from transforms.io.results import read_dead_letters, read_matches
from transforms.io.tfrecord import decode_example, encode_example, frame_tfrecord
from transforms.io.write_matches import (
    WriteDeadLetters,
    WriteMatches,
    drop_duplicate_pairs,
    match_shard_path,
    write_match_shard,
)

RUNNER = "FnApiRunner"


def _pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(runner=RUNNER)


# ------------------------------------------------------------------------------------------------
# Tiny input files


def _write_parquet(path, n=5, row_group_size=3):
    table = pa.table({"id": [f"p{i}" for i in range(n)],
                      "embedding": [[float(i), float(i) + 0.5] for i in range(n)]})
    pq.write_table(table, str(path), row_group_size=row_group_size)


def _write_jsonl(path):
    path.write_bytes(b"\n".join([
        b'{"id": "j1", "embedding": [1, 2]}',
        b'{"id": "j2", "embedding": [3,',  # line 2: truncated JSON
        b"",  # blank: skipped, not an error
        b"[1, 2]",  # line 4: not an object
        b'{"id": "j\xff"}',  # line 5: invalid UTF-8
        b'{"id": "j3", "embedding": [5, 6]}',
    ]) + b"\n")


_CSV = (b'id,embedding,label\n'
        b'c1,"[1.0, 2.0]",x\n'
        b'c2,"[3.0]",y,EXTRA\n'  # line 3: one field too many
        b'c3,"[4.0]"\n'  # line 4: one too few
        b'c4,"[5.0, 6.0]","z, quoted"\n'
        b'\n'
        b'c5,"[7.0]",\xff\n')  # line 7: invalid UTF-8


def _tfrecord_bytes():
    good = [encode_example({"id": "t1", "embedding": [0.5, 0.25]}),
            encode_example({"id": "t2", "embedding": [1.0], "n": 3}),
            encode_example({"id": "t3", "embedding": [2.0]})]
    corrupt = bytearray(frame_tfrecord(encode_example({"id": "bad crc"})))
    corrupt[14] ^= 0xFF  # a data byte: the data checksum no longer matches
    truncated = frame_tfrecord(encode_example({"id": "cut"}))[:-3]
    return b"".join([frame_tfrecord(good[0]), frame_tfrecord(b"\xff\xff\xff"), frame_tfrecord(good[1]),
                     bytes(corrupt), frame_tfrecord(good[2]), truncated])


def _flatten_batches(batch):
    rows = batch.table.to_pylist() if batch.table is not None else batch.rows
    return [(os.path.basename(batch.source), batch.first_row + i, json.dumps(row, sort_keys=True))
            for i, row in enumerate(rows)]


def _flatten_with_batch_start(batch):
    """Rows tagged with their batch's first row, which pins how rows were cut into batches."""
    return [row + (batch.first_row,) for row in _flatten_batches(batch)]


def _row(**fields):
    return json.dumps(fields, sort_keys=True)


def _dead_letters_are(expected: list[tuple[str, str]], directory: str):
    """Matcher: one dead letter per (file name, error substring), stage 'read', full source path."""

    def check(actual):
        got = sorted((os.path.basename(d.source), d.error) for d in actual)
        want = sorted(expected)
        problems = []
        if len(got) != len(want):
            problems.append(f"{len(got)} dead letters, expected {len(want)}")
        for (name, error), (want_name, fragment) in zip(got, want, strict=False):
            if name != want_name or fragment not in error:
                problems.append(f"{name}: {error!r} does not match {want_name}: {fragment!r}")
        for d in actual:
            if d.stage != "read" or d.record_id != "" or os.path.dirname(d.source) != directory:
                problems.append(f"bad fields in {d}")
        if problems:
            raise BeamAssertException("; ".join(problems))

    return check


# ------------------------------------------------------------------------------------------------
# Reading


def test_read_auto_every_format_with_bad_rows(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    _write_parquet(d / "good.parquet")
    (d / "bad.parquet").write_bytes(b"this is not parquet")
    _write_jsonl(d / "rows.jsonl")
    (d / "rows.csv.gz").write_bytes(gzip.compress(_CSV))
    (d / "rows.tfrecord").write_bytes(_tfrecord_bytes())
    (d / "notes.txt").write_text("no format")

    p = _pipeline()
    result = p | "ReadQueries" >> ReadCorpus(file_pattern=str(d / "*"), input_format="auto",
                                             role="queries", batch_size=2)
    # Last field: the first row of the row's batch. Parquet row groups are [0, 3) and [3, 5), each cut
    # into batches of at most 2 rows.
    parquet_batch_start = [0, 0, 2, 3, 3]
    expected_rows = [("good.parquet", i, _row(id=f"p{i}", embedding=[float(i), i + 0.5]),
                      parquet_batch_start[i]) for i in range(5)]
    expected_rows += [("rows.jsonl", 0, _row(id="j1", embedding=[1, 2]), 0),
                      ("rows.jsonl", 1, _row(id="j3", embedding=[5, 6]), 0),
                      ("rows.csv.gz", 0, _row(id="c1", embedding="[1.0, 2.0]", label="x"), 0),
                      ("rows.csv.gz", 1, _row(id="c4", embedding="[5.0, 6.0]", label="z, quoted"), 0),
                      ("rows.tfrecord", 0, _row(id=["t1"], embedding=[0.5, 0.25]), 0),
                      ("rows.tfrecord", 1, _row(id=["t2"], embedding=[1.0], n=[3]), 0),
                      ("rows.tfrecord", 2, _row(id=["t3"], embedding=[2.0]), 2)]
    assert_that(result.batches | "Flatten" >> beam.FlatMap(_flatten_with_batch_start),
                equal_to(expected_rows), label="CheckRows")
    expected_dead = [("bad.parquet", "not a valid parquet file"),
                     ("notes.txt", "unknown file extension"),
                     ("rows.jsonl", "line 2: invalid JSON"), ("rows.jsonl", "line 4: expected a JSON object"),
                     ("rows.jsonl", "line 5: invalid UTF-8"),
                     ("rows.csv.gz", "line 3: expected 3 fields, got 4"),
                     ("rows.csv.gz", "line 4: expected 3 fields, got 2"),
                     ("rows.csv.gz", "line 7: invalid UTF-8"),
                     ("rows.tfrecord", "record 1: not a tf.Example"),
                     ("rows.tfrecord", "record 3: data checksum mismatch"),
                     ("rows.tfrecord", "record 5: truncated")]
    assert_that(result.dead_letters, _dead_letters_are(expected_dead, str(d)), label="CheckDeadLetters")
    assert_that(result.rows_read, equal_to([len(expected_rows) + len(expected_dead)]), label="CheckRowsRead")
    outcome = p.run()
    outcome.wait_until_finish()
    counters = outcome.metrics().query(MetricsFilter().with_name("queries_read"))["counters"]
    assert sum(c.committed for c in counters) == len(expected_rows) + len(expected_dead)


def _read_directly(path: str, fmt: str, batch_size: int = 4096) -> tuple[list, list]:
    """Runs the planning and reading DoFns in-process: (RawBatches, DeadLetters)."""
    from transforms.io.read_corpus import _PlanReadUnitsFn, _ReadUnitFn

    outputs = list(_PlanReadUnitsFn(fmt, "candidates").process(FileMetadata(path, 0)))
    for unit in [o for o in outputs if isinstance(o, tuple)]:
        outputs += list(_ReadUnitFn("candidates", batch_size).process(unit))
    batches = [o for o in outputs if isinstance(o, RawBatch)]
    dead = [o.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == DEAD_LETTER_TAG]
    return batches, dead


def test_read_explicit_formats_ignore_extensions(tmp_path):
    _write_parquet(tmp_path / "p.dat", n=2)
    (tmp_path / "j.dat").write_text('{"id": "j", "embedding": [1.5]}\n')
    (tmp_path / "c.dat").write_text('id,embedding\nc,"[1.5]"\n')
    (tmp_path / "t.dat").write_bytes(frame_tfrecord(encode_example({"id": "t", "embedding": [1.5]})))
    expected = {"parquet": [("p.dat", 0, _row(id="p0", embedding=[0.0, 0.5])),
                            ("p.dat", 1, _row(id="p1", embedding=[1.0, 1.5]))],
                "jsonl": [("j.dat", 0, _row(id="j", embedding=[1.5]))],
                "csv": [("c.dat", 0, _row(id="c", embedding="[1.5]"))],  # values stay strings
                "tfrecord": [("t.dat", 0, _row(id=["t"], embedding=[1.5]))]}  # features stay lists
    for fmt, rows in expected.items():
        batches, dead = _read_directly(str(tmp_path / f"{fmt[0]}.dat"), fmt)
        assert [r for b in batches for r in _flatten_batches(b)] == rows
        assert dead == []
    batches, dead = _read_directly(str(tmp_path / "j.dat"), "parquet")
    assert batches == []
    assert [(d.stage, d.source) for d in dead] == [("read", str(tmp_path / "j.dat"))]
    assert "not a valid parquet file" in dead[0].error


def _corrupt(data: bytes, pos: int, n: int = 20) -> bytes:
    out = bytearray(data)
    for k in range(n):
        out[pos + k] ^= 0x5A
    return bytes(out)


def test_corrupt_parquet_is_a_dead_letter_but_io_errors_raise(tmp_path, monkeypatch):
    import io as std_io
    import struct

    import transforms.io.parquet as tio

    table = pa.table({"id": [str(i) for i in range(600)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=300)
    good = sink.getvalue().to_pybytes()
    footer_len = struct.unpack("<I", good[-8:-4])[0]
    (tmp_path / "footer.parquet").write_bytes(_corrupt(good, len(good) - 8 - footer_len + 10))
    (tmp_path / "page.parquet").write_bytes(_corrupt(good, 200))  # inside row group 0's data

    batches, dead = _read_directly(str(tmp_path / "footer.parquet"), "parquet")
    assert batches == [] and len(dead) == 1 and "not a valid parquet file" in dead[0].error

    batches, dead = _read_directly(str(tmp_path / "page.parquet"), "parquet")
    assert sum(len(b) for b in batches) == 300  # row group 1 is intact
    assert len(dead) == 1 and "corrupt parquet row group 0" in dead[0].error

    class _Flaky(std_io.BytesIO):
        def read(self, *args):
            raise ConnectionResetError(104, "connection reset")

    monkeypatch.setattr(tio, "open_for", lambda path, fmt: _Flaky(good))
    with pytest.raises(ConnectionResetError):
        _read_directly(str(tmp_path / "page.parquet"), "parquet")


def test_read_empty_glob_fails_the_run(tmp_path):
    p = _pipeline()
    _ = p | ReadCorpus(file_pattern=str(tmp_path / "none*.parquet"), input_format="auto", role="input")
    with pytest.raises(Exception, match="Empty match"):
        p.run().wait_until_finish()


def test_check_glob_matches(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    assert check_glob_matches(str(tmp_path / "*.jsonl"), "queries") == 2
    with pytest.raises(ValueError, match="--candidates") as err:
        check_glob_matches(str(tmp_path / "*.parquet"), "candidates")
    assert "matches no files" in str(err.value)
    with pytest.raises(ValueError, match="--input"):
        check_glob_matches(str(tmp_path / "missing_dir" / "*"), "--input")
    with pytest.raises(ValueError, match="--input"):
        check_glob_matches("nosuchscheme://x/*", "input")


@pytest.mark.parametrize("path,fmt", [
    ("gs://b/x.parquet", "parquet"), ("a/B.PQ", "parquet"), ("x.jsonl", "jsonl"), ("x.json.gz", "jsonl"),
    ("x.ndjson", "jsonl"), ("x.csv", "csv"), ("x.csv.gz", "csv"), ("x.tfrecord", "tfrecord"),
    ("x.tfrecords.gz", "tfrecord"), ("x.parquet.gz", None), ("x.txt", None), ("noext", None),
])
def test_format_for_path(path, fmt):
    assert format_for_path(path) == fmt


def test_read_corpus_validates_arguments():
    with pytest.raises(ValueError, match="input_format"):
        ReadCorpus(file_pattern="x", input_format="xml", role="queries")
    with pytest.raises(ValueError, match="role"):
        ReadCorpus(file_pattern="x", input_format="auto", role="bogus")
    with pytest.raises(ValueError, match="batch_size"):
        ReadCorpus(file_pattern="x", input_format="auto", role="queries", batch_size=0)
    with pytest.raises(ValueError, match="file_pattern"):
        ReadCorpus(file_pattern=" ", input_format="auto", role="queries")
    with pytest.raises(TypeError):
        ReadCorpus("x", "auto", "queries")  # keyword-only


# Serialized by tensorflow.core.example.example_pb2 (TF 2.21) from the same features, deterministic=True.
_TF_GOLDEN = (b'\na\n\x1d\n\tembedding\x12\x10\x12\x0e\n\x0c\x00\x00\x00?\x00\x00\x80>\x00\x00\x80\xbf\n\t\n'
              b'\x05empty\x12\x00\n\x0c\n\x02id\x12\x06\n\x04\n\x02q1\n\x17\n\x04rank\x12\x0f\x1a\r\n\x0b'
              b'\x01\xfd\xff\xff\xff\xff\xff\xff\xff\xff\x01\n\x0e\n\x01z\x12\t\n\x07\n\x01a\n\x02\xc3\xa9')


def test_example_codec_matches_tensorflow_bytes():
    features = {"id": "q1", "rank": [1, -3], "embedding": [0.5, 0.25, -1.0], "z": [b"a", "é"], "empty": []}
    assert encode_example(features) == _TF_GOLDEN
    assert decode_example(_TF_GOLDEN) == {"embedding": [0.5, 0.25, -1.0], "empty": [], "id": ["q1"],
                                          "rank": [1, -3], "z": ["a", "é"]}


# ------------------------------------------------------------------------------------------------
# Writing matches


def _pairs(rows) -> PairBatch:
    q, c, r, d = zip(*rows, strict=True) if rows else ((), (), (), ())
    return PairBatch(np.array(q, dtype=object), np.array(c, dtype=object), np.array(r, dtype=np.int64),
                     np.array(d, dtype=np.float64))


_ROWS = [
    ("q,1", 'c"1', 1, 0.1 + 0.2),  # csv quoting; a float that needs all 17 digits
    ("q,1", "c2", 2, 1e-300),
    ("é-q2", "c\n3", 1, 5e-324),  # unicode; newline in an id; subnormal
    ("é-q2", "c1", 2, 123456.789012345678),
    ("q3", "c4", 1, -0.0),
]


def _frame(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(MATCH_COLUMNS)).astype({"rank": np.int64, "distance": np.float64})
    return frame.sort_values(["query_id", "rank", "candidate_id"]).reset_index(drop=True)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_write_match_shard_round_trip(tmp_path, fmt):
    path = match_shard_path(str(tmp_path), fmt, 0, 1)
    assert write_match_shard(path, _pairs(_ROWS[::-1]), fmt) == len(_ROWS)
    got = read_matches(str(tmp_path))
    assert list(got.columns) == list(MATCH_COLUMNS)
    assert [str(t) for t in got.dtypes] == ["object", "object", "int64", "float64"]
    pd.testing.assert_frame_equal(got, _frame(_ROWS))
    assert np.array_equal(np.signbit(got["distance"]), np.signbit(_frame(_ROWS)["distance"]))
    assert sorted(os.listdir(tmp_path / "matches")) == [os.path.basename(path)]  # no temp file left

    again = tmp_path / "again"
    write_match_shard(match_shard_path(str(again), fmt, 0, 1), _pairs([_ROWS[i] for i in (3, 0, 4, 2, 1)]),
                      fmt)
    assert (again / "matches" / os.path.basename(path)).read_bytes() == open(path, "rb").read()


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_write_match_shard_empty_is_valid(tmp_path, fmt):
    assert write_match_shard(match_shard_path(str(tmp_path), fmt, 0, 1), _pairs([]), fmt) == 0
    got = read_matches(str(tmp_path))
    assert len(got) == 0
    assert list(got.columns) == list(MATCH_COLUMNS)
    assert [str(t) for t in got.dtypes] == ["object", "object", "int64", "float64"]


def test_read_matches_without_files_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_matches(str(tmp_path))


def test_drop_duplicate_pairs_keeps_lowest_rank():
    pairs = _pairs([("a", "b", 3, 0.5), ("a", "b", 1, 0.5), ("a", "c", 2, 0.7), ("b", "c", 1, 0.1)])
    kept = sorted(zip(*drop_duplicate_pairs(pairs), strict=True))
    assert kept == [("a", "b", 1, 0.5), ("a", "c", 2, 0.7), ("b", "c", 1, 0.1)]


def _many_rows(n_queries=12, k=3):
    rng = np.random.default_rng(0)
    return [(f"q{i}", f"c{j}", j + 1, float(rng.random())) for i in range(n_queries) for j in range(k)]


# The encoders' byte stability for every format is covered above; the pipeline tests show that the
# grouping order of batches does not leak into the bytes, for the two binary formats.
_PIPELINE_FORMATS = ("parquet", "tfrecord")


def _run_write_matches(out_dir, batches, num_shards=5):
    with _pipeline() as p:
        pairs = p | "Pairs" >> beam.Create(batches, reshuffle=False)
        for fmt in _PIPELINE_FORMATS:
            _ = pairs | f"Write{fmt}" >> WriteMatches(output_dir=os.path.join(out_dir, fmt),
                                                      output_format=fmt, num_shards=num_shards)


def test_write_matches_is_byte_identical_and_writes_every_shard(tmp_path):
    rows = _many_rows()
    rows[5] = ("q1", rows[5][1], rows[5][2], rows[4][3])  # a distance tie inside one query
    first = [_pairs(rows[:10]), _pairs(rows[10:])]
    order = np.random.default_rng(1).permutation(len(rows))
    shuffled = [rows[i] for i in order]
    second = [_pairs(shuffled[:3]), _pairs([]), _pairs(shuffled[3:20]), _pairs(shuffled[20:])]
    _run_write_matches(str(tmp_path / "a"), first)
    _run_write_matches(str(tmp_path / "b"), second)

    for fmt in _PIPELINE_FORMATS:
        names = sorted(os.listdir(tmp_path / "a" / fmt / "matches"))
        assert names == [os.path.basename(match_shard_path("x", fmt, s, 5)) for s in range(5)]
        for name in names:
            a = (tmp_path / "a" / fmt / "matches" / name).read_bytes()
            assert a == (tmp_path / "b" / fmt / "matches" / name).read_bytes(), (fmt, name)
        pd.testing.assert_frame_equal(read_matches(str(tmp_path / "a" / fmt)), _frame(rows))


def test_write_matches_unique_pairs_and_empty_shards(tmp_path):
    rows = [("a", "b", 1, 0.5), ("a", "b", 2, 0.5), ("a", "c", 1, 0.2)]
    with _pipeline() as p:
        written = (p | beam.Create([_pairs(rows)], reshuffle=False)
                   | WriteMatches(output_dir=str(tmp_path), output_format="jsonl", num_shards=3,
                                  unique_pairs=True))
        assert_that(written | beam.Map(lambda kv: kv[1]) | beam.CombineGlobally(sum), equal_to([2]))
    assert len(os.listdir(tmp_path / "matches")) == 3
    pd.testing.assert_frame_equal(read_matches(str(tmp_path)), _frame([rows[0], rows[2]]))


def test_write_matches_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="output_format"):
        WriteMatches(output_dir=str(tmp_path), output_format="xml", num_shards=1)
    with pytest.raises(ValueError, match="num_shards"):
        WriteMatches(output_dir=str(tmp_path), output_format="csv", num_shards=0)
    with pytest.raises(ValueError, match="output_dir"):
        WriteDeadLetters(output_dir="")


# ------------------------------------------------------------------------------------------------
# Writing dead letters


def _tagged(tag):
    return lambda counts: (tag, counts)


def test_write_dead_letters_sorted_sharded_counted_and_empty(tmp_path):
    letters = [DeadLetter("validate", "id9", "bad vector", "{}", "f2"),
               DeadLetter("read", "", "line 2: invalid JSON", "{", "f1"),
               DeadLetter("read", "", "line 1: invalid JSON", "{", "f1"),
               DeadLetter("validate", "", "missing id", "{}", "f1")]
    with _pipeline() as p:
        counts = []
        for name, items, shards in (("a", letters, 2), ("empty", [], 1)):
            counts.append(p | f"Create{name}" >> beam.Create(items, reshuffle=False)
                          | f"Write{name}" >> WriteDeadLetters(output_dir=str(tmp_path / name),
                                                               num_shards=shards)
                          | f"Tag{name}" >> beam.Map(_tagged(name)))
        assert_that(counts | beam.Flatten(), equal_to([("a", {"read": 2, "validate": 2}), ("empty", {})]))
    files = sorted(os.listdir(tmp_path / "a" / "dead_letters"))
    assert files == ["dead_letters-00000-of-00002.jsonl", "dead_letters-00001-of-00002.jsonl"]
    for name in files:  # each file sorted by (stage, source, record_id, error, payload)
        data = (tmp_path / "a" / "dead_letters" / name).read_text()
        lines = [DeadLetter(**json.loads(line)) for line in data.splitlines()]
        assert lines == sorted(lines, key=lambda d: (d.stage, d.source, d.record_id, d.error, d.payload))
    assert sorted(read_dead_letters(str(tmp_path / "a"))) == sorted(letters)

    # No dead letters: the directory and one empty file still exist.
    assert os.listdir(tmp_path / "empty" / "dead_letters") == ["dead_letters-00000-of-00001.jsonl"]
    assert (tmp_path / "empty" / "dead_letters" / "dead_letters-00000-of-00001.jsonl").read_bytes() == b""
    assert read_dead_letters(str(tmp_path / "empty")) == []


@pytest.mark.parametrize("repeat_query_ranks", [False, True])
def test_sorted_pairs_is_the_total_order(repeat_query_ranks):
    from transforms.io.write_matches import _sorted_pairs

    rng = np.random.default_rng(3)
    n = 400
    q = np.array([f"q{i // 4:03d}" for i in range(n)], dtype=object)
    ranks = np.arange(n, dtype=np.int64) % 4 + 1
    if repeat_query_ranks:  # as dedup mode's canonicalised pairs can: ties on (query, rank)
        ranks[::3] = 1
    pairs = PairBatch(q, np.array([f"c{i}" for i in rng.integers(0, 30, n)], dtype=object), ranks,
                      rng.integers(0, 3, n).astype(np.float64))
    perm = rng.permutation(n)
    got = _sorted_pairs(PairBatch(*(c[perm] for c in pairs)))
    want = sorted(zip(*pairs, strict=True), key=lambda r: (r[0], r[2], r[1], r[3]))
    assert list(zip(*got, strict=True)) == want


def test_an_empty_scored_match_file_has_the_score_columns(tmp_path):
    from transforms.common.schema import SCORE_COLUMNS
    from transforms.io.write_matches import _WriteMatchShardFn

    fn = _WriteMatchShardFn(str(tmp_path), "parquet", 1, False, scored=True)
    assert list(fn.process((0, [None]))) == [(0, 0)]
    frame = read_matches(str(tmp_path))
    assert len(frame) == 0 and list(frame.columns)[-2:] == list(SCORE_COLUMNS)


# ------------------------------------------------------------------------------------------------
# File-level faults (issue #18): what a fault costs, and which faults are bad files


def test_an_unclosed_csv_quote_costs_its_line_not_the_rows_after_it(tmp_path):
    (tmp_path / "q.csv").write_bytes(
        b'id,embedding,note\n'
        b'c1,"[1.0]",ok\n'
        b'c2,"[2.0]","never closed\n'  # line 3
        b'c3,"[3.0]",ok\n'
        b'c4,"[4.0]","two\nlines"\n'  # a quoted field may span lines when the record fits
        b'c5,"[5.0]",ok\n')
    batches, dead = _read_directly(str(tmp_path / "q.csv"), "csv")
    rows = [r for b in batches for r in b.rows]
    assert [r["id"] for r in rows] == ["c1", "c3", "c4", "c5"]
    assert rows[2]["note"] == "two\nlines"
    assert len(dead) == 1 and dead[0].error.startswith("line 3: a quoted field is not closed")
    assert dead[0].rows == 1 and "never closed" in dead[0].payload


def test_an_unclosed_quote_on_the_last_line_is_that_line_only(tmp_path):
    (tmp_path / "q.csv").write_bytes(b'id,embedding\nc1,"[1.0]"\nc2,"[2.0]\n')
    batches, dead = _read_directly(str(tmp_path / "q.csv"), "csv")
    assert [r["id"] for b in batches for r in b.rows] == ["c1"]
    assert [d.error[:7] for d in dead] == ["line 3:"]


def test_a_truncated_gzip_stream_keeps_the_rows_before_the_cut_and_is_a_bad_file(tmp_path):
    text = "".join(json.dumps({"id": f"j{i}", "embedding": [float(i)]}) + "\n" for i in range(3000))
    data = gzip.compress(text.encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    batches, dead = _read_directly(str(tmp_path / "cut.jsonl.gz"), "auto")
    kept = [r["id"] for b in batches for r in b.rows]
    assert 0 < len(kept) < 3000 and kept == [f"j{i}" for i in range(len(kept))]
    bad = [d for d in dead if d.rows == 0]
    assert len(bad) == 1 and "truncated or corrupt gzip stream" in bad[0].error
    # The cut line itself may be a JSON error; nothing else.
    assert len(dead) <= 2

    (tmp_path / "garbage.csv.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 40)
    batches, dead = _read_directly(str(tmp_path / "garbage.csv.gz"), "auto")
    assert batches == [] and [d.rows for d in dead] == [0]


def test_parquet_faults_count_the_rows_the_footer_gives_or_are_bad_files(tmp_path):
    table = pa.table({"id": [str(i) for i in range(600)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=300)
    good = sink.getvalue().to_pybytes()
    (tmp_path / "page.parquet").write_bytes(_corrupt(good, 200))  # inside row group 0's data
    (tmp_path / "cut.parquet").write_bytes(good[: len(good) // 2])  # no footer
    batches, dead = _read_directly(str(tmp_path / "page.parquet"), "parquet")
    assert sum(len(b) for b in batches) == 300 and [d.rows for d in dead] == [300]
    batches, dead = _read_directly(str(tmp_path / "cut.parquet"), "parquet")
    assert batches == [] and [d.rows for d in dead] == [0]
    assert "row count is unknown" in dead[0].error

    p = _pipeline()
    result = p | ReadCorpus(file_pattern=str(tmp_path / "*.parquet"), input_format="auto", role="input")
    # 300 read + 300 lost in page.parquet, 1 for the file whose count is unknown.
    assert_that(result.rows_read, equal_to([601]))
    p.run().wait_until_finish()


def test_lost_tfrecord_framing_is_a_bad_file_but_a_bad_checksum_is_one_record(tmp_path):
    (tmp_path / "t.tfrecord").write_bytes(_tfrecord_bytes())
    _, dead = _read_directly(str(tmp_path / "t.tfrecord"), "tfrecord")
    rows = {d.error.split(":")[0]: d.rows for d in dead}
    assert rows == {"record 1": 1, "record 3": 1, "record 5": 0}


def test_dead_letter_counts_are_rows_and_letters_stay_valid_utf8(tmp_path):
    from transforms.common.dead_letters import make_dead_letter

    letters = [make_dead_letter("read", "", "corrupt row group", "", "f.parquet", rows=300),
               make_dead_letter("read", "", "cut", "", "g.jsonl.gz", rows=0),
               make_dead_letter("validate", "a\ud800", "bad id", {"id": "a\ud800"}, "h\udcff.jsonl")]
    assert letters[2].record_id == "a\\ud800" and letters[2].source == "h\\udcff.jsonl"
    with _pipeline() as p:
        counts = (p | beam.Create(letters, reshuffle=False)
                  | WriteDeadLetters(output_dir=str(tmp_path)))
        assert_that(counts, equal_to([{"read": 301, "validate": 1}]))
    assert sorted(read_dead_letters(str(tmp_path))) == sorted(letters)


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


def test_dead_letter_counts_come_after_every_file_is_written(tmp_path):
    """The manifest (and _SUCCESS after it) consume the counts: they must wait for the files."""
    letters = [DeadLetter("read", "", f"line {i}: invalid JSON", "{", "f1") for i in range(50)]
    with _pipeline() as p:
        seen = (p | beam.Create(letters)
                | WriteDeadLetters(output_dir=str(tmp_path), num_shards=3)
                | beam.Map(lambda counts: (counts, sorted(
                    n for n in os.listdir(tmp_path / "dead_letters") if ".tmp" not in n))))
        assert_that(seen, equal_to([({"read": 50}, [f"dead_letters-0000{i}-of-00003.jsonl"
                                                     for i in range(3)])]))
    graph = p.to_runner_api().components.transforms
    after = next(t for t in graph.values() if t.unique_name.endswith("AfterShardsWritten"))
    assert len(after.inputs) == 2  # the counts and the written shards (side input)


def test_iter_raw_batches_reads_as_read_corpus_with_origins_per_row_group(tmp_path):
    from transforms.io.read_corpus import iter_raw_batches

    table = pa.table({"id": [f"r{i}" for i in range(10)], "name": [f"n{i}" for i in range(10)]})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=4)
    (tmp_path / "b.jsonl").write_text('{"id": "j0", "name": "x"}\n{bad json\n{"id": "j1", "name": "y"}\n')
    batches = list(iter_raw_batches(str(tmp_path / "a.parquet"), batch_size=3))
    ids = [i for b in batches for i in b.table.column("id").to_pylist()]
    assert ids == [f"r{i}" for i in range(10)]
    starts = [(b.first_row, b.table.num_rows) for b in batches]
    # Row groups of 4, 4, 2 rows in batches of at most 3: each batch starts where its rows are.
    assert starts == [(0, 3), (3, 1), (4, 3), (7, 1), (8, 2)]
    rows = [r["id"] for b in iter_raw_batches(str(tmp_path / "b.jsonl")) for r in b.rows]
    assert rows == ["j0", "j1"]  # the bad line is skipped (ReadCorpus would dead-letter it)
