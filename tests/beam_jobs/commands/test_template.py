"""The template command builder: documented commands for sample flags, gcloud escaping, --execute."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from beam_jobs.commands.template import (
    format_command,
    gcloud_dict_item,
    template_main,
)

NOW = datetime.datetime(2026, 3, 14, 23, 30, 5, tzinfo=datetime.UTC)
BASE = ["--project", "proj", "--region", "europe-west1", "--bucket", "bkt"]
IMAGE = "europe-west1-docker.pkg.dev/proj/repo/corpus-matcher:v1"
GCLOUD_SDK = Path("/usr/lib/google-cloud-sdk")


def _commands(capsys, argv: list[str], code: int = 0) -> list[list[str]]:
    assert template_main(argv, now=NOW) == code
    out = capsys.readouterr().out
    # Every non-comment chunk is one command; shlex undoes the quoting and line continuations.
    chunks = [c for c in out.split("\n") if not c.startswith("#")]
    return [shlex.split(cmd) for cmd in "\n".join(chunks).replace(" \\\n", " ").splitlines() if cmd.strip()]


def _parameters(cmd: list[str]) -> dict[str, str]:
    """Reads --parameters items the way gcloud's ArgDict does, including ^D^ alternate delimiters."""
    params: dict[str, str] = {}
    for flag, item in zip(cmd, cmd[1:], strict=False):
        if flag != "--parameters":
            continue
        delim = ","
        if item.startswith("^"):
            delim, item = item[1:].split("^", 1)
        for pair in item.split(delim):
            key, _, value = pair.partition("=")
            params[key] = value
    return params


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_build_prints_docker_build_push_and_flex_template_build(capsys):
    cmds = _commands(capsys, ["build", *BASE, "--repository", "repo", "--tag", "v1"])
    assert cmds == [
        ["docker", "build", "--platform", "linux/amd64", "-f", "templates/match_corpora/Dockerfile",
         "--build-arg", f"SDK_CONTAINER_IMAGE={IMAGE}", "-t", IMAGE, "."],
        ["docker", "push", IMAGE],
        ["gcloud", "dataflow", "flex-template", "build", "gs://bkt/templates/match_corpora.json",
         "--image", IMAGE, "--sdk-language", "PYTHON",
         "--metadata-file", "templates/match_corpora/metadata.json", "--project", "proj"],
    ]


def test_build_gpu_variant_and_default_tag(capsys):
    cmds = _commands(capsys, ["build", *BASE, "--repository", "repo", "--variant", "gpu"])
    image = "europe-west1-docker.pkg.dev/proj/repo/corpus-matcher-gpu:20260314-233005"
    assert cmds[0][-5:] == ["--build-arg", "GPU=1", "-t", image, "."]
    assert cmds[2][4] == "gs://bkt/templates/match_corpora_gpu.json"


def test_run_prints_flex_template_run_with_parameters(capsys):
    (cmd,) = _commands(capsys, [
        "run", *BASE, "--job-name", "nightly-1", "--max-workers", "20",
        "--worker-machine-type", "n2-highmem-8",
        "--service-account-email", "df@proj.iam.gserviceaccount.com", "--labels", "team=search,env=prod",
        "--queries", "gs://in/q/*.parquet", "--candidates", "gs://in/c/*.parquet",
        "--output", "gs://out/runs/{date}", "--top_k", "20", "--distance", "dot",
        "--text_fields", "title,body", "--numeric_fields", "price"])
    assert cmd[:5] == ["gcloud", "dataflow", "flex-template", "run", "nightly-1"]
    assert _flag(cmd, "--template-file-gcs-location") == "gs://bkt/templates/match_corpora.json"
    assert _flag(cmd, "--region") == "europe-west1"
    assert _flag(cmd, "--project") == "proj"
    assert _flag(cmd, "--staging-location") == "gs://bkt/staging"
    assert _flag(cmd, "--temp-location") == "gs://bkt/temp"
    assert _flag(cmd, "--max-workers") == "20"
    assert _flag(cmd, "--worker-machine-type") == "n2-highmem-8"
    assert _flag(cmd, "--service-account-email") == "df@proj.iam.gserviceaccount.com"
    assert _flag(cmd, "--additional-user-labels") == "team=search,env=prod"
    assert "--additional-experiments" not in cmd
    assert _parameters(cmd) == {
        "queries": "gs://in/q/*.parquet", "candidates": "gs://in/c/*.parquet",
        "text_fields": "title,body", "numeric_fields": "price", "top_k": "20", "distance": "dot",
        "output": "gs://out/runs/2026-03-14"}


