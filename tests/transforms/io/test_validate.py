"""Validation turns raw rows into clean batches and sends every bad record to dead letters."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from transforms.common.schema import RawBatch
from transforms.io.validate import validate_features, validate_vectors

GOOD = [0.6, 0.8, 0.0]


def _rows_batch(rows):
    return RawBatch(source="f.jsonl", first_row=10, rows=rows)


@pytest.mark.parametrize("row, reason", [
    ({"embedding": GOOD}, "missing or empty id"),
    ({"id": "  ", "embedding": GOOD}, "missing or empty id"),
    ({"id": "a"}, "vector is missing"),
    ({"id": "a", "embedding": [1.0, float("nan"), 0.0]}, "NaN"),
    ({"id": "a", "embedding": [1.0, float("inf"), 0.0]}, "NaN or infinite"),
    ({"id": "a", "embedding": [1.0, "x", 0.0]}, "non-numeric"),
    ({"id": "a", "embedding": "[1, 2"}, "not a JSON array"),
    ({"id": "a", "embedding": [0.0, 0.0, 0.0]}, "zero vector"),
    ({"id": "a", "embedding": {"x": 1}}, "list of numbers"),
    ({"id": "a", "embedding": []}, "non-empty"),
])
def test_bad_rows_become_dead_letters(row, reason):
    good = {"id": "ok", "embedding": GOOD}
    batches, dead = validate_vectors(_rows_batch([good, row]), role="queries", id_field="id",
                                     vector_field="embedding", distance="cosine")
    assert [list(b.ids) for b in batches] == [["ok"]]
    assert len(dead) == 1
    assert reason in dead[0].error
    assert dead[0].stage == "validate" and dead[0].source == "f.jsonl#11"
    assert dead[0].payload  # the raw record is kept


def test_csv_json_string_vectors_and_numeric_ids():
    rows = [{"id": 7.0, "embedding": "[3, 4]"}, {"id": "b", "embedding": [[1.0, 0.0]][0]}]
    batches, dead = validate_vectors(_rows_batch(rows), role="q", id_field="id",
                                     vector_field="embedding", distance="cosine")
    assert not dead
    (b,) = batches
    assert list(b.ids) == ["7", "b"]
    np.testing.assert_allclose(b.vectors[0], [0.6, 0.8], rtol=1e-6)  # normalised for cosine
    assert b.vectors.dtype == np.float32
    assert list(b.origins) == ["f.jsonl#10", "f.jsonl#11"]


def test_dot_distance_keeps_vectors_unnormalised_and_zero_vectors():
    batches, dead = validate_vectors(_rows_batch([{"id": "a", "embedding": [0.0, 0.0]},
                                                  {"id": "b", "embedding": [3.0, 4.0]}]),
                                     role="q", id_field="id", vector_field="embedding",
                                     distance="dot")
    assert not dead
    np.testing.assert_allclose(batches[0].vectors, [[0, 0], [3, 4]])


def test_mixed_lengths_split_into_batches_for_the_dims_check():
    rows = [{"id": "a", "embedding": [1.0, 0.0]}, {"id": "b", "embedding": [1.0, 0.0, 0.0]}]
    batches, dead = validate_vectors(_rows_batch(rows), role="q", id_field="id",
                                     vector_field="embedding", distance="cosine")
    assert not dead
    assert sorted(b.vectors.shape[1] for b in batches) == [2, 3]


def test_arrow_fast_path_matches_row_path():
    vecs = [[1.0, 2.0], None, [float("nan"), 1.0], [0.5, 0.5]]
    table = pa.RecordBatch.from_pydict({"id": ["a", "b", "c", None],
                                        "embedding": pa.array(vecs, pa.list_(pa.float32()))})
    batches, dead = validate_vectors(RawBatch("f.parquet", 0, table=table), role="q", id_field="id",
                                     vector_field="embedding", distance="squared_l2")
    assert list(batches[0].ids) == ["a"]
    np.testing.assert_allclose(batches[0].vectors, [[1.0, 2.0]])
    assert sorted(d.record_id for d in dead) == ["", "b", "c"]


def test_features_validation():
    rows = [
        {"id": "1", "name": "Ann", "age": "42"},
        {"id": "2", "name": b"Jos\xe9 \xff", "age": ""},  # bad utf-8 is replaced, age missing
        {"id": "3", "name": "Bob", "age": "forty"},  # non-numeric -> dead letter
        {"id": "4", "name": "", "age": None},  # nothing to embed -> dead letter
        {"id": "5", "name": "x" * 20_000, "age": float("nan")},  # truncated, NaN = missing
    ]
    batches, dead = validate_features(_rows_batch(rows), role="q", id_field="id",
                                      text_fields=("name",), numeric_fields=("age",))
    (b,) = batches
    assert list(b.ids) == ["1", "2", "5"]
    names = b.table.column("name").to_pylist()
    assert names[1].startswith("Jos") and "\ufffd" in names[1]
    assert len(names[2]) == 10_000
    ages = b.table.column("age").to_pylist()
    assert ages[0] == 42.0 and ages[1] is None and ages[2] is None
    assert sorted((d.record_id, d.stage) for d in dead) == [("3", "preprocess"), ("4", "preprocess")]
    assert all(not math.isnan(len(d.payload)) for d in dead)


@pytest.mark.parametrize("row, reason", [
    ({"id": float("nan"), "embedding": GOOD}, "invalid id nan"),
    ({"id": float("inf"), "embedding": GOOD}, "invalid id inf"),
    ({"id": "a\ud800", "embedding": GOOD}, "not valid Unicode (a lone surrogate"),
    ({"id": "x" * 11, "embedding": GOOD}, "11 characters long (--max_id_length 10)"),
])
def test_ids_that_cannot_be_carried_exactly_are_dead_letters(row, reason):
    good = {"id": "y" * 10, "embedding": GOOD}  # exactly the bound: kept
    batches, dead = validate_vectors(_rows_batch([good, row]), role="q", id_field="id",
                                     vector_field="embedding", distance="cosine", max_id_length=10)
    assert [b.ids.tolist() for b in batches] == [["y" * 10]]
    assert len(dead) == 1 and reason in dead[0].error and dead[0].record_id == ""
    dead[0].to_json().encode("utf-8")  # the letter can be written


def test_a_long_arrow_id_is_a_dead_letter():
    table = pa.table({"id": ["a", "b" * 50], "embedding": [GOOD, GOOD]}).to_batches()[0]
    batches, dead = validate_vectors(RawBatch("f.parquet", 0, table=table), role="q", id_field="id",
                                     vector_field="embedding", distance="cosine", max_id_length=20)
    assert [b.ids.tolist() for b in batches] == [["a"]]
    assert len(dead) == 1 and "50 characters long" in dead[0].error


def test_a_lone_surrogate_in_a_text_field_is_a_dead_letter_not_a_crash():
    rows = [{"id": "1", "name": "ok"}, {"id": "2", "name": "bad\udc80"}, {"id": "3\ud800", "name": "x"}]
    batches, dead = validate_features(_rows_batch(rows), role="q", id_field="id", text_fields=("name",),
                                      numeric_fields=())
    assert [b.ids.tolist() for b in batches] == [["1"]]
    assert batches[0].table.column("name").to_pylist() == ["ok"]
    errors = sorted(d.error for d in dead)
    assert "field 'name': not valid Unicode" in errors[0] and dead[0].stage == "preprocess"
    assert "id field 'id' is not valid Unicode" in errors[1]
    for d in dead:
        d.to_json().encode("utf-8")


def test_binary_ids_must_be_utf8_and_binary_text_is_replaced():
    table = pa.table({"id": pa.array([b"ok", b"b\xff"], pa.binary()),
                      "name": pa.array([b"caf\xe9", b"x"], pa.binary())}).to_batches()[0]
    batches, dead = validate_features(RawBatch("f.parquet", 0, table=table), role="q", id_field="id",
                                      text_fields=("name",), numeric_fields=())
    assert [b.ids.tolist() for b in batches] == [["ok"]]
    assert batches[0].table.column("name").to_pylist() == ["caf\ufffd"]
    assert [d.error for d in dead] == ["id is not valid UTF-8"]
