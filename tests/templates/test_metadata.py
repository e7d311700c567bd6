"""metadata.json vs the job's flags: same names both ways, regexes that accept and reject the right values,
and the committed file equal to what generate_metadata.py renders now."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from beam_jobs.commands.template import GCS_DIR_FLAGS, GCS_GLOB_FLAGS, NONE_OR_NUMBER_FLAGS, flag_regex
from beam_jobs.options import JOB_FLAGS

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates" / "match_corpora"
METADATA = json.loads((TEMPLATE_DIR / "metadata.json").read_text(encoding="utf-8"))
PARAMS = {p["name"]: p for p in METADATA["parameters"]}
FLAGS = {flag.name: (flag.full_help, flag.values) for flag in JOB_FLAGS}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_tpl_{name}", TEMPLATE_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _accepts(name: str, value: str) -> bool:
    # Dataflow requires a value to match every regex of the parameter.
    return all(re.fullmatch(rx, value) for rx in PARAMS[name].get("regexes", []))


def test_parameters_are_exactly_the_job_flags_in_order():
    assert [p["name"] for p in METADATA["parameters"]] == [flag.name for flag in JOB_FLAGS]


def test_every_parameter_has_the_required_fields():
    assert METADATA["name"] and METADATA["description"]
    for name, param in PARAMS.items():
        assert param["label"] and param["helpText"], name
        assert param["helpText"].startswith(FLAGS[name][0]), name
        assert param["isOptional"] is (name != "output"), name


def test_metadata_parses_as_dataflow_template_metadata():
    pytest.importorskip("google.cloud.dataflow_v1beta3")
    from google.cloud.dataflow_v1beta3 import types
    from google.protobuf import json_format

    # Strict parse: an unknown field or paramType value fails.
    message = json_format.Parse(json.dumps(METADATA), types.TemplateMetadata.pb()())
    assert len(message.parameters) == len(JOB_FLAGS)


def test_metadata_file_is_what_the_generator_renders():
    assert (TEMPLATE_DIR / "metadata.json").read_text(encoding="utf-8") == _load("generate_metadata").render()


@pytest.mark.parametrize("name", GCS_GLOB_FLAGS)
@pytest.mark.parametrize("value", [
    "gs://b/x/*.parquet", "gs://my-bucket/corpora/queries-*.jsonl", "gs://bucket.example.com/a/**",
    "gs://b/x/part-[0-9]?.csv", "gs://b/exports/{date}/*.parquet", "gs://b/one file.csv"])
def test_gcs_glob_flags_accept_gs_globs(name, value):
    assert _accepts(name, value)


@pytest.mark.parametrize("name", GCS_GLOB_FLAGS + GCS_DIR_FLAGS)
@pytest.mark.parametrize("value", [
    "/local/path/*.parquet", "s3://b/x/*.parquet", "gs://", "gs://b", "gs://b/", "gs:/b/x",
    "GS://b/x", "gs://Bucket/x", "gs://b//x", "gs://-b/x", "gs://b/x\n", "http://b/x", "local/x"])
def test_gcs_path_flags_reject_non_gcs_values(name, value):
    assert not _accepts(name, value)


@pytest.mark.parametrize("name", GCS_DIR_FLAGS)
def test_gcs_dir_flags_take_directories_without_globs(name):
    assert _accepts(name, "gs://b/runs/2026-01-31")
    assert _accepts(name, "gs://b/runs/{date}/")
    for glob in ("gs://b/runs/*", "gs://b/runs/?", "gs://b/runs/[ab]"):
        assert not _accepts(name, glob)


def test_enum_flags_accept_exactly_their_choices():
    enum_flags = {name: choices for name, (_, choices) in FLAGS.items() if choices}
    assert enum_flags, "JOB_FLAGS has enum flags"
    for name, choices in enum_flags.items():
        param = PARAMS[name]
        assert param["paramType"] == "ENUM"
        assert [o["value"] for o in param["enumOptions"]] == list(choices)
        for choice in choices:
            assert _accepts(name, choice), (name, choice)
        for bad in ("", choices[0].upper(), choices[0] + "x", " " + choices[0], "|".join(choices)):
            assert not _accepts(name, bad), (name, bad)


@pytest.mark.parametrize("name", ["top_k", "num_shards", "scann_reorder", "batch_size", "embed_batch_size"])
def test_integer_flags(name):
    for good in ("0", "10", "4096"):
        assert _accepts(name, good)
    for bad in ("", "-1", "1.5", "ten", "1e3", " 10"):
        assert not _accepts(name, bad)


@pytest.mark.parametrize("name", ["max_distance", "max_bad_record_ratio", "scann_anisotropic_threshold"])
def test_float_flags(name):
    for good in ("0", "0.01", ".5", "1.", "-0.25", "1e-3", "2.5E+2"):
        assert _accepts(name, good)
    for bad in ("", "nan", "inf", "1,5", "0.1.2", "e3", "- 1"):
        assert not _accepts(name, bad)


def test_target_recall_takes_a_number_or_none():
    for good in ("0.95", "1", "none"):
        assert _accepts("target_recall", good)
    for bad in ("", "None ", "high", "nonee"):
        assert not _accepts("target_recall", bad)


def test_every_numeric_config_field_with_a_flag_gets_a_numeric_regex():
    import dataclasses

    from beam_jobs.config import MatchConfig

    for field in dataclasses.fields(MatchConfig):
        if field.name in FLAGS and ("int" in str(field.type) or "float" in str(field.type)):
            want = "TEXT" if field.name in NONE_OR_NUMBER_FLAGS else "NUMBER"
            assert PARAMS[field.name]["paramType"] == want, field.name
            assert flag_regex(field.name, None), field.name


def test_free_text_flags_have_no_regex():
    for name in ("id_field", "vector_field", "text_fields", "numeric_fields"):
        assert "regexes" not in PARAMS[name]
        assert PARAMS[name]["paramType"] == "TEXT"