def test_commas_in_values_use_gcloud_alternate_delimiter(capsys):
    assert gcloud_dict_item("top_k", "10") == "top_k=10"
    assert gcloud_dict_item("text_fields", "title,body") == "^~^text_fields=title,body"
    assert gcloud_dict_item("text_fields", "a~b,c") == "^|^text_fields=a~b,c"
    (cmd,) = _commands(capsys, ["run", *BASE, "--input", "gs://in/x/*.csv", "--output", "gs://o/r",
                                "--text_fields", "title,body,notes"])
    assert "^~^text_fields=title,body,notes" in cmd
    out_line = format_command(cmd)
    assert "'^~^text_fields=title,body,notes'" in out_line  # shell-quoted, so it pastes intact


@pytest.mark.skipif(not (GCLOUD_SDK / "lib" / "googlecloudsdk").is_dir(), reason="no Cloud SDK here")
def test_gcloud_itself_parses_the_escaped_parameters():
    python = next((p for p in [GCLOUD_SDK / "platform/bundledpythonunix/bin/python3"] if p.exists()), None)
    if python is None:
        pytest.skip("no bundled python in the Cloud SDK")
    items = [gcloud_dict_item("text_fields", "title,body"),
             gcloud_dict_item("dataflow_service_options",
                              "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver")]
    code = ("import sys, json; sys.path[:0] = ['lib', 'lib/third_party'];"
            "from googlecloudsdk.calliope import arg_parsers; d = arg_parsers.ArgDict();"
            "print(json.dumps([dict(d(a)) for a in sys.argv[1:]]))")
    out = subprocess.run([str(python), "-c", code, *items], cwd=GCLOUD_SDK, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out) == [{"text_fields": "title,body"}, {
        "dataflow_service_options": "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"}]


