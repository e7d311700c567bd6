"""``corpus-match template build|run|schedule``: commands that ship the match job as a Flex Template.

Each subcommand builds the exact ``docker`` / ``gcloud`` command lines (argv lists) and prints them,
one flag per line, ready to paste into bash from the repository root; with ``--execute`` it runs the same
argv lists through :mod:`subprocess` (no shell), so what is printed is what runs.

- ``build``: ``docker build`` + ``docker push`` of the one image that is both the template launcher and
  the SDK worker image (templates/match_corpora/Dockerfile), then ``gcloud dataflow flex-template build``.
- ``run``: ``gcloud dataflow flex-template run`` with the job flags as ``--parameters``.
- ``schedule``: ``gcloud scheduler jobs create http`` POSTing a ``flexTemplates:launch`` body nightly.

This module also owns the template's parameter metadata (:func:`template_metadata`, written to
templates/match_corpora/metadata.json by generate_metadata.py so the two cannot drift); the
``{date}`` placeholder of dated paths is ``beam_jobs.dated_paths``. It never calls Google Cloud
APIs itself and imports nothing heavy at module level (the Flex Template shim imports it at launch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from beam_jobs.dated_paths import DATE_FLAGS, expand_date_placeholders
from transforms.common.flags import FLAGS, JOB_FLAGS, Flag

__all__ = [
    "template_main",
    "template_metadata",
    "flag_regex",
    "validate_template_parameters",
    "image_uri",
    "build_commands",
    "run_command",
    "launch_body",
    "schedule_command",
    "gcloud_dict_item",
    "format_command",
    "SDK_IMAGE_ENV",
    "SDK_IMAGE_BUILD_ARG",
    "DOCKERFILE",
    "METADATA_FILE",
]

_LOGGER = logging.getLogger(__name__)

# Paths are relative to the repository root: the docker build context and where printed commands run.
TEMPLATE_DIR = "templates/match_corpora"
DOCKERFILE = f"{TEMPLATE_DIR}/Dockerfile"
METADATA_FILE = f"{TEMPLATE_DIR}/metadata.json"
DEFAULT_IMAGE_NAME = "corpus-matcher"
# Baked into the image at build time (Dockerfile: ARG SDK_CONTAINER_IMAGE -> ENV SDK_IMAGE_ENV) so the
# template shim can default --sdk_container_image to the very image the launcher runs in.
SDK_IMAGE_BUILD_ARG = "SDK_CONTAINER_IMAGE"
SDK_IMAGE_ENV = "CORPUS_MATCHER_SDK_CONTAINER_IMAGE"

# Template parameters that must be Cloud Storage paths (the template runs on Dataflow: no local paths),
# by the flags' template kind (transforms.common.flags).
GCS_GLOB_FLAGS = tuple(f.name for f in JOB_FLAGS if f.template_kind == "gcs_glob")  # * ? [..] allowed
GCS_DIR_FLAGS = tuple(f.name for f in JOB_FLAGS  # directories: no glob characters
                      if f.template_kind in ("gcs_dir", "gcs_output"))
REQUIRED_TEMPLATE_FLAGS = tuple(f.name for f in JOB_FLAGS if f.required)  # config enforces link/dedup

# GPU type -> the smallest machine type that carries one (L4 exists on G2 machines only).
GPU_MACHINE_TYPES = {"nvidia-l4": "g2-standard-4", "nvidia-tesla-t4": "n1-standard-4"}
DEFAULT_GPU_TYPE = "nvidia-l4"

# Regexes are kept to the subset that Python, Java and RE2 read alike (no look-arounds).
_BUCKET = r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?"
GCS_GLOB_REGEX = rf"^gs://{_BUCKET}/[^/\r\n][^\r\n]*$"
GCS_DIR_REGEX = rf"^gs://{_BUCKET}/[^/\r\n*?\[\]][^\r\n*?\[\]]*$"
INT_REGEX = r"^[0-9]+$"
# Numbers that also take the word none (see the flag's help).
NONE_OR_NUMBER_FLAGS = frozenset(f.name for f in JOB_FLAGS if f.template_kind == "none_or_number")
FLOAT_REGEX = r"^[-+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$"

_JOB_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$")
_SCHEDULER_JOB_RE = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
# gcloud's alternate-delimiter escaping (`gcloud topic escaping`): '^D^k=v,w' splits items on D, not ','.
_GCLOUD_DELIMITERS = ("~", "|", "@", "#", "%", "!", "+")

_EXIT_USAGE = 2
_EXIT_MISSING_TOOL = 127


# ------------------------------------------------------------------------------------ metadata


def flag_regex(name: str, choices: Sequence[str] | None = None) -> str | None:
    """The regex a template parameter value must match (from the flag's template kind and type), or
    None for free text. ``choices``: for a name that is not a job flag."""
    flag = FLAGS.get(name)
    if flag is None:
        return "^(" + "|".join(re.escape(c) for c in choices) + ")$" if choices else None
    kind = flag.template_kind
    if kind == "gcs_glob":
        return GCS_GLOB_REGEX
    if kind in ("gcs_dir", "gcs_output"):
        return GCS_DIR_REGEX
    if kind in ("enum", "boolean"):
        return "^(" + "|".join(re.escape(c) for c in flag.values) + ")$"
    number = INT_REGEX if flag.type == "int" else FLOAT_REGEX
    if kind == "none_or_number":
        return r"^(none|" + number[1:-1] + r")$"
    return number if kind == "number" else None


_LABEL_WORDS = {"id": "ID", "scann": "ScaNN", "tf": "TF", "k": "K", "fn": "fn"}


def _label(name: str) -> str:
    words = [_LABEL_WORDS.get(w, w) for w in name.split("_")]
    first = words[0] if words[0] in _LABEL_WORDS.values() else words[0].capitalize()
    return " ".join([first, *words[1:]])


_PARAM_TYPES = {"gcs_glob": "GCS_READ_FILE", "gcs_dir": "GCS_READ_FOLDER", "gcs_output": "GCS_WRITE_FOLDER",
                "enum": "ENUM", "boolean": "ENUM", "number": "NUMBER"}  # else TEXT


def _param_type(flag: Flag) -> str:
    return _PARAM_TYPES.get(flag.template_kind, "TEXT")


def _help_text(name: str, help_text: str) -> str:
    extra = ""
    if name in GCS_GLOB_FLAGS or name in GCS_DIR_FLAGS:
        extra = " In the template: a gs://bucket/path (no local paths)."
    if name in DATE_FLAGS:
        example = "gs://bucket/runs/{date}" if name == "output" else "gs://bucket/exports/{date}/*.parquet"
        extra += (" {date} is replaced by the launch's UTC date (YYYY-MM-DD; {date:%Y/%m/%d} for "
                  f"another format), e.g. {example}.")
    return help_text + extra


def template_metadata() -> dict[str, Any]:
    """The Flex Template metadata (metadata.json) generated from ``JOB_FLAGS``: one parameter per flag.

    Field names follow Dataflow's ``TemplateMetadata`` / ``ParameterMetadata`` JSON (name, label,
    helpText, isOptional, regexes, paramType, enumOptions).
    """
    parameters = []
    for flag in JOB_FLAGS:
        param: dict[str, Any] = {
            "name": flag.name,
            "label": _label(flag.name),
            "helpText": _help_text(flag.name, flag.full_help),
            "isOptional": not flag.required,
            "paramType": _param_type(flag),
        }
        regex = flag_regex(flag.name)
        if regex:
            param["regexes"] = [regex]
        if flag.values:
            param["enumOptions"] = [{"value": c, "label": c} for c in flag.values]
        parameters.append(param)
    return {
        "name": "corpus-matcher: match corpora",
        "description": (
            "Top-K nearest-neighbour matching of record corpora with one ScaNN index per candidate shard. "
            "Link mode: give queries and candidates; dedup mode: give input. Writes match files under "
            "output. Every flag of the job is a parameter with the same name."
        ),
        "parameters": parameters,
    }


def validate_template_parameters(params: dict[str, str]) -> None:
    """Checks job parameter values against the template's regexes, as Dataflow would at launch.

    Raises:
        beam_jobs.config.ConfigError: naming the first flag whose value does not match.
    """
    from beam_jobs.config import ConfigError

    for name, value in params.items():
        if name not in FLAGS:
            continue
        regex = flag_regex(name)
        if regex and not re.fullmatch(regex, value):
            if name in GCS_GLOB_FLAGS or name in GCS_DIR_FLAGS:
                what = "a gs://bucket/path" + (" without glob characters" if name in GCS_DIR_FLAGS else "")
            elif FLAGS[name].values:
                what = "one of " + ", ".join(FLAGS[name].values)
            else:
                what = f"a value matching {regex}"
            raise ConfigError(f"--{name} must be {what} in the template, got {value!r}")


# ------------------------------------------------------------------------------------ commands


def image_uri(*, project: str, region: str, repository: str, image_name: str, tag: str) -> str:
    """Artifact Registry image: ``REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE_NAME:TAG``."""
    if not _TAG_RE.match(tag):
        raise ValueError(f"--tag {tag!r} is not a valid Docker tag")
    return f"{region}-docker.pkg.dev/{project}/{repository}/{image_name}:{tag}"


def gcloud_dict_item(key: str, value: str) -> str:
    """One ``key=value`` item of a gcloud dict flag, escaped with ``^D^`` when the value holds a comma.

    gcloud splits dict flags (``--parameters``) on commas, so ``text_fields=a,b`` must become
    ``^~^text_fields=a,b`` (``gcloud topic escaping``); the delimiter is one that does not occur in it.
    """
    item = f"{key}={value}"
    if "," not in item:
        return item
    for delim in _GCLOUD_DELIMITERS:
        if delim not in item:
            return f"^{delim}^{item}"
    raise ValueError(f"cannot escape {item!r} for gcloud: it contains every spare delimiter")


def build_commands(*, image: str, template_file: str, project: str, gpu: bool = False) -> list[list[str]]:
    """docker build, docker push and ``gcloud dataflow flex-template build`` (run from the repo root)."""
    docker_build = ["docker", "build", "--platform", "linux/amd64", "-f", DOCKERFILE,
                    "--build-arg", f"{SDK_IMAGE_BUILD_ARG}={image}"]
    if gpu:
        docker_build += ["--build-arg", "GPU=1"]
    docker_build += ["-t", image, "."]
    return [
        docker_build,
        ["docker", "push", image],
        ["gcloud", "dataflow", "flex-template", "build", template_file,
         "--image", image,
         "--sdk-language", "PYTHON",
         "--metadata-file", METADATA_FILE,
         "--project", project],
    ]


def run_command(*, job_name: str, template_file: str, project: str, region: str,
                staging_location: str, temp_location: str, parameters: dict[str, str],
                experiments: Sequence[str] = (), worker_machine_type: str | None = None,
                max_workers: int | None = None, service_account_email: str | None = None,
                labels: dict[str, str] | None = None) -> list[str]:
    """``gcloud dataflow flex-template run`` with one ``--parameters`` item per flag (gcloud merges them)."""
    cmd = ["gcloud", "dataflow", "flex-template", "run", job_name,
           "--template-file-gcs-location", template_file,
           "--project", project,
           "--region", region,
           "--staging-location", staging_location,
           "--temp-location", temp_location]
    if service_account_email:
        cmd += ["--service-account-email", service_account_email]
    if worker_machine_type:
        cmd += ["--worker-machine-type", worker_machine_type]
    if max_workers is not None:
        cmd += ["--max-workers", str(max_workers)]
    if experiments:
        cmd += ["--additional-experiments", ",".join(experiments)]
    if labels:
        cmd += ["--additional-user-labels", ",".join(f"{k}={v}" for k, v in labels.items())]
    for key, value in parameters.items():
        cmd += ["--parameters", gcloud_dict_item(key, value)]
    return cmd


def launch_body(*, job_name: str, template_file: str, parameters: dict[str, str],
                staging_location: str, temp_location: str, experiments: Sequence[str] = (),
                worker_machine_type: str | None = None, max_workers: int | None = None,
                service_account_email: str | None = None,
                labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``projects.locations.flexTemplates:launch`` request body (what gcloud's ``run`` sends)."""
    environment: dict[str, Any] = {"stagingLocation": staging_location, "tempLocation": temp_location}
    if service_account_email:
        environment["serviceAccountEmail"] = service_account_email
    if worker_machine_type:
        environment["machineType"] = worker_machine_type
    if max_workers is not None:
        environment["maxWorkers"] = max_workers
    if experiments:
        environment["additionalExperiments"] = list(experiments)
    if labels:
        environment["additionalUserLabels"] = dict(labels)
    return {"launchParameter": {"jobName": job_name, "containerSpecGcsPath": template_file,
                                "parameters": dict(parameters), "environment": environment}}


