"""Graph-only build with Dataflow-style flags: no submission, nothing runs."""

from __future__ import annotations

import pickle

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.config import config_from_options
from beam_jobs.match_corpora import build_pipeline

DATAFLOW_FLAGS = ["--runner=DataflowRunner", "--project=my-proj", "--region=europe-west1",
                  "--temp_location=gs://b/tmp", "--staging_location=gs://b/staging",
                  "--sdk_container_image=europe-west1-docker.pkg.dev/p/r/corpus-matcher:1",
                  "--experiments=use_runner_v2", "--number_of_worker_harness_threads=4"]


def _labels(p: beam.Pipeline) -> set[str]:
    proto = p.to_runner_api()
    return {t.unique_name for t in proto.components.transforms.values()}


def _build(extra: list[str]) -> tuple[beam.Pipeline, PipelineOptions]:
    options = PipelineOptions(DATAFLOW_FLAGS + extra)
    cfg = config_from_options(options)
    p = beam.Pipeline(runner="DirectRunner", options=options)  # never run: graph only
    build_pipeline(p, cfg, num_output_shards=8, static_manifest={"mode": cfg.mode})
    return p, options


def test_link_graph_has_every_stage_and_options_pickle():
    p, options = _build(["--queries=gs://b/q/*.parquet", "--candidates=gs://b/c/*.parquet",
                         "--output=gs://b/out", "--top_k=20"])
    labels = _labels(p)
    for stage in ("ReadQueries", "ReadCandidates", "ValidateQueries", "ValidateCandidates", "CheckDims",
                  "FindDuplicateIds", "TrainRouting", "PlaceCandidates", "BuildShardIndexes",
                  "ShardQueries", "BatchQueries", "SearchShards", "MergeTopK", "WriteMatches",
                  "WriteDeadLetters", "Manifest"):
        assert stage in labels, stage
    restored = pickle.loads(pickle.dumps(options))
    assert restored.get_all_options()["project"] == "my-proj"
    assert config_from_options(restored).top_k == 20


def test_dedup_graph_reads_one_corpus():
    p, _ = _build(["--input=gs://b/people-*.jsonl", "--output=gs://b/out", "--routing=all",
                   "--collapse_duplicates=false"])
    labels = _labels(p)
    assert "ReadInput" in labels and "ReadQueries" not in labels and "ShardQueries" not in labels
    assert "TrainRouting" not in labels