def test_run_gpu_adds_accelerator_runner_v2_and_machine(capsys):
    (cmd,) = _commands(capsys, ["run", *BASE, "--variant", "gpu", "--harness-threads", "4",
                                "--single-sdk-process", "--input", "gs://in/x/*.jsonl", "--output", "gs://o/r",
                                "--text_fields", "title"])
    assert _flag(cmd, "--template-file-gcs-location") == "gs://bkt/templates/match_corpora_gpu.json"
    assert _flag(cmd, "--worker-machine-type") == "g2-standard-4"
    assert _flag(cmd, "--additional-experiments") == "use_runner_v2,no_use_multiple_sdk_containers"
    params = _parameters(cmd)
    assert params["dataflow_service_options"] == (
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver")
    assert params["number_of_worker_harness_threads"] == "4"
    assert "sdk_container_image" not in params  # the image's own reference is the default


def test_run_explicit_worker_image_and_driver(capsys):
    (cmd,) = _commands(capsys, ["run", *BASE, "--variant", "gpu", "--gpu-type", "nvidia-tesla-t4",
                                "--gpu-count", "2", "--nvidia-driver", "5xx", "--sdk-container-image", IMAGE,
                                "--input", "gs://in/x/*.jsonl", "--output", "gs://o/r"])
    params = _parameters(cmd)
    assert params["dataflow_service_options"] == (
        "worker_accelerator=type:nvidia-tesla-t4;count:2;install-nvidia-driver:5xx")
    assert params["sdk_container_image"] == IMAGE
    assert _flag(cmd, "--worker-machine-type") == "n1-standard-4"


def test_run_date_backfill_and_default_job_name(capsys):
    (cmd,) = _commands(capsys, ["run", *BASE, "--run-date", "2026-01-31", "--input",
                                "gs://in/{date:%Y/%m/%d}/*.csv", "--output", "gs://o/runs/{date}"])
    assert cmd[4] == "corpus-match-20260314-233005"
    params = _parameters(cmd)
    assert params["input"] == "gs://in/2026/01/31/*.csv"
    assert params["output"] == "gs://o/runs/2026-01-31"


@pytest.mark.parametrize("argv, message", [
    (["--input", "/local/x/*.csv", "--output", "gs://o/r"], "--input must be a gs://bucket/path"),
    (["--input", "gs://in/x", "--output", "gs://o/r/*"], "--output must be a gs://bucket/path without glob"),
    (["--queries", "gs://in/q", "--output", "gs://o/r"], "--candidates is missing"),
    (["--input", "gs://in/x", "--output", "gs://o/r", "--top_k", "0"], "--top_k must be >= 1"),
    (["--input", "gs://in/x"], "--output"),
    (["--input", "gs://in/x", "--output", "gs://o/r", "--gpu-type", "nvidia-l4"], "--variant gpu"),
    (["--input", "gs://in/x", "--output", "gs://o/r", "--labels", "Team=x"], "--labels"),
    (["--input", "gs://in/x", "--output", "gs://o/r", "--job-name", "Bad_Name"], "--job-name"),
])
def test_run_rejects_bad_flags_before_launching(capsys, argv, message):
    assert template_main(["run", *BASE, *argv], now=NOW) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_argparse_errors_return_instead_of_exiting(capsys):
    assert template_main(["run", *BASE, "--distance", "manhattan"], now=NOW) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert template_main(["--help"], now=NOW) == 0


def test_schedule_posts_the_launch_body_with_oauth(capsys):
    (cmd,) = _commands(capsys, [
        "schedule", *BASE, "--scheduler-service-account", "sched@proj.iam.gserviceaccount.com",
        "--service-account-email", "df@proj.iam.gserviceaccount.com", "--max-workers", "10",
        "--queries", "gs://in/q/*.parquet", "--candidates", "gs://in/c/*.parquet",
        "--output", "gs://out/runs/{date}", "--text_fields", "title,body"])
    assert cmd[:6] == ["gcloud", "scheduler", "jobs", "create", "http", "corpus-match-nightly"]
    assert _flag(cmd, "--location") == "europe-west1"
    assert _flag(cmd, "--schedule") == "0 2 * * *"
    assert _flag(cmd, "--time-zone") == "Etc/UTC"
    assert _flag(cmd, "--uri") == (
        "https://dataflow.googleapis.com/v1b3/projects/proj/locations/europe-west1/flexTemplates:launch")
    assert _flag(cmd, "--http-method") == "POST"
    assert _flag(cmd, "--headers") == "Content-Type=application/json"
    assert _flag(cmd, "--oauth-service-account-email") == "sched@proj.iam.gserviceaccount.com"
    assert _flag(cmd, "--oauth-token-scope") == "https://www.googleapis.com/auth/cloud-platform"
    body = json.loads(_flag(cmd, "--message-body"))
    assert body == {"launchParameter": {
        "jobName": "corpus-match-nightly",
        "containerSpecGcsPath": "gs://bkt/templates/match_corpora.json",
        # {date} stays: the template's main.py expands it at each launch.
        "parameters": {"queries": "gs://in/q/*.parquet", "candidates": "gs://in/c/*.parquet",
                       "text_fields": "title,body", "output": "gs://out/runs/{date}"},
        "environment": {"stagingLocation": "gs://bkt/staging", "tempLocation": "gs://bkt/temp",
                        "serviceAccountEmail": "df@proj.iam.gserviceaccount.com", "maxWorkers": 10}}}


def test_schedule_body_is_a_valid_launch_request(capsys):
    pytest.importorskip("google.cloud.dataflow_v1beta3")
    from google.cloud.dataflow_v1beta3 import types
    from google.protobuf import json_format

    (cmd,) = _commands(capsys, ["schedule", *BASE, "--scheduler-service-account", "s@p.iam.example.com",
                                "--variant", "gpu", "--labels", "team=search", "--input", "gs://in/x/*.csv",
                                "--output", "gs://o/{date}", "--text_fields", "a"])
    request = json_format.Parse(_flag(cmd, "--message-body"), types.LaunchFlexTemplateRequest.pb()())
    env = request.launch_parameter.environment
    assert env.machine_type == "g2-standard-4"
    assert list(env.additional_experiments) == ["use_runner_v2"]
    assert dict(env.additional_user_labels) == {"team": "search"}
    assert request.launch_parameter.parameters["dataflow_service_options"].startswith("worker_accelerator=")


def test_execute_without_gcloud_on_path_fails_clearly(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    code = template_main(["run", *BASE, "--input", "gs://in/x", "--output", "gs://o/r", "--execute"], now=NOW)
    assert code == 127
    err = capsys.readouterr().err
    assert "gcloud is not on PATH" in err and "drop --execute" in err


def test_execute_runs_the_printed_argv(capsys, monkeypatch, tmp_path):
    log = tmp_path / "argv.log"
    fake = tmp_path / "gcloud"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a" >> {shlex.quote(str(log))}; done\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    argv = ["run", *BASE, "--input", "gs://in/x", "--output", "gs://o/r", "--text_fields", "a,b", "--execute"]
    assert template_main(argv, now=NOW) == 0
    printed = _commands(capsys, [a for a in argv if a != "--execute"])[0]
    assert log.read_text().splitlines() == printed[1:]


def test_execute_stops_at_the_first_failing_command(capsys, monkeypatch, tmp_path):
    for prog, code in (("docker", 3), ("gcloud", 0)):
        (tmp_path / prog).write_text(f"#!/bin/sh\nexit {code}\n")
        (tmp_path / prog).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert template_main(["build", *BASE, "--repository", "r", "--execute"], now=NOW) == 3
    assert "docker exited with 3" in capsys.readouterr().err
