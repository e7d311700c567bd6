"""Tests for transforms.io.read_corpus: reading every input format (and its bad rows) through ReadCorpus,
globs and format detection, gzip streams, and iter_raw_batches.

Pipelines run on ``FnApiRunner`` by name (see tests/transforms/io/io_cases.py).
"""

from __future__ import annotations

import gzip
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from tests.transforms.io.io_cases import (
    _pipeline,
    _read_directly,
    _tfrecord_bytes,
)
from transforms.io.read_corpus import ReadCorpus, check_glob_matches, format_for_path
from transforms.io.tfrecord import encode_example, frame_tfrecord


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