def schedule_command(*, scheduler_job: str, project: str, scheduler_location: str, region: str,
                     schedule: str, time_zone: str, service_account_email: str,
                     body: dict[str, Any], description: str | None = None) -> list[str]:
    """``gcloud scheduler jobs create http`` POSTing ``body`` to the Dataflow launch endpoint with OAuth."""
    uri = f"https://dataflow.googleapis.com/v1b3/projects/{project}/locations/{region}/flexTemplates:launch"
    cmd = ["gcloud", "scheduler", "jobs", "create", "http", scheduler_job,
           "--project", project,
           "--location", scheduler_location,
           "--schedule", schedule,
           "--time-zone", time_zone,
           "--uri", uri,
           "--http-method", "POST",
           "--headers", "Content-Type=application/json",
           "--oauth-service-account-email", service_account_email,
           "--oauth-token-scope", "https://www.googleapis.com/auth/cloud-platform"]
    if description:
        cmd += ["--description", description]
    cmd += ["--message-body", json.dumps(body, separators=(",", ":"))]
    return cmd


def format_command(cmd: Sequence[str]) -> str:
    """Shell-quoted command, one ``--flag value`` per continuation line (pastes into bash as is)."""
    lines: list[list[str]] = [[]]
    for token in cmd:
        if token.startswith("-") and len(token) > 1 and lines[-1]:
            lines.append([])
        lines[-1].append(shlex.quote(token))
    return " \\\n    ".join(" ".join(line) for line in lines)


