"""tf.Transform preprocessing: missing values, z-scores, IDF, ids kept aligned, reuse."""

from __future__ import annotations

import glob  # noqa: E402
import math  # noqa: E402
import os
import pickle  # noqa: E402
import uuid  # noqa: E402

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from apache_beam.testing import test_pipeline  # noqa: E402

from transforms.common.schema import FeatureBatch  # noqa: E402
from transforms.features.preprocess import (
    AnalyzeAndTransformFeatures,
    TransformedBatch,
    TransformedBatchCoder,
    feature_batch_to_arrow,
    feature_key,
    output_feature_keys,
)

TEXT = ("name", "city")
NUMERIC = ("age",)


def _batch(prefix: str, rows: list[tuple]) -> FeatureBatch:
    names, cities, ages = zip(*rows, strict=True)
    table = pa.RecordBatch.from_arrays(
        [pa.array(names, pa.string()), pa.array(cities, pa.string()), pa.array(ages, pa.float64())],
        names=["name", "city", "age"])
    ids = np.array([f"{prefix}{i}" for i in range(len(rows))], dtype=object)
    return FeatureBatch(ids=ids, origins=np.array([f"{prefix}.csv#{i}" for i in range(len(rows))],
                                                  dtype=object), table=table)


# Every record lives in Sydney: a term in every record gets IDF ~0.
QUERIES = _batch("q", [("José O'Brien", "Sydney", 30.0), ("Ann Lee", "sydney", None),
                       (None, "SYDNEY", 50.0), ("Bob Smith", "Sydney", float("inf"))])
CANDIDATES = _batch("c", [("Jose OBrien", "Sydney", 40.0), ("Zed Kowalski", "Sydney", float("nan")),
                          ("ann   LEE!", " Sydney ", 40.0)])


def _dump(element, out_dir: str) -> None:
    with open(os.path.join(out_dir, f"{uuid.uuid4().hex}.pkl"), "wb") as fh:
        pickle.dump(element, fh)


def _load(out_dir: str) -> list:
    out = []
    for path in sorted(glob.glob(os.path.join(out_dir, "*.pkl"))):
        with open(path, "rb") as fh:
            out.append(pickle.load(fh))
    return out


def _rows(batches: list[TransformedBatch]) -> dict[str, dict]:
    """id -> {feature: python value} over all batches (ids stay aligned with their rows)."""
    rows = {}
    for b in batches:
        for i, row in enumerate(b.table.to_pylist()):
            rows[b.ids[i]] = {**row, "_origin": b.origins[i]}
    return rows


def _run(tmp_path, corpora: dict, **kwargs) -> dict[str, str]:
    out = {role: str(tmp_path / f"out_{role}") for role in (*corpora, "dead")}
    for d in out.values():
        os.makedirs(d, exist_ok=True)
    with test_pipeline.TestPipeline() as p:
        pcolls = {role: p | f"Create{role}" >> beam.Create([batch]) for role, batch in corpora.items()}
        result = pcolls | AnalyzeAndTransformFeatures(
            text_fields=TEXT, numeric_fields=NUMERIC, temp_dir=str(tmp_path / "tft"), **kwargs)
        for role in corpora:
            _ = getattr(result, role) | f"Dump{role}" >> beam.Map(_dump, out[role])
        _ = result.dead_letters | "DumpDead" >> beam.Map(_dump, out["dead"])
    return out


@pytest.fixture(scope="module")
def link_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("link")
    out = _run(tmp, {"queries": QUERIES, "candidates": CANDIDATES},
               transform_fn_dir_out=str(tmp / "transform_fn"))
    return tmp, {role: _load(d) for role, d in out.items()}


def test_infinite_numbers_are_dead_letters_and_nan_is_missing():
    record_batch, dead = feature_batch_to_arrow(QUERIES, TEXT, NUMERIC)
    assert record_batch.num_rows == 3
    assert [(d.stage, d.record_id, d.source) for d in dead] == [("preprocess", "q3", "q.csv#3")]
    assert "infinite" in dead[0].error and "Bob Smith" in dead[0].payload
    candidates, dead = feature_batch_to_arrow(CANDIDATES, TEXT, NUMERIC)
    assert not dead
    assert candidates.column("age").to_pylist() == [[40.0], [], [40.0]]  # NaN -> no value


def test_wrong_column_type_is_a_wiring_error():
    bad = FeatureBatch(ids=QUERIES.ids, origins=QUERIES.origins, table=QUERIES.table.set_column(
        0, "name", pa.array([1, 2, 3, 4])))
    with pytest.raises(ValueError, match="text field 'name'"):
        feature_batch_to_arrow(bad, TEXT, NUMERIC)


