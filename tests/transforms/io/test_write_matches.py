"""Tests for transforms.io.write_matches: match shards of every format, deterministic sharded writing,
the total order of pairs, and the dead-letter files and counts."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.io.io_cases import (
    _pipeline,
)
from transforms.common.dead_letters import DeadLetter
from transforms.common.schema import MATCH_COLUMNS, OUTPUT_FORMATS, PairBatch
from transforms.io.results import read_dead_letters, read_matches
from transforms.io.write_matches import (
    WriteDeadLetters,
    WriteMatches,
    drop_duplicate_pairs,
    match_shard_path,
    write_match_shard,
)


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
