"""Launch-time bounds: record counts from file metadata and lines, and the exact-index decision."""

from __future__ import annotations

import gzip

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from beam_jobs.launch import InputBounds, exact_at_launch, input_bounds, progress_totals, record_count_bound
from beam_jobs.match_corpora import build_pipeline, prepare
from transforms.index.build import EXACT_MAX_WORK
from transforms.testing.people import MATCH_FIELDS, make_link_corpora, write_records


def _labels(p: beam.Pipeline) -> set[str]:
    return {t.unique_name for t in p.to_runner_api().components.transforms.values()}


def test_bounds_from_lines_and_parquet_footers_and_none_where_unknown(tmp_path):
    (tmp_path / "a.csv").write_text('id,name\n1,"two\nlines"\n2,b\n')
    (tmp_path / "b.jsonl").write_text('{"id": 1}\n{"id": 2}')  # no final newline
    pq.write_table(pa.table({"id": [str(i) for i in range(7)]}), tmp_path / "c.parquet")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as fh:
        fh.write('{"id": 1}\n')
    assert record_count_bound(str(tmp_path / "a.csv")) == 4  # 2 records: lines only bound them
    assert record_count_bound(str(tmp_path / "b.jsonl")) == 2
    assert record_count_bound(str(tmp_path / "*.parquet")) == 7
    assert record_count_bound(str(tmp_path / "[bc]*")) == 9
    assert record_count_bound(str(tmp_path / "d.jsonl.gz")) is None
    assert record_count_bound(str(tmp_path / "*")) is None  # one file of the glob has no bound


def _people(tmp_path, entities=300):
    a, b, _ = make_link_corpora(entities, overlap=0.8, seed=1)
    write_records(a, str(tmp_path / "a.csv"), "csv")
    write_records(b, str(tmp_path / "b.csv"), "csv")
    return ["--queries", str(tmp_path / "a.csv"), "--candidates", str(tmp_path / "b.csv"),
            "--id_field", "rec_id", "--text_fields", ",".join(MATCH_FIELDS), "--output",
            str(tmp_path / "out"), "--runner", "FnApiRunner"]


def test_a_small_embedded_job_is_exact_from_the_start_without_a_tuning_branch(tmp_path):
    argv = _people(tmp_path)
    options, cfg, static, shards, kept, buckets = prepare(argv)
    decided = static["index_decided_at_launch"]
    assert (cfg.index, cfg.num_shards, cfg.target_recall) == ("exact", 1, None)
    assert decided["queries_at_most"] >= 300 and decided["work_at_most"] <= EXACT_MAX_WORK
    p = beam.Pipeline(runner="DirectRunner", options=options)  # graph only
    build_pipeline(p, cfg, num_output_shards=shards, static_manifest=static, scoring_buckets=buckets)
    labels = _labels(p)
    assert "SearchShards" in labels and "AuditRecall" in labels
    assert not {"TuneSearch", "TrainRouting", "SampleTuningQueries"} & labels
    # An explicit --target_recall keeps the per-shard decision (and its tuning).
    _, cfg, static, *_ = prepare(argv + ["--target_recall", "0.99"])
    assert cfg.index == "auto" and "index_decided_at_launch" not in static


def test_no_decision_past_the_work_bound_or_the_one_shard(tmp_path):
    argv = _people(tmp_path, entities=50)
    _, cfg, _, *_ = prepare(argv + ["--index", "scann"])
    assert exact_at_launch(cfg, 192, EXACT_MAX_WORK) is None  # not auto
    _, cfg, static, *_ = prepare(argv + ["--max_shard_vectors", "20"])
    assert cfg.index == "auto" and "index_decided_at_launch" not in static  # more than one shard
    _, cfg, _, *_ = prepare(argv)
    import dataclasses

    auto = dataclasses.replace(cfg, index="auto", num_shards=None)
    assert exact_at_launch(auto, 192, max_work=10.0) is None
    assert exact_at_launch(auto, 192, max_work=EXACT_MAX_WORK) is not None


def test_progress_totals_bound_what_is_read_and_embedded(tmp_path):
    argv = _people(tmp_path, entities=50)
    _, cfg, static, *_ = prepare(argv)
    lines = [len((tmp_path / f).read_text().splitlines()) for f in ("a.csv", "b.csv")]
    bounds = input_bounds(cfg)
    assert bounds == InputBounds(*lines)  # header + one line per record
    assert static["input_records_at_most"] == bounds.to_dict()
    assert progress_totals(cfg, bounds) == {"read": sum(lines), "embedded": sum(lines)}
    import dataclasses

    dedup = dataclasses.replace(cfg, mode="dedup", input=cfg.queries, queries=None, candidates=None)
    assert progress_totals(dedup, input_bounds(dedup)) == {"read": lines[0], "embedded": lines[0]}
    kept = dataclasses.replace(cfg, index_dir=str(tmp_path / "idx"))
    assert input_bounds(kept) == InputBounds(lines[0], 0)  # a kept index's candidates are not read
    assert progress_totals(cfg, InputBounds(lines[0], None)) == {}  # one unknown: no totals