def test_identical_records_get_identical_features(link_run):
    _, out = link_run
    q, c = _rows(out["queries"]), _rows(out["candidates"])
    assert set(q) == {"q0", "q1", "q2"} and set(c) == {"c0", "c1", "c2"}
    assert set(q["q0"]) - {"_origin"} == set(output_feature_keys(TEXT, NUMERIC))
    same = [k for k in output_feature_keys(TEXT, NUMERIC) if not k.startswith("age")]
    # José O'Brien / Jose OBrien and Ann Lee / ann   LEE! normalise to the same text.
    for qid, cid in (("q0", "c0"), ("q1", "c2")):
        assert {k: q[qid][k] for k in same} == {k: c[cid][k] for k in same}
    assert q["q2"]["_origin"] == "q.csv#2" and c["c1"]["_origin"] == "c.csv#1"


def test_missing_values_and_idf(link_run):
    _, out = link_run
    q, c = _rows(out["queries"]), _rows(out["candidates"])
    assert q["q2"][feature_key("name", "missing")] == [1.0]
    assert q["q2"][feature_key("name", "grams")] == [] and q["q2"][feature_key("name", "words")] == []
    assert q["q0"][feature_key("name", "missing")] == [0.0]
    # 'sydney' is in every analysed record: no weight; a name in 2 of 6 records: log(7/3).
    assert max(q["q0"][feature_key("city", "word_weights")]) == pytest.approx(0.0, abs=1e-6)
    assert sorted(q["q0"][feature_key("name", "word_weights")]) == pytest.approx([math.log(7 / 3)] * 2)
    assert c["c1"][feature_key("name", "word_weights")] == pytest.approx([math.log(7 / 2)] * 2)
    assert c["c1"][feature_key("age", "missing")] == [1.0] and c["c1"][feature_key("age", "z")] == [0.0]


def test_numeric_z_score_over_both_corpora(link_run):
    _, out = link_run
    q, c = _rows(out["queries"]), _rows(out["candidates"])
    present = np.array([30.0, 50.0, 40.0, 40.0])  # q3 (inf) is a dead letter; NaN/None are missing
    mean, std = present.mean(), present.std()
    assert q["q0"][feature_key("age", "z")] == pytest.approx([(30 - mean) / std], rel=1e-5)
    assert c["c0"][feature_key("age", "z")] == pytest.approx([(40 - mean) / std], abs=1e-6)
    assert q["q1"][feature_key("age", "z")] == [0.0] and q["q1"][feature_key("age", "missing")] == [1.0]


def test_dead_letters_are_counted_out(link_run):
    _, out = link_run
    assert [(d.stage, d.record_id) for d in out["dead"]] == [("preprocess", "q3")]


def test_transform_fn_reuse_gives_identical_outputs(link_run, tmp_path):
    link_tmp, out = link_run
    saved = str(link_tmp / "transform_fn")
    assert sorted(os.listdir(saved)) == ["transform_fn", "transformed_metadata"]
    again = _run(tmp_path, {"input": QUERIES}, transform_fn_dir_in=saved)
    assert _rows(_load(again["input"])) == _rows(out["queries"])


def test_reuse_with_other_fields_is_refused(link_run):
    link_tmp, _ = link_run
    with pytest.raises(ValueError, match="transform_fn_dir"):
        with beam.Pipeline() as p:
            _ = {"input": p | beam.Create([QUERIES])} | AnalyzeAndTransformFeatures(
                text_fields=("name",), temp_dir=str(link_tmp / "tft2"),
                transform_fn_dir_in=str(link_tmp / "transform_fn"))


def test_transformed_batch_coder_round_trip(link_run):
    _, out = link_run
    batch = out["queries"][0]
    coder = TransformedBatchCoder()
    back = coder.decode(coder.encode(batch))
    assert list(back.ids) == list(batch.ids) and list(back.origins) == list(batch.origins)
    assert back.table.equals(batch.table)
    assert coder.estimate_size(batch) > 0


def test_constructor_validates_fields(tmp_path):
    with pytest.raises(ValueError, match="listed twice"):
        AnalyzeAndTransformFeatures(text_fields=("a", "a"), temp_dir=str(tmp_path))
    with pytest.raises(ValueError, match="clashing"):
        AnalyzeAndTransformFeatures(text_fields=("a b", "a_b"), temp_dir=str(tmp_path))