# ------------------------------------------------------------------------------------- the CLI


class _UsageError(Exception):
    """A flag of the template CLI itself is missing or malformed (exit code 2)."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]  # beam_jobs/commands/template.py -> the repository


def _parse_labels(values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for chunk in values:
        for item in filter(None, (s.strip() for s in chunk.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not _LABEL_KEY_RE.match(key) or not _LABEL_VALUE_RE.match(value):
                raise _UsageError(f"--labels item {item!r} must be key=value with lowercase letters, "
                                  "digits, '_' or '-' (key starting with a letter, each <= 63 chars)")
            labels[key] = value
    return labels


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be YYYY-MM-DD, got {text!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", required=True, help="Google Cloud project id.")
    p.add_argument("--region", required=True, help="Dataflow region, e.g. europe-west1.")
    p.add_argument("--bucket", help="Bucket (name, no gs://) for the defaults of --template-file, "
                   "--staging-location and --temp-location: gs://BUCKET/templates/match_corpora.json, "
                   "gs://BUCKET/staging, gs://BUCKET/temp.")
    p.add_argument("--template-file", help="gs:// path of the template spec file.")
    p.add_argument("--variant", choices=("cpu", "gpu"), default="cpu",
                   help="cpu or gpu image/template (gpu: TF with CUDA libraries). Default cpu.")
    p.add_argument("--execute", action="store_true",
                   help="Run the printed commands (docker/gcloud must be on PATH). Default: print only.")


def _add_launch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--staging-location", help="Default gs://BUCKET/staging.")
    p.add_argument("--temp-location", help="Default gs://BUCKET/temp.")
    p.add_argument("--service-account-email", help="Worker (and launcher) service account.")
    p.add_argument("--worker-machine-type",
                   help="Worker machine type. Default: Dataflow's; with --variant gpu the machine for "
                   "--gpu-type (g2-standard-4 for nvidia-l4).")
    p.add_argument("--max-workers", type=_positive, help="Autoscaling ceiling.")
    p.add_argument("--labels", action="append", default=[], help="Job labels key=value[,key=value].")
    p.add_argument("--experiment", action="append", default=[], help="Extra Dataflow experiment.")
    p.add_argument("--gpu-type", help=f"With --variant gpu: accelerator type. Default {DEFAULT_GPU_TYPE}.")
    p.add_argument("--gpu-count", type=_positive, default=1, help="With --variant gpu: GPUs per worker.")
    p.add_argument("--nvidia-driver", default="",
                   help="With --variant gpu: driver series for install-nvidia-driver, e.g. 5xx. "
                   "Default: Dataflow's default driver.")
    p.add_argument("--harness-threads", type=_positive,
                   help="number_of_worker_harness_threads (bounds batches in flight per SDK process).")
    p.add_argument("--single-sdk-process", action="store_true",
                   help="Experiment no_use_multiple_sdk_containers: one SDK process (one model copy) "
                   "per worker VM instead of one per vCPU.")
    p.add_argument("--sdk-container-image",
                   help="Worker image override. Default: the image the template launcher runs in "
                   "(baked in at build time), so launcher and workers match.")
    job = p.add_argument_group("job flags (passed to the template as parameters, same names)")
    for flag in JOB_FLAGS:  # raw strings: the job's config parses them (_check_job_flags)
        flag.add_to(job, typed=False, dest=f"job_{flag.name}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corpus-match template", allow_abbrev=False,
        description="Print (or with --execute run) the commands that build, run and schedule the "
        "match job as a Dataflow Flex Template. Printed commands run from the repository root.")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", allow_abbrev=False, help="Build and push the image, build the template.")
    _add_common(build)
    build.add_argument("--repository", required=True, help="Artifact Registry Docker repository.")
    build.add_argument("--image-name", help=f"Image name. Default {DEFAULT_IMAGE_NAME} "
                       f"({DEFAULT_IMAGE_NAME}-gpu for --variant gpu).")
    build.add_argument("--tag", help="Image tag. Default: the UTC build time, YYYYMMDD-HHMMSS.")

    run = sub.add_parser("run", allow_abbrev=False, help="Launch one job from the template.")
    _add_common(run)
    run.add_argument("--job-name", help="Dataflow job name. Default corpus-match-YYYYMMDD-HHMMSS (UTC).")
    run.add_argument("--run-date", type=_run_date,
                     help="Date for {date} placeholders (YYYY-MM-DD, e.g. a backfill). Default: today, UTC.")
    _add_launch(run)

    sched = sub.add_parser("schedule", allow_abbrev=False,
                           help="Create a Cloud Scheduler job that launches the template on a cron schedule.")
    _add_common(sched)
    sched.add_argument("--job-name", default="corpus-match-nightly", help="Dataflow job name of each launch.")
    sched.add_argument("--scheduler-job", default="corpus-match-nightly", help="Cloud Scheduler job id.")
    sched.add_argument("--scheduler-location", help="Cloud Scheduler location. Default: --region.")
    sched.add_argument("--schedule", default="0 2 * * *", help="Cron schedule. Default '0 2 * * *'.")
    sched.add_argument("--time-zone", default="Etc/UTC", help="Time zone of --schedule. Default Etc/UTC.")
    sched.add_argument("--scheduler-service-account", required=True,
                       help="Service account whose OAuth token Cloud Scheduler sends (needs "
                       "roles/dataflow.developer and iam.serviceAccountUser on the worker account).")
    _add_launch(sched)
    return parser


def _gcs_default(args: argparse.Namespace, explicit: str | None, suffix: str, flag: str) -> str:
    if explicit:
        return explicit
    if not args.bucket:
        raise _UsageError(f"give --bucket or {flag}")
    return f"gs://{args.bucket}/{suffix}"


def _template_file(args: argparse.Namespace) -> str:
    name = "match_corpora_gpu.json" if args.variant == "gpu" else "match_corpora.json"
    return _gcs_default(args, args.template_file, f"templates/{name}", "--template-file")


def _build(args: argparse.Namespace, now: datetime.datetime) -> tuple[list[str], list[list[str]]]:
    gpu = args.variant == "gpu"
    tag = args.tag or now.strftime("%Y%m%d-%H%M%S")
    name = args.image_name or (f"{DEFAULT_IMAGE_NAME}-gpu" if gpu else DEFAULT_IMAGE_NAME)
    try:
        image = image_uri(project=args.project, region=args.region, repository=args.repository,
                          image_name=name, tag=tag)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    template = _template_file(args)
    notes = [f"image {image} is both the template launcher and the worker image",
             f"template spec {template}"]
    return notes, build_commands(image=image, template_file=template, project=args.project, gpu=gpu)


def _job_parameters(args: argparse.Namespace) -> dict[str, str]:
    return {flag.name: getattr(args, f"job_{flag.name}") for flag in JOB_FLAGS
            if getattr(args, f"job_{flag.name}") is not None}


def _check_job_flags(params: dict[str, str], day: datetime.date) -> None:
    """Fails before any launch the way the job would fail after a 5-minute launcher start."""
    from beam_jobs.config import config_from_flags

    expanded = {k: expand_date_placeholders(v, day) if k in DATE_FLAGS else v for k, v in params.items()}
    validate_template_parameters(params)
    validate_template_parameters(expanded)
    config_from_flags(expanded)


def _launch_settings(args: argparse.Namespace) -> dict[str, Any]:
    gpu = args.variant == "gpu"
    if not gpu and (args.gpu_type or args.nvidia_driver):
        raise _UsageError("--gpu-type / --nvidia-driver need --variant gpu (the CPU image has no CUDA "
                          "libraries)")
    experiments = list(args.experiment)
    extra_params: dict[str, str] = {}
    machine = args.worker_machine_type
    if gpu:
        gpu_type = args.gpu_type or DEFAULT_GPU_TYPE
        machine = machine or GPU_MACHINE_TYPES.get(gpu_type)
        if not machine:
            raise _UsageError(f"give --worker-machine-type for --gpu-type {gpu_type}")
        driver = "install-nvidia-driver" + (f":{args.nvidia_driver}" if args.nvidia_driver else "")
        extra_params["dataflow_service_options"] = (
            f"worker_accelerator=type:{gpu_type};count:{args.gpu_count};{driver}")
        experiments.append("use_runner_v2")
    if args.single_sdk_process:
        experiments.append("no_use_multiple_sdk_containers")
    if args.harness_threads:
        extra_params["number_of_worker_harness_threads"] = str(args.harness_threads)
    if args.sdk_container_image:
        extra_params["sdk_container_image"] = args.sdk_container_image
    return {
        "staging_location": _gcs_default(args, args.staging_location, "staging", "--staging-location"),
        "temp_location": _gcs_default(args, args.temp_location, "temp", "--temp-location"),
        "experiments": list(dict.fromkeys(experiments)),
        "worker_machine_type": machine,
        "max_workers": args.max_workers,
        "service_account_email": args.service_account_email,
        "labels": _parse_labels(args.labels),
        "extra_params": extra_params,
    }


def _gpu_notes(args: argparse.Namespace, params: dict[str, str]) -> list[str]:
    if args.variant == "gpu" and not (params.get("text_fields") or params.get("numeric_fields")
                                      or params.get("image_field")):
        return ["warning: --variant gpu without --text_fields/--numeric_fields/--image_field: nothing "
                "is embedded, the GPUs would idle"]
    return []


def _run(args: argparse.Namespace, now: datetime.datetime) -> tuple[list[str], list[list[str]]]:
    day = args.run_date or now.date()
    job_name = args.job_name or now.strftime("corpus-match-%Y%m%d-%H%M%S")
    if not _JOB_NAME_RE.match(job_name):
        raise _UsageError(f"--job-name {job_name!r}: lowercase letters, digits and '-', starting "
                          "with a letter")
    raw = _job_parameters(args)
    _check_job_flags(raw, day)
    # The run date is fixed here (not at launch) so the printed command is exact and re-runnable.
    params = {k: expand_date_placeholders(v, day) if k in DATE_FLAGS else v for k, v in raw.items()}
    settings = _launch_settings(args)
    params.update(settings.pop("extra_params"))
    cmd = run_command(job_name=job_name, template_file=_template_file(args), project=args.project,
                      region=args.region, parameters=params, **settings)
    return [f"run date {day.isoformat()} (UTC) fills {{date}}", *_gpu_notes(args, params)], [cmd]


def _schedule(args: argparse.Namespace, now: datetime.datetime) -> tuple[list[str], list[list[str]]]:
    if not _JOB_NAME_RE.match(args.job_name):
        raise _UsageError(f"--job-name {args.job_name!r}: lowercase letters, digits and '-', starting "
                          "with a letter")
    if not _SCHEDULER_JOB_RE.match(args.scheduler_job):
        raise _UsageError(f"--scheduler-job {args.scheduler_job!r}: letters, digits, '_' and '-'")
    params = _job_parameters(args)
    _check_job_flags(params, now.date())
    settings = _launch_settings(args)
    params.update(settings.pop("extra_params"))
    body = launch_body(job_name=args.job_name, template_file=_template_file(args), parameters=params,
                       **settings)
    cmd = schedule_command(scheduler_job=args.scheduler_job, project=args.project,
                           scheduler_location=args.scheduler_location or args.region, region=args.region,
                           schedule=args.schedule, time_zone=args.time_zone,
                           service_account_email=args.scheduler_service_account, body=body,
                           description="Nightly corpus-matcher Flex Template launch")
    notes = ["Cloud Scheduler sends the same body every time: {date} placeholders stay in it and the",
             "template's main.py expands them when each launch starts (UTC date of the launch)."]
    if "{date" not in params.get("output", ""):
        notes.append("warning: --output has no {date}: every nightly run writes the same directory")
    return notes + _gpu_notes(args, params), [cmd]


def _execute(commands: list[list[str]]) -> int:
    missing = sorted({cmd[0] for cmd in commands if shutil.which(cmd[0]) is None})
    if missing:
        hints = {"gcloud": "install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)",
                 "docker": "install Docker (or build the image elsewhere)"}
        for prog in missing:
            print(f"error: {prog} is not on PATH: {hints.get(prog, 'install it')}, or drop --execute to "
                  "only print the commands", file=sys.stderr)
        return _EXIT_MISSING_TOOL
    cwd = _repo_root()
    if any(cmd[0] == "docker" for cmd in commands) and not (cwd / DOCKERFILE).is_file():
        print(f"error: {DOCKERFILE} not found under {cwd}: run from a source checkout", file=sys.stderr)
        return _EXIT_USAGE
    for cmd in commands:
        print("+ " + shlex.join(cmd), flush=True)
        code = subprocess.run(cmd, cwd=cwd, check=False).returncode
        if code:
            print(f"error: {cmd[0]} exited with {code}", file=sys.stderr)
            return code
    return 0


def template_main(argv: Sequence[str] | None = None,
                  now: datetime.datetime | None = None) -> int:
    """Entry point of ``corpus-match template ...``; returns the process exit code.

    Args:
        argv: arguments after ``template`` (default ``sys.argv[1:]``).
        now: the current time (UTC) for default tags, job names and dates; for tests.
    """
    from beam_jobs.config import ConfigError

    parser = _parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:  # --help and usage errors: argparse already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else _EXIT_USAGE
    now = now or datetime.datetime.now(datetime.UTC)
    handlers = {"build": _build, "run": _run, "schedule": _schedule}
    try:
        notes, commands = handlers[args.command](args, now)
    except (_UsageError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return _EXIT_USAGE
    print("# run from the repository root")
    for note in notes:
        print(f"# {note}")
    for cmd in commands:
        print(format_command(cmd))
    if not args.execute:
        return 0
    return _execute(commands)


if __name__ == "__main__":
    sys.exit(template_main())
